"""Is each language view of a set of records written in the language it is labelled with?

A *view* is everything one record offers in one language that a model reads: the edit prompt, the paraphrase
prompts, the neighbourhood prompts and the multi-hop questions (answers are left out: names and numbers are the
same in many languages). Before a view is judged, the record's subjects (its own and the English one) are cut
out of it, since a name written in Latin letters inside a Chinese question is normal.

Two tests, in this order:

1. **Script** (Unicode ranges). ``zh``: Han letters are at least ``min_script_share`` of the view's letters and
   kana at most ``kana_share`` of its Han+kana letters. ``ja``: Han+kana letters are at least
   ``min_script_share`` of its letters *and* kana at least ``kana_share`` of them -- a Japanese question always
   carries kana (particles, okurigana, katakana names), so a Han-only ``ja`` view is taken for Chinese.
   ``ko`` Hangul, ``th`` Thai, ``ru`` (and the other Cyrillic languages) Cyrillic, ``el`` Greek, ``ar``/``fa``/``ur``
   Arabic, ``he`` Hebrew, ``hi``/``mr``/``ne`` Devanagari: that script is at least ``min_script_share`` of the
   letters. A Latin-script language: no non-Latin script reaches ``min_script_share`` (Latin is the script of
   names in every language, so it is never held against a non-Latin view).
2. **Identifier** (``lingua-language-detector``, offline) when two or more of the candidate languages share the
   view's script (en/fr/de/es/pt/... ; ru/uk): each line of the view gets lingua's confidence values restricted to
   those candidates, averaged weighted by the line's letters; the view is wrong when another language is on top
   *and* the labelled language gets less than ``min_confidence``. Short prompts confuse es/pt/it, which is why
   the candidates are the benchmark's own languages (plus English, the source language every benchmark here is
   translated from) and why the decision is made per language over all its views.

A language whose views are wrong more than ``max_wrong_fraction`` of the time raises
:class:`LanguageMismatchError` naming the file and the language (a mislabelled file, or an importer that reads
the wrong side of a row); with ``skip_bad=True`` single wrong views are dropped (the rest of the record stays),
otherwise they are kept and counted. Languages with no rule (e.g. Bengali) are reported as not checked.
Every call returns a :class:`LanguageReport` attached to the records (:class:`CheckedRecords`).

The thresholds were measured on the real MzsRE, MLaKE and Bi-ZsRE files and the committed MKEB file (see
:class:`LangCheckConfig`). lingua's detector is built lazily, once per set of candidate languages.

Modules: :mod:`.langcheck_types` (the thresholds, the report, the error), :mod:`.langcheck_scripts` (test 1: the
script rules); this module runs lingua (test 2) and the check itself, and re-exports the names above.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from ..languages import ordered
from .langcheck_scripts import _LETTER, LANGUAGE_SCRIPT, _script_guess, _script_verdict, script_counts
from .langcheck_types import CheckedRecords, LangCheckConfig, LanguageCheck, LanguageMismatchError, LanguageReport
from .record import Record

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- lingua
def lingua_supports(lang: str) -> bool:
    """Whether ``lingua-language-detector`` knows the ISO 639-1 code."""
    from lingua import IsoCode639_1

    return hasattr(IsoCode639_1, lang.upper())


@lru_cache(maxsize=16)
def _detector(candidates: frozenset[str], low_accuracy: bool = False) -> Any:
    """lingua's detector for these languages: built once per set (its models load lazily on first use)."""
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    langs = [Language.from_iso_code_639_1(getattr(IsoCode639_1, c.upper())) for c in sorted(candidates)]
    log.debug("building lingua detector for %s", sorted(candidates))
    builder = LanguageDetectorBuilder.from_languages(*langs)
    return (builder.with_low_accuracy_mode() if low_accuracy else builder).build()


def _confidences(candidates: frozenset[str], texts: Sequence[Sequence[str]], min_letters: int,
                 low_accuracy: bool = False) -> list[dict[str, float]]:
    """Per text (a list of lines): lingua's confidence per candidate, averaged over the lines weighted by their
    letters (lines with fewer than ``min_letters`` letters are left out); ``{}`` if no line is long enough."""
    lines: list[str] = []
    owner: list[tuple[int, int]] = []
    for i, text in enumerate(texts):
        for line in text:
            n = len(_LETTER.findall(line))
            if n >= min_letters:
                lines.append(line)
                owner.append((i, n))
    if not lines:
        return [{} for _ in texts]
    values = _detector(candidates, low_accuracy).compute_language_confidence_values_in_parallel(lines)
    sums: list[Counter] = [Counter() for _ in texts]
    weights = [0] * len(texts)
    for (i, n), conf in zip(owner, values):
        weights[i] += n
        for c in conf:
            sums[i][c.language.iso_code_639_1.name.lower()] += n * c.value
    return [{k: v / weights[i] for k, v in s.items()} if weights[i] else {} for i, s in enumerate(sums)]


