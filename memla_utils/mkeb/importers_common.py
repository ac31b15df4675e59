"""Shared parts of the benchmark importers of :mod:`memla_utils.mkeb.importers`.

Reading a JSON file (an error names the file, line and column), reading one field of a row (an error names the
file, record and field), the per-language fields that MzsRE, Bi-ZsRE and BMIKE-53 share (:class:`_Side`), turning
one side per language into a validated :class:`~memla_utils.mkeb.record.Record`, finding a language's side of a row
by its key (never by position), and the collector that keeps the good records and, with ``skip_bad``, counts the
bad ones instead of raising.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..languages import normalize_language, validate_languages
from .io import validate_record
from .record import EditTarget, Record, RecordError
from .subjects import slot_prompt

#: the public entry point's logger, so that log lines and their filters keep the name they had before the split
log = logging.getLogger("memla_utils.mkeb.importers")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc


def _read_list(path: Path) -> list[Any]:
    data = _read_json(path)
    if not isinstance(data, list):
        raise RecordError(f"{path}: expected a list of records, got {type(data).__name__}")
    return data


def _str(item: dict, key: str, where: str, *, required: bool = True) -> str | None:
    value = item.get(key)
    if value is None and not required:
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        value = value[0]
    if not isinstance(value, str) or (required and not value.strip()):
        raise RecordError(f"{where}: field {key!r} missing or not a non-empty string")
    return value.strip()


def _strs(item: dict, key: str, where: str) -> list[str]:
    value = item.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise RecordError(f"{where}: field {key!r} must be a string or a list of strings")


@dataclass
class _Side:
    """One language of a zsRE-style record, already checked."""

    subject: str
    prompt: str
    target_new: str
    target_true: str | None
    paraphrases: list[str]
    loc: list[str]
    loc_ans: list[str]
    mh_questions: list[str]
    mh_answer: str | None


def _zsre_side(item: Any, where: str, *, old_key: str = "old", port: tuple[str, str] | None = None) -> _Side:
    """Parse the per-language fields shared by MzsRE, Bi-ZsRE and BMIKE-53."""
    if not isinstance(item, dict):
        raise RecordError(f"{where}: expected an object, got {type(item).__name__}")
    subject = _str(item, "subject", where)
    src = _str(item, "src", where)
    alt = _str(item, "alt", where)
    old = _str(item, old_key, where, required=False)
    loc, loc_ans = _strs(item, "loc", where), _strs(item, "loc_ans", where)
    if len(loc) != len(loc_ans):
        raise RecordError(f"{where}: field 'loc_ans' has {len(loc_ans)} answers for {len(loc)} 'loc' prompts")
    if port is None:
        p = item.get("portability") or {}
        if not isinstance(p, dict):
            raise RecordError(f"{where}: field 'portability' must be an object")
        qs, ans = _strs(p, "New Question", where + ".portability"), _str(p, "New Answer", where + ".portability",
                                                                       required=False)
    else:
        qs, ans = _strs(item, port[0], where), _str(item, port[1], where, required=False)
    return _Side(subject, slot_prompt(src, subject), alt, old or None, _strs(item, "rephrase", where), loc, loc_ans,
                 qs if ans else [], ans or None)


def _record_from_sides(example_id: str, sides: dict[str, _Side], *, description: str, meta: dict,
                       where: str) -> Record:
    rec = Record(
        example_id=example_id, relation_description=description,
        edit={l: EditTarget(s.prompt, s.subject, s.target_new, s.target_true) for l, s in sides.items()},
        paraphrase_prompts={l: s.paraphrases for l, s in sides.items()},
        neighborhood_prompts={l: s.loc for l, s in sides.items()},
        neighborhood_answers={l: s.loc_ans for l, s in sides.items()},
        multi_hop_questions={l: s.mh_questions for l, s in sides.items()},
        multi_hop_new_answer={l: s.mh_answer for l, s in sides.items()},
        meta=meta,
    )
    validate_record(rec, where=where)
    return rec


class _Collector:
    """Keeps good records; with ``skip_bad`` counts the bad ones instead of raising."""

    def __init__(self, name: str, skip_bad: bool) -> None:
        self.name, self.skip_bad, self.records, self.skipped = name, skip_bad, [], []

    def add(self, build: Callable[[], Record]) -> None:
        try:
            self.records.append(build())
        except RecordError as exc:
            if not self.skip_bad:
                raise
            self.skipped.append(str(exc))

    def done(self) -> list[Record]:
        if self.skipped:
            log.warning("%s: skipped %d bad record(s), kept %d (first: %s)", self.name, len(self.skipped),
                        len(self.records), self.skipped[0])
        return self.records


def _wanted(languages: str | Sequence[str] | None) -> set[str] | None:
    return set(validate_languages(languages)) if languages is not None else None


def _side_key(row: dict, lang: str, where: str) -> str:
    """The key of ``row`` that holds language ``lang`` (the dataset's own code, e.g. ``cz``, or the ISO one)."""
    for key in row:
        if isinstance(key, str) and normalize_language(key) == lang:
            return key
    raise RecordError(f"{where}: no {lang!r} side in this row (its keys: {', '.join(map(repr, row)) or 'none'})")
