"""The paper's metrics (ES, PS, NS, QS) for one (possibly edited) model, plus clearly labelled variants.

Semantics follow memla4mke ``utils/evaluator.py``:

- **ES**: P(target_new | edit prompt) > P(target_true | edit prompt), P = product of token probabilities
  (compared as sums of log-probs), in the evaluation language.
- **PS**: the same comparison on every paraphrase prompt, averaged.
- **NS**: F1 between the *sets of token ids* of the greedy continuation (as many tokens as the answer) and of
  the neighborhood answer (``calc_f1``), averaged over neighborhood prompts. The answer's ids are those of the
  joined text (:func:`memla_utils.text.join_prompt_answer`); the continuation starts from the normalised prompt.
- **QS**: the same F1 on the multi-hop questions against ``multi_hop_new_answer``.

Labelled variants (not in the paper): ``*_token_acc`` / ``*_exact_match`` (teacher-forced argmax accuracy of
target_new), ``NS_text_f1`` / ``QS_text_f1`` (SQuAD-style bag-of-words F1 on decoded text, characters for
zh/ja/th) and ``NS_vs_unedited`` (F1 of the continuation against the *unedited* model's continuation: locality
relative to the model before editing). A metric whose fields a record lacks is ``None`` ("not available"),
never 0. Deliberate differences to memla4mke: greedy decoding appends token ids instead of decoding and
re-tokenising the text after every step (identical for the usual case, and well defined for zh/ja/th), and a
continuation stops at the model's first EOS (:func:`greedy_continuations`): memla4mke, one prompt at a time,
kept predicting after EOS; batched generation pads finished rows instead, so EOS and padding ids counted as
predicted tokens and a prompt's NS depended on the other prompts in its batch. Now EOS ends the continuation
(it and anything after it are not predicted tokens), so NS / QS do not depend on batch size, composition or
padding side.
"""
from __future__ import annotations

import contextlib
import logging
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .cache import ArtifactCache, cache_key
from .finite import finite_evaluation, finite_logits, naming, require_finite_metrics, require_finite_tensor
from .head_projection import can_defer, deferred_head, project_blocks
from .languages import NO_SPACE_LANGUAGES
from .mkeb.record import LanguageView, Record
from .models import LoadedModel
from .prefix_scoring import PADDING_SLACK, cache_kwarg, cache_of, score_answers_shared
from .scoring import score_answers
from .text import JOIN_VERSION, encode_answer, encode_prompt, normalize_prompt

log = logging.getLogger(__name__)

#: (prompt, language) -> prompt as the edited model sees it (``Edit.wrap_prompt``)
Wrap = Callable[[str, str], str]

PAPER_METRICS: tuple[str, ...] = ("ES", "PS", "NS", "QS")
VARIANT_METRICS: tuple[str, ...] = ("ES_token_acc", "ES_exact_match", "PS_token_acc", "PS_exact_match",
                                    "NS_text_f1", "QS_text_f1", "NS_vs_unedited")


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate; defaults = everything the record has (memla4mke evaluates every prompt)."""

    batch_size: int = 64                   # prompts per forward (memory only; results do not depend on it). 64: one
    #                                        MKEB record's 12 languages (72 scored rows, 48 continuations) in a few
    #                                        forwards (evaluate_record projects logits only at answer positions)
    max_paraphrases: int | None = None     # None: all (paper)
    max_neighborhood: int | None = None    # None: all (paper)
    max_multi_hop: int | None = None       # None: all (paper)
    variants: bool = True                  # also compute the labelled non-paper variants


@dataclass(frozen=True)
class MetricValue:
    """One metric for one (record, evaluation language): the mean, and over how many prompts (0: n/a)."""

    value: float | None
    n: int


def _identity(prompt: str, language: str) -> str:
    return prompt


# ----------------------------------------------------------------------------------------- F1 helpers
def set_f1(reference: Sequence[Any], prediction: Sequence[Any]) -> float:
    """memla4mke ``calc_f1``: F1 over the *sets* of items (token ids), 0 when nothing overlaps."""
    ref, pred = set(reference), set(prediction)
    if not ref and not pred:
        raise ValueError("set_f1: both reference and prediction are empty")
    common = len(ref & pred)
    if common == 0:
        return 0.0
    p, r = common / len(pred), common / len(ref)
    return 2 * p * r / (p + r)


def _is_punct(char: str) -> bool:
    """Punctuation and symbols (Unicode P*/S*); combining marks (Thai vowels, Devanagari signs) are letters."""
    return unicodedata.category(char)[0] in "PS"


def text_tokens(text: str, language: str) -> list[str]:
    """Words for F1: lower-cased, punctuation dropped; characters in languages written without spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    if language in NO_SPACE_LANGUAGES:
        return [c for c in text if not c.isspace() and not _is_punct(c)]
    return "".join(" " if _is_punct(c) else c for c in text).split()


