"""Regenerate the paper: run notebooks 00..07 in order with papermill, the same parameters passed to each.

    python -m memla_utils.batch                                  # small CPU preset -> runs/small, figures/
    python -m memla_utils.batch --preset full                    # 12 languages, all methods, GPU
    python -m memla_utils.batch --preset mzsre --hours 2.5       # MzsRE from ../shared/data, one part of the run
    python -m memla_utils.batch -p n_records=5 -p languages=en,zh,ru
    python -m memla_utils.batch --matrix "languages=en,zh,fr;en,de" --models default,Qwen/Qwen2.5-0.5B
    python -m memla_utils.batch --preset full --executor ray --address auto   # units as Ray tasks on a cluster

Executed notebooks go to ``<run_dir>/notebooks/``; a failure stops the chain with a message naming the
notebook and the cell's error. ``--matrix``/``--models`` run the whole chain once per combination, each in its
own ``<run_dir>/<slug>`` with its figures under ``<run_dir>/<slug>/figures``. Only the default configuration
(``run_dir=runs/small``) writes the committed ``figures/``; any other run dir gets ``<run_dir>/figures`` unless
``-p figures_dir=...`` says otherwise.

Parsing the command line's parameters and planning the chains is :mod:`memla_utils.batch_plan`; which presets run
in parts, their notebooks and reserves, and the run's identity check are :mod:`memla_utils.batch_policy` (both
re-exported here); this module runs the chains: one part of a multi-session run (deadline, durable cache,
``parts.json``), papermill, and the command line itself.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batch_plan import (
    NOTEBOOKS_DIR,
    SHARED_PARAMETERS,
    SOURCE_PARAMETERS,
    BatchError,
    BatchPlan,
    notebooks,
    parse_assignments,
    parse_matrix,
    parse_value,
    plan_runs,
    preset_parameters,
    slug,
)
from .batch_policy import (
    MULTI_SESSION_PRESETS,
    NOT_RESUMABLE,
    PRESET_NOTEBOOKS,
    RESERVE_HOURS,
    RESERVE_HOURS_BY_PRESET,
    _too_late_for,
    check_identity,
    reserve_hours_for,
)
from .cache import DURABLE_ENV, PROJECT_ROOT
from .config import NOTEBOOK_PARAMETERS, PRESETS, RunConfig
from .manifest import build_manifest, skipped_in

log = logging.getLogger("memla_utils.batch")

KERNEL = "memla"


@dataclass
class ChainResult:
    plan: BatchPlan
    executed: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    outcome: str = "complete"  # "complete" | "deadline" (the part's time ran out between two units)


#: The notebooks a report-only pass runs (``--report-only``): they read the run's results and compute nothing into
#: them (notebook 07: every table, figure and the claims table, ``report.write_report``).
REPORT_NOTEBOOKS: tuple[str, ...] = ("07",)


def records_source(plan: BatchPlan) -> tuple[str, bool]:
    """Where the plan's records come from, for ``--dry-run``: the dataset and its path (with what to set when it is
    missing), and whether it is there (nothing is read)."""
    cfg = RunConfig.from_params(**{k: v for k, v in plan.parameters.items() if k in NOTEBOOK_PARAMETERS})
    path = cfg.source_path()
    if path.exists():
        return f"dataset {cfg.dataset}: {path}", True
    where = "parameter shared_data_dir" if cfg.dataset != "mkeb" else "parameter mkeb_path"
    return f"dataset {cfg.dataset}: {path} (NOT FOUND: see {where})", False


def _finished_count(run_dir: Path) -> int:
    from .runner import finished_units

    return len(finished_units(run_dir)) if run_dir.exists() else 0


def run_chain(plan: BatchPlan, *, notebook_paths: Sequence[Path], kernel: str = KERNEL,
              log_output: bool = False, cwd: Path = PROJECT_ROOT, hours: float | None = None,
              restart: bool | None = None, preset: str | None = None,
              reserve_hours: float = RESERVE_HOURS, report_only: bool = False) -> ChainResult:
    """Execute the notebooks in order; raise :class:`BatchError` naming the first one that fails.

    Every call is one *part* of the run (``<run_dir>/parts.json``, :mod:`memla_utils.run_parts`: commit, hours,
    finished units before/after). With ``hours`` the part has a deadline, handed to the runner through
    ``$MEMLA_DEADLINE``: the runner stops between two units once it has passed (results so far written), the
    chain ends there with outcome ``"deadline"`` and the next call resumes. Before that, :func:`check_identity`:
    ``restart=None`` restarts a changed run unless ``preset`` is in :data:`MULTI_SESSION_PRESETS` (then it refuses).
    A notebook of :data:`NOT_RESUMABLE` is not started with less than ``reserve_hours`` left before the deadline:
    the chain ends there with outcome ``"deadline"``, and the next part runs it first thing after the others.

    ``report_only``: the notebooks (:data:`REPORT_NOTEBOOKS`) only read the run's results, so the run's code and lock
    file need not be checked out (``check_identity(report_only=True)``); no part is recorded, and the manifest goes
    to ``<run_dir>/report_manifest.json`` (the last part's ``batch_manifest.json`` stays).
    """
    import os

    from . import run_parts

    check_options(hours, reserve_hours, report_only)  # before anything reads or moves the run folder
    if report_only:
        other = [p.name for p in notebook_paths if not p.name.startswith(REPORT_NOTEBOOKS)]
        if other:
            raise BatchError(f"--report-only runs only notebooks {list(REPORT_NOTEBOOKS)}, not {other}")
        check_identity(plan, restart=False, report_only=True)
        if _finished_count(plan.run_dir) == 0:  # a started run with nothing finished: its tables would be blank
            raise BatchError(f"{plan.run_dir} has no finished unit: nothing to report (the tables would be written "
                             "empty over the committed ones); run its notebooks first (`make paper PRESET=<preset>`, "
                             "or the batch without --report-only)")
        return _report_chain(plan, notebook_paths, kernel, log_output, cwd)
    check_identity(plan, restart=(preset not in MULTI_SESSION_PRESETS) if restart is None else restart)
    out_dir = plan.run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = build_manifest("batch", parameters=plan.parameters, inputs={"notebooks": [p.name for p in
                                                                                           notebook_paths]})
    result = ChainResult(plan)
    if hours is not None:
        os.environ[run_parts.DEADLINE_ENV] = str(time.time() + 3600 * hours)
    else:
        os.environ.pop(run_parts.DEADLINE_ENV, None)
    # a multi-session run's parts may each run on a fresh machine: attribution scores (compact), unedited
    # evaluations and knowledge probes also go to the tracked <run_dir>/cache, committed with the results (the
    # notebooks' kernels inherit it; removed again after the chain, so nothing else in this process uses it)
    if preset in MULTI_SESSION_PRESETS:
        os.environ[DURABLE_ENV] = str(plan.run_dir / "cache")
    else:
        os.environ.pop(DURABLE_ENV, None)
    part = run_parts.begin_part(plan.run_dir, _finished_count(plan.run_dir))
    try:
        _run_notebooks(plan, notebook_paths, out_dir, manifest, result, kernel, log_output, cwd, reserve_hours)
    except BaseException:
        run_parts.end_part(plan.run_dir, part, _finished_count(plan.run_dir), "failed")
        raise
    finally:
        os.environ.pop(run_parts.DEADLINE_ENV, None)
        os.environ.pop(DURABLE_ENV, None)
    run_parts.end_part(plan.run_dir, part, _finished_count(plan.run_dir), result.outcome)
    manifest.inputs["parts"] = run_parts.summary(plan.run_dir)
    manifest.write(plan.run_dir / "batch_manifest.json")
    return result


def check_options(hours: float | None, reserve_hours: float | None, report_only: bool = False) -> None:
    """The part's options, checked before anything reads, writes or moves a run folder (a refused command must
    leave the run as it was): ``hours`` > 0 when given, ``reserve_hours`` >= 0 when given, no ``hours`` with
    ``report_only``. Raises :class:`BatchError` naming the option."""
    if hours is not None and not hours > 0:  # also refuses NaN
        raise BatchError(f"--hours must be > 0, got {hours}")
    if reserve_hours is not None and not reserve_hours >= 0:
        raise BatchError(f"--reserve-hours must be >= 0, got {reserve_hours}")
    if report_only and hours is not None:
        raise BatchError("--report-only runs no units: --hours does not apply")


def _report_chain(plan: BatchPlan, notebook_paths: Sequence[Path], kernel: str, log_output: bool,
                  cwd: Path) -> ChainResult:
    """A report-only pass of :func:`run_chain` (identity already checked): no deadline, no durable cache, no part."""
    import os

    from . import run_parts

    os.environ.pop(run_parts.DEADLINE_ENV, None)
    os.environ.pop(DURABLE_ENV, None)
    out_dir = plan.run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = build_manifest("report", parameters=plan.parameters,
                              inputs={"notebooks": [p.name for p in notebook_paths], "report_only": True})
    result = ChainResult(plan)
    _run_notebooks(plan, notebook_paths, out_dir, manifest, result, kernel, log_output, cwd, RESERVE_HOURS)
    manifest.write(plan.run_dir / "report_manifest.json")
    return result


def _run_notebooks(plan: BatchPlan, notebook_paths: Sequence[Path], out_dir: Path, manifest: Any,
                   result: ChainResult, kernel: str, log_output: bool, cwd: Path,
                   reserve_hours: float = RESERVE_HOURS) -> None:
    """The notebooks of one part, in order (see :func:`run_chain`); stops early at the part's deadline."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    for nb in notebook_paths:
        left = _too_late_for(nb, reserve_hours)
        if left is not None:
            log.info("[%s] %s not started: %.2f h left before the part's deadline, it needs --reserve-hours %.2f "
                     "(%s); the next part runs it", plan.label, nb.name, left, reserve_hours, NOT_RESUMABLE[nb.stem])
            result.outcome = "deadline"
            return
        target = out_dir / nb.name
        log.info("[%s] running %s", plan.label, nb.name)
        start = time.perf_counter()
        try:
            pm.execute_notebook(_shown(nb), _shown(target), parameters=declared_parameters(nb, plan.parameters),
                                kernel_name=kernel,
                                cwd=str(cwd), log_output=log_output, progress_bar=False)
        except PapermillExecutionError as err:
            manifest.time(nb.name, time.perf_counter() - start)
            if err.ename == "DeadlineReached":  # the part's time is up: not a failure, the next part resumes
                log.info("[%s] %s stopped at the part's deadline; run the same command again to continue",
                         plan.label, nb.name)
                result.outcome = "deadline"
                return
            manifest.inputs["failed"] = nb.name
            manifest.write(plan.run_dir / "batch_manifest.json")
            raise BatchError(f"notebook {nb.name} failed in cell {err.exec_count}: {err.ename}: {err.evalue}\n"
                             f"  executed copy (with the traceback): {target}") from None
        except Exception as err:  # kernel missing, bad notebook file, ...
            raise BatchError(f"notebook {nb.name} could not be run: {type(err).__name__}: {err}") from err
        seconds = time.perf_counter() - start
        manifest.time(nb.name, seconds)
        manifest.add(target, root=plan.run_dir)
        manifest.add_skipped(skipped_in(plan.run_dir))
        result.executed.append(target)
        result.seconds[nb.name] = seconds
        log.info("[%s] %s done in %.1f s", plan.label, nb.name, seconds)


