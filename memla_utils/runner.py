"""The experiment loop: records × edit languages × methods → edit, evaluate in every language, revert.

Results are tidy JSONL rows ``{record, method, edit_lang, eval_lang, metric, value, n}`` (plus ``kind``:
``metric`` / ``edit`` (seconds, peak memory, steps) / ``error``). Every unit (record, edit_lang, method) ends
with a ``done`` marker row, so an interrupted run resumes without redoing finished units and a half-written
unit is ignored. ``shard="i/n"`` takes a disjoint deterministic part of the work list (round robin) and writes
its own file; n processes, GPUs or machines (launched with plain processes, ``torchrun`` or
``accelerate launch``: pass ``shard=f"{RANK}/{WORLD_SIZE}"``) fill one run folder, and
:func:`merge_results` checks that the union has every unit exactly once.

Records a method cannot edit as written (a blank prompt, a subject that ROME/MEMIT/PMET cannot find in the
prompt, no ``target_true`` for a method that needs one) are found by a pre-flight pass before any method runs
(:func:`preflight`: every method's ``check_record`` in every edit language) and skipped for *every* method, so
all methods are compared on the same records. ``manifest.json`` lists them with the reasons
(:func:`skipped_records`), later calls on the same run folder skip them too, and :func:`load_results` leaves
out any rows an earlier call wrote for them. A non-finite metric raises
:class:`memla_utils.finite.NonFiniteError` naming record, method and languages instead of becoming a row.
"""
from __future__ import annotations

import json
import logging
import os
import resource
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from .cache import ArtifactCache, write_json_atomic
from .editors import Edit, RecordProblem, make_editor, record_problems
from .evaluate_metrics import PAPER_METRICS, EvalConfig, LanguageEvaluation, MetricValue, evaluate_record
from .evaluate_preedit import PreEditCache
from .finite import NonFiniteError, naming, require_finite
from .languages import ordered
from .manifest import skipped_in
from .neuron_masks import RecordMasks
from .mkeb.record import Record
from .models import LoadedModel
from .run_parts import check_deadline, deadline_from_env
from .seeds import unit_seed

log = logging.getLogger(__name__)

UNEDITED = "unedited"
COLUMNS = ["record", "method", "edit_lang", "eval_lang", "metric", "value", "n"]
#: Rows of kind ``"edit"`` that measure this run on this machine (wall clock, memory), not the edit's outcome;
#: and the column naming a unit's attempt (a random id). Two runs of the same configuration differ only there.
RUN_SPECIFIC_METRICS: tuple[str, ...] = ("seconds", "eval_seconds", "peak_rss_mb", "peak_memory_mb")
RUN_SPECIFIC_COLUMNS: tuple[str, ...] = ("attempt",)
MasksProvider = Callable[[Record, str], RecordMasks | None]


@dataclass(frozen=True, order=True)
class Unit:
    """One piece of work: edit ``record`` in ``edit_lang`` with ``method`` and evaluate it everywhere."""

    record: str
    edit_lang: str
    method: str

    def as_tuple(self) -> tuple[str, str, str]:
        return (self.record, self.edit_lang, self.method)


@dataclass
class RunnerConfig:
    """How :func:`run_experiment` runs. Defaults: the paper's protocol (one fact per edit, revert after each)."""

    eval_config: EvalConfig = field(default_factory=EvalConfig)
    include_unedited: bool = True             # reference rows of the model before editing (method "unedited")
    seed: int = 0                             # run seed: every editor gets it (its own per-unit draws derive
    #                                           from it) and torch is seeded per unit from it (seeds.unit_seed)
    editor_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> make_editor kwargs
    progress: bool = True                     # tqdm bar over the shard's units
    cache_preedit: bool = True                # keep unedited evaluations on disk (ArtifactCache)
    parallel_edits: int = 1                   # >1: editors with ``edit_parallel`` (MEMLA) train this many
    #                                           independent facts per batch; each is still applied, evaluated
    #                                           and reverted alone (the paper's protocol, same numbers)

    def __post_init__(self) -> None:
        if not isinstance(self.parallel_edits, int) or self.parallel_edits < 1:
            raise ValueError(f"RunnerConfig.parallel_edits must be a positive integer, got {self.parallel_edits!r}")


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


