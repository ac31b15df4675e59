"""A run folder's result files: one resumable JSONL file per shard, its manifest, and reading them back.

Layout (written by :mod:`memla_utils.runner` and every executor, read by the report): ``results-shardIIIofNNN.jsonl``
holds tidy rows ``{record, method, edit_lang, eval_lang, metric, value, n, kind, message, attempt}``; every unit
(record, edit language, method) ends with a ``done`` marker row carrying its attempt id, so a unit cut by an
interruption (no marker) is ignored and rerun, and of several finished attempts the first is kept. The rows read
back come in one canonical order (by unit, :func:`canonical_order`), whatever the number of shard files and
however the units were spread over them.
``manifest.json`` names the model (by fingerprint), the evaluation languages, every unit ever planned and the
records the pre-flight skipped. Nothing here computes a metric; a non-finite value read back raises
:class:`memla_utils.finite.NonFiniteError` naming the row.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .cache import write_json_atomic
from .finite import require_finite
from .languages import ordered
from .manifest import skipped_in

if TYPE_CHECKING:
    from .models import LoadedModel

log = logging.getLogger(__name__)

COLUMNS = ["record", "method", "edit_lang", "eval_lang", "metric", "value", "n"]
#: Rows of kind ``"edit"`` that measure this run on this machine (wall clock, memory), not the edit's outcome;
#: and the column naming a unit's attempt (a random id). Two runs of the same configuration differ only there.
RUN_SPECIFIC_METRICS: tuple[str, ...] = ("seconds", "eval_seconds", "peak_rss_mb", "peak_memory_mb")
RUN_SPECIFIC_COLUMNS: tuple[str, ...] = ("attempt",)
#: The columns naming a unit of work, in the order :func:`load_results` sorts rows by.
UNIT_KEY: tuple[str, ...] = ("record", "edit_lang", "method")


def parse_shard(shard: str) -> tuple[int, int]:
    """``"i/n"`` → (i, n) with 0 <= i < n; anything else is a clear error."""
    try:
        i_s, n_s = str(shard).split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise ValueError(f"shard must look like 'i/n' (e.g. '0/4'), got {shard!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {shard!r}: need 0 <= i < n and n >= 1")
    return i, n


def shard_file(run_dir: Path, shard: str) -> Path:
    i, n = parse_shard(shard)
    return run_dir / f"results-shard{i:03d}of{n:03d}.jsonl"


def _read_rows(run_dir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(Path(run_dir).glob("results-shard*.jsonl")):
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by an interruption: its unit has no done marker
                    log.warning("%s:%d: skipping unreadable line (interrupted write)", path.name, lineno)
    return rows


def _complete_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of finished units only, one finished attempt per unit (the first), so nothing is duplicated."""
    chosen: dict[tuple[str, str, str], str] = {}
    for r in rows:
        if r.get("kind") == "done":
            chosen.setdefault((r["record"], r["edit_lang"], r["method"]), r["attempt"])
    keep = set(chosen.values())
    return [r for r in rows if r.get("attempt") in keep and r.get("kind") != "done"]


def finished_units(run_dir: str | Path) -> set[tuple[str, str, str]]:
    """(record, edit_lang, method) of every unit some shard has finished."""
    return {(r["record"], r["edit_lang"], r["method"]) for r in _read_rows(Path(run_dir)) if r.get("kind") == "done"}


