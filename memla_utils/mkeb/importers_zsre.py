"""Importers of the zsRE-format benchmarks: MzsRE (ReMaKE), Bi-ZsRE and BMIKE-53.

All three give each language the zsRE fields (``subject``, ``src``, ``alt``, ``rephrase``, ``loc``/``loc_ans``,
a portability question), parsed by :func:`memla_utils.mkeb.importers_common._zsre_side`. ``target_true`` is read
from ``old`` and stays None where a set has none (zsRE has no true object).

``language_check`` (and what ``skip_bad`` does to wrong views) is described in :mod:`memla_utils.mkeb.importers`:
the output is checked with :func:`memla_utils.mkeb.langcheck.check_languages` unless it is False.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..languages import normalize_language
from .importers_common import _Collector, _read_list, _record_from_sides, _Side, _side_key, _wanted, _zsre_side
from .langcheck import CheckedRecords, checked
from .record import Record, RecordError

#: the public entry point's logger, so that log lines and their filters keep the name they had before the split
log = logging.getLogger("memla_utils.mkeb.importers")


# ------------------------------------------------------------------------------------------- MzsRE / Bi-ZsRE
_MZSRE_FILE = re.compile(r"mzsre_test_duplicate_en([a-z]{2})\.json$")
#: MzsRE's twelve languages (ISO codes; the files say cz, du): the candidates of its language check.
MZSRE_LANGUAGES: tuple[str, ...] = ("en", "cs", "de", "nl", "es", "fr", "pt", "ru", "th", "tr", "vi", "zh")


def import_mzsre(path: str | Path, languages: str | Sequence[str] | None = None, *,
                 skip_bad: bool = False, language_check: bool = True) -> CheckedRecords:
    """MzsRE (ReMaKE): a folder of ``mzsre_test_duplicate_en<xx>.json`` pair files (or one such file),
    joined on index into one record per edit with every language. Each row's ``xx`` side is read by the file's
    language code and its English side by ``en`` (a row lacking either raises); the English sides of the pair
    files must agree (same subject at each index). No ``target_true`` (zsRE has none); ``portability`` becomes
    the multi-hop question. ``language_check``: see the module docstring."""
    path = Path(path)
    files = sorted(path.glob("mzsre_test_duplicate_en*.json")) if path.is_dir() else [path]
    files = [f for f in files if _MZSRE_FILE.search(f.name)]
    if not files:
        raise FileNotFoundError(f"no mzsre_test_duplicate_en<xx>.json file at {path}")
    want = _wanted(languages)
    by_lang = {normalize_language(_MZSRE_FILE.search(f.name).group(1)): f for f in files}
    needed = [l for l in by_lang if want is None or l in want] or list(by_lang)[:1]  # en alone: any pair file
    per_file = {l: (by_lang[l], _read_list(by_lang[l])) for l in needed}
    n = min(len(rows) for _, rows in per_file.values())
    lengths = {l: len(rows) for l, (_, rows) in per_file.items()}
    if len(set(lengths.values())) > 1:
        log.warning("MzsRE pair files differ in length %s; joining the first %d edits", lengths, n)
    out = _Collector(f"MzsRE {path}", skip_bad)
    for i in range(n):
        def build(i: int = i) -> Record:
            sides: dict[str, _Side] = {}
            en_subject = None
            for lang, (f, rows) in per_file.items():
                row = rows[i]
                where = f"{f}: record {i}"
                if not isinstance(row, dict):
                    raise RecordError(f"{where}: expected an object with 'en' and the pair language")
                en = _zsre_side(row[_side_key(row, "en", where)], f"{where} field 'en'")
                if en_subject is None:
                    en_subject = en.subject
                    sides["en"] = en
                elif en.subject != en_subject:
                    raise RecordError(f"{where}: field 'en.subject' is {en.subject!r} but the other pair files "
                                      f"have {en_subject!r} at this index: files are not aligned")
                raw = _side_key(row, lang, where)
                sides[lang] = _zsre_side(row[raw], f"{where} field {raw!r}")
            if want is not None:
                sides = {l: s for l, s in sides.items() if l in want}
            return _record_from_sides(f"mzsre-{i}", sides, description="zsRE relation (MzsRE)",
                                      meta={"source": "MzsRE", "multi_hop_kind": "portability"},
                                      where=f"MzsRE record {i}")
        out.add(build)
    first = per_file[needed[0]][0]
    sources = {"en": f"{first} field 'en'",
               **{l: f"{f} field {_MZSRE_FILE.search(f.name).group(1)!r}" for l, (f, _) in per_file.items()}}
    return checked(out.done(), language_check, dataset=f"MzsRE {path}", sources=sources, skip_bad=skip_bad,
                   candidates={*MZSRE_LANGUAGES, *by_lang})


def _pairs_file(path: Path, source: str, prefix: str, languages, skip_bad: bool,
                language_check: bool) -> CheckedRecords:
    """A list of ``{lang: {...zsRE fields}}`` records (Bi-ZsRE)."""
    rows = _read_list(path)
    want = _wanted(languages)
    out = _Collector(f"{source} {path}", skip_bad)
    for i, row in enumerate(rows):
        def build(i: int = i, row: Any = row) -> Record:
            where = f"{path}: record {i}"
            if not isinstance(row, dict) or not row:
                raise RecordError(f"{where}: expected an object keyed by language")
            sides = {normalize_language(k): _zsre_side(v, f"{where} field {k!r}") for k, v in row.items()
                     if want is None or normalize_language(k) in want}
            return _record_from_sides(f"{prefix}-{i}", sides, description=f"zsRE relation ({source})",
                                      meta={"source": source, "multi_hop_kind": "portability"}, where=where)
        out.add(build)
    recs = out.done()
    langs = {l for r in recs for l in r.edit}
    return checked(recs, language_check, dataset=f"{source} {path}", skip_bad=skip_bad,
                   sources={l: f"{path} field {l!r}" for l in langs})


def import_bizsre(path: str | Path, languages: str | Sequence[str] | None = None, *,
                  skip_bad: bool = False, language_check: bool = True) -> CheckedRecords:
    """Bi-ZsRE (en–zh): ``bizsre_test.json`` or the folder holding it; each row ``{"en": {...}, "zh": {...}}``
    is read by its language keys. ``language_check``: see the module docstring."""
    path = Path(path)
    path = path / "bizsre_test.json" if path.is_dir() else path
    return _pairs_file(path, "Bi-ZsRE", "bizsre", languages, skip_bad, language_check)

# ------------------------------------------------------------------------------------------- BMIKE-53
BMIKE_SETS: tuple[str, ...] = ("zsre", "counterfact", "wikifactdiff")


def _bmike_files(path: Path, key: str, set_name: str) -> dict[str, Path]:
    """``<set>_test_<lang>.json`` files under ``path`` by (normalized) language."""
    pattern = re.compile(rf"^{key}_test_([A-Za-z_-]+)\.json$", re.IGNORECASE)
    files: dict[str, Path] = {}
    for f in sorted(path.rglob("*.json")):
        m = pattern.match(f.name.lower().replace("-", "").replace(" ", ""))
        if m:
            lang = normalize_language(m.group(1))
            if lang in files:
                raise RecordError(f"{f}: a second {set_name} file for language {lang!r} (first: {files[lang]})")
            files[lang] = f
    if not files:
        raise FileNotFoundError(f"no {set_name}_test_<lang>.json files under {path}")
    return files


def import_bmike53(path: str | Path, set_name: str = "zsre", languages: str | Sequence[str] | None = None, *,
                   skip_bad: bool = False, language_check: bool = True) -> CheckedRecords:
    """BMIKE-53: per-language files ``<set>_test_<lang>.json``, each a list of rows ``{"en": {case_id, subject,
    src, rephrase, old, alt, loc, loc_ans, port, port_ans}, "<lang>": {...same fields...}}`` (English side first,
    the file's language second), joined on ``case_id``.

    Each file's language view is read from the row's ``<lang>`` key (never by position); the English view comes
    from ``<set>_test_en.json`` if present, else from the rows' ``en`` side, and the ``en`` sides of all files
    read must agree for a case (same subject) or a ``RecordError`` names the file and row. ``old`` is absent in
    the zsRE set, so ``target_true`` is None there. ``language_check``: see the module docstring.
    """
    key = set_name.lower().replace("-", "").replace("_", "")
    if key not in BMIKE_SETS:
        raise ValueError(f"unknown BMIKE-53 set {set_name!r}; available: {', '.join(BMIKE_SETS)}")
    path = Path(path)
    files = _bmike_files(path, key, set_name)
    want = _wanted(languages)
    want_en = want is None or "en" in want
    sides: dict[str, dict[str, _Side]] = {}
    en_from: dict[str, str] = {}                      # case → where its English side was read
    sources: dict[str, str] = {}
    out = _Collector(f"BMIKE-53 {set_name} {path}", skip_bad)

    def parse(row: dict, lang: str, where: str) -> tuple[str, _Side]:
        raw = _side_key(row, lang, where)
        item = row[raw]
        if not isinstance(item, dict):
            raise RecordError(f"{where}: field {raw!r} must be an object")
        return raw, _zsre_side(item, f"{where} field {raw!r}", port=("port", "port_ans"))

    for lang, f in files.items():
        read_lang = want is None or lang in want
        read_en = want_en and lang != "en"
        if not (read_lang or read_en):
            continue
        seen: set[str] = set()
        for i, row in enumerate(_read_list(f)):
            where = f"{f}: record {i}"
            try:
                if not isinstance(row, dict) or not row:
                    raise RecordError(f"{where}: expected an object keyed by language ('en' and {lang!r})")
                raw, side = parse(row, lang, where)
                case = row[raw].get("case_id", i)
                cid = str(case)
                if cid in seen:
                    raise RecordError(f"{where}: field '{raw}.case_id': duplicate case_id {case!r} in this file")
                seen.add(cid)
                en_side = side if lang == "en" else None
                if read_en and any(isinstance(k, str) and normalize_language(k) == "en" for k in row):
                    en_raw, en_side = parse(row, "en", where)
                    en_case = row[en_raw].get("case_id", case)
                    if str(en_case) != cid:
                        raise RecordError(f"{where}: field 'en.case_id' is {en_case!r} but field "
                                          f"{raw + '.case_id'!r} is {case!r}")
                if en_side is not None:
                    known = sides.get(cid, {}).get("en")
                    if known is not None and known.subject != en_side.subject:
                        raise RecordError(f"{where}: field 'en.subject' is {en_side.subject!r} but {en_from[cid]} "
                                          f"has {known.subject!r} for case {case!r}: files are not aligned")
            except RecordError as exc:
                if not skip_bad:
                    raise
                out.skipped.append(str(exc))
                continue
            case_sides = sides.setdefault(cid, {})
            if read_lang:
                case_sides[lang] = side
                sources.setdefault(lang, f"{f} field {raw!r}")
                if lang == "en":
                    en_from[cid] = str(f)
            if en_side is not None and lang != "en" and "en" not in case_sides:
                case_sides["en"] = en_side
                en_from[cid] = str(f)
                sources.setdefault("en", f"{f} field 'en'")
    for cid, case_sides in sides.items():
        if want is not None:
            case_sides = {l: s for l, s in case_sides.items() if l in want}
        if not case_sides:
            continue
        out.add(lambda cid=cid, case_sides=case_sides: _record_from_sides(
            f"bmike53-{key}-{cid}", case_sides, description=f"BMIKE-53 {set_name}",
            meta={"source": f"BMIKE-53/{key}", "multi_hop_kind": "portability"}, where=f"BMIKE-53 case {cid}"))
    return checked(out.done(), language_check, dataset=f"BMIKE-53 {set_name} {path}", sources=sources,
                   skip_bad=skip_bad, candidates={"en", *files})
