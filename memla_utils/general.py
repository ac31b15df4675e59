"""General ability before and after editing, offline: perplexity on unrelated prose, accuracy on unrelated facts.

The paper claims editing barely affects what the model otherwise knows (MEMLA §5; its general-ability
evaluation is not released with memla4mke). Measured here without any download:

* **perplexity** on real multilingual prose unrelated to any edit: fixed, seeded chunks per language of the
  ``dataset-build`` text (:mod:`memla_utils.corpus`; 16 chunks of <= 300 characters per language by default);
  perplexity = exp(total NLL / tokens) over every token after BOS;
* **unrelated facts**: true facts (edit prompt ⧺ true answer, joined at the token level) of MKEB records that
  are not edited and belong to *other relations* than the edited record(s), scored by teacher-forced exact
  match of the true answer (``fact_accuracy``) and token accuracy;
* **relation spill-over** (its own labelled metric, not general ability): the same true-fact sentences of
  unedited records of the *edited* relation (``relation_spillover_perplexity``, ``relation_spillover_accuracy``):
  how much an edit of "capital of Armenia" disturbs other capitals;
* **single edits**: each record edited, measured, reverted; **sequential editing**: N edits accumulated
  without revert (the degradation curve at each checkpoint), then all reverted.

Rows are tidy dicts ``{setting, method, n_edits, record, edit_lang, eval_lang, metric, before, after, delta, n}``
that :func:`memla_utils.report.general_stats` aggregates. A non-finite perplexity or accuracy (NaN logits: a
model run in a precision it overflows in) raises :class:`memla_utils.finite.NonFiniteError` naming the record and
method instead of becoming a row. Records that any of the study's methods refuses (``check_record``: e.g. a
subject ROME cannot find in its prompt) are left out for every method before anything is edited.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from .corpus import TextConfig, general_text
from .finite import require_finite
from .head_projection import can_defer, deferred_head, project_blocks
from .mkeb.record import Record, RecordError
from .mkeb.select import relation_of
from .models import LoadedModel
from .scoring import score_answers
from .seeds import unit_seed
from .text import encode_prompt, join_prompt_answer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeneralConfig:
    """What the general-ability probe measures. Defaults: the small CPU preset (this companion's choice).

    ``sequential_steps`` 1, 3, 5 keeps the CPU default to a few minutes; the paper-scale preset uses
    ``FULL_SEQUENTIAL_STEPS`` (10, 50, 100). ``max_probe_records`` caps the unedited records whose true facts
    are probed; ``text`` chooses the prose chunks (:class:`memla_utils.corpus.TextConfig`).
    """

    max_probe_records: int = 8
    sequential_steps: tuple[int, ...] = (1, 3, 5)
    batch_size: int = 16
    seed: int = 0   # run seed: each edit is seeded from it, the method and the record (seeds.unit_seed)
    text: TextConfig = field(default_factory=TextConfig)


FULL_SEQUENTIAL_STEPS: tuple[int, ...] = (10, 50, 100)


#: The relation a record edits (unrelated facts exclude it).
record_relation = relation_of


@dataclass
class ProbeSet:
    """Per language: general-ability prose chunks, and true-fact (prompt, answer) pairs of unedited records
    with the relation of each pair (``relations`` runs parallel to ``facts``)."""

    facts: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    relations: dict[str, list[str]] = field(default_factory=dict)
    text: dict[str, list[str]] = field(default_factory=dict)
    record_ids: list[str] = field(default_factory=list)

    @property
    def languages(self) -> list[str]:
        langs = list(dict.fromkeys([*self.text, *self.facts]))
        return [l for l in langs if self.facts.get(l) or self.text.get(l)]

    def size(self) -> dict[str, int]:
        return {l: len(f) for l, f in self.facts.items()}


def build_probe_set(records: Sequence[Record], languages: Sequence[str], *, exclude: Sequence[str] = (),
                    max_records: int = GeneralConfig.max_probe_records, neighborhood: bool = False,
                    text: TextConfig | None = TextConfig()) -> ProbeSet:  # noqa: B008 - frozen dataclass
    """True facts of records not in ``exclude`` (ids of edited records), and prose chunks, in each language.

    A record contributes its edit prompt with ``target_true`` (and, with ``neighborhood``, its neighborhood
    prompts/answers, true facts by construction; off by default to keep the CPU run short). Records lacking a
    language are skipped for that language only. ``text=None`` leaves the prose out (then ``perplexity`` is
    not measured). Raises ``ValueError`` when nothing at all can be probed.
    """
    skip = set(exclude)
    pool = [r for r in records if r.example_id not in skip][:max_records]
    probe = ProbeSet(record_ids=[r.example_id for r in pool])
    for lang in languages:
        facts: list[tuple[str, str]] = []
        rels: list[str] = []
        for r in pool:
            try:
                view = r.for_language(lang)
            except RecordError:
                continue
            rel = record_relation(r)
            if view.target_true and view.target_true.strip():
                facts.append((view.prompt, view.target_true))
                rels.append(rel)
            if neighborhood:
                for p, a in zip(view.neighborhood_prompts, view.neighborhood_answers):
                    if a.strip() and p.strip():
                        facts.append((p, a))
                        rels.append(rel)
        probe.facts[lang] = facts
        probe.relations[lang] = rels
        if text is not None:
            probe.text[lang] = general_text(lang, text)
    if not any(probe.facts.values()) and not any(probe.text.values()):
        raise ValueError(f"nothing to probe in languages {list(languages)} among {len(pool)} unedited record(s): "
                         "records need target_true or neighborhood answers, or pass a TextConfig")
    return probe


@dataclass
class SentenceScores:
    """One teacher-forced pass over ``prompt ⧺ answer`` sentences: NLL for perplexity, answer hits for accuracy.

    ``nll``/``n_tokens`` are totals; ``row_nll``/``row_tokens`` the same per sentence (for subsets).
    """

    nll: float            # summed over every scored token (nats)
    n_tokens: int         # tokens scored (all after BOS / after the context prefix)
    exact_match: list[float]
    token_accuracy: list[float]
    row_nll: list[float] = field(default_factory=list)
    row_tokens: list[int] = field(default_factory=list)


def _length_batches(rows: Sequence[list[int]], batch_size: int) -> list[list[int]]:
    """Indices of ``rows`` in batches of ``batch_size``, longest rows first (ties in input order), so that each
    batch pads its rows to a similar length: the prose chunks are 23-176 tokens long, and a batch of them in file
    order was padded to its longest row (padding cost as much as the text)."""
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i]), i))
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def _scored_positions(lm: LoadedModel, ids: torch.Tensor, att: torch.Tensor, keep: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL (nats, float32) and greedy hit of every position where ``keep [B, T-1]`` is set.

    Position t predicts token t + 1. Returns ``(nll [N], hit [N])`` in row-major order of ``keep``. With a
    deferrable head (:func:`memla_utils.head_projection.can_defer`) only those N positions go through the
    vocabulary projection (the padding and the context prefix do not), in blocks of
    :data:`~memla_utils.head_projection.HEAD_BLOCK_ROWS` rows; otherwise the full logits are computed and the
    positions taken from them. Both give the same values (``tests/unit/test_general.py``).
    """
    targets = ids[:, 1:][keep]
    if can_defer(lm.model):
        with deferred_head(lm.model) as got:
            lm.model(input_ids=ids, attention_mask=att)
        hidden = got[-1][:, :-1][keep]
        nll = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        hit = torch.empty(hidden.shape[0], dtype=torch.bool, device=hidden.device)
        for start, logits in project_blocks(lm.model, hidden):
            stop = start + logits.shape[0]
            logits = logits.float()
            nll[start:stop] = torch.nn.functional.cross_entropy(logits, targets[start:stop], reduction="none")
            hit[start:stop] = logits.argmax(-1) == targets[start:stop]
        return nll, hit
    logits = lm.model(input_ids=ids, attention_mask=att).logits[:, :-1].float()[keep]
    return (torch.nn.functional.cross_entropy(logits, targets, reduction="none"), logits.argmax(-1) == targets)


@torch.no_grad()
def _teacher_forced(lm: LoadedModel, rows: Sequence[list[int]], starts: Sequence[int],
                    answer_starts: Sequence[int], batch_size: int) -> SentenceScores:
    """Score token rows: position t predicts token t for t >= ``starts[i]``; answer hits from ``answer_starts``.

    Rows are batched by length (:func:`_length_batches`); the per-row results come back in input order, and a
    row's values do not depend on the batch it was scored in beyond float rounding. Totals sum the rows in input
    order.
    """
    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    dev = next(lm.model.parameters()).device
    n = len(rows)
    row_nll, row_tokens = [0.0] * n, [0] * n
    exact_match, token_accuracy = [0.0] * n, [0.0] * n
    for batch in _length_batches(rows, batch_size):
        width = max(len(rows[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        att = torch.zeros_like(ids)
        scored = torch.zeros((len(batch), width), dtype=torch.bool)   # position t predicts token t
        answer = torch.zeros_like(scored)
        for b, i in enumerate(batch):
            r = rows[i]
            ids[b, :len(r)] = torch.tensor(r)
            att[b, :len(r)] = 1
            scored[b, starts[i]:len(r)] = True
            answer[b, answer_starts[i]:len(r)] = True
        keep = (scored | answer)[:, 1:]
        nll_kept, hit_kept = _scored_positions(lm, ids.to(dev), att.to(dev), keep.to(dev))
        nll = torch.zeros(keep.shape, dtype=torch.float32, device=dev)
        hit = torch.zeros(keep.shape, dtype=torch.bool, device=dev)
        nll[keep], hit[keep] = nll_kept, hit_kept
        mask = scored[:, 1:].to(dev)
        amask = answer[:, 1:].to(dev)
        per_row_nll = (nll * mask).sum(-1).cpu().tolist()
        per_row_tokens = mask.sum(-1).cpu().tolist()
        hits = (hit & amask).sum(-1)
        n_ans = amask.sum(-1)
        acc = (hits / n_ans.clamp(min=1)).float().cpu().tolist()
        em = (hits == n_ans).float().cpu().tolist()
        for b, i in enumerate(batch):
            row_nll[i], row_tokens[i] = per_row_nll[b], int(per_row_tokens[b])
            token_accuracy[i], exact_match[i] = acc[b], em[b]
    return SentenceScores(float(sum(row_nll)), int(sum(row_tokens)), exact_match, token_accuracy, row_nll,
                          row_tokens)


def score_sentences(lm: LoadedModel, pairs: Sequence[tuple[str, str]], language: str, *, prefix: str = "",
                    batch_size: int = 16) -> SentenceScores:
    """Score true-fact sentences in one forward per batch (the vocabulary projection dominates the cost).

    Prompt and answer are joined by :func:`memla_utils.text.join_prompt_answer`. A ``prefix`` (an in-context
    edit's demonstrations) is prepended as context: conditioned on, not scored.
    """
    tok = lm.tokenizer
    ctx = encode_prompt(tok, prefix) if prefix else []
    rows, starts, answer_starts = [], [], []
    for prompt, answer in pairs:
        joined = join_prompt_answer(tok, prompt, answer, language)
        p = joined.prompt_ids[joined.n_special_prefix:] if ctx else joined.prompt_ids
        a = joined.answer_ids
        rows.append(ctx + p + a)
        starts.append(max(1, len(ctx)))
        answer_starts.append(len(ctx) + len(p))
    return _teacher_forced(lm, rows, starts, answer_starts, batch_size)


def score_text(lm: LoadedModel, texts: Sequence[str], *, prefix: str = "", batch_size: int = 16) -> SentenceScores:
    """Teacher-forced NLL of free text: every token after BOS (after ``prefix``, conditioned on) is scored."""
    tok = lm.tokenizer
    ctx = encode_prompt(tok, prefix) if prefix else []
    rows, starts = [], []
    for t in texts:
        ids = list(tok(t, add_special_tokens=False)["input_ids"]) if ctx else encode_prompt(tok, t)
        rows.append(ctx + ids)
        starts.append(max(1, len(ctx)))
    return _teacher_forced(lm, rows, starts, [len(r) for r in rows], batch_size)


def sentence_nll(lm: LoadedModel, pairs: Sequence[tuple[str, str]], language: str, *, prefix: str = "",
                 batch_size: int = 16) -> tuple[float, int]:
    """Total NLL (nats) and number of scored tokens of the sentences (see :func:`score_sentences`)."""
    sc = score_sentences(lm, pairs, language, prefix=prefix, batch_size=batch_size)
    return sc.nll, sc.n_tokens


@dataclass
class LanguageScores:
    """Raw scores of one language's probes: facts (per sentence) and prose (per chunk)."""

    facts: SentenceScores | None
    text: SentenceScores | None


#: ``{language: LanguageScores}`` of a model state (before or after an edit)
ProbeScores = dict[str, LanguageScores]


def score_probe(lm: LoadedModel, probe: ProbeSet, *, edit: Any = None, batch_size: int = 16) -> ProbeScores:
    """Score every probe of ``probe`` once. ``edit`` (an applied Edit) only matters for in-context edits: its
    prompt prefix for the language is put in front of every probe (conditioned on, not scored)."""
    out: ProbeScores = {}
    for lang in probe.languages:
        prefix = edit.prompt_prefix.get(lang, "") if edit is not None and getattr(edit, "prompt_prefix", None) else ""
        pairs = probe.facts.get(lang, [])
        texts = probe.text.get(lang, [])
        out[lang] = LanguageScores(
            score_sentences(lm, pairs, lang, prefix=prefix, batch_size=batch_size) if pairs else None,
            score_text(lm, texts, prefix=prefix, batch_size=batch_size) if texts else None)
    return out


def summarize(probe: ProbeSet, scores: ProbeScores, edited_relations: Iterable[str] = ()
              ) -> dict[tuple[str, str], tuple[float, int]]:
    """``{(language, metric): (value, n)}`` from raw scores, given the relations edited so far.

    ``perplexity`` (prose; n = tokens), ``fact_accuracy`` / ``fact_token_accuracy`` (true facts of other
    relations; n = facts), ``relation_spillover_perplexity`` / ``relation_spillover_accuracy`` (true facts of
    the edited relations). A metric with nothing to average is left out, never reported as 0.
    """
    edited = set(edited_relations)
    out: dict[tuple[str, str], tuple[float, int]] = {}
    for lang, sc in scores.items():
        if sc.text is not None and sc.text.n_tokens:
            out[(lang, "perplexity")] = (math.exp(sc.text.nll / sc.text.n_tokens), sc.text.n_tokens)
        if sc.facts is None:
            continue
        rels = probe.relations.get(lang, [])
        other = [i for i, r in enumerate(rels) if r not in edited]
        same = [i for i, r in enumerate(rels) if r in edited]
        if other:
            out[(lang, "fact_accuracy")] = (sum(sc.facts.exact_match[i] for i in other) / len(other), len(other))
            out[(lang, "fact_token_accuracy")] = (sum(sc.facts.token_accuracy[i] for i in other) / len(other),
                                                  len(other))
        if same:
            tokens = sum(sc.facts.row_tokens[i] for i in same)
            out[(lang, "relation_spillover_perplexity")] = (
                math.exp(sum(sc.facts.row_nll[i] for i in same) / max(1, tokens)), tokens)
            out[(lang, "relation_spillover_accuracy")] = (sum(sc.facts.exact_match[i] for i in same) / len(same),
                                                          len(same))
    return out


def measure(lm: LoadedModel, probe: ProbeSet, *, edit: Any = None, batch_size: int = 16,
            edited_relations: Iterable[str] = ()) -> dict[tuple[str, str], tuple[float, int]]:
    """:func:`summarize` of :func:`score_probe`: ``{(language, metric): (value, n)}``."""
    return summarize(probe, score_probe(lm, probe, edit=edit, batch_size=batch_size), edited_relations)


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
                        editors: dict[str, Any] | None = None, config: GeneralConfig = GeneralConfig(),
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
                       config: GeneralConfig = GeneralConfig(), edit_context: dict[str, Any] | None = None,
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
                  edit_language: str, *, n_single: int, steps: Sequence[int], config: GeneralConfig = GeneralConfig(),
                  n_train: int = 8, editor_overrides: dict[str, dict[str, Any]] | None = None,
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


#: Below this many records a run counts as a small (CPU) run for the ``auto`` general-ability settings.
FULL_SCALE_RECORDS = 100


def saved_masks(directory: Any) -> MasksProvider:
    """A masks provider reading notebook 03's record-mask files (None where a record has none)."""
    from pathlib import Path

    from .mask_files import load_record_masks, mask_path

    def provider(record: Record, language: str) -> Any:
        path = mask_path(Path(directory), record.example_id, language)
        return load_record_masks(path) if path.is_file() else None
    return provider


def parse_methods(value: str | Sequence[str], run_methods: Sequence[str], n_records: int = 0) -> list[str]:
    """``"memla,ft"`` or ``["memla", "ft"]`` (kept in run order, only methods of the run); ``"all"``: every method
    of the run; ``"auto"``: MEMLA alone on small runs (each edit costs seconds on CPU), every method at full
    scale."""
    from .config import coerce_parameter

    value = coerce_parameter("general_methods", value)
    if value == "auto":
        value = "all" if n_records >= FULL_SCALE_RECORDS else ["memla"]
    if value == "all":
        return list(run_methods)
    wanted = list(value)
    dropped = [m for m in wanted if m not in run_methods]
    if dropped:
        log.warning("general_methods %s are not methods of this run (%s): skipped", dropped, ",".join(run_methods))
    return [m for m in wanted if m in run_methods]


@dataclass
class StudyPlan:
    """What notebook 06's general-ability parameters resolve to for a run of ``n_records`` records."""

    methods: list[str]
    n_single: int             # records edited one at a time (edit, measure, revert)
    steps: tuple[int, ...]    # sequential-editing checkpoints

    @property
    def n_edit(self) -> int:
        """Records the study edits (the probe records come after them in file order)."""
        return max(self.n_single, max(self.steps) if self.steps else 0)


def plan_study(general_methods: str, general_records: str | int, sequential_steps: str | int | Sequence[int],
               run_methods: Sequence[str], n_records: int) -> StudyPlan:
    """Resolve the ``auto`` values: small runs measure MEMLA on 2 single edits and 1,3,5 sequential edits (kept
    to the run's records, already located), full-scale runs every method on 100 and 10,50,100."""
    if str(general_records).strip() == "auto":
        n_single = min(2, n_records) if n_records < FULL_SCALE_RECORDS else 100
    else:
        try:
            n_single = int(general_records)
        except ValueError:
            raise ValueError(f"general_records must be an integer or 'auto', got {general_records!r}") from None
    return StudyPlan(parse_methods(general_methods, run_methods, n_records), n_single,
                     parse_steps(sequential_steps, n_records))


def parse_steps(value: str | int | Sequence[int], n_records: int = 0) -> tuple[int, ...]:
    """``"1,3,5"`` -> (1, 3, 5); ``"full"`` -> (10, 50, 100); ``"auto"`` -> full when ``n_records`` >= 100, else
    the CPU default (1, 3, 5) kept to at most ``n_records`` edits, so the sequence edits the records notebooks
    02-05 already located (a further record costs a new attribution, minutes on CPU); ``""`` -> none."""
    if isinstance(value, int) and not isinstance(value, bool):  # papermill passes "-p sequential_steps 5" as an int
        return (value,) if value > 0 else ()
    if isinstance(value, str):
        if value.strip() == "auto":
            if n_records >= FULL_SCALE_RECORDS:
                value = "full"
            else:
                small = [s for s in GeneralConfig.sequential_steps if s <= max(1, n_records)]
                value = ",".join(map(str, small))
        if value.strip() == "full":
            return FULL_SEQUENTIAL_STEPS
        try:
            return tuple(int(v) for v in value.split(",") if v.strip())
        except ValueError:
            raise ValueError(f"sequential_steps must be comma-separated integers or 'full', got {value!r}") from None
    return tuple(int(v) for v in value)


__all__ = ["FULL_SEQUENTIAL_STEPS", "GeneralConfig", "LanguageScores", "ProbeScores", "ProbeSet", "available_methods",
           "build_probe_set", "record_relation", "score_probe", "score_text", "summarize",
           "FULL_SCALE_RECORDS", "StudyPlan", "general_study", "plan_study", "parse_methods", "saved_masks", "parse_steps", "split_records", "measure", "save_rows",
           "score_sentences", "sentence_nll", "sequential_general", "single_edit_general", "usable_records"]
