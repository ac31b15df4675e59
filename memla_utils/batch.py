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

Parsing the command line's parameters and planning the chains is :mod:`memla_utils.batch_plan` (re-exported
here); this module runs them: the run's identity check, one part of a multi-session run (deadline, durable
cache, ``parts.json``), papermill, and the command line itself.
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
    _as_param,
    notebooks,
    parse_assignments,
    parse_matrix,
    parse_value,
    plan_runs,
    preset_parameters,
    slug,
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


#: Presets whose runs are built in parts over several sessions: a part refuses to extend a run started with other
#: code, lock file, model, records or parameters (``--restart-run`` moves the earlier results aside). Every other
#: run is restarted (earlier results moved aside) when its inputs changed, so no run mixes two versions.
MULTI_SESSION_PRESETS: tuple[str, ...] = ("medium", "medium-paper", "mzsre", "bizsre")
#: Presets that run only some notebooks (``--only`` overrides): ``medium-paper`` re-runs the medium run's baselines
#: at the paper's budget (notebook 05) and reports them with the medium run's MEMLA (notebook 07's base run); it
#: has no MEMLA method, so notebooks 02-04 and 06 would only repeat the medium run's attribution and masks.
PRESET_NOTEBOOKS: dict[str, tuple[str, ...]] = {"medium-paper": ("00", "01", "05", "07")}

#: Notebooks that do not stop at a part's deadline and keep nothing of an unfinished run (notebook file stem ->
#: why): a part does not start one with less than ``reserve_hours`` before its deadline (``--reserve-hours``), so
#: it can neither run past the deadline (and the session's end) nor be cut and lose its work.
NOT_RESUMABLE: dict[str, str] = {
    "06_multihop_general": "the general-ability study checks no deadline and writes its rows at the end",
}
#: Default of ``--reserve-hours``: the medium preset's notebook 06 (20 single MEMLA edits, each probed in 12
#: languages at about 212 s, and 10/20 sequential edits) is about 1.3 h on the 2-core machine (README, medium run),
#: with a margin for a shared machine.
RESERVE_HOURS = 2.0
#: ``--reserve-hours`` of presets whose notebook 06 is far smaller than the medium run's: the MzsRE / Bi-ZsRE runs
#: have under 100 records, so notebook 06's ``auto`` settings measure MEMLA on 2 single edits and 1/3/5 sequential
#: edits, as the small preset does (503 s there on 4 languages; MzsRE probes 8 prose languages, Bi-ZsRE 2). With the
#: medium run's 2.0 a 2.4 h part stopped before notebook 06 whenever notebook 05 ended with under 2 h left.
RESERVE_HOURS_BY_PRESET: dict[str, float] = {"mzsre": 0.5, "bizsre": 0.5}


def reserve_hours_for(preset: str | None) -> float:
    """The default ``--reserve-hours`` of ``preset`` (:data:`RESERVE_HOURS_BY_PRESET`, else :data:`RESERVE_HOURS`)."""
    return RESERVE_HOURS_BY_PRESET.get(preset or "", RESERVE_HOURS)

#: The notebooks a report-only pass runs (``--report-only``): they read the run's results and compute nothing into
#: them (notebook 07: every table, figure and the claims table, ``report.write_report``).
REPORT_NOTEBOOKS: tuple[str, ...] = ("07",)


def check_identity(plan: BatchPlan, *, restart: bool, report_only: bool = False) -> Path:
    """Record / compare the run's identity (:mod:`memla_utils.run_identity`) before any notebook runs.

    The identity is the package code per stage, the lock file, the model parameters, the run's records (read
    with :meth:`RunConfig.run_records`) and the chain's parameters. Raises :class:`BatchError` with every
    difference when the run folder was started with other inputs and ``restart`` is false. With ``report_only``
    the code and lock file may differ (logged as a warning: the report is recomputed on this checkout from results
    computed on the recorded code), nothing is recorded, and any other difference, or no run at all, is an error
    (:func:`memla_utils.run_identity.check_report_identity`).
    """
    from .run_identity import IDENTITY_FILE, RunIdentityError, check_report_identity, check_run_identity, run_identity

    declared = {k: v for k, v in plan.parameters.items() if k in NOTEBOOK_PARAMETERS}
    cfg = RunConfig.from_params(**declared)
    try:
        records, _ = cfg.run_records()
    except (OSError, ValueError) as err:  # missing data, a language the dataset lacks, too few records, ...
        raise BatchError(f"the run's records cannot be read ({plan.run_dir}): {err}") from None
    model = f"{cfg.model} ({cfg.dtype} on {cfg.device}{_cpu_threads(plan, cfg)})"
    identity = run_identity(model, records, {k: _as_param(v) for k, v in plan.parameters.items()})
    try:
        if report_only:
            changed = check_report_identity(plan.run_dir, identity)
            if changed:
                log.warning("[%s] report only: the results were computed with other code than this checkout's (%s); "
                            "the report is recomputed from them with this checkout's report code", plan.label,
                            "; ".join(changed))
            return plan.run_dir / IDENTITY_FILE
        return check_run_identity(plan.run_dir, identity, restart=restart)
    except RunIdentityError as err:
        raise BatchError(str(err)) from None