def work_units(records: Sequence[Record], methods: Sequence[str], edit_languages: Sequence[str], *,
               include_unedited: bool = True) -> list[Unit]:
    """The full, deterministic work list (record order as given, then edit language, then method)."""
    ids = [r.example_id for r in records]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"records have duplicate example_id(s) {dupes[:5]}; the runner keys results by them")
    meths = ([UNEDITED] if include_unedited else []) + [m for m in methods if m != UNEDITED]
    return [Unit(r, e, m) for r in ids for e in edit_languages for m in meths]


def shard_units(units: Sequence[Unit], shard: str) -> list[Unit]:
    """Round-robin share ``i`` of ``n`` (disjoint, covering, balanced across methods)."""
    i, n = parse_shard(shard)
    return list(units[i::n])


# ------------------------------------------------------------------------------------------ result files
def _shard_file(run_dir: Path, shard: str) -> Path:
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


def _append(path: Path, rows: Iterable[dict[str, Any]]) -> None:
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


def _write_manifest(run_dir: Path, lm: LoadedModel, units: list[Unit], eval_languages: Sequence[str],
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


# ------------------------------------------------------------------------------------------ pre-flight skips
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


def preflight(records: Sequence[Record], methods: Sequence[str], edit_languages: Sequence[str],
              eval_languages: Sequence[str], config: RunnerConfig | None = None, *,
              already_skipped: Sequence[dict[str, Any]] = ()) -> tuple[list[Record], list[dict[str, Any]]]:
    """Decide, before any method runs, which records the run uses: ``(kept records, skipped entries)``.

    A record lacking an edit or evaluation language is a configuration error (``RecordError``). A record with
    a blank prompt or answer in a language of the run, or that any method's ``check_record`` refuses in any
    edit language, is skipped for every method (entries name the record, language, method and reason); so is a
    record an earlier call on the same run folder skipped (``already_skipped``). Pure checks: no model needed.
    """
    config = config or RunnerConfig()
    editors = {m: make_editor(m, **config.editor_overrides.get(m, {})) for m in dict.fromkeys(methods)
               if m != UNEDITED}
    before = {str(e["record"]): e for e in already_skipped}
    kept: list[Record] = []
    skipped: list[dict[str, Any]] = []
    for r in records:
        missing = [l for l in dict.fromkeys([*edit_languages, *eval_languages]) if l not in r.edit]
        if missing:
            r.for_language(missing[0])  # RecordError naming the record and language, before any work
        if r.example_id in before:
            skipped.append(before[r.example_id])
            continue
        problems: list[RecordProblem] = record_problems(r, editors, edit_languages, eval_languages)
        if problems:
            first = problems[0]
            skipped.append({"record": r.example_id,
                            "reason": f"{first.method or 'record'} ({first.language}): {first.reason}",
                            "problems": [p.to_dict() for p in problems]})
        else:
            kept.append(r)
    if skipped:
        log.warning("pre-flight: skipping %d of %d record(s) for every method (listed with reasons in the run "
                    "manifest); first: %s: %s", len(skipped), len(records), skipped[0]["record"],
                    skipped[0]["reason"])
    return kept, skipped


# ------------------------------------------------------------------------------------------ running
def _peak_memory_rows() -> dict[str, float]:
    """Peak memory of the unit: CUDA allocations when on GPU; else the process's peak RSS (a high-water mark)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return {"peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20}
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _metric_rows(base: dict[str, Any], eval_lang: str, metrics: dict[str, MetricValue]) -> list[dict[str, Any]]:
    """Tidy rows of one evaluation; a non-finite value raises ``NonFiniteError`` naming record and method."""
    where = (f"record {base['record']!r}, method {base['method']!r}, edit language {base['edit_lang']!r}, "
             f"evaluation language {eval_lang!r}")
    return [{**base, "eval_lang": eval_lang, "metric": k, "value": require_finite(v.value, f"{where}, metric {k}"),
             "n": v.n, "kind": "metric"} for k, v in metrics.items()]


def _run_unit(lm: LoadedModel, unit: Unit, record: Record, make_edit: Callable[[], Edit],
              eval_languages: Sequence[str], refs: dict[str, LanguageEvaluation], config: RunnerConfig) -> list[dict]:
    base = {"record": unit.record, "method": unit.method, "edit_lang": unit.edit_lang}
    if unit.method == UNEDITED:
        rows: list[dict] = []
        for lang in eval_languages:
            rows += _metric_rows(base, lang, refs[lang].metrics)
        return rows
    torch.manual_seed(unit_seed(config.seed, "unit", *unit.as_tuple()))
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        edit = make_edit()
    except Exception as err:  # a failed edit is a result, not the end of the run
        log.warning("%s failed on record %r (%s): %s", unit.method, unit.record, unit.edit_lang, err)
        return [{**base, "eval_lang": None, "metric": "error", "value": None, "n": 0, "kind": "error",
                 "message": f"{type(err).__name__}: {err}"}]
    eval_start = time.perf_counter()
    edit_seconds = eval_start - start
    if "parallel_edits" in edit.info:  # trained in a batch: add this unit's share of the batch's training time
        edit_seconds += float(edit.info["seconds"])
    rows = []
    try:  # every evaluation language at once (evaluate_record: the metrics of evaluate_language, faster)
        results = evaluate_record(lm, record, eval_languages, wrap=edit.wrap_prompt, config=config.eval_config,
                                  references=refs)
        for lang in eval_languages:
            rows += _metric_rows(base, lang, results[lang].metrics)
    finally:
        edit.revert()
    stats = {"seconds": edit_seconds, "eval_seconds": time.perf_counter() - eval_start,
             **_peak_memory_rows()}
    for key in ("steps", "parallel_edits"):
        if key in edit.info:
            stats[key] = float(edit.info[key])
    rows += [{**base, "eval_lang": None, "metric": k, "value": float(v), "n": 1, "kind": "edit"}
             for k, v in stats.items()]
    return rows


def run_experiment(lm: LoadedModel, records: Sequence[Record], methods: Sequence[str],
                   edit_languages: Sequence[str], eval_languages: Sequence[str], run_dir: str | Path,
                   shard: str = "0/1", *, train_records: Sequence[Record] = (), masks: MasksProvider | None = None,
                   config: RunnerConfig | None = None, cache: ArtifactCache | None = None) -> Path:
    """Run this shard's units that are not finished yet; return the shard's JSONL file.

    ``train_records`` (disjoint from ``records``) go to ``editor.fit`` once per method (MEND, IKE);
    ``masks(record, edit_lang)`` supplies precomputed MEMLA masks (else MEMLA computes them through
    attribution); ``cache`` is passed to editors and keeps the unedited evaluations.
    Runs in this process; :func:`memla_utils.executors.run_experiment` (what the notebooks call) picks the
    executor named by ``$MEMLA_EXECUTOR`` and comes here for ``local``.
    """
    config = config or RunnerConfig()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    by_id = {r.example_id: r for r in records}
    overlap = sorted(by_id.keys() & {r.example_id for r in train_records})
    if overlap:
        raise ValueError(f"train_records and evaluated records share example_id(s) {overlap[:5]}: the training "
                         f"split must be disjoint from the records being edited")
    records, skipped = preflight(records, methods, edit_languages, eval_languages, config,
                                 already_skipped=skipped_records(run_dir))
    units = work_units(records, methods, edit_languages, include_unedited=config.include_unedited)
    _write_manifest(run_dir, lm, units, eval_languages, skipped)
    done = finished_units(run_dir)
    todo = [u for u in shard_units(units, shard) if u.as_tuple() not in done]
    out = _shard_file(run_dir, shard)
    log.info("shard %s: %d units to run (%d already finished) -> %s", shard, len(todo),
             len(shard_units(units, shard)) - len(todo), out.name)
    if not todo:
        return out
    preedit = PreEditCache(cache if config.cache_preedit else None)
    editors: dict[str, Any] = {}
    for method in dict.fromkeys(u.method for u in todo if u.method != UNEDITED):
        editors[method] = make_editor(method, **editor_kwargs(method, config))
        if train_records:
            editors[method].fit(lm, list(train_records))
    def context_of(unit: Unit) -> dict[str, Any]:
        context: dict[str, Any] = {"cache": cache}
        if masks is not None and unit.method != UNEDITED:
            m = masks(by_id[unit.record], unit.edit_lang)
            if m is not None:
                context["masks"] = m
        return context

    pending: dict[Unit, Any] = {}
    deadline = deadline_from_env()  # a part of a multi-session run (batch --hours): stop between two units
    for i, unit in enumerate(tqdm(todo, desc=f"run {shard}", disable=not config.progress)):
        if deadline is not None:
            check_deadline(f"{run_dir}: after {i} of {len(todo)} units of shard {shard}", deadline)
        record = by_id[unit.record]
        with naming(f"method {UNEDITED!r} (reference for {unit.method!r}, edit language {unit.edit_lang!r})"):
            refs = preedit.get_many(lm, record, eval_languages, config.eval_config)  # once per record
        editor = editors.get(unit.method)
        if (config.parallel_edits > 1 and unit not in pending and unit.method != UNEDITED
                and hasattr(editor, "edit_parallel")):
            pending.update(_train_parallel(lm, editor, [u for u in todo[i:] if (u.method, u.edit_lang) ==
                                                        (unit.method, unit.edit_lang)][: config.parallel_edits],
                                           by_id, context_of))
        if unit in pending:
            ready = pending.pop(unit)
            make_edit = partial(_raise, ready) if isinstance(ready, Exception) else partial(ready.apply, lm)
        else:
            make_edit = partial(editor.edit, lm, record, unit.edit_lang, **context_of(unit)) if editor else None
        with naming(f"method {unit.method!r}, edit language {unit.edit_lang!r}"):
            rows = _run_unit(lm, unit, record, make_edit, eval_languages, refs, config)
        attempt = uuid.uuid4().hex[:12]
        marker = {"record": unit.record, "method": unit.method, "edit_lang": unit.edit_lang, "kind": "done"}
        _append(out, [{**r, "attempt": attempt} for r in rows] + [{**marker, "attempt": attempt}])
    return out


def editor_kwargs(method: str, config: RunnerConfig) -> dict[str, Any]:
    """``make_editor`` keyword arguments of ``method`` in a run: the run seed, then the method's overrides."""
    return {"seed": config.seed, **config.editor_overrides.get(method, {})}


def _raise(err: Exception) -> Edit:
    raise err


def _train_parallel(lm: LoadedModel, editor: Any, units: list[Unit], by_id: dict[str, Record],
                    context_of: Callable[[Unit], dict[str, Any]]) -> dict[Unit, Any]:
    """Independent edits of ``units`` (one method and edit language) trained in one batch: unit -> edit or error."""
    contexts = [context_of(u) for u in units]
    has_masks = all("masks" in c for c in contexts)
    try:
        out = editor.edit_parallel(lm, [by_id[u.record] for u in units], units[0].edit_lang,
                                   masks=[c["masks"] for c in contexts] if has_masks else None,
                                   cache=contexts[0]["cache"])
    except Exception as err:  # the batch failed as a whole: every unit records the error
        log.warning("%s: parallel edit of %d records failed: %s", units[0].method, len(units), err)
        out = [err] * len(units)
    return dict(zip(units, out))


# ------------------------------------------------------------------------------------------ reading
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


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """All finished rows of every shard: columns record, method, edit_lang, eval_lang, metric, value, n, kind, message.

    Rows of records the run's pre-flight skipped (:func:`skipped_records`) are left out, so every method is
    compared on the same records; a non-finite value raises ``NonFiniteError``.
    """
    rows = _checked_rows(_complete_rows(_read_rows(Path(run_dir))), Path(run_dir))
    df = pd.DataFrame(rows, columns=[*COLUMNS, "kind", "message"])
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    df["n"] = pd.to_numeric(df["n"], errors="coerce").fillna(0).astype(int)
    return df.reset_index(drop=True)


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


def _metric_frame(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["kind"] == "metric") & df["value"].notna()]