def append_rows(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if path.exists() and path.stat().st_size:
        with path.open("rb") as fh:  # a line cut by an interruption must not swallow the next row
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                text = "\n" + text
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def write_manifest(run_dir: Path, lm: LoadedModel, units: Sequence[Any], eval_languages: Sequence[str],
                    skipped: Sequence[dict[str, Any]] = ()) -> None:
    path = run_dir / "manifest.json"
    old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    if old is not None and old.get("model_fingerprint") != lm.fingerprint:
        raise ValueError(f"run_dir {str(run_dir)!r} holds results of another model ({old.get('model')}, "
                         f"fingerprint {old.get('model_fingerprint')}); use a new run_dir for {lm.name}")
    have = {tuple(u) for u in (old or {}).get("units", [])}
    all_units = sorted(have | {u.as_tuple() for u in units})
    langs = sorted(set((old or {}).get("eval_languages", [])) | set(eval_languages))
    manifest = {"model": lm.name, "model_fingerprint": lm.fingerprint, "eval_languages": ordered(langs),
                "units": [list(u) for u in all_units]}
    skips = _merge_skipped((old or {}).get("skipped", []), skipped)
    if skips or "skipped" in (old or {}):
        manifest["skipped"] = skips
    if manifest != old:
        write_json_atomic(path, manifest, indent=1)


def _merge_skipped(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per skipped record (the first reasons recorded for it win), sorted by record id."""
    by_id: dict[str, dict[str, Any]] = {}
    for entry in [*old, *new]:
        by_id.setdefault(str(entry["record"]), dict(entry))
    return [by_id[k] for k in sorted(by_id)]


def skipped_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records a run folder's pre-flight skipped: ``[{record, reason, problems: [{language, method,
    reason}, ...]}]`` (empty when none were skipped or nothing has run yet)."""
    return skipped_in(run_dir)


def _checked_rows(rows: list[dict[str, Any]], run_dir: Path) -> list[dict[str, Any]]:
    """Rows of records the manifest does not list as skipped; a non-finite value (a file written before the
    checks, or edited by hand) raises ``NonFiniteError`` naming the row."""
    skipped = {str(e["record"]) for e in skipped_records(run_dir)}
    out = []
    for r in rows:
        if r.get("record") in skipped:
            continue
        if r.get("value") is not None:
            require_finite(r["value"], f"{run_dir}: row of record {r.get('record')!r}, method {r.get('method')!r}, "
                                       f"edit language {r.get('edit_lang')!r}, evaluation language "
                                       f"{r.get('eval_lang')!r}, metric {r.get('metric')!r}")
        out.append(r)
    if len(out) < len(rows) and skipped:
        log.info("%s: left out %d row(s) of %d record(s) the pre-flight skipped", run_dir, len(rows) - len(out),
                 len(skipped))
    return out


def canonical_order(df: pd.DataFrame) -> pd.DataFrame:
    """``df``'s rows sorted by unit (:data:`UNIT_KEY`: record, edit language, method), each unit's rows kept in the
    order they come in; index reset.

    Which shard file holds a unit, and where in it, depends on the number of workers and on timing; the order
    of the rows must not (a seeded bootstrap indexes values by position, a float sum depends on its order). The
    sort compares each key as text, missing values (None / NaN) last, and breaks ties by position, so it neither
    fails on a missing or mixed-type key nor depends on the sort algorithm's stability.
    """
    keys: dict[str, np.ndarray] = {}
    for i, col in enumerate(UNIT_KEY):
        missing = df[col].isna().to_numpy()
        keys[f"missing{i}"] = missing
        keys[f"text{i}"] = df[col].where(~missing, "").astype(str).to_numpy()
    order = pd.DataFrame(keys).assign(position=range(len(df)))
    return df.iloc[order.sort_values(list(order.columns), kind="stable")["position"].to_numpy()].reset_index(drop=True)


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """All finished rows of every shard: columns record, method, edit_lang, eval_lang, metric, value, n, kind, message.

    Rows of records the run's pre-flight skipped (:func:`skipped_records`) are left out, so every method is
    compared on the same records; a non-finite value raises ``NonFiniteError``.

    The order is canonical (:func:`canonical_order`): sorted by unit (record, edit language, method), each unit's
    rows in the order the runner wrote them. It does not depend on how the units were spread over shard files
    (the number of workers) or on which unit finished first, so the same results give the same numbers: the
    report's bootstrap indexes values by position, and a float mean depends on the order of its terms.
    """
    rows = _checked_rows(_complete_rows(_read_rows(Path(run_dir))), Path(run_dir))
    df = pd.DataFrame(rows, columns=[*COLUMNS, "kind", "message"])
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    df["n"] = pd.to_numeric(df["n"], errors="coerce").fillna(0).astype(int)
    return canonical_order(df)


def merge_results(run_dir: str | Path, *, strict: bool = True) -> pd.DataFrame:
    """Every shard's rows as one table; ``strict``: raise if a unit of the manifest is missing."""
    run_dir = Path(run_dir)
    df = load_results(run_dir)
    manifest = run_dir / "manifest.json"
    if manifest.exists():
        skipped = {str(e["record"]) for e in skipped_records(run_dir)}
        want = {tuple(u) for u in json.loads(manifest.read_text(encoding="utf-8"))["units"] if u[0] not in skipped}
        missing = sorted(want - finished_units(run_dir))
        if missing:
            msg = f"{run_dir}: {len(missing)} of {len(want)} units not finished, e.g. {missing[:3]}"
            if strict:
                raise ValueError(msg + " (run the missing shards, or merge with strict=False)")
            log.warning(msg)
    key = ["record", "method", "edit_lang", "eval_lang", "metric"]
    dup = df[df.duplicated(key, keep=False)]
    if len(dup):  # cannot happen with one attempt per unit; guard against hand-edited files
        raise ValueError(f"{run_dir}: duplicate result rows, e.g. {dup.head(3).to_dict('records')}")
    return df


__all__ = ["COLUMNS", "RUN_SPECIFIC_COLUMNS", "RUN_SPECIFIC_METRICS", "UNIT_KEY", "append_rows", "canonical_order",
           "finished_units", "load_results", "merge_results", "parse_shard", "shard_file", "skipped_records",
           "write_manifest"]