def _cpu_threads(plan: BatchPlan, cfg: RunConfig) -> str:
    """``", N CPU threads, units on 1 thread each"`` for a CPU run (empty otherwise): float32 sums are split by
    thread, so the same code on another thread count gives other last bits (attribution scores of one prompt: up
    to 1e-8 apart between 1 and 2 threads), and a threshold can fall the other way. The notebooks use
    ``torch_threads`` when set, else torch's default for the machine, which this process has too; the units of
    notebooks 04-06 run on one thread each unless the executor is ``local`` (:mod:`memla_utils.executors`), so
    the number of worker processes does not enter the identity."""
    if not str(cfg.device).startswith("cpu"):
        return ""
    import os

    import torch

    threads = int(plan.parameters.get("torch_threads") or 0) or torch.get_num_threads()
    executor = os.environ.get("MEMLA_EXECUTOR", "auto").strip().lower() or "auto"
    units = f"{threads} threads" if executor == "local" else "1 thread each"
    return f", {threads} CPU threads, units on {units}"


def records_source(plan: BatchPlan) -> str:
    """Where the plan's records come from, for ``--dry-run``: the dataset and its path, and whether it is there
    (nothing is read)."""
    cfg = RunConfig.from_params(**{k: v for k, v in plan.parameters.items() if k in NOTEBOOK_PARAMETERS})
    path = cfg.source_path()
    if path.exists():
        return f"dataset {cfg.dataset}: {path}"
    where = "parameter shared_data_dir" if cfg.dataset != "mkeb" else "parameter mkeb_path"
    return f"dataset {cfg.dataset}: {path} (NOT FOUND: see {where})"


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

    if report_only:
        if hours is not None:
            raise BatchError("--report-only runs no units: --hours does not apply")
        other = [p.name for p in notebook_paths if not p.name.startswith(REPORT_NOTEBOOKS)]
        if other:
            raise BatchError(f"--report-only runs only notebooks {list(REPORT_NOTEBOOKS)}, not {other}")
        check_identity(plan, restart=False, report_only=True)
        return _report_chain(plan, notebook_paths, kernel, log_output, cwd)
    check_identity(plan, restart=(preset not in MULTI_SESSION_PRESETS) if restart is None else restart)
    out_dir = plan.run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = build_manifest("batch", parameters=plan.parameters, inputs={"notebooks": [p.name for p in
                                                                                           notebook_paths]})
    result = ChainResult(plan)
    if not reserve_hours >= 0:
        raise BatchError(f"--reserve-hours must be >= 0, got {reserve_hours}")
    if hours is not None:
        if not hours > 0:
            raise BatchError(f"--hours must be > 0, got {hours}")
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


def _too_late_for(nb: Path, reserve_hours: float) -> float | None:
    """Hours left before the part's deadline when ``nb`` is :data:`NOT_RESUMABLE` and fewer than
    ``reserve_hours`` remain; ``None`` when it may start."""
    from .run_parts import deadline_from_env

    deadline = deadline_from_env()
    if deadline is None or nb.stem not in NOT_RESUMABLE:
        return None
    left = (deadline - time.time()) / 3600
    return left if left < reserve_hours else None


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
            pm.execute_notebook(str(nb), str(target), parameters=plan.parameters, kernel_name=kernel,
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
            for plan in plans:
                print(f"{plan.label}: {' '.join(p.name for p in paths)}\n  executed notebooks -> "
                      f"{plan.run_dir / 'notebooks'}\n  figures/tables -> {plan.parameters['figures_dir']}\n"
                      f"  records -> {records_source(plan)}\n  parameters: {plan.parameters}")
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
           "BatchPlan", "ChainResult", "build_parser", "check_identity", "executor_environment", "main", "notebooks",
           "parse_assignments", "parse_matrix", "parse_value", "plan_runs", "preset_parameters", "records_source",
           "reserve_hours_for",
           "run_chain", "slug"]


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
