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

import logging
import resource
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from .cache import ArtifactCache
from .editors import Edit, RecordProblem, make_editor, record_problems
from .evaluate_metrics import EvalConfig, LanguageEvaluation, MetricValue, evaluate_record
from .evaluate_preedit import PreEditCache
from .finite import NonFiniteError, naming, require_finite
from .mkeb.record import Record
from .models import LoadedModel
from .neuron_masks import RecordMasks
from .progress import tqdm
from .results_files import (
    COLUMNS,
    RUN_SPECIFIC_COLUMNS,
    RUN_SPECIFIC_METRICS,
    append_rows,
    finished_units,
    load_results,
    merge_results,
    parse_shard,
    shard_file,
    skipped_records,
    write_manifest,
)
from .run_parts import check_deadline, deadline_from_env
from .seeds import unit_seed

log = logging.getLogger(__name__)

UNEDITED = "unedited"
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


# ------------------------------------------------------------------------------------------ pre-flight skips
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
                   config: RunnerConfig | None = None, cache: ArtifactCache | None = None,
                   units: Sequence[Unit] | None = None, source: Iterable[Unit] | None = None) -> Path:
    """Run this shard's units that are not finished yet; return the shard's JSONL file.

    ``train_records`` (disjoint from ``records``) go to ``editor.fit`` once per method (MEND, IKE);
    ``masks(record, edit_lang)`` supplies precomputed MEMLA masks (else MEMLA computes them through
    attribution); ``cache`` is passed to editors and keeps the unedited evaluations. ``units``: run these (the
    ones not finished yet, in the order given) instead of the shard's round-robin share of the grid; ``shard``
    then only names the file (the processes executor deals the units left this way); a unit outside the run's
    grid is a ``ValueError`` naming it (:func:`plan_units`). ``source``: run the units it yields, one at a time,
    instead of all of them (a :class:`memla_utils.unit_queue.UnitQueue` shared with other processes, which
    takes units from it too); each must be one of the units planned (``ValueError`` naming it otherwise).
    Editors are made, and fitted on ``train_records``, when their first unit comes.
    Runs in this process; :func:`memla_utils.executors.run_experiment` (what the notebooks call) picks the
    executor named by ``$MEMLA_EXECUTOR`` and comes here for ``local``.
    """
    config = config or RunnerConfig()
    todo, kept, out = plan_units(records, methods, edit_languages, eval_languages, run_dir, shard, model=lm,
                                 train_records=train_records, config=config, units=units)
    if not todo:
        return out
    by_id = {r.example_id: r for r in kept}
    preedit = PreEditCache(cache if config.cache_preedit else None)
    editors: dict[str, Any] = {}

    def editor_of(method: str) -> Any:
        if method == UNEDITED:
            return None
        if method not in editors:
            editors[method] = make_editor(method, **editor_kwargs(method, config))
            if train_records:
                editors[method].fit(lm, list(train_records))
        return editors[method]

    def context_of(unit: Unit) -> dict[str, Any]:
        context: dict[str, Any] = {"cache": cache}
        if masks is not None and unit.method != UNEDITED:
            m = masks(by_id[unit.record], unit.edit_lang)
            if m is not None:
                context["masks"] = m
        return context

    if source is not None and config.parallel_edits > 1:
        raise ValueError("run_experiment: parallel_edits > 1 batches the units that follow in this process's own "
                         "list; it cannot take units from a shared source")
    pending: dict[Unit, Any] = {}
    planned = set(todo)
    deadline = deadline_from_env()  # a part of a multi-session run (batch --hours): stop between two units
    bar = tqdm(total=getattr(source, "total", len(todo)), desc=f"run {shard}", disable=not config.progress)
    for i, unit in enumerate(todo if source is None else source):
        if deadline is not None:
            check_deadline(f"{run_dir}: after {i} of {len(todo)} units of shard {shard}", deadline)
        if unit not in planned:
            raise ValueError(f"source gave unit {unit.as_tuple()}, which is not among the {len(todo)} unfinished "
                             f"units planned for {run_dir}")
        record = by_id[unit.record]
        with naming(f"method {UNEDITED!r} (reference for {unit.method!r}, edit language {unit.edit_lang!r})"):
            refs = preedit.get_many(lm, record, eval_languages, config.eval_config)  # once per record
        editor = editor_of(unit.method)
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
        append_rows(out, [{**r, "attempt": attempt} for r in rows] + [{**marker, "attempt": attempt}])
        # a shared queue counts the units every process has taken: the bar shows the whole grid's progress
        bar.update((source.taken() if hasattr(source, "taken") else i + 1) - bar.n)
    bar.close()
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


# ------------------------------------------------------------------------------------------ other executors
# Hooks for executors that run units elsewhere (memla_utils.executors_ray: Ray tasks). run_experiment prepares
# with plan_units and runs each unit with the same body as run_unit, so a unit gives the same rows wherever it runs
# and every executor writes the same resumable files.
def plan_units(records: Sequence[Record], methods: Sequence[str], edit_languages: Sequence[str],
               eval_languages: Sequence[str], run_dir: str | Path, shard: str = "0/1", *, model: Any,
               train_records: Sequence[Record] = (), config: RunnerConfig | None = None,
               units: Sequence[Unit] | None = None) -> tuple[list[Unit], list[Record], Path]:
    """run_experiment's preparation without running anything: ``(the shard's unfinished units, the records
    kept by the pre-flight, the shard's JSONL file)``. Checks, pre-flight and manifest as in run_experiment;
    ``model`` needs only ``name`` and ``fingerprint`` (the driver of a cluster need not load the weights).

    ``units``: the units to plan instead of the shard's round-robin share (:func:`shard_units`), in the order
    given, duplicates dropped; finished ones are left out as for a share. Raises ``ValueError`` naming the units
    given that are not in the run's grid (:func:`work_units` of the records the pre-flight kept), and naming the
    records shared by ``records`` and ``train_records``.
    """
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
    grid = work_units(kept, methods, edit_languages, include_unedited=config.include_unedited)
    if units is None:
        share = shard_units(grid, shard)
    else:
        share = list(dict.fromkeys(units))
        in_grid = set(grid)
        outside = [u.as_tuple() if isinstance(u, Unit) else u for u in share if u not in in_grid]
        if outside:
            raise ValueError(f"units: {len(outside)} unit(s) not in the run's grid (records kept by the pre-flight "
                             f"x edit languages x methods), e.g. {outside[:5]}")
    write_manifest(run_dir, model, grid, eval_languages, skipped)
    done = finished_units(run_dir)
    todo = [u for u in share if u.as_tuple() not in done]
    out = shard_file(run_dir, shard)
    log.info("shard %s: %d units to run (%d already finished) -> %s", shard, len(todo), len(share) - len(todo),
             out.name)
    return todo, kept, out


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
    append_rows(Path(path), [{**r, "attempt": attempt} for r in rows] + [{**marker, "attempt": attempt}])


__all__ = ["COLUMNS", "NonFiniteError", "RUN_SPECIFIC_COLUMNS", "RUN_SPECIFIC_METRICS", "RunnerConfig", "UNEDITED",
           "Unit", "finished_units", "load_results", "merge_results", "parse_shard", "plan_units", "preflight",
           "run_experiment", "run_unit", "shard_units", "skipped_records", "work_units", "write_unit"]