def summarize(df: pd.DataFrame, metrics: Sequence[str] = PAPER_METRICS) -> pd.DataFrame:
    """Per (method, edit_lang): each metric monolingual (eval == edit) and cross-lingual (mean over the
    other evaluation languages of the per-language means, as memla4mke averages ``edit_to_others``)."""
    m = _metric_frame(df)
    m = m[m["metric"].isin(metrics)]
    per_lang = m.groupby(["method", "edit_lang", "eval_lang", "metric"], dropna=False)["value"].mean().reset_index()
    per_lang["setting"] = (per_lang["eval_lang"] == per_lang["edit_lang"]).map({True: "mono", False: "cross"})
    table = per_lang.groupby(["method", "edit_lang", "metric", "setting"])["value"].mean().unstack(["metric", "setting"])
    cols = [(mt, s) for mt in metrics for s in ("mono", "cross") if (mt, s) in table.columns]
    table = table.reindex(columns=pd.MultiIndex.from_tuples(cols, names=["metric", "setting"]))
    return table


def language_matrix(df: pd.DataFrame, method: str, metric: str) -> pd.DataFrame:
    """Mean ``metric`` of ``method`` as an edit-language × evaluation-language table."""
    m = _metric_frame(df)
    m = m[(m["method"] == method) & (m["metric"] == metric)]
    if m.empty:
        raise ValueError(f"no {metric!r} values for method {method!r} in these results")
    mat = m.pivot_table(index="edit_lang", columns="eval_lang", values="value", aggfunc="mean")
    return mat.reindex(index=ordered(mat.index), columns=ordered(mat.columns))


