"""General ability under editing: single edits (edit, measure, revert) and sequential editing (N edits kept).

The study of MEMLA §5's claim that editing barely affects what the model otherwise knows (not released with
memla4mke), on the probe of :mod:`memla_utils.general_probe`:

* **single edits**: each record edited, measured, reverted; **sequential editing**: N edits accumulated
  without revert (the degradation curve at each checkpoint, with the retention of the edits so far), then all
  reverted;
* the records: those that any of the study's methods refuses (``check_record``: e.g. a subject ROME cannot find
  in its prompt) are left out for every method before anything is edited; the rest are cut into records to
  edit, probe records and training records (:func:`split_records`).

Rows are tidy dicts ``{setting, method, n_edits, record, edit_lang, eval_lang, metric, before, after, delta, n}``
that :func:`memla_utils.report.general_stats` aggregates. A non-finite perplexity or accuracy (NaN logits: a
model run in a precision it overflows in) raises :class:`memla_utils.finite.NonFiniteError` naming the record and
method instead of becoming a row.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .finite import require_finite
from .general_probe import (
    TRAIN_RECORDS,
    GeneralConfig,
    ProbeScores,
    ProbeSet,
    build_probe_set,
    record_relation,
    score_probe,
    summarize,
)
from .mkeb.record import Record
from .models import LoadedModel
from .progress import tqdm
from .scoring import score_answers
from .seeds import unit_seed

log = logging.getLogger(__name__)


def _rows(setting: str, method: str, n_edits: int, record: str, edit_lang: str,
          before: dict[tuple[str, str], tuple[float, int]], after: dict[tuple[str, str], tuple[float, int]],
          ) -> list[dict[str, Any]]:
    rows = []
    for (lang, metric), (value, n) in after.items():
        ref = before.get((lang, metric), (None, 0))[0]
        where = f"general ability ({setting}): record {record!r}, method {method!r}, edit language {edit_lang!r}, " \
                f"evaluation language {lang!r}, metric {metric}"
        require_finite(value, f"{where}, after editing")
        require_finite(ref, f"{where}, before editing (unedited model)")
        rows.append({"setting": setting, "method": method, "n_edits": n_edits, "record": record,
                     "edit_lang": edit_lang, "eval_lang": lang, "metric": metric, "before": ref, "after": value,
                     "delta": None if ref is None else value - ref, "n": n})
    return rows


#: ``masks(record, edit_language)`` -> precomputed MEMLA masks or None (as the runner takes them)
MasksProvider = Callable[[Record, str], Any]


def _seed(config: GeneralConfig, *parts: str) -> None:
    """Seed torch for one edit from the run seed and the unit (same configuration, same numbers twice)."""
    torch.manual_seed(unit_seed(config.seed, "general", *parts))


def _context(record: Record, language: str, base: dict[str, Any] | None, masks: MasksProvider | None,
             ) -> dict[str, Any]:
    ctx = dict(base or {})
    if masks is not None:
        m = masks(record, language)
        if m is not None:
            ctx["masks"] = m
    return ctx


def _editor(method: str, lm: LoadedModel, train_records: Sequence[Record], editors: dict[str, Any] | None,
            overrides: dict[str, dict[str, Any]] | None = None, seed: int = 0):
    if editors and method in editors:
        return editors[method]
    from .editors import make_editor

    return make_editor(method, **{"seed": seed, **(overrides or {}).get(method, {})}).fit(lm, train_records)


def _reference(lm: LoadedModel, probe: ProbeSet, records: Sequence[Record], reference: ProbeScores | None,
               config: GeneralConfig) -> ProbeScores:
    """The unedited model's raw scores on a probe set that must not contain any record about to be edited."""
    overlap = set(probe.record_ids) & {r.example_id for r in records}
    if overlap:
        raise ValueError(f"probe set contains edited record(s) {sorted(overlap)[:3]}: build it with exclude=")
    ref = reference if reference is not None else score_probe(lm, probe, batch_size=config.batch_size)
    for (lang, metric), (value, _) in summarize(probe, ref).items():
        require_finite(value, f"general ability: method 'unedited' (the reference), probe records "
                              f"{probe.record_ids[:3]}, language {lang!r}, metric {metric}")
    return ref


