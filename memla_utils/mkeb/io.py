"""Typed reading, writing and validation of MKEB records (JSON list or JSON Lines).

:func:`load_records` is the one function notebooks use to read records. Errors name the file, the record
index and the field; with ``skip_bad=True`` a partly broken file keeps its good records and the number
skipped is logged and returned by :func:`read_records`.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cache import PROJECT_ROOT, atomic_path
from ..languages import KNOWN_LANGUAGES, MKEB_LANGUAGES, normalize_language, validate_languages
from .langcheck import CheckedRecords, check_languages
from .record import Record, RecordError

log = logging.getLogger(__name__)

_PER_LANGUAGE = ("paraphrase_prompts", "neighborhood_prompts", "neighborhood_answers", "multi_hop_questions",
                 "multi_hop_new_answer")


def validate_record(record: Record, *, where: str = "record") -> None:
    """Check what the dataclass cannot: known language codes, non-empty edit fields, a slot used at most once,
    neighbourhood prompts paired with answers, a multi-hop answer wherever there are questions, and no blank
    (empty or whitespace-only) paraphrase, neighbourhood or multi-hop prompt or answer in any language.

    Raises ``RecordError`` naming ``where`` (file and record index), the record id, the field and the language.
    """
    where = f"{where} ({record.example_id})"
    for lang, e in record.edit.items():
        if normalize_language(lang) not in KNOWN_LANGUAGES:
            raise RecordError(f"{where}: field 'edit.{lang}': unknown language code {lang!r}; "
                              f"supported: {', '.join(sorted(KNOWN_LANGUAGES))}")
        if not e.prompt.strip():
            raise RecordError(f"{where}: field 'edit.{lang}.prompt' is empty")
        if e.prompt.count("{}") > 1:
            raise RecordError(f"{where}: field 'edit.{lang}.prompt' has more than one '{{}}' slot")
        if "{}" in e.prompt and not e.subject.strip():
            raise RecordError(f"{where}: field 'edit.{lang}.subject' is empty but the prompt has a '{{}}' slot")
        if not e.target_new.strip():
            raise RecordError(f"{where}: field 'edit.{lang}.target_new' is empty")
    for name in _PER_LANGUAGE:
        extra = [l for l in getattr(record, name) if l not in record.edit]
        if extra:
            raise RecordError(f"{where}: field '{name}' has language(s) {extra} that 'edit' lacks")
    for lang, prompts in record.neighborhood_prompts.items():
        answers = record.neighborhood_answers.get(lang, [])
        if len(answers) != len(prompts):
            raise RecordError(f"{where}: field 'neighborhood_answers.{lang}' has {len(answers)} answers for "
                              f"{len(prompts)} neighborhood prompts")
    for lang, qs in record.multi_hop_questions.items():
        if qs and not (record.multi_hop_new_answer.get(lang) or "").strip():
            raise RecordError(f"{where}: field 'multi_hop_new_answer.{lang}' is missing but there are "
                              f"{len(qs)} multi-hop questions")
    for lang in record.edit:
        blank = record.blank_fields(lang)
        if blank:
            raise RecordError(f"{where}: field '{blank[0]}' (language {lang!r}) is blank (empty or "
                              f"whitespace-only)" + (f", and {len(blank) - 1} more: {', '.join(blank[1:])}"
                                                     if len(blank) > 1 else "")
                              + "; nothing can be edited or scored on it")


def record_from_json(data: Any, *, where: str) -> Record:
    """Parse and validate one record; ``RecordError`` names ``where`` and the field."""
    rec = Record.from_dict(data, where=where)
    validate_record(rec, where=where)
    return rec


@dataclass
class LoadReport:
    """Records read from a file plus the errors of the ones skipped (only with ``skip_bad=True``)."""

    path: Path
    records: list[Record]
    skipped: list[str] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)


def _raw_items(path: Path) -> Iterable[tuple[str, Any | Exception]]:
    """(location, parsed item or the parse error) for every record in a JSON or JSONL file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                yield f"{path}: record {i} (line {i + 1})", json.loads(line)
            except json.JSONDecodeError as exc:
                yield f"{path}: record {i} (line {i + 1})", RecordError(f"{path}: record {i} (line {i + 1}): "
                                                                        f"invalid JSON: {exc.msg}")
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        data = data["records"]
    if not isinstance(data, list):
        raise RecordError(f"{path}: expected a list of records (or an object with a 'records' list), "
                          f"got {type(data).__name__}")
    for i, item in enumerate(data):
        yield f"{path}: record {i}", item


