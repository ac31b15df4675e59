"""Importer of the official MKEB release (``MLiKE_v2.json``), which is already in this package's schema.

Reads the records with :func:`memla_utils.mkeb.io.record_from_json`, optionally keeps only the official test ids
(:func:`read_test_ids`) and languages, and strips the leading space that the original code expects before answers.

``language_check`` (and what ``skip_bad`` does to wrong views) is described in :mod:`memla_utils.mkeb.importers`:
the output is checked with :func:`memla_utils.mkeb.langcheck.check_languages` unless it is False.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..languages import MKEB_LANGUAGES, normalize_language
from .importers_common import _Collector, _read_json, _wanted
from .io import record_from_json
from .langcheck import CheckedRecords, checked
from .record import EditTarget, Record, RecordError


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