# ------------------------------------------------------------------------------------------- the check
def view_lines(record: Record, lang: str) -> list[str]:
    """The prompts of one language view with the record's subjects (its own, the English one) cut out."""
    subjects = {record.edit[lang].subject.strip()}
    if "en" in record.edit:
        subjects.add(record.edit["en"].subject.strip())
    subjects = sorted((s for s in subjects if len(s) >= 2), key=len, reverse=True)
    lines = [record.edit[lang].prompt.replace("{}", " "), *record.paraphrase_prompts.get(lang, []),
             *record.neighborhood_prompts.get(lang, []), *record.multi_hop_questions.get(lang, [])]
    out = []
    for line in lines:
        for s in subjects:
            line = line.replace(s, " ")
        out.append(line)
    return out


def _without(record: Record, lang: str) -> Record:
    """The record without one language."""
    def drop(d: dict) -> dict:
        return {k: v for k, v in d.items() if k != lang}

    return Record(record.example_id, record.relation_description, drop(record.edit),
                  drop(record.paraphrase_prompts), drop(record.neighborhood_prompts),
                  drop(record.neighborhood_answers), drop(record.multi_hop_questions),
                  drop(record.multi_hop_new_answer), dict(record.meta))


def _source_of(sources: Mapping[str, str] | str | None, lang: str, dataset: str) -> str:
    if isinstance(sources, str):
        return sources
    if sources and lang in sources:
        return sources[lang]
    return dataset


_Key = tuple[int, str]                                  # (record index, language)


def _judge_views(records: Sequence[Record], checks: dict[str, LanguageCheck], cands: Sequence[str],
                 by_script: dict[str, frozenset[str]], cfg: LangCheckConfig
                 ) -> tuple[dict[_Key, str], dict[_Key, str]]:
    """Verdict per view ("ok" | "wrong" | "undecided") and, for wrong ones, the language it looks like.
    Pass 1: scripts (counting the views); pass 2: lingua, one batch per set of candidates."""
    verdicts: dict[_Key, str] = {}
    guesses: dict[_Key, str] = {}
    texts: dict[_Key, list[str]] = {}
    ask: dict[frozenset[str], list[_Key]] = {}
    latin_group = by_script.get("Latin", frozenset())
    for i, rec in enumerate(records):
        for lang in rec.edit:
            checks[lang].n_views += 1
            if lang not in LANGUAGE_SCRIPT:
                continue
            key = (i, lang)
            lines = view_lines(rec, lang)
            counts = script_counts(" ".join(lines))
            if counts["letters"] < cfg.min_letters:
                verdicts[key] = "undecided"
                continue
            texts[key] = lines
            if not _script_verdict(counts, lang, cfg):
                verdicts[key] = "wrong"
                guess = _script_guess(counts, cands, cfg)
                if guess is None and len(latin_group) > 1:
                    ask.setdefault(latin_group, []).append(key)   # only to name the language it looks like
                else:
                    guesses[key] = guess or next(iter(latin_group), "Latin script")
                continue
            group = by_script.get(LANGUAGE_SCRIPT[lang], frozenset())
            if len(group) >= 2 and lang in group:
                ask.setdefault(group, []).append(key)
            else:
                verdicts[key] = "ok"

    def flagged(key: _Key, conf: dict[str, float]) -> bool:
        return max(conf, key=conf.get) != key[1] and conf.get(key[1], 0.0) < cfg.min_confidence

    for group, keys in ask.items():
        confs = _confidences(group, [texts[k] for k in keys], cfg.min_letters, cfg.lingua_mode != "high")
        if cfg.lingua_mode == "screen":                     # re-judge the screen's flags at high accuracy
            again = [j for j, (k, c) in enumerate(zip(keys, confs)) if k not in verdicts and c and flagged(k, c)]
            if again:
                for j, conf in zip(again, _confidences(group, [texts[keys[j]] for j in again], cfg.min_letters)):
                    confs[j] = conf
        for key, conf in zip(keys, confs):
            if key in verdicts:                              # already wrong by script: name the language
                if conf:
                    guesses[key] = max(conf, key=conf.get)
            elif not conf:
                verdicts[key] = "undecided"
            elif flagged(key, conf):
                verdicts[key] = "wrong"
                guesses[key] = max(conf, key=conf.get)
            else:
                verdicts[key] = "ok"
    return verdicts, guesses


