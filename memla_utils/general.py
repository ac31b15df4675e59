"""General ability before and after editing, offline: perplexity on fixed text and accuracy on unrelated facts.

The paper claims editing barely affects what the model otherwise knows. Measured here without any download:

* a fixed multilingual **text set**: the true-fact sentences (edit prompt ⧺ true answer, joined at the token
  level) of MKEB records that are *not* edited, per language; perplexity = exp(mean NLL per token);
* **unrelated facts**: the same records' prompts, scored by teacher-forced exact match of the true answer
  (and token accuracy), per language;
* **single edits**: each record edited, measured, reverted; **sequential editing**: N edits accumulated
  without revert (the degradation curve at each checkpoint), then all reverted.

Rows are tidy dicts ``{setting, method, n_edits, record, edit_lang, eval_lang, metric, before, after, delta, n}``
that :func:`memla_utils.report.general_stats` aggregates.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from .mkeb.record import Record, RecordError
from .models import LoadedModel
from .scoring import score_answers
from .text import encode_answer, encode_prompt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeneralConfig:
    """What the general-ability probe measures. Defaults: the small CPU preset.

    ``sequential_steps`` 1, 3, 5 keeps the CPU default to a few minutes; the paper-scale preset uses
    ``FULL_SEQUENTIAL_STEPS`` (10, 50, 100). ``max_probe_records`` caps the probe set per language.
    """

    max_probe_records: int = 8
    sequential_steps: tuple[int, ...] = (1, 3, 5)
    batch_size: int = 16


FULL_SEQUENTIAL_STEPS: tuple[int, ...] = (10, 50, 100)


@dataclass
class ProbeSet:
    """Per language: true-fact (prompt, answer) pairs from records that are not edited."""

    facts: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    record_ids: list[str] = field(default_factory=list)

    @property
    def languages(self) -> list[str]:
        return [l for l, f in self.facts.items() if f]

    def size(self) -> dict[str, int]:
        return {l: len(f) for l, f in self.facts.items()}


def build_probe_set(records: Sequence[Record], languages: Sequence[str], *, exclude: Sequence[str] = (),
                    max_records: int = GeneralConfig.max_probe_records) -> ProbeSet:
    """True facts of records not in ``exclude`` (ids of edited records), in each language.

    A record contributes its edit prompt with ``target_true`` (and its neighborhood prompts/answers, which are
    true facts by construction). Records lacking a language are skipped for that language only.
    """
    skip = set(exclude)
    pool = [r for r in records if r.example_id not in skip][:max_records]
    probe = ProbeSet(record_ids=[r.example_id for r in pool])
    for lang in languages:
        facts: list[tuple[str, str]] = []
        for r in pool:
            try:
                view = r.for_language(lang)
            except RecordError:
                continue
            if view.target_true and view.target_true.strip():
                facts.append((view.prompt, view.target_true))
            facts.extend((p, a) for p, a in zip(view.neighborhood_prompts, view.neighborhood_answers) if a.strip())
        probe.facts[lang] = facts
    if not any(probe.facts.values()):
        raise ValueError(f"no true facts in languages {list(languages)} among {len(pool)} unedited record(s): "
                         "records need target_true or neighborhood answers")
    return probe


@torch.no_grad()
def sentence_nll(lm: LoadedModel, pairs: Sequence[tuple[str, str]], language: str, *, prefix: str = "",
                 batch_size: int = 16) -> tuple[float, int]:
    """Total NLL (nats) and token count of ``prompt ⧺ answer`` sentences, every token after BOS (or ``prefix``).

    Prompt and answer are tokenized separately and joined as ids (never as text). A ``prefix`` (an in-context
    edit's demonstrations) is prepended as context and not scored.
    """
    tok = lm.tokenizer
    ctx = encode_prompt(tok, prefix) if prefix else []
    rows, starts = [], []
    for prompt, answer in pairs:
        p = list(tok(prompt, add_special_tokens=False)["input_ids"]) if ctx else encode_prompt(tok, prompt)
        ids = ctx + p + encode_answer(tok, answer, language, prompt)
        rows.append(ids)
        starts.append(len(ctx) if ctx else 1)
    total, count = 0.0, 0
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    dev = next(lm.model.parameters()).device
    for s in range(0, len(rows), batch_size):
        chunk, st = rows[s:s + batch_size], starts[s:s + batch_size]
        width = max(len(r) for r in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        att = torch.zeros_like(ids)
        scored = torch.zeros_like(ids, dtype=torch.bool)
        for b, (r, start) in enumerate(zip(chunk, st)):
            ids[b, :len(r)] = torch.tensor(r)
            att[b, :len(r)] = 1
            scored[b, max(start, 1):len(r)] = True
        logits = lm.model(input_ids=ids.to(dev), attention_mask=att.to(dev)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        picked = logp.gather(-1, ids[:, 1:].to(dev).unsqueeze(-1)).squeeze(-1)
        mask = scored[:, 1:].to(dev)
        total += float(-(picked * mask).sum())
        count += int(mask.sum())
    return total, count


def measure(lm: LoadedModel, probe: ProbeSet, *, edit: Any = None, batch_size: int = 16) -> dict[tuple[str, str],
                                                                                               tuple[float, int]]:
    """``{(language, metric): (value, n)}`` for perplexity, fact_accuracy and fact_token_accuracy.

    ``edit`` (an applied :class:`memla_utils.editors.Edit`) only matters for in-context edits: its prompt
    prefix for the language is put in front of every probe.
    """
    out: dict[tuple[str, str], tuple[float, int]] = {}
    for lang in probe.languages:
        pairs = probe.facts[lang]
        prefix = edit.prompt_prefix.get(lang, "") if edit is not None and getattr(edit, "prompt_prefix", None) else ""
        nll, n_tok = sentence_nll(lm, pairs, lang, prefix=prefix, batch_size=batch_size)
        out[(lang, "perplexity")] = (math.exp(nll / max(1, n_tok)), n_tok)
        prompts = [edit.wrap_prompt(p, lang) if edit is not None else p for p, _ in pairs]
        sc = score_answers(lm.model, lm.tokenizer, prompts, [a for _, a in pairs], lang, batch_size=batch_size)
        out[(lang, "fact_accuracy")] = (float(sc["exact_match"].mean()), len(pairs))
        out[(lang, "fact_token_accuracy")] = (float(sc["token_accuracy"].mean()), len(pairs))
    return out


def _rows(setting: str, method: str, n_edits: int, record: str, edit_lang: str,
          before: dict[tuple[str, str], tuple[float, int]], after: dict[tuple[str, str], tuple[float, int]],
          ) -> list[dict[str, Any]]:
    rows = []
    for (lang, metric), (value, n) in after.items():
        ref = before.get((lang, metric), (None, 0))[0]
        rows.append({"setting": setting, "method": method, "n_edits": n_edits, "record": record,
                     "edit_lang": edit_lang, "eval_lang": lang, "metric": metric, "before": ref, "after": value,
                     "delta": None if ref is None else value - ref, "n": n})
    return rows


def _editor(method: str, lm: LoadedModel, train_records: Sequence[Record], editors: dict[str, Any] | None):
    if editors and method in editors:
        return editors[method]
    from .editors import make_editor

    return make_editor(method).fit(lm, train_records)


def single_edit_general(lm: LoadedModel, records: Sequence[Record], probe: ProbeSet, methods: Sequence[str],
                        edit_language: str, *, train_records: Sequence[Record] = (),
                        editors: dict[str, Any] | None = None, config: GeneralConfig = GeneralConfig(),
                        edit_context: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """For each method and record: edit → measure general ability → revert. Failed edits are logged, skipped.

    ``editors`` maps method names to ready editor objects (tests, or a notebook that already fitted them);
    other methods are built with :func:`memla_utils.editors.make_editor`.
    """
    overlap = set(probe.record_ids) & {r.example_id for r in records}
    if overlap:
        raise ValueError(f"probe set contains edited record(s) {sorted(overlap)[:3]}: build it with exclude=")
    before = measure(lm, probe, batch_size=config.batch_size)
    rows: list[dict[str, Any]] = []
    for method in methods:
        editor = _editor(method, lm, train_records, editors)
        for rec in tqdm(records, desc=f"general/{method}", leave=False):
            try:
                edit = editor.edit(lm, rec, edit_language, **(edit_context or {}))
            except Exception as err:  # noqa: BLE001 - one failed edit must not end the sweep
                log.warning("%s could not edit %s (%s): %s", method, rec.example_id, edit_language, err)
                continue
            try:
                after = measure(lm, probe, edit=edit, batch_size=config.batch_size)
            finally:
                edit.revert()
            rows.extend(_rows("single", method, 1, rec.example_id, edit_language, before, after))
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
                       config: GeneralConfig = GeneralConfig(), edit_context: dict[str, Any] | None = None,
                       ) -> list[dict[str, Any]]:
    """Accumulate edits without revert; at each checkpoint in ``steps`` measure general ability and retention.

    Afterwards every edit is reverted (newest first), so the model leaves as it came. Checkpoints beyond the
    number of records are dropped with a warning. In-context methods carry the most recent edit's prefix.
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
    overlap = set(probe.record_ids) & {r.example_id for r in records}
    if overlap:
        raise ValueError(f"probe set contains edited record(s) {sorted(overlap)[:3]}: build it with exclude=")
    before = measure(lm, probe, batch_size=config.batch_size)
    rows: list[dict[str, Any]] = []
    for method in methods:
        editor = _editor(method, lm, train_records, editors)
        applied: list[Any] = []
        edited: list[Record] = []
        try:
            for i, rec in enumerate(tqdm(records[:usable[-1]], desc=f"sequential/{method}", leave=False), 1):
                try:
                    applied.append(editor.edit(lm, rec, edit_language, **(edit_context or {})))
                    edited.append(rec)
                except Exception as err:  # noqa: BLE001
                    log.warning("%s could not edit %s (%s) in sequence: %s", method, rec.example_id,
                                edit_language, err)
                if i in usable:
                    last = applied[-1] if applied else None
                    after = measure(lm, probe, edit=last, batch_size=config.batch_size)
                    if edited:
                        after[(edit_language, "edit_retention")] = _retention(lm, edited, edit_language, last,
                                                                              config.batch_size)
                    for row in _rows("sequential", method, i, f"sequence@{i}", edit_language, before, after):
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


__all__ = ["FULL_SEQUENTIAL_STEPS", "GeneralConfig", "ProbeSet", "build_probe_set", "measure", "save_rows",
           "sentence_nll", "sequential_general", "single_edit_general"]