def text_f1(prediction: str, reference: str, language: str) -> float:
    """SQuAD-style bag-of-tokens F1 with :func:`text_tokens` (so it works for zh/ja/th)."""
    pred, ref = Counter(text_tokens(prediction, language)), Counter(text_tokens(reference, language))
    common = sum((pred & ref).values())
    if common == 0:
        return 0.0
    p, r = common / sum(pred.values()), common / sum(ref.values())
    return 2 * p * r / (p + r)


# ----------------------------------------------------------------------------------------- model calls
def eos_token_ids(lm: LoadedModel) -> list[int]:
    """Every id that ends a continuation: the tokenizer's EOS and the model config's and generation config's
    ``eos_token_id`` (an int or a list, e.g. Gemma 3 instruct's ``<eos>`` and ``<end_of_turn>``)."""
    found: set[int] = set()
    sources = (getattr(lm.tokenizer, "eos_token_id", None), getattr(lm.model.config, "eos_token_id", None),
               getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None))
    for src in sources:
        if src is None:
            continue
        found.update(int(i) for i in ([src] if isinstance(src, int) else src))
    return sorted(found)


def cut_at_eos(ids: Sequence[int], eos_ids: Sequence[int] | set[int]) -> list[int]:
    """The ids before the first EOS (EOS and whatever follows it, padding included, are not predicted tokens)."""
    stop = set(eos_ids)
    out: list[int] = []
    for i in ids:
        if i in stop:
            break
        out.append(int(i))
    return out


@torch.no_grad()
def _greedy_cache_free(lm: LoadedModel, rows: list[list[int]], steps: list[int], eos: set[int],
                       pad: int) -> list[list[int]]:
    """Greedy decoding with right padding and no KV cache: every step re-runs the unfinished rows in full."""
    seqs = [list(r) for r in rows]
    out: list[list[int]] = [[] for _ in rows]
    done = [k <= 0 for k in steps]
    while True:
        active = [b for b in range(len(rows)) if not done[b]]
        if not active:
            return out
        width = max(len(seqs[b]) for b in active)
        ids = torch.full((len(active), width), pad, dtype=torch.long)
        att = torch.zeros_like(ids)
        for i, b in enumerate(active):
            ids[i, :len(seqs[b])] = torch.tensor(seqs[b])
            att[i, :len(seqs[b])] = 1
        last = att.sum(1) - 1
        logits = lm.model(input_ids=ids.to(lm.device), attention_mask=att.to(lm.device)).logits
        nxt = logits[torch.arange(len(active), device=logits.device), last.to(logits.device)].argmax(-1).tolist()
        for b, t in zip(active, nxt):
            if t in eos:
                done[b] = True
                continue
            out[b].append(int(t))
            seqs[b].append(int(t))
            done[b] = len(out[b]) >= steps[b]


