"""Importers of public benchmarks: fixtures in each benchmark's real shape (invented facts, real languages, under
fixtures/importers/), and the real files in ../shared/data (skipped when absent).

Every importer must read each language's side of a row by that language's key and must refuse a language whose
views are mostly written in another language (memla_utils.mkeb.langcheck)."""
from __future__ import annotations

import json
import logging
import shutil
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
from memla_utils.mkeb.langcheck import LanguageMismatchError

SHARED = resolve_shared_dir("../shared/data")
FIXTURES = Path(__file__).parent / "fixtures" / "importers"


def copy(tmp_path: Path, name: str) -> Path:
    """A writable copy of one fixture folder."""
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def read(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def rekey(row: dict, old: str, new: str) -> dict:
    return {(new if k == old else k): v for k, v in row.items()}


# ------------------------------------------------------------------------------------------- MzsRE
def test_mzsre_joins_pair_files_and_normalizes_codes():
    recs = import_mzsre(FIXTURES / "mzsre" / "test")
    assert len(recs) == 3
    r = recs[0]
    assert set(r.edit) == {"en", "cs", "nl", "zh", "ru", "th", "es", "pt"}
    assert r.edit["cs"].prompt == "Kde se narodila {}?" and r.edit["en"].target_new == "Porto"
    assert r.edit["en"].target_true is None                       # zsRE has no true answer: explicit
    assert r.edit["en"].prompt == "Where was {} born?"            # subject slotted
    assert r.for_language("nl").prompt == "Waar is Mara Quill geboren?"
    assert r.edit["th"].prompt == "{}เกิดที่ไหน" and r.multi_hop_new_answer["zh"] == "杜罗河"
    assert import_mzsre(FIXTURES / "mzsre" / "test", languages="en,cs")[0].languages == ["en", "cs"]
    rep = recs.language_report
    assert rep.n_views == 24 and rep.n_wrong == 0
    assert rep.languages["cs"].source.endswith("mzsre_test_duplicate_encz.json field 'cz'")


def test_mzsre_reads_the_side_of_the_files_language(tmp_path):
    d = copy(tmp_path, "mzsre")
    f = d / "test" / "mzsre_test_duplicate_enzh.json"
    ja = read(FIXTURES / "bmike53" / "counterfact_test_ja.json")
    # a foreign side placed before the file's own: the zh view must still come from "zh"
    write(f, [{"en": row["en"], "ja": jrow["ja"], "zh": row["zh"]} for row, jrow in zip(read(f), ja)])
    r = import_mzsre(d / "test", languages="en,zh")[0]
    assert r.edit["zh"].prompt == "{}出生在哪里？"
    # a file whose rows lack their own language is an error naming file, record and the keys it has
    write(f, [rekey(row, "zh", "ja") for row in read(FIXTURES / "mzsre/test/mzsre_test_duplicate_enzh.json")])
    with pytest.raises(RecordError, match=r"enzh\.json: record 0: no 'zh' side in this row \(its keys: 'en', 'ja'\)"):
        import_mzsre(d / "test")


def test_mzsre_misaligned_files_name_file_and_index(tmp_path):
    d = copy(tmp_path, "mzsre") / "test"
    f = d / "mzsre_test_duplicate_enzh.json"
    rows = read(f)
    rows[2]["en"]["subject"] = "Other"
    write(f, rows)
    with pytest.raises(RecordError, match=r"enzh\.json: record 2: field 'en\.subject'.*not aligned"):
        import_mzsre(d)


def test_mzsre_swapped_sides_are_refused(tmp_path):
    d = copy(tmp_path, "mzsre") / "test"
    f = d / "mzsre_test_duplicate_enth.json"
    write(f, [{"en": row["th"], "th": row["en"]} for row in read(f)])
    with pytest.raises(RecordError, match=r"not aligned"):          # with the other pair files: alignment
        import_mzsre(d)
    with pytest.raises(LanguageMismatchError) as err:               # alone: the language check
        import_mzsre(f)
    msg = str(err.value)
    assert "mzsre_test_duplicate_enth.json field 'th': language 'th': 3 of 3 views" in msg
    assert "language 'en': 3 of 3 views do not look like 'en' (they look like: th 3)" in msg


def test_mzsre_mislabeled_file_is_refused(tmp_path):
    """Portuguese content in the Spanish pair file (the identifier must tell es from pt)."""
    d = copy(tmp_path, "mzsre") / "test"
    pt = read(d / "mzsre_test_duplicate_enpt.json")
    write(d / "mzsre_test_duplicate_enes.json", [rekey(row, "pt", "es") for row in pt])
    with pytest.raises(LanguageMismatchError, match=r"enes\.json field 'es': language 'es': \d of 3 views do not "
                                                    r"look like 'es' \(they look like: pt"):
        import_mzsre(d, languages="en,es,pt")


def test_mzsre_skip_bad(tmp_path, caplog):
    d = copy(tmp_path, "mzsre") / "test"
    f = d / "mzsre_test_duplicate_endu.json"
    rows = read(f)
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
    recs = import_bizsre(FIXTURES / "bi-zsre")
    r = recs[0]
    assert r.languages == ["en", "zh"] and r.edit["zh"].prompt == "{}出生在哪里？"
    assert recs.language_report.n_wrong == 0
    f = write(tmp_path / "bizsre_test.json", [{"en": read(FIXTURES / "bi-zsre/bizsre_test.json")[0]["en"],
                                               "zh": {"subject": "甲"}}])
    with pytest.raises(RecordError, match=r"bizsre_test\.json: record 0 field 'zh': field 'src'"):
        import_bizsre(f)


def test_bizsre_swapped_sides_are_refused(tmp_path):
    rows = read(FIXTURES / "bi-zsre" / "bizsre_test.json")
    f = write(tmp_path / "bizsre_test.json", [{"en": row["zh"], "zh": row["en"]} for row in rows])
    with pytest.raises(LanguageMismatchError) as err:
        import_bizsre(f)
    assert "bizsre_test.json field 'zh': language 'zh': 3 of 3 views do not look like 'zh'" in str(err.value)
    assert "language 'en': 3 of 3 views do not look like 'en' (they look like: zh 3)" in str(err.value)


# ------------------------------------------------------------------------------------------- BMIKE-53
@pytest.mark.parametrize("set_name, old", [("counterfact", True), ("zsre", False)])
def test_bmike53_reads_each_files_language(set_name, old):
    recs = import_bmike53(FIXTURES / "bmike53", set_name)
    assert [r.example_id for r in recs] == [f"bmike53-{set_name}-7", f"bmike53-{set_name}-12",
                                           f"bmike53-{set_name}-19"]
    r = recs[0]
    # the view of each language is that language's side of the row, never the English side (issue 13)
    assert r.edit["zh"].prompt == "{}出生在哪里？" and r.edit["zh"].subject == "玛拉·奎尔"
    assert r.edit["en"].prompt == "Where was {} born?"               # English read from the rows' "en" side
    assert r.edit["zh"].target_true == ("里昂" if old else None)
    assert r.multi_hop_questions["zh"] == ["哪条河流经玛拉·奎尔的出生地？"] and r.multi_hop_new_answer["zh"] == "杜罗河"
    assert r.neighborhood_prompts["zh"] == ["伊沃·布兰德出生在哪里？"] and r.neighborhood_answers["zh"] == ["根特"]
    if old:
        assert set(r.edit) == {"en", "zh", "ja", "ko", "th", "ru", "fr", "es", "pt"}
        assert r.edit["ko"].prompt == "{}은 어디에서 태어났습니까?" and r.edit["th"].prompt == "{}เกิดที่ไหน"
        assert r.edit["ja"].prompt == "{}はどこで生まれましたか？" and r.edit["ru"].prompt == "Где родилась {}?"
    rep = recs.language_report
    assert rep.n_wrong == 0 and rep.languages["zh"].source.endswith(f"{set_name}_test_zh.json field 'zh'")
    assert import_bmike53(FIXTURES / "bmike53", set_name, languages=["ja" if old else "de"])[0].languages == \
        ["ja" if old else "de"]
    with pytest.raises(ValueError, match="unknown BMIKE-53 set 'mquake'.*zsre"):
        import_bmike53(FIXTURES / "bmike53", "mquake")


def test_bmike53_english_file_and_alignment(tmp_path):
    d = copy(tmp_path, "bmike53")
    zh = read(d / "counterfact_test_zh.json")
    write(d / "counterfact_test_en.json", [{"en": row["en"]} for row in zh])
    r = import_bmike53(d, "counterfact", languages="en,zh")[0]
    assert r.edit["en"].subject == "Mara Quill" and r.edit["zh"].subject == "玛拉·奎尔"
    ja = read(d / "counterfact_test_ja.json")
    ja[1]["en"]["subject"] = "Someone Else"
    write(d / "counterfact_test_ja.json", ja)
    with pytest.raises(RecordError, match=r"counterfact_test_ja\.json: record 1: field 'en\.subject'.*not aligned"):
        import_bmike53(d, "counterfact")
    ja[1]["en"]["subject"] = "Tobias Renn"
    ja[1]["ja"]["case_id"] = 99
    write(d / "counterfact_test_ja.json", ja)
    with pytest.raises(RecordError, match=r"record 1: field 'en\.case_id' is 12 but field 'ja\.case_id' is 99"):
        import_bmike53(d, "counterfact")


def test_bmike53_row_without_its_language(tmp_path):
    d = copy(tmp_path, "bmike53")
    f = d / "counterfact_test_ko.json"
    write(f, [rekey(row, "ko", "kr_") for row in read(f)])
    with pytest.raises(RecordError, match=r"counterfact_test_ko\.json: record 0: no 'ko' side in this row "
                                          r"\(its keys: 'en', 'kr_'\)"):
        import_bmike53(d, "counterfact")


def test_bmike53_zh_file_with_english_zh_side_is_refused(tmp_path):
    d = copy(tmp_path, "bmike53")
    f = d / "counterfact_test_zh.json"
    write(f, [{"en": row["en"], "zh": row["en"]} for row in read(f)])
    with pytest.raises(LanguageMismatchError, match=r"counterfact_test_zh\.json field 'zh': language 'zh': 3 of 3 "
                                                    r"views do not look like 'zh' \(they look like: en 3\)"):
        import_bmike53(d, "counterfact")


def test_bmike53_single_wrong_view_is_counted_or_skipped(tmp_path, caplog):
    d = copy(tmp_path, "bmike53")
    f = d / "counterfact_test_zh.json"
    rows = read(f)
    rows[1]["zh"] = rows[1]["en"]                                   # one of three zh views is English
    write(f, rows)
    with caplog.at_level(logging.WARNING):
        recs = import_bmike53(d, "counterfact")
    rep = recs.language_report
    assert rep.languages["zh"].n_wrong == 1 and rep.languages["zh"].looks_like == {"en": 1}
    assert "bmike53-counterfact-12" in rep.languages["zh"].examples[0]
    assert "zh': 1 of 3 views do not look like 'zh'" in caplog.text
    assert recs[1].edit["zh"].prompt == "Which company does {} work for?"     # kept (counted) by default
    recs = import_bmike53(d, "counterfact", skip_bad=True)
    assert len(recs) == 3 and "zh" not in recs[1].edit and "ja" in recs[1].edit   # the rest of the record stays
    assert recs.language_report.n_skipped_views == 1 and "zh" in recs[0].edit


# ------------------------------------------------------------------------------------------- MLaKE
def test_mlake_joins_multi_hop_through_english_edit(tmp_path):
    recs = import_mlake(FIXTURES / "mlake")
    r = recs[0]
    assert r.edit["en"].target_true == "Lyon" and r.edit["zh"].target_new == "波尔图"
    assert r.edit["ja"].prompt == "マーラ・クイルはどこで生まれましたか？"
    assert r.paraphrase_prompts["en"] == ["Mara Quill was born in"] and r.paraphrase_prompts["zh"] == ["玛拉·奎尔出生于"]
    assert r.multi_hop_questions["zh"] == ["哪条河流经玛拉·奎尔的出生地？"] and r.multi_hop_new_answer["zh"] == "杜罗河"
    assert recs.language_report.n_wrong == 0
    d = copy(tmp_path, "mlake")
    (d / "multi_hop" / "new_en_qa.json").unlink()
    r = import_mlake(d)[0]
    assert r.multi_hop_questions["en"] == [] and r.multi_hop_new_answer["en"] is None  # not available
    assert r.neighborhood_prompts["en"] == []
    cov = coverage([r])
    assert cov.loc["en", "multi_hop"] == 0 and cov.loc["zh", "multi_hop"] == 1 and cov.loc["en", "neighborhood"] == 0


@pytest.mark.parametrize("source, label, looks", [("en", "zh", "en"), ("zh", "ja", "zh"), ("ja", "zh", "ja"),
                                                  ("de", "fr", "de")])
def test_mlake_mislabeled_file_is_refused(tmp_path, source, label, looks):
    d = copy(tmp_path, "mlake")
    for sub, pattern in (("single_hop", "{}_qa.json"), ("multi_hop", "new_{}_qa.json")):
        shutil.copy(d / sub / pattern.format(source), d / sub / pattern.format(label))
    with pytest.raises(LanguageMismatchError, match=rf"single_hop/{label}_qa\.json .*language '{label}': 3 of 3 "
                                                    rf"views do not look like '{label}' \(they look like: {looks} 3\)"):
        import_mlake(d)


# ------------------------------------------------------------------------------------------- official MKEB
def test_mlike_with_test_ids_and_leading_spaces(tmp_path):
    f = FIXTURES / "mkeb" / "MLiKE_v2.json"
    ids = tmp_path / "test_ids.txt"
    ids.write_text("2\n0\n")
    recs = import_mlike(f, ids, languages=["de"])
    assert [r.example_id for r in recs] == ["0", "2"]
    assert recs[0].languages == ["de"]
    assert recs[0].edit["de"].target_new == "Porto" and recs[0].neighborhood_answers["de"] == ["Gent"]
    assert recs[0].edit["de"].subject == "Mara Quill" and recs[0].multi_hop_new_answer == {"de": "Douro"}
    assert import_mlike(f).language_report.n_wrong == 0
    rows = read(f)
    rows[1]["edit"]["en"].pop("subject")
    g = write(tmp_path / "MLiKE_v2.json", rows)
    with pytest.raises(RecordError, match=r"MLiKE_v2\.json: record 1: field 'edit\.en\.subject'"):
        import_mlike(g)
    assert len(import_mlike(g, skip_bad=True)) == 2


def test_mlike_mislabeled_language_is_refused(tmp_path):
    rows = read(FIXTURES / "mkeb" / "MLiKE_v2.json")
    for row in rows:                                   # the "it" views hold the Spanish text
        for name in ("edit", "paraphrase_prompts", "neighborhood_prompts", "neighborhood_answers",
                     "multi_hop_questions", "multi_hop_new_answer"):
            row[name]["it"] = row[name]["es"]
    f = write(tmp_path / "MLiKE_v2.json", rows)
    with pytest.raises(LanguageMismatchError, match=r"MLiKE_v2\.json field 'edit\.it': language 'it': \d of 3 views "
                                                    r"do not look like 'it' \(they look like: es"):
        import_mlike(f)
    assert "it" in import_mlike(f, language_check=False)[0].edit


def test_import_all_skips_absent(tmp_path):
    shutil.copytree(FIXTURES / "mzsre", tmp_path / "shared" / "mzsre")
    found = import_all(tmp_path / "shared")
    assert list(found) == ["MzsRE"] and len(found["MzsRE"]) == 3
    assert found["MzsRE"].language_report.n_wrong == 0


# ------------------------------------------------------------------------------------------- real files
def need(rel: str) -> Path:
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"{p} not present")
    return p


