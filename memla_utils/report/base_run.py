"""A report over two runs on the same records: this run's methods, and a finished *base run* for the rest.

Issue 16's medium run ran its baselines at the ``cpu-small`` budget. The ``medium-paper`` preset re-runs only the
baselines, at the ``paper`` budget, in its own run folder; MEMLA, LSE and LIE, notebook 06's general ability and
the neuron statistics of notebooks 02-03 stay those of the medium run (``results/medium``), which computed them with
memla4mke's settings. Notebook 07's ``base_run_dir`` names that base run, and :func:`load_base_run` gives the
report what it borrows from it:

* the results rows of every method this run does not run (``unedited`` only when this run has none);
* notebook 06's rows, the suppression effects (notebook 02), the mask statistics (notebook 03) and the knowledge
  probe (notebook 00) where this run has none of its own.

Both runs must be one experiment apart from their methods and baseline budget: :func:`check_base_run` compares
the base run's recorded identity (``run_identity.json``) with this run's configuration and raises
:class:`BaseRunError` naming every difference in model, dtype, seed, records (their content hash), languages, edit
languages and record selection. The code may differ (the base run's parts ran on its own recorded code); the
report's ``run_sources`` table and manifest say which run, budget and code hashes every method's numbers come from.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..cache import PROJECT_ROOT
from .inputs import find_table, load_general_table, load_mask_stats, load_results_table

#: The run parameters (RunConfig fields) both runs must share, besides the records' content hash.
MUST_MATCH: tuple[str, ...] = ("model", "dtype", "seed", "languages", "edit_languages", "n_records",
                               "record_selection", "dataset")
#: The method every (record, edit language) evaluates without an edit: taken from the base run only when this
#: run has none of its rows.
UNEDITED = "unedited"


class BaseRunError(ValueError):
    """The base run is missing, unreadable, or not the same experiment as this run (the message names each
    difference)."""


@dataclass
class BaseRun:
    """What a report borrows from a base run (:func:`load_base_run`)."""

    run_dir: Path
    figures_dir: Path
    identity: dict[str, Any]
    results: pd.DataFrame
    general: pd.DataFrame
    suppression: pd.DataFrame | None
    masks: pd.DataFrame | None
    probe: pd.DataFrame | None
    borrowed_methods: list[str] = field(default_factory=list)

    @property
    def budget(self) -> str:
        """The base run's notebook 05 ``budget`` parameter as recorded (``auto`` when it set none)."""
        return str(self.identity.get("parameters", {}).get("budget", "auto"))

    def digest(self) -> str:
        """sha256 (16 hex) of the base run's identity file: which run the borrowed numbers come from."""
        return hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:16]


