"""The paper's metrics (ES, PS, NS, QS) of one record for one (possibly edited) model, plus labelled variants.

Semantics follow memla4mke ``utils/evaluator.py``:

- **ES**: P(target_new | edit prompt) > P(target_true | edit prompt), P = product of token probabilities
  (compared as sums of log-probs), in the evaluation language.
- **PS**: the same comparison on every paraphrase prompt, averaged.
- **NS**: F1 between the *sets of token ids* of the greedy continuation (as many tokens as the answer) and of
  the neighborhood answer (``calc_f1``, :func:`memla_utils.evaluate_f1.set_f1`), averaged over neighborhood
  prompts. The answer's ids are those of the joined text (:func:`memla_utils.text.join_prompt_answer`); the
  continuation starts from the normalised prompt and stops at the first EOS
  (:func:`memla_utils.evaluate_greedy.greedy_continuations`).
- **QS**: the same F1 on the multi-hop questions against ``multi_hop_new_answer``.

Labelled variants (not in the paper): ``*_token_acc`` / ``*_exact_match`` (teacher-forced argmax accuracy of
target_new), ``NS_text_f1`` / ``QS_text_f1`` (SQuAD-style bag-of-words F1 on decoded text, characters for
zh/ja/th) and ``NS_vs_unedited`` (F1 of the continuation against the *unedited* model's continuation: locality
relative to the model before editing). A metric whose fields a record lacks is ``None`` ("not available"),
never 0.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .evaluate_f1 import set_f1, text_f1
from .evaluate_greedy import greedy_continuations
from .finite import finite_evaluation, finite_logits, naming, require_finite_metrics, require_finite_tensor
from .mkeb.record import LanguageView, Record
from .models import LoadedModel
from .prefix_scoring import score_answers_shared
from .scoring import score_answers
from .text import encode_answer

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


__all__ = ["EvalConfig", "LanguageEvaluation", "MetricValue", "PAPER_METRICS", "VARIANT_METRICS", "Wrap",
           "evaluate_language", "evaluate_record"]