def assert_clean(recs, max_wrong_fraction: float = 0.01) -> None:
    """Every language of a real import passes the check with at most 1% of its views flagged."""
    rep = recs.language_report
    assert rep is not None and rep.n_views == sum(len(r.edit) for r in recs)
    worst = {l: c.fraction_wrong for l, c in rep.languages.items()}
    assert max(worst.values()) <= max_wrong_fraction, rep.table()
    assert all(not c.method.startswith("not checked") for c in rep.languages.values())


def test_real_mzsre():
    recs = import_mzsre(need("mzsre/test"))
    assert len(recs) == 743
    assert set(recs[0].edit) == {"en", "cs", "de", "nl", "es", "fr", "pt", "ru", "th", "tr", "vi", "zh"}
    assert all(r.edit["en"].target_true is None for r in recs)
    assert sum("{}" in r.edit["en"].prompt for r in recs) > 700
    assert_clean(recs)


def test_real_mzsre_mislabeled_or_swapped_file_is_refused(tmp_path):
    src = need("mzsre/test")
    rows = read(src / "mzsre_test_duplicate_enth.json")
    f = write(tmp_path / "mzsre_test_duplicate_enth.json", [{"en": r["th"], "th": r["en"]} for r in rows])
    with pytest.raises(LanguageMismatchError, match=r"enth\.json field 'th': language 'th': 743 of 743 views"):
        import_mzsre(f)
    rows = read(src / "mzsre_test_duplicate_enes.json")            # Spanish text in the Portuguese file
    f = write(tmp_path / "mzsre_test_duplicate_enpt.json", [rekey(r, "es", "pt") for r in rows])
    with pytest.raises(LanguageMismatchError, match=r"enpt\.json field 'pt': language 'pt': \d+ of 743 views do not "
                                                    r"look like 'pt' \(they look like: es"):
        import_mzsre(f)