def _resolve(path: str | Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else PROJECT_ROOT / p


def read_identity(run_dir: Path) -> dict[str, Any]:
    """The base run's ``run_identity.json`` as a dict (BaseRunError naming the path when absent or unreadable)."""
    from ..run_identity import IDENTITY_FILE

    path = run_dir / IDENTITY_FILE
    if not path.is_file():
        raise BaseRunError(f"parameter base_run_dir: {path} is missing, so {run_dir} holds no run made by the batch "
                           "driver to borrow results from")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise BaseRunError(f"parameter base_run_dir: {path} is unreadable ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("parameters"), dict) or "records" not in data:
        raise BaseRunError(f"parameter base_run_dir: {path} lacks 'parameters' or 'records'")
    return data


def check_base_run(cfg: Any, identity: dict[str, Any]) -> None:
    """Raise :class:`BaseRunError` naming every field of :data:`MUST_MATCH` and the records' content hash in which
    the base run (``identity``, its recorded run identity) differs from this run (``cfg``, a RunConfig)."""
    from ..config import NOTEBOOK_PARAMETERS, RunConfig
    from ..run_identity import records_hash

    declared = {k: v for k, v in identity["parameters"].items() if k in NOTEBOOK_PARAMETERS}
    try:
        base_cfg = RunConfig.from_params(**declared)
    except (TypeError, ValueError) as err:
        raise BaseRunError(f"parameter base_run_dir: the base run's recorded parameters do not form a run "
                           f"configuration ({err})") from err
    diff = [f"{name}: {getattr(base_cfg, name)!r} (base run) vs {getattr(cfg, name)!r} (this run)"
            for name in MUST_MATCH if getattr(base_cfg, name) != getattr(cfg, name)]
    try:
        own = records_hash(cfg.run_records()[0])
    except (OSError, ValueError) as err:
        raise BaseRunError(f"parameter base_run_dir: this run's records cannot be read to compare them ({err})") \
            from err
    if own != identity["records"]:
        diff.append(f"records (content hash): {identity['records']} (base run) vs {own} (this run)")
    if diff:
        raise BaseRunError("parameter base_run_dir: the base run is not the same experiment as this run, so its "
                           "results cannot stand in for this run's methods: " + "; ".join(diff))


def merge_results(own: pd.DataFrame, base: pd.DataFrame, own_methods: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """This run's rows plus the base run's rows of every method this run neither runs (``own_methods``) nor has
    rows for; ``unedited`` rows come from the base run only when this run has none. Returns the rows and the
    borrowed methods (sorted)."""
    have = set(own["method"]) if not own.empty else set()
    keep_own = set(own_methods) | have
    if UNEDITED not in have:
        keep_own.discard(UNEDITED)
    if base.empty:
        return own, []
    borrowed = base[~base["method"].isin(keep_own)]
    merged = pd.concat([own, borrowed], ignore_index=True) if not own.empty else borrowed.reset_index(drop=True)
    return merged, sorted(set(borrowed["method"]))


def unedited_agreement(own: pd.DataFrame, base: pd.DataFrame, tol: float = 1e-9) -> dict[str, Any]:
    """Whether both runs score the unedited model alike: the evidence that one report may set their methods side
    by side although each run evaluated on its own recorded code. Compares every ``unedited`` row present in both
    (same record, edit language, evaluation language and metric, both values finite). Returns ``compared`` (rows),
    ``differing`` (``|Δ| > tol``), ``max_abs_diff`` (``None`` when nothing is compared) and ``metrics_differing``
    (the metrics of the differing rows)."""
    from ..runner import RUN_SPECIFIC_METRICS  # wall-clock seconds measure the run, not the model

    key = ["record", "edit_lang", "eval_lang", "metric"]
    a = own[(own["method"] == UNEDITED) & ~own["metric"].isin(RUN_SPECIFIC_METRICS)] if not own.empty else own
    b = base[(base["method"] == UNEDITED) & ~base["metric"].isin(RUN_SPECIFIC_METRICS)] if not base.empty else base
    if a.empty or b.empty:
        return {"compared": 0, "differing": 0, "max_abs_diff": None, "metrics_differing": []}
    m = a[[*key, "value"]].merge(b[[*key, "value"]], on=key, suffixes=("_own", "_base"))
    m = m[np.isfinite(m["value_own"].astype(float)) & np.isfinite(m["value_base"].astype(float))]
    diff = (m["value_own"].astype(float) - m["value_base"].astype(float)).abs()
    bad = m[diff > tol]
    return {"compared": int(len(m)), "differing": int(len(bad)),
            "max_abs_diff": float(diff.max()) if len(m) else None,
            "metrics_differing": sorted(set(bad["metric"]))}


def load_base_run(base_run_dir: str | Path, cfg: Any) -> BaseRun:
    """Read and check the base run (:func:`check_base_run`); its results and the notebooks' tables it holds.

    ``cfg`` is this run's RunConfig (BaseRunError when None: without it the records cannot be compared).
    """
    if cfg is None:
        raise BaseRunError("parameter base_run_dir needs the run configuration (write_report(cfg=...)) to check "
                           "that the base run has the same records")
    run_dir = _resolve(base_run_dir)
    identity = read_identity(run_dir)
    check_base_run(cfg, identity)
    figures_dir = _resolve(identity["parameters"].get("figures_dir", "figures"))
    tables = figures_dir / "tables"
    suppression = find_table(run_dir, "suppression")
    if suppression is None:
        suppression = find_table(tables, "kn_sanity_effects")
    return BaseRun(run_dir=run_dir, figures_dir=figures_dir, identity=identity,
                   results=load_results_table(run_dir), general=load_general_table(run_dir),
                   suppression=suppression, masks=load_mask_stats(run_dir),
                   probe=find_table(tables, "knowledge_probe"))


def run_sources(own_run_dir: Path, own_methods: Sequence[str], base: BaseRun) -> pd.DataFrame:
    """One row per method: the run folder its numbers come from, that run's notebook 05 budget and the code hash
    of its editing stage, as each run's ``run_identity.json`` records them (``unknown`` without one)."""
    from ..run_identity import IDENTITY_FILE

    own_identity: dict[str, Any] = {}
    path = Path(own_run_dir) / IDENTITY_FILE
    if path.is_file():
        own_identity = json.loads(path.read_text(encoding="utf-8"))

    def rel(p: Path) -> str:
        try:
            return Path(p).resolve().relative_to(PROJECT_ROOT).as_posix()
        except ValueError:
            return str(p)

    rows = [{"method": m, "run": rel(own_run_dir), "budget": budget_label(own_identity, m),
             "editing code": own_identity.get("code", {}).get("editing", "unknown")} for m in own_methods]
    rows += [{"method": m, "run": rel(base.run_dir), "budget": budget_label(base.identity, m),
              "editing code": base.identity.get("code", {}).get("editing", "unknown")}
             for m in base.borrowed_methods if m not in own_methods]
    return pd.DataFrame(rows, columns=["method", "run", "budget", "editing code"])


def budget_label(identity: Mapping[str, Any], method: str) -> str:
    """What notebook 05's ``budget`` meant for ``method`` in a run with this ``run_identity.json`` content: the
    budget it resolved to (``auto`` is ``cpu-small`` on a CPU, ``baselines.resolve_budget``), "auto -> cpu-small"
    when the run set none; "not a baseline" for the methods the budget does not touch (MEMLA, LSE, LIE and the
    mask ablations run memla4mke's settings, ``baselines.baseline_overrides``); ``unknown`` without an identity."""
    from ..baselines import BASELINES
    from ..config import recorded_budget

    if not identity:
        return "unknown"
    if method not in BASELINES:
        return "not a baseline (memla4mke's settings)"
    params = identity.get("parameters", {})
    raw, resolved = str(params.get("budget") or "auto"), recorded_budget(params)
    return resolved if raw == resolved else f"{raw} -> {resolved}"


__all__ = ["MUST_MATCH", "BaseRun", "BaseRunError", "budget_label", "check_base_run", "load_base_run",
           "merge_results", "read_identity", "run_sources", "unedited_agreement"]
