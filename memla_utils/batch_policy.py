"""Policy of a batch run, before any notebook runs: which presets are built in parts over several sessions and
which notebooks they run, how much time a notebook that cannot stop at a part's deadline needs, and the run's
identity check (:mod:`memla_utils.run_identity`) that refuses to extend a run started with other inputs.

:mod:`memla_utils.batch` runs the chains and re-exports these names (``batch.MULTI_SESSION_PRESETS``, ...).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from .batch_plan import BatchError, BatchPlan, _as_param
from .config import NOTEBOOK_PARAMETERS, RunConfig

log = logging.getLogger("memla_utils.batch")


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


def _too_late_for(nb: Path, reserve_hours: float) -> float | None:
    """Hours left before the part's deadline when ``nb`` is :data:`NOT_RESUMABLE` and fewer than
    ``reserve_hours`` remain; ``None`` when it may start."""
    from .run_parts import deadline_from_env

    deadline = deadline_from_env()
    if deadline is None or nb.stem not in NOT_RESUMABLE:
        return None
    left = (deadline - time.time()) / 3600
    return left if left < reserve_hours else None