# ------------------------------------------------------------------------------------------ other executors
# Hooks for executors that run units elsewhere (memla_utils.executors: Ray tasks). They repeat run_experiment's
# preparation and per-unit body with the same helpers, so a unit gives the same rows wherever it runs and every
# executor writes the same resumable files.
def plan_units(records: Sequence[Record], methods: Sequence[str], edit_languages: Sequence[str],
               eval_languages: Sequence[str], run_dir: str | Path, shard: str = "0/1", *, model: Any,
               train_records: Sequence[Record] = (), config: RunnerConfig | None = None
               ) -> tuple[list[Unit], list[Record], Path]:
    """run_experiment's preparation without running anything: ``(the shard's unfinished units, the records
    kept by the pre-flight, the shard's JSONL file)``. Checks, pre-flight and manifest as in run_experiment;
    ``model`` needs only ``name`` and ``fingerprint`` (the driver of a cluster need not load the weights)."""
    config = config or RunnerConfig()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ids = {r.example_id for r in records}
    overlap = sorted(ids & {r.example_id for r in train_records})
    if overlap:
        raise ValueError(f"train_records and evaluated records share example_id(s) {overlap[:5]}: the training "
                         f"split must be disjoint from the records being edited")
    kept, skipped = preflight(records, methods, edit_languages, eval_languages, config,
                              already_skipped=skipped_records(run_dir))
    units = work_units(kept, methods, edit_languages, include_unedited=config.include_unedited)
    _write_manifest(run_dir, model, units, eval_languages, skipped)
    done = finished_units(run_dir)
    todo = [u for u in shard_units(units, shard) if u.as_tuple() not in done]
    log.info("shard %s: %d units to run (%d already finished)", shard, len(todo), len(shard_units(units, shard)) - len(todo))
    return todo, kept, _shard_file(run_dir, shard)