def _generation_chunks(lengths: Sequence[int], prompt_lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of the prompts, in batches of similar prompt length (any continuation lengths).

    Sorted by (prompt length, index) and cut where a batch is full or a longer prompt would pad the batch by more
    than :data:`memla_utils.prefix_scoring.PADDING_SLACK` of its real tokens: little left padding is computed.
    Rows of one batch want different numbers of tokens; :func:`_greedy_kv` drops each row from the batch (and
    from the key/value cache) once it has its tokens, so no row decodes a step beyond its own length. Prompts
    with length <= 0 are left out.
    """
    order = sorted((i for i, k in enumerate(lengths) if k > 0), key=lambda i: (prompt_lengths[i], i))
    chunks: list[list[int]] = []
    real = 0
    for i in order:
        last = chunks[-1] if chunks else []
        if (last and len(last) < batch_size
                and (len(last) + 1) * prompt_lengths[i] <= (1 + PADDING_SLACK) * (real + prompt_lengths[i])):
            last.append(i)
            real += prompt_lengths[i]
        else:
            chunks.append([i])
            real = prompt_lengths[i]
    return chunks


@dataclass
class _Decoding:
    """One left-padded batch of :func:`_greedy_kv_batches` while it decodes: its rows still decoding (``live``:
    row of the batch -> index into the batch's rows), their mask, last positions, cache and next tokens."""

    steps: list[int]
    ids: torch.Tensor
    att: torch.Tensor
    pos: torch.Tensor
    out_ids: list[list[int]]
    live: list[int]
    cache: Any = None
    nxt: torch.Tensor | None = None

    def forward(self, model: torch.nn.Module, name: str) -> Any:
        """The batch's next forward: the prefill, then one token per live row."""
        if self.cache is None:
            return model(input_ids=self.ids, attention_mask=self.att, position_ids=self.pos, use_cache=True,
                         logits_to_keep=1)
        return model(input_ids=self.nxt[:, None], attention_mask=self.att, position_ids=self.pos[:, -1:],
                     use_cache=True, **{name: self.cache})

    def advance(self, nxt: torch.Tensor, eos: set[int]) -> None:
        """Append the predicted tokens; drop rows that are done (EOS or enough tokens) from the batch and cache."""
        keep: list[int] = []
        for j, b in enumerate(self.live):
            t = int(nxt[j])
            if t in eos:
                continue
            self.out_ids[b].append(t)
            if len(self.out_ids[b]) < self.steps[b]:
                keep.append(j)
        if len(keep) < len(self.live):
            self.live = [self.live[j] for j in keep]
            if not keep:
                return
            sel = torch.tensor(keep, device=self.att.device)
            self.cache.batch_select_indices(sel)
            self.att, nxt, self.pos = self.att[sel], nxt[sel], self.pos[sel]
        self.att = torch.cat([self.att, self.att.new_ones((len(self.live), 1))], dim=1)
        self.pos = self.pos[:, -1:] + 1
        self.nxt = nxt


@torch.no_grad()
def _greedy_kv_batches(lm: LoadedModel, batches: Sequence[list[list[int]]], steps: Sequence[list[int]],
                       eos: set[int], pad: int) -> list[list[list[int]]]:
    """Greedy decoding of several left-padded batches with the model's key/value cache, all batches one step at
    a time: one prefill per batch, then one token per step for its rows still decoding. A row leaves its batch
    (and the cache, ``Cache.batch_select_indices``) once it has ``steps[b]`` tokens or predicts an EOS; position
    ids follow each row's real tokens as in ``model.generate`` (``attention_mask.cumsum(-1) - 1``), so a row's
    continuation equals generate's. Where the head can be deferred (:mod:`memla_utils.head_projection`), the
    batches' rows of one step share one vocabulary projection; otherwise each forward projects its own rows.
    Returns, per batch, the continuation of each row."""
    model = lm.model
    defer, name = can_defer(model), cache_kwarg(model)
    states = []
    for rows, st in zip(batches, steps):
        ids, att = _pad_left(rows, pad)
        ids, att = ids.to(lm.device), att.to(lm.device)
        states.append(_Decoding(list(st), ids, att, (att.cumsum(-1) - 1).clamp(min=0), [[] for _ in rows],
                                list(range(len(rows)))))
    while True:
        active = [s for s in states if s.live]
        if not active:
            return [s.out_ids for s in states]
        with deferred_head(model) if defer else contextlib.nullcontext([]) as hidden:
            nxt = []
            for s in active:
                out = s.forward(model, name)
                s.cache = cache_of(out)
                if not defer:
                    nxt.append(out.logits[:, -1].argmax(-1))
        if defer:
            h = torch.cat([x[:, -1] for x in hidden])
            best = torch.cat([logits.argmax(-1) for _, logits in project_blocks(model, h)])
            nxt = list(best.split([len(s.live) for s in active]))
        for s, n in zip(active, nxt):
            s.advance(n, eos)


def _greedy_kv(lm: LoadedModel, rows: list[list[int]], steps: list[int], eos: set[int],
               pad: int) -> list[list[int]]:
    """:func:`_greedy_kv_batches` of one batch."""
    return _greedy_kv_batches(lm, [rows], [steps], eos, pad)[0]


def _pad_left(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, width - len(r):] = torch.tensor(list(r))
        att[b, width - len(r):] = 1
    return ids, att


@torch.no_grad()
def greedy_continuations(lm: LoadedModel, prompts: Sequence[str], n_tokens: Sequence[int], *,
                         batch_size: int = 16, padding_side: str = "left") -> list[list[int]]:
    """Greedy (argmax) continuation of each prompt: at most ``n_tokens[i]`` token ids, stopped at the first EOS.

    Generation starts from :func:`memla_utils.text.normalize_prompt` of each prompt (as in the prompt/answer
    join). Any of :func:`eos_token_ids` ends a continuation and is not part of it, so the result of one prompt
    does not depend on ``batch_size``, on the other prompts in its batch or on ``padding_side`` (up to float
    rounding of near-ties): ``"left"`` (default) decodes left-padded batches of prompts of similar length with
    the model's key/value cache, dropping each row once it is done, all batches one step at a time with one
    vocabulary projection per step (:func:`_generation_chunks`, :func:`_greedy_kv_batches`; ``batch_size``
    prompts at most per batch), ``"right"`` a cache-free loop over right-padded rows (slower; a cross-check).
    Returns
    ``len(prompts)`` lists of ids (possibly empty), in the order of ``prompts``.
    """
    if len(prompts) != len(n_tokens):
        raise ValueError(f"{len(prompts)} prompts but {len(n_tokens)} lengths")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    eos = eos_token_ids(lm)
    lengths = [int(k) for k in n_tokens]
    rows = [encode_prompt(tok, normalize_prompt(p)) for p in prompts]
    if padding_side == "right":
        out: list[list[int]] = []
        for s in range(0, len(rows), batch_size):
            out.extend(_greedy_cache_free(lm, rows[s:s + batch_size], lengths[s:s + batch_size], set(eos), pad))
        return out
    result: list[list[int]] = [[] for _ in prompts]
    chunks = _generation_chunks(lengths, [len(r) for r in rows], batch_size)
    decoded = _greedy_kv_batches(lm, [[rows[i] for i in c] for c in chunks], [[lengths[i] for i in c] for c in chunks],
                                 set(eos), pad)
    for chunk, got in zip(chunks, decoded):
        for i, ids in zip(chunk, got):
            result[i] = ids
    return result


def _take(items: list[Any], limit: int | None) -> list[Any]:
    return items if limit is None else items[:limit]


def _mean(values: Sequence[float]) -> MetricValue:
    return MetricValue(float(sum(values) / len(values)), len(values)) if values else MetricValue(None, 0)


@dataclass
class LanguageEvaluation:
    """The metrics of one (record, evaluation language) and the greedy continuations they were computed from."""

    metrics: dict[str, MetricValue]
    continuations: dict[str, list[list[int]]]

    def to_json(self) -> dict[str, Any]:
        return {"metrics": {k: asdict(v) for k, v in self.metrics.items()}, "continuations": self.continuations}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LanguageEvaluation:
        return cls({k: MetricValue(**v) for k, v in data["metrics"].items()}, data["continuations"])


@dataclass(frozen=True)
class _Plan:
    """What evaluating one (record, language) computes, before any forward: the rows to score and to continue.

    ``groups``: ES / PS -> the (wrapped) prompts scored with ``target_new`` and, when the record has one,
    ``target_true``. ``jobs``: (NS|QS, wrapped prompt, answer text) to continue greedily for as many tokens as
    ``answer_ids`` (the answer's ids after the unwrapped prompt, :func:`memla_utils.text.encode_answer`).
    """

    language: str
    groups: dict[str, list[str]]
    target_new: str
    target_true: str | None
    jobs: list[tuple[str, str, str]]
    answer_ids: list[list[int]]

    @property
    def has_new(self) -> bool:  # empty: nothing to score (the editor reports the bad record)
        return bool(self.target_new.strip())

    @property
    def has_true(self) -> bool:
        return self.has_new and bool((self.target_true or "").strip())

    def score_rows(self) -> tuple[list[str], list[str]]:
        """(prompts, answers) to score: every prompt with target_new, then (if any) every prompt with target_true."""
        prompts = [p for g in self.groups.values() for p in g]
        if not prompts or not self.has_new:
            return [], []
        answers = [self.target_new] * len(prompts) + ([self.target_true] * len(prompts) if self.has_true else [])
        return prompts * (2 if self.has_true else 1), answers  # type: ignore[list-item]


def _plan(lm: LoadedModel, record: Record, language: str, wrap: Wrap, config: EvalConfig) -> _Plan:
    view: LanguageView = record.for_language(language)
    paras = [wrap(p, language) for p in _take(view.paraphrase_prompts, config.max_paraphrases)]
    ngh = list(zip(view.neighborhood_prompts, view.neighborhood_answers))
    if len(view.neighborhood_prompts) != len(view.neighborhood_answers):
        log.warning("record %r (%s): %d neighborhood prompts but %d answers; using the first %d pairs",
                    record.example_id, language, len(view.neighborhood_prompts), len(view.neighborhood_answers),
                    len(ngh))
    ngh = [(p, a) for p, a in _take(ngh, config.max_neighborhood) if a.strip()]
    mh_answer = (view.multi_hop_new_answer or "").strip()
    mhq = [(q, mh_answer) for q in _take(view.multi_hop_questions, config.max_multi_hop)] if mh_answer else []
    raw = [("NS", p, a) for p, a in ngh] + [("QS", q, a) for q, a in mhq]
    return _Plan(language, {"ES": [wrap(view.prompt, language)], "PS": paras}, view.target_new, view.target_true,
                 [(kind, wrap(p, language), a) for kind, p, a in raw],
                 [encode_answer(lm.tokenizer, a, language, p) for _, p, a in raw])


def _reliability(plan: _Plan, scores: dict[str, torch.Tensor], config: EvalConfig) -> dict[str, MetricValue]:
    """ES / PS (one group of prompts each): P(new) > P(true), plus teacher-forced accuracy of target_new,
    from the scores of :meth:`_Plan.score_rows` (empty when there was nothing to score)."""
    n = sum(len(g) for g in plan.groups.values())
    out: dict[str, MetricValue] = {}
    start = 0
    for prefix, group in plan.groups.items():
        sl = slice(start, start + len(group))
        start += len(group)
        ok = bool(group) and bool(scores)
        wins = (scores["logprob"][sl] > scores["logprob"][n:][sl]).float().tolist() if ok and plan.has_true else []
        out[prefix] = _mean(wins)  # no prompts or no old answer: not available
        if config.variants:
            out[f"{prefix}_token_acc"] = _mean(scores["token_accuracy"][sl].tolist() if ok else [])
            out[f"{prefix}_exact_match"] = _mean(scores["exact_match"][sl].tolist() if ok else [])
    return out


def _assemble(lm: LoadedModel, plan: _Plan, scores: dict[str, torch.Tensor], preds: Sequence[list[int]],
              config: EvalConfig, reference: LanguageEvaluation | None) -> LanguageEvaluation:
    """The metrics of one (record, language) from its scores and greedy continuations (in the plan's order)."""
    metrics = _reliability(plan, scores, config)
    conts: dict[str, list[list[int]]] = {"NS": [], "QS": []}
    f1: dict[str, list[float]] = {"NS": [], "QS": []}
    tf1: dict[str, list[float]] = {"NS": [], "QS": []}
    for (kind, _, ans_text), ans_ids, pred in zip(plan.jobs, plan.answer_ids, preds):
        conts[kind].append(pred)
        f1[kind].append(set_f1(ans_ids, pred))
        tf1[kind].append(text_f1(lm.tokenizer.decode(pred, skip_special_tokens=True), ans_text, plan.language))
    metrics["NS"], metrics["QS"] = _mean(f1["NS"]), _mean(f1["QS"])
    if config.variants:
        metrics["NS_text_f1"], metrics["QS_text_f1"] = _mean(tf1["NS"]), _mean(tf1["QS"])
        if reference is not None and len(reference.continuations.get("NS", [])) == len(conts["NS"]):
            metrics["NS_vs_unedited"] = _mean([set_f1(r, p) for r, p in zip(reference.continuations["NS"],
                                                                             conts["NS"]) if r or p])
        else:
            metrics["NS_vs_unedited"] = MetricValue(None, 0)
    return LanguageEvaluation(metrics, conts)


def _checked_scores(scores: dict[str, torch.Tensor], plan: _Plan) -> dict[str, torch.Tensor]:
    if scores:
        require_finite_tensor(scores["logprob"], f"language {plan.language!r}: answer log-probabilities for "
                                                 f"{'/'.join(plan.groups)}")
    return scores


@finite_evaluation  # NonFiniteError naming record and language instead of a NaN-derived metric
def evaluate_language(lm: LoadedModel, record: Record, language: str, *, wrap: Wrap | None = None,
                      config: EvalConfig | None = None,
                      reference: LanguageEvaluation | None = None) -> LanguageEvaluation:
    """ES, PS, NS, QS (+ variants) of ``record`` in ``language`` for the model as it is now.

    ``wrap`` maps each prompt to what the edited model sees (IKE's prefixes); ``reference`` is the unedited
    model's evaluation of the same record and language (for ``NS_vs_unedited``). One language at a time, with
    :func:`memla_utils.scoring.score_answers` (one teacher-forced batch per prompt/answer pair); the runner
    evaluates all languages of an edit at once with :func:`evaluate_record` (same metrics, faster).
    """
    config = config or EvalConfig()
    plan = _plan(lm, record, language, wrap or _identity, config)
    prompts, answers = plan.score_rows()
    scores = _checked_scores(score_answers(lm.model, lm.tokenizer, prompts, answers, language,
                                           batch_size=config.batch_size) if prompts else {}, plan)
    preds = greedy_continuations(lm, [p for _, p, _ in plan.jobs], [len(a) for a in plan.answer_ids],
                                 batch_size=config.batch_size) if plan.jobs else []
    return _assemble(lm, plan, scores, preds, config, reference)


def evaluate_record(lm: LoadedModel, record: Record, languages: Sequence[str], *, wrap: Wrap | None = None,
                    config: EvalConfig | None = None,
                    references: Mapping[str, LanguageEvaluation] | None = None) -> dict[str, LanguageEvaluation]:
    """:func:`evaluate_language` of ``record`` in every one of ``languages`` at once: ``{language: evaluation}``.

    The same metrics from the same rows (the tests check equality), computed together: every language's ES/PS
    rows in one call of :func:`memla_utils.prefix_scoring.score_answers_shared` (each prompt run once for both
    answers, logits only at answer positions, length-sorted batches of ``config.batch_size`` rows, one
    vocabulary projection for all of them) and every language's NS/QS continuations in one
    :func:`greedy_continuations` call (batches of similar prompt length decoded step by step together, one
    vocabulary projection per step). ``references``: the unedited model's evaluation per language (``NS_vs_unedited``). Raises
    ``NonFiniteError`` naming the record (and the language, where one is at fault) for non-finite outputs.
    """
    config = config or EvalConfig()
    wrap = wrap or _identity
    references = references or {}
    where = f"record {record.example_id!r}, languages {','.join(languages)}"
    plans = [_plan(lm, record, lang, wrap, config) for lang in dict.fromkeys(languages)]
    with finite_logits(lm.model, where):
        rows = [plan.score_rows() for plan in plans]
        flat = score_answers_shared(lm.model, lm.tokenizer, [p for ps, _ in rows for p in ps],
                                    [a for _, ans in rows for a in ans],
                                    [plan.language for plan, (ps, _) in zip(plans, rows) for _ in ps],
                                    batch_size=config.batch_size)
        jobs = [(p, len(a)) for plan in plans for (_, p, _), a in zip(plan.jobs, plan.answer_ids)]
        preds = greedy_continuations(lm, [p for p, _ in jobs], [k for _, k in jobs],
                                     batch_size=config.batch_size) if jobs else []
    out: dict[str, LanguageEvaluation] = {}
    s = g = 0
    for plan, (ps, _) in zip(plans, rows):
        named = f"record {record.example_id!r}, language {plan.language!r}"
        scores = {k: v[s:s + len(ps)] for k, v in flat.items()} if ps else {}
        with naming(named):
            _checked_scores(scores, plan)
        res = _assemble(lm, plan, scores, preds[g:g + len(plan.jobs)], config, references.get(plan.language))
        require_finite_metrics(res.metrics, named)
        out[plan.language] = res
        s, g = s + len(ps), g + len(plan.jobs)
    return out


class PreEditCache:
    """Unedited-model evaluations, computed once per (model fingerprint, record, language, config).

    Kept in memory and, with an :class:`ArtifactCache`, on disk as JSON. Call :meth:`get` / :meth:`get_many` only
    while the model is unedited (the runner asks before every edit unit: a record's languages are computed together
    at its first unit and every later unit, whatever its method or edit language, reuses them).
    """

    def __init__(self, cache: ArtifactCache | None = None) -> None:
        self.cache = cache
        self._memory: dict[str, LanguageEvaluation] = {}

    def key(self, lm: LoadedModel, record: Record, language: str, config: EvalConfig) -> str:
        return cache_key("preedit", model=lm.fingerprint, record=record.content_hash(), language=language,
                         config=config, join=JOIN_VERSION, continuation="stop-at-eos")

    def get(self, lm: LoadedModel, record: Record, language: str, config: EvalConfig | None = None
            ) -> LanguageEvaluation:
        """The unedited evaluation of ``record`` in ``language`` (:meth:`get_many` of one language)."""
        return self.get_many(lm, record, [language], config)[language]

    def get_many(self, lm: LoadedModel, record: Record, languages: Sequence[str],
                 config: EvalConfig | None = None) -> dict[str, LanguageEvaluation]:
        """``{language: unedited evaluation}`` for every one of ``languages``: from memory, else from disk, else
        computed, all missing languages of the record together (:func:`evaluate_record`)."""
        config = config or EvalConfig()
        out: dict[str, LanguageEvaluation] = {}
        missing: dict[str, str] = {}  # language -> key
        for lang in dict.fromkeys(languages):
            key = self.key(lm, record, lang, config)
            stored = self.cache.get_json(key) if key not in self._memory and self.cache is not None else None
            if stored is not None:
                self._memory[key] = LanguageEvaluation.from_json(stored)
            if key in self._memory:
                out[lang] = self._memory[key]
            else:
                missing[lang] = key
        if missing:
            computed = evaluate_record(lm, record, list(missing), config=config)
            for lang, key in missing.items():
                value = computed[lang]
                if config.variants:  # the unedited model agrees with itself wherever there is a continuation
                    value.metrics["NS_vs_unedited"] = _mean([1.0 for c in value.continuations["NS"] if c])
                if self.cache is not None:
                    self.cache.put_json(key, value.to_json())
                self._memory[key] = out[lang] = value
        return {lang: out[lang] for lang in dict.fromkeys(languages)}


__all__ = ["EvalConfig", "LanguageEvaluation", "MetricValue", "PAPER_METRICS", "PreEditCache", "VARIANT_METRICS",
           "Wrap", "cut_at_eos", "eos_token_ids", "evaluate_language", "evaluate_record", "greedy_continuations",
           "set_f1", "text_f1", "text_tokens"]