def test_real_bizsre():
    recs = import_bizsre(need("bi-zsre/bizsre_test.json"))
    assert len(recs) == 1037 and recs[0].languages == ["en", "zh"]
    assert_clean(recs, 0.0)


def test_real_mlake():
    recs = import_mlake(need("mlake"))
    assert len(recs) == 1072
    cov = coverage(recs)
    assert list(cov.index) == ["en", "zh", "fr", "de", "ja"]
    assert (cov["multi_hop"] > 400).all() and (cov["neighborhood"] == 0).all()
    assert_clean(recs)


def test_real_mlake_english_file_read_as_chinese_is_refused(tmp_path):
    src = need("mlake")
    for sub, name in (("single_hop", "{}_qa.json"), ("multi_hop", "new_{}_qa.json")):
        (tmp_path / sub).mkdir(exist_ok=True)
        shutil.copy(src / sub / name.format("en"), tmp_path / sub / name.format("en"))
        shutil.copy(src / sub / name.format("en"), tmp_path / sub / name.format("zh"))
    with pytest.raises(LanguageMismatchError, match=r"single_hop/zh_qa\.json .*language 'zh': 1072 of 1072 views do "
                                                    r"not look like 'zh' \(they look like: en 10\d\d"):
        import_mlake(tmp_path)


