"""Optional ``known_only`` filter: keep facts whose true answer the base model already ranks first.

Why: editing a fact the model never knew measures injection, not editing; the paper's knowledge-neuron
attribution also assumes the model holds the fact. Ranking is among the record's own candidate answers
(true answer, counterfactual target, neighbourhood answers) by mean log-probability per answer token, since
whole-vocabulary ranking is undefined for multi-token answers. Results are cached per (model fingerprint,
record content hash, language, candidates).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..cache import ArtifactCache, cache_key
from ..models import LoadedModel
from ..progress import tqdm
from ..scoring import score_answers
from ..text import JOIN_VERSION, encode_answer
from .record import Record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownConfig:
    """How "known" is decided. Defaults: the record's own answers as candidates (cheap: <= 5 forwards)."""

    use_neighborhood_answers: bool = True  # add the neighbours' answers as distractors (same relation)
    per_token: bool = True                 # rank by mean log-prob per token (answers differ in length)
    batch_size: int = 16


def candidates(record: Record, language: str, config: KnownConfig = KnownConfig()) -> list[str]:
    """True answer first, then the distinct distractors (target_new, neighbours' answers)."""
    e = record.edit[language]
    pool = [e.target_true, e.target_new]
    if config.use_neighborhood_answers:
        pool += record.neighborhood_answers.get(language, [])
    out: list[str] = []
    for a in pool:
        if a and a.strip() and a.casefold() not in {x.casefold() for x in out}:
            out.append(a)
    return out


def is_known(loaded: LoadedModel, record: Record, language: str, *, config: KnownConfig = KnownConfig(),
             cache: ArtifactCache | None = None) -> bool | None:
    """Whether the base model ranks the true answer first; None when the record has no ``target_true``."""
    if record.edit[language].target_true is None:
        return None
    cands = candidates(record, language, config)
    cache = cache if cache is not None else ArtifactCache()
    key = cache_key("known", model=loaded.fingerprint, record=record.content_hash(), language=language,
                    candidates=cands, config=config, join=JOIN_VERSION)
    hit = cache.get_json(key)
    if hit is not None:
        return bool(hit["known"])
    prompt = record.for_language(language).prompt
    scores = score_answers(loaded.model, loaded.tokenizer, [prompt] * len(cands), cands, language,
                           batch_size=config.batch_size)["logprob"]
    if config.per_token:
        lengths = [len(encode_answer(loaded.tokenizer, a, language, prompt)) for a in cands]
        scores = scores / scores.new_tensor(lengths)
    known = int(scores.argmax()) == 0
    cache.put_json(key, {"known": known, "candidates": cands, "scores": [float(s) for s in scores]})
    return known


@dataclass
class KnownResult:
    """Records kept and how many survive per language (None answers count as not available)."""

    records: list[Record]
    survivors: dict[str, int]
    not_available: dict[str, int] = field(default_factory=dict)
    total: int = 0


def filter_known(loaded: LoadedModel, records: Sequence[Record], languages: Sequence[str], *,
                 require: str = "all", config: KnownConfig = KnownConfig(),
                 cache: ArtifactCache | None = None) -> KnownResult:
    """Keep records the model knows in ``all`` (or ``any``) of ``languages``; report survivors per language."""
    if require not in ("all", "any"):
        raise ValueError(f"require must be 'all' or 'any', got {require!r}")
    survivors = {l: 0 for l in languages}
    missing = {l: 0 for l in languages}
    kept: list[Record] = []
    for rec in tqdm(records, desc="known_only", disable=len(records) < 5):
        flags = []
        for lang in languages:
            k = is_known(loaded, rec, lang, config=config, cache=cache)
            if k is None:
                missing[lang] += 1
            survivors[lang] += bool(k)
            flags.append(bool(k))
        if (all(flags) if require == "all" else any(flags)):
            kept.append(rec)
    log.info("known_only (%s): kept %d of %d records; per language %s", require, len(kept), len(records), survivors)
    return KnownResult(kept, survivors, missing, len(records))