def run_unit(lm: LoadedModel, unit: Unit, record: Record, eval_languages: Sequence[str], *, editor: Any,
             preedit: PreEditCache, config: RunnerConfig, masks: RecordMasks | Exception | None = None,
             cache: ArtifactCache | None = None) -> list[dict[str, Any]]:
    """The rows of one unit exactly as run_experiment computes them (one edit, evaluated, reverted); ``masks``
    that failed to compute (an exception) make the edit an error row, as a failed edit is in run_experiment."""
    with naming(f"method {UNEDITED!r} (reference for {unit.method!r}, edit language {unit.edit_lang!r})"):
        refs = preedit.get_many(lm, record, eval_languages, config.eval_config)
    make_edit = None
    if editor is not None:
        context: dict[str, Any] = {"cache": cache}
        if isinstance(masks, Exception):
            make_edit = partial(_raise, masks)
        else:
            if masks is not None:
                context["masks"] = masks
            make_edit = partial(editor.edit, lm, record, unit.edit_lang, **context)
    with naming(f"method {unit.method!r}, edit language {unit.edit_lang!r}"):
        return _run_unit(lm, unit, record, make_edit, eval_languages, refs, config)


def write_unit(path: str | Path, unit: Unit, rows: Sequence[dict[str, Any]]) -> None:
    """Append one finished unit's rows and its ``done`` marker under one attempt id (the runner's row writer)."""
    attempt = uuid.uuid4().hex[:12]
    marker = {"record": unit.record, "method": unit.method, "edit_lang": unit.edit_lang, "kind": "done"}
    _append(Path(path), [{**r, "attempt": attempt} for r in rows] + [{**marker, "attempt": attempt}])


__all__ = ["COLUMNS", "NonFiniteError", "RunnerConfig", "UNEDITED", "Unit", "finished_units", "language_matrix",
           "load_results", "merge_results", "parse_shard", "plan_units", "preflight", "run_experiment",
           "run_unit", "shard_units", "skipped_records", "summarize", "work_units",
           "write_unit"]