def test_real_rows_in_bmike53_shape_give_each_files_language(tmp_path):
    """BMIKE-53 is not on disk: the real Bi-ZsRE rows, rewritten in BMIKE-53's shape (English side first)."""
    rows = read(need("bi-zsre/bizsre_test.json"))

    def side(d: dict, i: int) -> dict:
        p = d["portability"]
        return {"case_id": i, "subject": d["subject"], "src": d["src"], "rephrase": d["rephrase"], "alt": d["alt"],
                "loc": d["loc"], "loc_ans": d["loc_ans"], "port": p["New Question"], "port_ans": p["New Answer"]}

    write(tmp_path / "zsre_test_zh.json", [{"en": side(r["en"], i), "zh": side(r["zh"], i)} for i, r in enumerate(rows)])
    recs = import_bmike53(tmp_path, "zsre")
    assert len(recs) == 1037 and recs[0].edit["zh"].prompt == "{}的创立时间是什么时候？"
    assert recs[0].edit["en"].prompt == "When was the inception of {}?"
    assert_clean(recs, 0.0)
    write(tmp_path / "zsre_test_zh.json", [{"en": side(r["en"], i), "zh": side(r["en"], i)} for i, r in enumerate(rows)])
    with pytest.raises(LanguageMismatchError, match=r"zsre_test_zh\.json field 'zh': language 'zh': 1037 of 1037"):
        import_bmike53(tmp_path, "zsre")


def test_real_bmike53_and_mlike():
    p = need("bmike53")
    assert_clean(import_bmike53(p, "zsre"))
    p = need("mkeb/MLiKE_v2.json")
    assert_clean(import_mlike(p))