def single_edit_general(lm: LoadedModel, records: Sequence[Record], probe: ProbeSet, methods: Sequence[str],
                        edit_language: str, *, train_records: Sequence[Record] = (),
                        editors: dict[str, Any] | None = None, config: GeneralConfig = GeneralConfig(),  # noqa: B008
                        edit_context: dict[str, Any] | None = None, masks: MasksProvider | None = None,
                        reference: ProbeScores | None = None) -> list[dict[str, Any]]:
    """For each method and record: edit → measure general ability → revert. Failed edits are logged, skipped.

    ``editors`` maps method names to ready editor objects (tests, or a notebook that already fitted them);
    other methods are built with :func:`memla_utils.editors.make_editor`. ``reference``: the unedited model's
    :func:`score_probe` (computed here when not given; pass it to share one between single and sequential runs).
    Unrelated facts exclude the edited record's relation; relation spill-over is measured on it.
    """
    before = _reference(lm, probe, records, reference, config)
    rows: list[dict[str, Any]] = []
    for method in methods:
        editor = _editor(method, lm, train_records, editors, seed=config.seed)
        for rec in tqdm(records, desc=f"general/{method}", leave=False):
            _seed(config, "single", method, rec.example_id, edit_language)
            try:
                edit = editor.edit(lm, rec, edit_language, **_context(rec, edit_language, edit_context, masks))
            except Exception as err:  # noqa: BLE001 - one failed edit must not end the sweep
                log.warning("%s could not edit %s (%s): %s", method, rec.example_id, edit_language, err)
                continue
            try:
                after = score_probe(lm, probe, edit=edit, batch_size=config.batch_size)
            finally:
                edit.revert()
            rel = {record_relation(rec)}
            rows.extend(_rows("single", method, 1, rec.example_id, edit_language, summarize(probe, before, rel),
                              summarize(probe, after, rel)))
    return rows


def _retention(lm: LoadedModel, edited: Sequence[Record], edit_language: str, edit: Any, batch_size: int,
               ) -> tuple[float, int]:
    """Share of the accumulated edits whose new answer is still the teacher-forced greedy answer."""
    views = [r.for_language(edit_language) for r in edited]
    prompts = [edit.wrap_prompt(v.prompt, edit_language) if edit is not None else v.prompt for v in views]
    sc = score_answers(lm.model, lm.tokenizer, prompts, [v.target_new for v in views], edit_language,
                       batch_size=batch_size)
    return float(sc["exact_match"].mean()), len(views)


def sequential_general(lm: LoadedModel, records: Sequence[Record], probe: ProbeSet, methods: Sequence[str],
                       edit_language: str, *, steps: Sequence[int] | None = None,
                       train_records: Sequence[Record] = (), editors: dict[str, Any] | None = None,
                       config: GeneralConfig = GeneralConfig(), edit_context: dict[str, Any] | None = None,  # noqa: B008
                       masks: MasksProvider | None = None, reference: ProbeScores | None = None,
                       ) -> list[dict[str, Any]]:
    """Accumulate edits without revert; at each checkpoint in ``steps`` measure general ability and retention.

    Afterwards every edit is reverted (newest first), so the model leaves as it came. Checkpoints beyond the
    number of records are dropped with a warning. In-context methods carry the most recent edit's prefix.
    Unrelated facts exclude every relation edited so far.
    """
    steps = sorted(set(int(s) for s in (steps if steps is not None else config.sequential_steps)))
    if any(s < 1 for s in steps):
        raise ValueError(f"sequential steps must be >= 1, got {steps}")
    usable = [s for s in steps if s <= len(records)]
    if len(usable) < len(steps):
        log.warning("only %d records to edit: dropping sequential checkpoints %s", len(records),
                    [s for s in steps if s > len(records)])
    if not usable:
        return []
    before = _reference(lm, probe, records, reference, config)
    rows: list[dict[str, Any]] = []
    for method in methods:
        editor = _editor(method, lm, train_records, editors, seed=config.seed)
        applied: list[Any] = []
        edited: list[Record] = []
        try:
            for i, rec in enumerate(tqdm(records[:usable[-1]], desc=f"sequential/{method}", leave=False), 1):
                _seed(config, "sequential", method, rec.example_id, edit_language)
                try:
                    applied.append(editor.edit(lm, rec, edit_language,
                                               **_context(rec, edit_language, edit_context, masks)))
                    edited.append(rec)
                except Exception as err:  # noqa: BLE001
                    log.warning("%s could not edit %s (%s) in sequence: %s", method, rec.example_id,
                                edit_language, err)
                if i in usable:
                    last = applied[-1] if applied else None
                    rels = {record_relation(r) for r in edited}
                    after = summarize(probe, score_probe(lm, probe, edit=last, batch_size=config.batch_size), rels)
                    if edited:
                        after[(edit_language, "edit_retention")] = _retention(lm, edited, edit_language, last,
                                                                              config.batch_size)
                    for row in _rows("sequential", method, i, f"sequence@{i}", edit_language,
                                     summarize(probe, before, rels), after):
                        row["n_applied"] = len(applied)
                        rows.append(row)
        finally:
            for e in reversed(applied):
                e.revert()
    return rows