def read_records(path: str | Path, *, skip_bad: bool = False) -> LoadReport:
    """Read every record of a ``.json``/``.jsonl`` file; a bad record raises unless ``skip_bad``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no MKEB file at {path}; build it with memla_utils.mkeb.build_mkeb() "
                                f"(notebook 01) or pass mkeb_path")
    report = LoadReport(path, [])
    seen: set[str] = set()
    for where, item in _raw_items(path):
        try:
            if isinstance(item, Exception):
                raise item
            rec = record_from_json(item, where=where)
            if rec.example_id in seen:
                raise RecordError(f"{where}: field 'example_id': duplicate id {rec.example_id!r}")
            seen.add(rec.example_id)
            report.records.append(rec)
        except RecordError as exc:
            if not skip_bad:
                raise
            report.skipped.append(str(exc))
    if report.skipped:
        log.warning("%s: skipped %d bad record(s) of %d (first: %s)", path, report.n_skipped,
                    report.n_skipped + len(report.records), report.skipped[0])
    return report


def restrict_languages(record: Record, languages: Sequence[str], *, where: str = "record") -> Record:
    """The record with only ``languages`` (all of which it must have)."""
    missing = [l for l in languages if l not in record.edit]
    if missing:
        raise RecordError(f"{where} ({record.example_id}): field 'edit' lacks language(s) {missing} "
                          f"(it has: {', '.join(record.edit)})")

    def keep(d: dict) -> dict:
        return {l: d[l] for l in languages if l in d}

    return Record(record.example_id, record.relation_description, keep(record.edit),
                  keep(record.paraphrase_prompts), keep(record.neighborhood_prompts),
                  keep(record.neighborhood_answers), keep(record.multi_hop_questions),
                  keep(record.multi_hop_new_answer), dict(record.meta))


def load_records(path: str | Path = PROJECT_ROOT / "data" / "mkeb" / "mkeb.jsonl",
                 languages: str | Sequence[str] | None = None, n: int | None = None, *,
                 skip_bad: bool = False, language_check: bool = True) -> CheckedRecords:
    """The records other notebooks evaluate: the first ``n`` of the file, restricted to ``languages``.

    ``languages`` is a list or a comma-separated string (``"all"`` = the 12 MKEB languages); an unknown code
    raises ``ValueError`` listing the supported ones, a record lacking a requested language raises
    ``RecordError`` (or is skipped with ``skip_bad``).

    ``language_check`` (default on): the returned views are checked to be written in their languages
    (:func:`memla_utils.mkeb.langcheck.check_languages`, candidates = every language of the file plus ``en``);
    a language mostly in another one raises ``LanguageMismatchError`` naming the file and language, single
    wrong views are counted (and dropped with ``skip_bad``); the report is ``result.language_report``.
    """
    if n is not None and int(n) < 1:
        raise ValueError(f"n must be >= 1 or None, got {n}")
    langs = validate_languages(languages, parameter="languages") if languages is not None else None
    path = Path(path)
    path = path if path.is_absolute() or path.exists() else PROJECT_ROOT / path
    report = read_records(path, skip_bad=skip_bad)
    out: list[Record] = []
    skipped = 0
    for i, rec in enumerate(report.records):
        if n is not None and len(out) >= int(n):
            break
        if langs is None:
            out.append(rec)
            continue
        try:
            out.append(restrict_languages(rec, langs, where=f"{path}: record {i}"))
        except RecordError:
            if not skip_bad:
                raise
            skipped += 1
    if skipped:
        log.warning("%s: skipped %d record(s) lacking one of %s", path, skipped, langs)
    if not language_check:
        return CheckedRecords(out, None)
    every = {l for r in report.records for l in r.edit} | {"en"}
    return check_languages(out, dataset=f"MKEB {path}", sources=str(path), candidates=every, skip_bad=skip_bad)


def save_records(records: Iterable[Record], path: str | Path) -> Path:
    """Write records atomically: one per line for ``.jsonl``, a JSON list otherwise. Returns the path."""
    path = Path(path)
    rows = [r.to_dict() for r in records]
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            if path.suffix == ".jsonl":
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
            else:
                json.dump(rows, f, ensure_ascii=False, indent=1)
                f.write("\n")
    return path


__all__ = ["LoadReport", "load_records", "read_records", "record_from_json", "restrict_languages",
           "save_records", "validate_record", "MKEB_LANGUAGES"]
