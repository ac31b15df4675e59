"""Read public multilingual knowledge-editing benchmarks into MKEB records.

Each importer maps a dataset's own fields onto the schema and leaves what the dataset lacks explicitly empty
(``target_true=None`` for zsRE-derived sets, no neighbourhood in MLaKE, ...) so the metrics that need it are
reported as not available. Language codes are normalized (MzsRE ``cz``/``du`` → ``cs``/``nl``).

Every importer reads each language's side of a row by that language's key (never by position), and by default
checks its output with :func:`memla_utils.mkeb.langcheck.check_languages`: a language whose views are mostly in
another language raises :class:`LanguageMismatchError` naming the file and language; the report is attached to
the returned list (``records.language_report``); ``skip_bad=True`` also drops single wrong views.

Datasets: MzsRE (ReMaKE), Bi-ZsRE, MLaKE, BMIKE-53, and the official MKEB file ``MLiKE_v2.json``.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cache import PROJECT_ROOT
from ..languages import MKEB_LANGUAGES, normalize_language, validate_languages
from .io import LoadReport, read_records, record_from_json, validate_record
from .langcheck import CheckedRecords, LanguageMismatchError, checked
from .record import EditTarget, Record, RecordError
from .subjects import slot_prompt  # whole-word subject search (re-exported)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- helpers
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


# ------------------------------------------------------------------------------------------- MLaKE
MLAKE_LANGUAGES: tuple[str, ...] = ("en", "zh", "ja", "fr", "de")


def _cloze(statement: str, answer: str) -> str | None:
    """The statement up to the answer (``"Carl Sagan worked at"``), or None if that is not a usable prompt."""
    k = statement.find(answer)
    prefix = statement[:k].rstrip() if k > 0 else ""
    return prefix if len(prefix) >= 3 else None


def import_mlake(path: str | Path, languages: str | Sequence[str] | None = None, *,
                 skip_bad: bool = False, language_check: bool = True) -> CheckedRecords:
    """MLaKE: ``single_hop/<lang>_qa.json`` joined on index across languages; the question is the edit prompt,
    the edit statement cut before its answer is the paraphrase, and ``multi_hop/new_<lang>_qa.json`` entries
    whose (English) ``e_prompt`` equals the record's English edit become its multi-hop questions (those sharing
    the first one's answer, since a record has one multi-hop answer). MLaKE has no subject field and
    no neighbourhood prompts: both stay empty. ``language_check``: see the module docstring."""
    path = Path(path)
    want = _wanted(languages)
    langs = [l for l in MLAKE_LANGUAGES if (want is None or l in want) and (path / "single_hop" / f"{l}_qa.json").exists()]
    if not langs:
        raise FileNotFoundError(f"no MLaKE single_hop/<lang>_qa.json under {path}")
    single = {l: _read_list(path / "single_hop" / f"{l}_qa.json") for l in langs}
    multi: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for l in langs:
        f = path / "multi_hop" / f"new_{l}_qa.json"
        groups: dict[str, list[tuple[str, str]]] = {}
        for row in (_read_list(f) if f.exists() else []):
            if isinstance(row, dict) and all(isinstance(row.get(k), str) for k in ("question", "e_prompt", "e_answer")):
                groups.setdefault(row["e_prompt"].strip(), []).append((row["question"].strip(), row["e_answer"].strip()))
        multi[l] = groups
    # multi_hop files name the edit by its *English* e_prompt in every language: join through single_hop/en.
    en_file = path / "single_hop" / "en_qa.json"
    en_rows = single["en"] if "en" in single else (_read_list(en_file) if en_file.exists() else [])
    en_keys = [r.get("e_prompt", "").strip() if isinstance(r, dict) and isinstance(r.get("e_prompt"), str) else ""
               for r in en_rows]
    n = min(len(v) for v in single.values())
    out = _Collector(f"MLaKE {path}", skip_bad)
    for i in range(n):
        def build(i: int = i) -> Record:
            sides = {}
            for l in langs:
                where = f"{path / 'single_hop' / f'{l}_qa.json'}: record {i}"
                row = single[l][i]
                if not isinstance(row, dict):
                    raise RecordError(f"{where}: expected an object")
                question = _str(row, "question", where)
                e_prompt, e_answer = _str(row, "e_prompt", where), _str(row, "e_answer", where)
                o_answer = _str(row, "o_answer", where, required=False)
                key = en_keys[i] if i < len(en_keys) else e_prompt
                chain = multi[l].get(key, [])
                mh_answer = chain[0][1] if chain else None
                cloze = _cloze(e_prompt, e_answer)
                sides[l] = _Side("", question, e_answer, o_answer or None, [cloze] if cloze else [], [], [],
                                 [q for q, a in chain if a == mh_answer], mh_answer)
            return _record_from_sides(f"mlake-{i}", sides, description="MLaKE single-hop edit",
                                      meta={"source": "MLaKE", "multi_hop_kind": "multi-hop (new_*_qa)"},
                                      where=f"MLaKE record {i}")
        out.add(build)
    sources = {l: f"{path / 'single_hop' / f'{l}_qa.json'} (+ multi_hop/new_{l}_qa.json)" for l in langs}
    return checked(out.done(), language_check, dataset=f"MLaKE {path}", sources=sources, skip_bad=skip_bad,
                   candidates=MLAKE_LANGUAGES)


# ------------------------------------------------------------------------------------------- official MKEB
def read_test_ids(path: str | Path) -> list[str]:
    """The official list of test ids: one id per line."""
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def import_mlike(path: str | Path, test_ids: str | Path | Iterable[str | int] | None = None,
                 languages: str | Sequence[str] | None = None, *, skip_bad: bool = False,
                 language_check: bool = True) -> CheckedRecords:
    """The official MKEB release (``MLiKE_v2.json``, already in this schema), optionally restricted to the
    test ids (a file with one id per line, or an iterable). Answers lose the leading space the original
    code expects, since :mod:`memla_utils.text` chooses the separator per language. ``language_check``: see
    the module docstring."""
    path = Path(path)
    data = _read_json(path)
    if isinstance(data, dict):
        data = data.get("records", data.get("data"))
    if not isinstance(data, list):
        raise RecordError(f"{path}: expected a list of records")
    if isinstance(test_ids, (str, Path)):
        test_ids = read_test_ids(test_ids)
    keep = {str(t) for t in test_ids} if test_ids is not None else None
    want = _wanted(languages)
    out = _Collector(f"MKEB {path}", skip_bad)
    in_file = {l for row in data if isinstance(row, dict) and isinstance(row.get("edit"), dict) for l in row["edit"]}
    for i, row in enumerate(data):
        if keep is not None and isinstance(row, dict) and str(row.get("example_id")) not in keep:
            continue

        def build(i: int = i, row: Any = row) -> Record:
            rec = record_from_json(row, where=f"{path}: record {i}")
            def strip(d: dict[str, list[str]]) -> dict[str, list[str]]:
                return {l: [s.strip() for s in v] for l, v in d.items() if want is None or l in want}

            return Record(
                rec.example_id, rec.relation_description,
                {l: EditTarget(e.prompt, e.subject.strip(), e.target_new.strip(),
                               e.target_true.strip() if e.target_true is not None else None)
                 for l, e in rec.edit.items() if want is None or l in want},
                strip(rec.paraphrase_prompts), strip(rec.neighborhood_prompts), strip(rec.neighborhood_answers),
                strip(rec.multi_hop_questions),
                {l: (a.strip() if a else None) for l, a in rec.multi_hop_new_answer.items()
                 if want is None or l in want},
                {**rec.meta, "source": "MKEB (official)"})
        out.add(build)
    recs = out.done()
    return checked(recs, language_check, dataset=f"MKEB {path}", skip_bad=skip_bad,
                   sources={l: f"{path} field 'edit.{l}'" for l in {l for r in recs for l in r.edit}},
                   candidates={*MKEB_LANGUAGES, "en", *(normalize_language(str(l)) for l in in_file)})


# ------------------------------------------------------------------------------------------- discovery
@dataclass(frozen=True)
class Dataset:
    """Where a dataset sits under ``shared/data`` and how to import it."""

    name: str
    relative_path: str
    importer: Callable[..., list[Record]]
    kwargs: tuple[tuple[str, Any], ...] = ()


#: Every importable dataset, by the folder layout documented in each ``PROVENANCE.md``.
DATASETS: tuple[Dataset, ...] = (
    Dataset("MzsRE", "mzsre/test", import_mzsre),
    Dataset("Bi-ZsRE", "bi-zsre/bizsre_test.json", import_bizsre),
    Dataset("MLaKE", "mlake", import_mlake),
    *(Dataset(f"BMIKE-53/{s}", "bmike53", import_bmike53, (("set_name", s),)) for s in BMIKE_SETS),
    Dataset("MKEB (official)", "mkeb/MLiKE_v2.json", import_mlike),
)


def resolve_shared_dir(shared_data_dir: str | Path = "../shared/data") -> Path:
    """A relative ``shared_data_dir`` is taken relative to the project root (the notebook parameter)."""
    p = Path(shared_data_dir)
    return p if p.is_absolute() else (PROJECT_ROOT / p).resolve()


def import_all(shared_data_dir: str | Path = "../shared/data", languages: str | Sequence[str] | None = None, *,
               skip_bad: bool = False, language_check: bool = True) -> dict[str, CheckedRecords]:
    """Import every dataset present under ``shared_data_dir``; absent ones are logged and left out. Each
    list carries its ``language_report`` (a mislabelled language raises LanguageMismatchError)."""
    root = resolve_shared_dir(shared_data_dir)
    found: dict[str, list[Record]] = {}
    for ds in DATASETS:
        p = root / ds.relative_path
        if not p.exists():
            log.info("%s: not found at %s, skipped", ds.name, p)
            continue
        try:
            found[ds.name] = ds.importer(p, languages=languages, skip_bad=skip_bad, language_check=language_check,
                                         **dict(ds.kwargs))
        except FileNotFoundError as exc:
            log.info("%s: %s, skipped", ds.name, exc)
    return found


__all__ = ["BMIKE_SETS", "DATASETS", "MLAKE_LANGUAGES", "MZSRE_LANGUAGES", "CheckedRecords", "Dataset", "LanguageMismatchError", "LoadReport", "import_all", "import_bizsre", "import_bmike53",
           "import_mlake", "import_mlike", "import_mzsre", "read_records", "read_test_ids", "resolve_shared_dir",
           "slot_prompt"]
