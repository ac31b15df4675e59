"""The general-ability probe: what is measured (config), the probe set, its raw scores and their summary.

MEMLA §5 claims editing barely affects what the model otherwise knows (the paper's general-ability evaluation is
not released with memla4mke). This module builds and measures the probe, without any download:

* **perplexity** on real multilingual prose unrelated to any edit: fixed, seeded chunks per language of the
  ``dataset-build`` text (:mod:`memla_utils.corpus`; 16 chunks of <= 300 characters per language by default);
  perplexity = exp(total NLL / tokens) over every token after BOS;
* **unrelated facts**: true facts (edit prompt ⧺ true answer, joined at the token level) of MKEB records that
  are not edited and belong to *other relations* than the edited record(s), scored by teacher-forced exact
  match of the true answer (``fact_accuracy``) and token accuracy;
* **relation spill-over** (its own labelled metric, not general ability): the same true-fact sentences of
  unedited records of the *edited* relation (``relation_spillover_perplexity``, ``relation_spillover_accuracy``):
  how much an edit of "capital of Armenia" disturbs other capitals.

Scoring itself is :mod:`memla_utils.general_scoring`; the edit studies that use the probe are
:mod:`memla_utils.general_edits`.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .corpus import TextConfig, general_text
from .general_scoring import SentenceScores, score_sentences, score_text
from .mkeb.record import Record, RecordError
from .mkeb.select import relation_of
from .models import LoadedModel

#: Training records the general study passes to editors that fit on a split (MEND's meta-training, IKE's
#: demonstrations): the records after the probe records in file order; as notebook 05's ``n_train_records``.
TRAIN_RECORDS = 8


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


__all__ = ["FULL_SEQUENTIAL_STEPS", "GeneralConfig", "LanguageScores", "ProbeScores", "ProbeSet", "build_probe_set",
           "measure", "record_relation", "score_probe", "summarize"]