def _shown(path: Path) -> str:
    """``path`` relative to this process's working directory when it lies below it (papermill records the paths it
    is given in the executed notebook's metadata: a committed copy then names no machine's folders), else as is."""
    import os

    try:
        return Path(path).resolve().relative_to(Path(os.getcwd()).resolve()).as_posix()
    except ValueError:
        return str(path)


def declared_parameters(nb: Path, parameters: dict[str, Any]) -> dict[str, Any]:
    """The chain's ``parameters`` that notebook ``nb`` declares in its parameters cell (papermill's
    ``inspect_notebook``). The others would only be injected as unused variables, with papermill's warning
    "Passed unknown parameter" for each: a notebook reads only the names it declares
    (:func:`memla_utils.notebook_setup.start_notebook`), and every notebook declares every ``RunConfig`` field, so
    leaving them out changes nothing it computes (``tests/unit/test_batch.py``)."""
    import papermill as pm

    declared = pm.inspect_notebook(str(nb))
    if not declared:
        raise BatchError(f"{nb}: no cell tagged 'parameters', so no parameter of the run could reach it")
    return {k: v for k, v in parameters.items() if k in declared}


def executor_environment(executor: str, address: str | None = None) -> dict[str, str]:
    """Hand ``--executor``/``--address`` to the notebooks' kernels (which inherit this process's environment):
    ``run_experiment`` reads ``$MEMLA_EXECUTOR`` / ``$MEMLA_RAY_ADDRESS`` (see :mod:`memla_utils.executors`).
    Checks that ray is importable before any notebook runs. Returns the variables set."""
    import os

    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise BatchError("--executor ray needs ray in this environment: pip install '.[cluster]'") from None
    env = {"MEMLA_EXECUTOR": executor}
    if address:
        env["MEMLA_RAY_ADDRESS"] = address
    else:
        os.environ.pop("MEMLA_RAY_ADDRESS", None)
    os.environ.update(env)
    return env


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m memla_utils.batch", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None,
                    help="named configuration (small: CPU default; full: 12 languages, all methods, GPU)")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                    help="notebook parameter passed to every notebook (repeatable), e.g. -p n_records=5")
    ap.add_argument("--matrix", action="append", default=[], metavar="NAME=V1;V2",
                    help="run the chain once per value (';'-separated), e.g. --matrix 'languages=en,zh,fr;en,de'")
    ap.add_argument("--models", default="", help="comma-separated models; the chain runs once per model")
    ap.add_argument("--only", default="", help="comma-separated notebook numbers to run (default: all), e.g. 06,07")
    ap.add_argument("--notebooks-dir", type=Path, default=NOTEBOOKS_DIR, help=argparse.SUPPRESS)
    ap.add_argument("--kernel", default=KERNEL, help="Jupyter kernel (default: memla)")
    ap.add_argument("--log-output", action="store_true", help="stream the notebooks' output to the terminal")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    ap.add_argument("--executor", choices=("auto", "local", "processes", "ray"), default=None,
                    help="where run_experiment runs its units (notebooks 04-06): auto (processes on a CPU, local "
                         "on a GPU), processes ($MEMLA_WORKERS local processes, one thread per unit), local (the "
                         "notebook's process), or Ray tasks, one GPU each (pip install .[cluster]); passed on as "
                         "$MEMLA_EXECUTOR (default: leave the environment as it is, i.e. auto)")
    ap.add_argument("--hours", type=float, default=None,
                    help="end this part of the run after about this many hours, between two units (a multi-"
                         "session run such as the medium preset; the next call resumes; parts.json records each)")
    ap.add_argument("--reserve-hours", type=float, default=None,
                    help="with --hours: do not start a notebook that cannot stop at the deadline (06, the general-"
                         f"ability study) with fewer hours left (default {RESERVE_HOURS}; "
                         + ", ".join(f"{k} {v}" for k, v in RESERVE_HOURS_BY_PRESET.items())
                         + "); the next part runs it")
    ap.add_argument("--restart-run", action="store_true",
                    help="start the run over when its recorded code, lock file, model, records or parameters differ "
                         "(earlier results are moved to <run_dir>/superseded-<time>/); without it a medium-preset "
                         "run refuses, any other run restarts")
    ap.add_argument("--report-only", action="store_true",
                    help="run notebook 07 alone on a run's committed results (tables, figures, claims), on this "
                         "checkout's report code: the run's code and lock file need not be checked out (differences "
                         "are logged), its model, records and parameters must match; records no part")
    ap.add_argument("--address", default=None,
                    help="with --executor ray: the Ray cluster to join ('auto' = the one this node belongs to, "
                         "or host:port); without it each notebook starts a local cluster")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.address and args.executor != "ray":
        ap.error("--address needs --executor ray")
    try:
        check_options(args.hours, args.reserve_hours, args.report_only)
        if args.executor:
            executor_environment(args.executor, args.address)
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        plans = plan_runs(args.preset, parse_assignments(args.param), parse_matrix(args.matrix), models)
        only = [o.strip() for o in args.only.split(",") if o.strip()]
        default = REPORT_NOTEBOOKS if args.report_only else PRESET_NOTEBOOKS.get(args.preset or "", ())
        paths = notebooks(args.notebooks_dir, only or list(default))
        for plan in plans:
            log.info("chain %s: run_dir=%s parameters=%s", plan.label, plan.run_dir, plan.parameters)
        if args.dry_run:
            missing = []
            for plan in plans:
                source, found = records_source(plan)
                missing += [] if found else [f"{plan.label}: {source}"]
                print(f"{plan.label}: {' '.join(p.name for p in paths)}\n  executed notebooks -> "
                      f"{plan.run_dir / 'notebooks'}\n  figures/tables -> {plan.parameters['figures_dir']}\n"
                      f"  records -> {source}\n  parameters: {plan.parameters}")
            if missing:  # the real run would stop here: say so with the same exit status
                raise BatchError("the records of " + "; ".join(missing))
            return 0
        for plan in plans:
            res = run_chain(plan, notebook_paths=paths, kernel=args.kernel, log_output=args.log_output,
                            hours=args.hours, restart=True if args.restart_run else None, preset=args.preset,
                            reserve_hours=reserve_hours_for(args.preset) if args.reserve_hours is None
                            else args.reserve_hours, report_only=args.report_only)
            log.info("chain %s %s: %d notebooks, %.0f s", plan.label,
                     "finished" if res.outcome == "complete" else "stopped at the deadline (run again to resume)",
                     len(res.executed), sum(res.seconds.values()))
            if res.outcome != "complete":
                break
    except BatchError as err:
        print(f"batch: {err}", file=sys.stderr)
        return 1
    return 0


__all__ = ["KERNEL", "MULTI_SESSION_PRESETS", "NOT_RESUMABLE", "NOTEBOOKS_DIR", "PRESET_NOTEBOOKS", "RESERVE_HOURS_BY_PRESET", "REPORT_NOTEBOOKS", "RESERVE_HOURS", "SHARED_PARAMETERS", "SOURCE_PARAMETERS", "BatchError",
           "BatchPlan", "ChainResult", "build_parser", "check_identity", "check_options", "declared_parameters", "executor_environment", "main", "notebooks",
           "parse_assignments", "parse_matrix", "parse_value", "plan_runs", "preset_parameters", "records_source",
           "reserve_hours_for",
           "run_chain", "slug"]


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