def save_rows(rows: Sequence[dict[str, Any]], run_dir: Any) -> Any:
    """Write the rows as ``<run_dir>/general/general.jsonl`` (atomically; replaces an older file)."""
    import json
    from pathlib import Path

    from .cache import atomic_path

    path = Path(run_dir) / "general" / "general.jsonl"
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows),
                       encoding="utf-8")
    return path


def available_methods(methods: Sequence[str]) -> tuple[list[str], list[str]]:
    """(methods with a registered editor, methods without one): notebooks show the latter as missing."""
    from .editors import EDITORS, load_all

    load_all()
    return [m for m in methods if m in EDITORS], [m for m in methods if m not in EDITORS]


def split_records(records: Sequence[Record], *, n_edit: int, n_probe: int, n_train: int = 0,
                  ) -> tuple[list[Record], list[Record], list[Record]]:
    """(records to edit, probe records, training records): consecutive, disjoint slices in file order."""
    need = n_edit + n_probe
    if len(records) < need:
        raise ValueError(f"general ability needs {n_edit} records to edit and {n_probe} unedited probe records, "
                         f"but only {len(records)} were loaded (raise the number of records loaded)")
    return (list(records[:n_edit]), list(records[n_edit:need]), list(records[need:need + n_train]))


def general_study(lm: LoadedModel, records: Sequence[Record], methods: Sequence[str], languages: Sequence[str],
                  edit_language: str, *, n_single: int, steps: Sequence[int], config: GeneralConfig = GeneralConfig(),  # noqa: B008
                  n_train: int = TRAIN_RECORDS, editor_overrides: dict[str, dict[str, Any]] | None = None,
                  masks: MasksProvider | None = None, edit_context: dict[str, Any] | None = None,
                  ) -> tuple[list[dict[str, Any]], list[str]]:
    """Single edits on the first ``n_single`` records and the sequential curve up to ``max(steps)``, one reference.

    ``records`` must hold at least ``max(n_single, max(steps)) + config.max_probe_records`` records; the
    probe set is built from those that are not edited. ``editor_overrides`` (method -> ``make_editor`` kwargs)
    and ``masks`` are those the runner gets, so edits here are configured as in notebooks 04/05. Returns the
    rows and the methods without an editor.
    """
    usable, missing = available_methods(methods)
    records = usable_records(records, usable, edit_language, languages, editor_overrides)
    n_edit = max(n_single, max(steps) if steps else 0)
    edited, probe_pool, train = split_records(records, n_edit=n_edit, n_probe=config.max_probe_records,
                                              n_train=n_train)
    probe = build_probe_set(probe_pool, languages, max_records=config.max_probe_records, text=config.text)
    reference = score_probe(lm, probe, batch_size=config.batch_size)
    editors = {m: _editor(m, lm, train, None, editor_overrides, seed=config.seed) for m in usable}
    rows = single_edit_general(lm, edited[:n_single], probe, usable, edit_language, editors=editors,
                               config=config, reference=reference, masks=masks, edit_context=edit_context)
    if steps:
        rows += sequential_general(lm, edited, probe, usable, edit_language, steps=steps, editors=editors,
                                   config=config, reference=reference, masks=masks, edit_context=edit_context)
    return rows, missing


def usable_records(records: Sequence[Record], methods: Sequence[str], edit_language: str,
                   languages: Sequence[str], editor_overrides: dict[str, dict[str, Any]] | None = None,
                   ) -> list[Record]:
    """``records`` without those any of ``methods`` refuses to edit in ``edit_language`` or that have a blank
    prompt or answer in ``languages`` (the runner's pre-flight rule), so every method edits the same records;
    the number left out and the first reason are logged."""
    from .editors import make_editor, record_problems

    editors = {m: make_editor(m, **(editor_overrides or {}).get(m, {})) for m in methods}
    kept, dropped = [], []
    for r in records:
        langs = [l for l in languages if l in r.edit]
        problems = record_problems(r, editors, [edit_language] if edit_language in r.edit else [], langs)
        (dropped if problems else kept).append((r, problems))
    if dropped:
        p = dropped[0][1][0]
        log.warning("general ability: leaving out %d of %d record(s) for every method; first: %s (%s, %s): %s",
                    len(dropped), len(records), p.record, p.method or "record", p.language, p.reason)
    return [r for r, _ in kept]


def saved_masks(directory: Any) -> MasksProvider:
    """A masks provider reading notebook 03's record-mask files (None where a record has none)."""
    from pathlib import Path

    from .mask_files import load_record_masks, mask_path

    def provider(record: Record, language: str) -> Any:
        path = mask_path(Path(directory), record.example_id, language)
        return load_record_masks(path) if path.is_file() else None
    return provider


__all__ = ["MasksProvider", "available_methods", "general_study", "save_rows", "saved_masks",
           "sequential_general", "single_edit_general", "split_records", "usable_records"]
