"""Importer of MLaKE: single-hop questions per language joined on index, with its multi-hop questions.

MLaKE is question-answer data, not zsRE: the question is the edit prompt, the edit statement cut before its answer
(:func:`_cloze`) is the paraphrase, and it has no subject field and no neighbourhood prompts (both stay empty).

``language_check`` (and what ``skip_bad`` does to wrong views) is described in :mod:`memla_utils.mkeb.importers`:
the output is checked with :func:`memla_utils.mkeb.langcheck.check_languages` unless it is False.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .importers_common import _Collector, _read_list, _record_from_sides, _Side, _str, _wanted
from .langcheck import CheckedRecords, checked
from .record import Record, RecordError

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