def _drop_views(records: Sequence[Record], wrong: set[_Key], report: LanguageReport) -> list[Record]:
    """The records without their wrong views; records left with no language are dropped (both counted)."""
    out = []
    for i, rec in enumerate(records):
        for lang in [l for l in rec.edit if (i, l) in wrong]:
            rec = _without(rec, lang)
            report.n_skipped_views += 1
        if rec.edit:
            out.append(rec)
        else:
            report.n_dropped_records += 1
    return out


def check_languages(records: Sequence[Record], *, dataset: str, sources: Mapping[str, str] | str | None = None,
                    candidates: Iterable[str] | None = None, skip_bad: bool = False,
                    config: LangCheckConfig | None = None) -> CheckedRecords:
    """Check that every language view of ``records`` is written in its language (rules: module docstring).

    ``sources`` names where each language came from (a file, or a mapping language → file) for the messages;
    ``candidates`` are the languages a view may be taken for (default: every language of ``records`` plus
    ``en``; importers pass their benchmark's whole language list). Returns the records (without the wrong views
    when ``skip_bad``; a record left with no language is dropped) with a :class:`LanguageReport` attached (as
    ``.language_report``), also logged: a warning per language with wrong views, else one info line.

    Raises:
        LanguageMismatchError: a language with more than ``config.max_wrong_fraction`` of its decided views
            wrong; the message names the source (file) and the language, what the views look like and an example.
    """
    cfg = config or LangCheckConfig()
    start = time.perf_counter()
    present = ordered({l for r in records for l in r.edit})
    cands = ordered(set(candidates) if candidates is not None else {*present, "en"})
    by_script: dict[str, frozenset[str]] = {}
    for c in cands:
        if c in LANGUAGE_SCRIPT and lingua_supports(c):
            by_script[LANGUAGE_SCRIPT[c]] = by_script.get(LANGUAGE_SCRIPT[c], frozenset()) | {c}
    checks: dict[str, LanguageCheck] = {}
    for lang in present:
        group = by_script.get(LANGUAGE_SCRIPT.get(lang, ""), frozenset())
        method = ("not checked (no script rule for this language)" if lang not in LANGUAGE_SCRIPT else
                  f"script + lingua ({'/'.join(ordered(group))})" if len(group) >= 2 and lang in group else "script")
        checks[lang] = LanguageCheck(lang, _source_of(sources, lang, dataset), method)

    verdicts, guesses = _judge_views(records, checks, cands, by_script, cfg)
    wrong = {key for key, v in verdicts.items() if v == "wrong"}
    for key, verdict in verdicts.items():
        chk = checks[key[1]]
        chk.n_checked += verdict != "undecided"
        if key in wrong:
            chk.n_wrong += 1
            chk.looks_like[guesses.get(key, "?")] += 1
    for i, lang in sorted(wrong):
        if len(checks[lang].examples) < cfg.n_examples:
            prompt = records[i].for_language(lang).prompt
            checks[lang].examples.append(f"record {records[i].example_id!r}: {prompt[:100]!r}")

    report = LanguageReport(dataset, checks, tuple(cands))
    failed = [c for c in checks.values() if c.n_checked and c.fraction_wrong > cfg.max_wrong_fraction]
    if failed:
        these = "these languages" if len(failed) > 1 else "this language"
        raise LanguageMismatchError(
            "\n".join(c.describe() for c in failed) +
            f"\n(more than {cfg.max_wrong_fraction:.0%} of the views of {these} are in another language: the file "
            "is mislabelled, or the importer reads the wrong side of its rows)")
    out = _drop_views(records, wrong, report) if skip_bad and wrong else list(records)
    report.seconds = time.perf_counter() - start
    if report.n_wrong:
        log.warning("%s", report.summary())
        for c in checks.values():
            if c.n_wrong:
                log.warning("  %s", c.describe())
    else:
        log.info("%s", report.summary())
    return CheckedRecords(out, report)


def checked(records: Sequence[Record], enabled: bool, **kwargs: Any) -> CheckedRecords:
    """:func:`check_languages` when ``enabled``, else the records unchecked (``language_report=None``)."""
    return check_languages(records, **kwargs) if enabled else CheckedRecords(records, None)


__all__ = ["CheckedRecords", "LANGUAGE_SCRIPT", "LangCheckConfig", "LanguageCheck", "LanguageMismatchError",
           "LanguageReport", "check_languages", "checked", "lingua_supports", "script_counts", "view_lines"]
