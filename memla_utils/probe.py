"""What the model knows before any edit: well-known facts asked in every MKEB language.

Each probe fact is "the capital of <country>" with country and city names localized by CLDR (babel), so the
same fact is asked in all twelve languages without hand translation of the entities. The model *knows* a fact
in a language when the true capital's log-probability (sum over its tokens, as in the ES metric) beats each of
four other capitals'. This frames every later result: an edit cannot transfer to a language in which the model
cannot even state the fact.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from babel import Locale
from babel.dates import get_timezone_location

from .languages import MKEB_LANGUAGES, validate_languages
from .models import LoadedModel
from .scoring import score_answers

#: country (ISO 3166) -> IANA time zone whose exemplar city is the capital (CLDR localizes these names)
PROBE_CAPITALS: dict[str, str] = {
    "FR": "Europe/Paris", "DE": "Europe/Berlin", "ES": "Europe/Madrid", "IT": "Europe/Rome", "JP": "Asia/Tokyo",
    "RU": "Europe/Moscow", "GB": "Europe/London", "EG": "Africa/Cairo", "TH": "Asia/Bangkok", "KR": "Asia/Seoul",
    "PL": "Europe/Warsaw", "PT": "Europe/Lisbon",
}

#: one cloze per language; "{}" is the country. fr/it/pt/pl/ru/th say "the country X" so that no article has
#: to agree with the country's gender. Written for this probe (MKEB has its own templates).
CAPITAL_TEMPLATES: dict[str, str] = {
    "en": "The capital of {} is", "zh": "{}的首都是", "fr": "La capitale du pays {} est", "de": "Die Hauptstadt von {} ist",
    "it": "La capitale del paese {} è", "es": "La capital de {} es", "pt": "A capital do país {} é", "pl": "Stolicą kraju {} jest",
    "ru": "Столица страны {} —", "ja": "{}の首都は", "ko": "{}의 수도는", "th": "เมืองหลวงของประเทศ{}คือ",
}


@dataclass(frozen=True)
class ProbeItem:
    language: str
    country: str
    prompt: str
    answer: str
    distractors: tuple[str, ...]


def capital_name(tz: str, language: str) -> str:
    return get_timezone_location(tz, locale=Locale.parse(language), return_city=True)


def probe_items(languages: Sequence[str] = MKEB_LANGUAGES, *, n_distractors: int = 4, seed: int = 0) -> list[ProbeItem]:
    """The probe questions; distractors are other probe capitals, drawn with ``seed`` (same in every language)."""
    languages = validate_languages(list(languages), allowed=MKEB_LANGUAGES)
    rng = random.Random(seed)
    countries = list(PROBE_CAPITALS)
    picks = {c: rng.sample([o for o in countries if o != c], n_distractors) for c in countries}
    items = []
    for lang in languages:
        loc = Locale.parse(lang)
        for c in countries:
            items.append(ProbeItem(lang, c, CAPITAL_TEMPLATES[lang].format(loc.territories[c]),
                                   capital_name(PROBE_CAPITALS[c], lang),
                                   tuple(capital_name(PROBE_CAPITALS[o], lang) for o in picks[c])))
    return items


def knowledge_probe(lm: LoadedModel, languages: Sequence[str] = MKEB_LANGUAGES, *, seed: int = 0) -> pd.DataFrame:
    """One row per (language, fact): prompt, answer, its rank among 1 + 4 candidates, and ``known``."""
    items = probe_items(languages, seed=seed)
    k = 1 + len(items[0].distractors) if items else 0
    prompts = [it.prompt for it in items for _ in range(k)]
    answers = [a for it in items for a in (it.answer, *it.distractors)]
    langs = [it.language for it in items for _ in range(k)]
    all_scores = score_answers(lm.model, lm.tokenizer, prompts, answers, langs, batch_size=40)["logprob"].view(-1, k)
    rows = []
    for item, scores in zip(items, all_scores):
        rank = int((scores > scores[0]).sum()) + 1
        rows.append({"language": item.language, "country": item.country, "prompt": item.prompt,
                     "answer": item.answer, "logprob": float(scores[0]), "rank": rank, "known": rank == 1})
    return pd.DataFrame(rows)


def probe_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Share of facts known per language, MKEB order."""
    out = df.groupby("language", sort=False).agg(known=("known", "mean"), n=("known", "size"), mean_rank=("rank", "mean"))
    return out.reset_index()
