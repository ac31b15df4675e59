"""Importers of public benchmarks: synthetic fixtures written here, and the real files in ../shared/data."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from memla_utils.mkeb import (
    RecordError,
    coverage,
    import_all,
    import_bizsre,
    import_bmike53,
    import_mlake,
    import_mlike,
    import_mzsre,
    resolve_shared_dir,
)

SHARED = resolve_shared_dir("../shared/data")


def zsre_side(subject: str, lang: str, i: int = 0) -> dict:
    return {"subject": subject, "src": f"When was {subject} founded? ({lang})", "rephrase": f"{subject} start? {lang}",
            "alt": f"19{i:02d}", "loc": f"nq question: who {lang}", "loc_ans": "someone",
            "portability": {"New Question": f"What is {subject}? {lang}", "New Answer": f"thing-{lang}"}}


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------- MzsRE
def mzsre_dir(tmp_path: Path, n: int = 3) -> Path:
    d = tmp_path / "mzsre"
    for code in ("cz", "du", "zh"):
        write(d / f"mzsre_test_duplicate_en{code}.json",
              [{"en": zsre_side(f"S{i}", "en", i), code: zsre_side(f"S{i}-{code}", code, i)} for i in range(n)])
    return d


def test_mzsre_joins_pair_files_and_normalizes_codes(tmp_path):
    recs = import_mzsre(mzsre_dir(tmp_path))
    assert len(recs) == 3
    r = recs[1]
    assert set(r.edit) == {"en", "cs", "nl", "zh"}
    assert r.edit["cs"].subject == "S1-cz" and r.edit["en"].target_new == "1901"
    assert r.edit["en"].target_true is None                       # zsRE has no true answer: explicit
    assert r.edit["en"].prompt == "When was {} founded? (en)"     # subject slotted
    assert r.for_language("nl").prompt == "When was S1-du founded? (du)"
    assert r.multi_hop_new_answer["zh"] == "thing-zh"
    assert import_mzsre(mzsre_dir(tmp_path), languages="en,cs")[0].languages == ["en", "cs"]


def test_mzsre_misaligned_files_name_file_and_index(tmp_path):
    d = mzsre_dir(tmp_path)
    f = d / "mzsre_test_duplicate_enzh.json"
    rows = json.loads(f.read_text())
    rows[2]["en"]["subject"] = "Other"
    write(f, rows)
    with pytest.raises(RecordError, match=r"enzh\.json: record 2: field 'en\.subject'.*not aligned"):
        import_mzsre(d)


def test_mzsre_skip_bad(tmp_path, caplog):
    d = mzsre_dir(tmp_path)
    f = d / "mzsre_test_duplicate_endu.json"
    rows = json.loads(f.read_text())
    del rows[1]["du"]["alt"]
    write(f, rows)
    with pytest.raises(RecordError, match=r"endu\.json: record 1 field 'du': field 'alt'"):
        import_mzsre(d)
    with caplog.at_level(logging.WARNING):
        recs = import_mzsre(d, skip_bad=True)
    assert [r.example_id for r in recs] == ["mzsre-0", "mzsre-2"]
    assert "skipped 1 bad record(s), kept 2" in caplog.text


# ------------------------------------------------------------------------------------------- Bi-ZsRE
def test_bizsre(tmp_path):
    f = write(tmp_path / "bizsre_test.json", [{"en": zsre_side("A", "en"), "zh": zsre_side("甲", "zh")}])
    (r,) = import_bizsre(tmp_path)
    assert r.languages == ["en", "zh"] and r.edit["zh"].prompt.startswith("When was {}")
    write(f, [{"en": zsre_side("A", "en"), "zh": {"subject": "甲"}}])
    with pytest.raises(RecordError, match=r"bizsre_test\.json: record 0 field 'zh': field 'src'"):
        import_bizsre(f)


# ------------------------------------------------------------------------------------------- BMIKE-53
def bmike_item(case: int, lang: str, *, old: bool) -> dict:
    d = {"case_id": case, "subject": f"X{case}", "src": f"Capital of X{case}? {lang}", "rephrase": [f"X{case}?"],
         "alt": f"New{case}", "loc": [f"loc {lang}"], "loc_ans": ["L"], "port": [f"port {lang}?"],
         "port_ans": f"P{case}"}
    if old:
        d["old"] = f"Old{case}"
    return d


@pytest.mark.parametrize("set_name, old", [("zsre", False), ("counterfact", True), ("WikiFactDiff", True)])
def test_bmike53(tmp_path, set_name, old):
    for lang in ("en", "fr", "ko"):
        write(tmp_path / "bmike" / f"{set_name}_test_{lang}.json",
              [{lang: bmike_item(c, lang, old=old)} for c in (5, 7)])
    recs = import_bmike53(tmp_path / "bmike", set_name)
    assert [r.example_id for r in recs] == [f"bmike53-{set_name.lower()}-5", f"bmike53-{set_name.lower()}-7"]
    r = recs[1]
    assert set(r.edit) == {"en", "fr", "ko"}
    assert r.edit["fr"].target_true == ("Old7" if old else None)
    assert r.edit["ko"].prompt == "Capital of {}? ko"
    assert r.multi_hop_questions["en"] == ["port en?"] and r.multi_hop_new_answer["en"] == "P7"
    with pytest.raises(ValueError, match="unknown BMIKE-53 set 'mquake'.*zsre"):
        import_bmike53(tmp_path / "bmike", "mquake")


# ------------------------------------------------------------------------------------------- MLaKE
def test_mlake_joins_multi_hop_through_english_edit(tmp_path):
    d = tmp_path / "mlake"
    single = {
        "en": [{"question": "Where did A work?", "o_prompt": "A worked at Cornell.", "o_answer": "Cornell",
                "e_prompt": "A worked at BBC.", "e_answer": "BBC"}],
        "zh": [{"question": "A在哪里工作？", "o_prompt": "A在康奈尔工作。", "o_answer": "康奈尔",
                "e_prompt": "卡尔在BBC工作。", "e_answer": "BBC"}],
    }
    for lang, rows in single.items():
        write(d / "single_hop" / f"{lang}_qa.json", rows)
    write(d / "multi_hop" / "new_zh_qa.json", [
        {"question": "A的雇主在哪个国家？", "e_prompt": "A worked at BBC.", "e_answer": "英国"},
        {"question": "A的雇主总部在哪？", "e_prompt": "A worked at BBC.", "e_answer": "伦敦"},
        {"question": "无关", "e_prompt": "B worked at X.", "e_answer": "Y"}])
    (r,) = import_mlake(d)
    assert r.edit["en"].target_true == "Cornell" and r.edit["zh"].target_new == "BBC"
    assert r.paraphrase_prompts["en"] == ["A worked at"] and r.paraphrase_prompts["zh"] == ["卡尔在"]
    assert r.multi_hop_questions["zh"] == ["A的雇主在哪个国家？"] and r.multi_hop_new_answer["zh"] == "英国"
    assert r.multi_hop_questions["en"] == [] and r.multi_hop_new_answer["en"] is None  # not available
    assert r.neighborhood_prompts["en"] == []
    cov = coverage([r])
    assert cov.loc["en", "multi_hop"] == 0 and cov.loc["zh", "multi_hop"] == 1 and cov.loc["en", "neighborhood"] == 0


# ------------------------------------------------------------------------------------------- official MKEB
def test_mlike_with_test_ids_and_leading_spaces(tmp_path):
    rows = []
    for i in range(3):
        rows.append({"example_id": i, "relation_description": "The capital of [X] is",
                     "edit": {l: {"prompt": "The capital of {} is", "subject": f"C{i}", "target_new": " Paris",
                                  "target_true": " Rome"} for l in ("en", "de")},
                     "paraphrase_prompts": {"en": ["p"], "de": ["p"]},
                     "neighborhood_prompts": {"en": ["n"], "de": ["n"]},
                     "neighborhood_answers": {"en": [" Lima"], "de": [" Lima"]},
                     "multi_hop_questions": {"en": ["q"], "de": ["q"]},
                     "multi_hop_new_answer": {"en": " France", "de": " Frankreich"}})
    f = write(tmp_path / "MLiKE_v2.json", rows)
    ids = tmp_path / "test_ids.txt"
    ids.write_text("2\n0\n")
    recs = import_mlike(f, ids, languages=["de"])
    assert [r.example_id for r in recs] == ["0", "2"]
    assert recs[0].languages == ["de"]
    assert recs[0].edit["de"].target_new == "Paris" and recs[0].neighborhood_answers["de"] == ["Lima"]
    assert recs[0].multi_hop_new_answer == {"de": "Frankreich"}
    rows[1]["edit"]["en"].pop("subject")
    write(f, rows)
    with pytest.raises(RecordError, match=r"MLiKE_v2\.json: record 1: field 'edit\.en\.subject'"):
        import_mlike(f)
    assert len(import_mlike(f, skip_bad=True)) == 2


def test_import_all_skips_absent(tmp_path):
    mzsre_dir(tmp_path / "shared")
    (tmp_path / "shared" / "mzsre").rename(tmp_path / "shared" / "mzsre_tmp")
    (tmp_path / "shared" / "mzsre").mkdir()
    (tmp_path / "shared" / "mzsre_tmp").rename(tmp_path / "shared" / "mzsre" / "test")
    found = import_all(tmp_path / "shared")
    assert list(found) == ["MzsRE"] and len(found["MzsRE"]) == 3


# ------------------------------------------------------------------------------------------- real files
def need(rel: str) -> Path:
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"{p} not present")
    return p


def test_real_mzsre():
    recs = import_mzsre(need("mzsre/test"))
    assert len(recs) == 743
    assert set(recs[0].edit) == {"en", "cs", "de", "nl", "es", "fr", "pt", "ru", "th", "tr", "vi", "zh"}
    assert all(r.edit["en"].target_true is None for r in recs)
    assert sum("{}" in r.edit["en"].prompt for r in recs) > 700


def test_real_bizsre():
    recs = import_bizsre(need("bi-zsre/bizsre_test.json"))
    assert len(recs) == 1037 and recs[0].languages == ["en", "zh"]


def test_real_mlake():
    recs = import_mlake(need("mlake"))
    assert len(recs) == 1072
    cov = coverage(recs)
    assert list(cov.index) == ["en", "zh", "fr", "de", "ja"]
    assert (cov["multi_hop"] > 400).all() and (cov["neighborhood"] == 0).all()


def test_real_bmike53_and_mlike():
    p = need("bmike53")
    assert import_bmike53(p, "zsre")
    p = need("mkeb/MLiKE_v2.json")
    assert import_mlike(p)
