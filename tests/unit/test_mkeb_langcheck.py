"""The language check of record sets (memla_utils.mkeb.langcheck) and its use in load_records."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from memla_utils.mkeb import Record, load_records, save_records
from memla_utils.mkeb import langcheck as lc
from memla_utils.mkeb.langcheck import LangCheckConfig, LanguageMismatchError, check_languages
from memla_utils.mkeb.record import EditTarget

FIXTURES = Path(__file__).parent / "fixtures" / "importers"
NO_RAISE = LangCheckConfig(max_wrong_fraction=1.0)


def rec(views: dict[str, tuple[str, str, list[str]]], rid: str = "r") -> Record:
    """A record from {lang: (prompt with {} slot, subject, more prompts)}."""
    return Record(rid, "test", {l: EditTarget(p, s, "X") for l, (p, s, _) in views.items()},
                  paraphrase_prompts={l: more for l, (_, _, more) in views.items()})


def verdict(lang: str, prompt: str, subject: str = "", more: list[str] | None = None,
            candidates=None) -> tuple[int, int, dict]:
    """(checked, wrong, looks_like) of a one-view record."""
    out = check_languages([rec({lang: (prompt, subject, more or [])})], dataset="t", candidates=candidates,
                          config=NO_RAISE)
    c = out.language_report.languages[lang]
    return c.n_checked, c.n_wrong, dict(c.looks_like)


@pytest.mark.parametrize("lang, prompt, subject, wrong, looks", [
    # Chinese with a Latin-script subject and Latin letters left in the question (Bi-ZsRE style): Chinese
    ("zh", "{}的创立时间是什么时候？", "IAAF Combined Events Challenge", 0, {}),
    ("zh", "IAAF综合项目挑战赛是在什么时候推出的？", "X", 0, {}),
    # ja needs kana: a Han-only view is Chinese, a Chinese view labelled ja is refused and vice versa
    ("ja", "東京都の人口は何人ですか？", "", 0, {}),
    ("ja", "北京市的人口是多少？", "", 1, {"zh": 1}),
    ("zh", "東京の人口は何人ですか？", "", 1, {"ja": 1}),
    # Thai question carrying an English name (MzsRE): Thai
    ("th", "IAAF Combined Events Challenge ริเริ่มขึ้นเมื่อใด", "ความท้าทายของกิจกรรมรวม IAAF", 0, {}),
    ("ru", "Где родилась {}?", "Мара Квилл", 0, {}),
    ("ko", "{}은 어디에서 태어났습니까?", "마라 퀼", 0, {}),
    # English labelled as a non-Latin language
    ("ru", "Where was {} born?", "Mara Quill", 1, {"en": 1}),
    ("ko", "Where was {} born?", "Mara Quill", 1, {"en": 1}),
    ("th", "Which river flows through the birthplace of Mara Quill?", "", 1, {"en": 1}),
    # a non-Latin text labelled as a Latin-script language
    ("en", "{}出生在哪里？", "玛拉·奎尔", 1, {"zh": 1}),
    ("fr", "Где родилась Мара Квилл?", "", 1, {"ru": 1}),
])
def test_script_rules(lang, prompt, subject, wrong, looks):
    checked, n_wrong, looks_like = verdict(lang, prompt, subject, candidates={"en", "zh", "ja", "ko", "th", "ru",
                                                                              "fr", lang})
    assert (checked, n_wrong, looks_like) == (1, wrong, looks)


def test_identifier_tells_latin_languages_apart():
    pt = ["Qual é a cidade natal de Mara Quill?", "Que rio atravessa a cidade natal de Mara Quill?"]
    es = ["¿Cuál es el lugar de nacimiento de Mara Quill?", "¿Qué río atraviesa la ciudad natal de Mara Quill?"]
    assert verdict("pt", "Onde nasceu {}?", "Mara Quill", pt, {"en", "es", "pt", "it"})[1] == 0
    assert verdict("es", "¿Dónde nació {}?", "Mara Quill", es, {"en", "es", "pt", "it"})[1] == 0
    assert verdict("es", "Onde nasceu {}?", "Mara Quill", pt, {"en", "es", "pt", "it"}) == (1, 1, {"pt": 1})
    assert verdict("pt", "¿Dónde nació {}?", "Mara Quill", es, {"en", "es", "pt", "it"}) == (1, 1, {"es": 1})
    assert verdict("it", "Where was {} born?", "Mara Quill", ["What is the birthplace of Mara Quill?"],
                   {"en", "it"}) == (1, 1, {"en": 1})


def test_too_few_letters_is_undecided_and_unknown_languages_are_not_checked():
    out = check_languages([rec({"en": ("{}?", "X", []), "bn": ("{} কোথায় জন্মগ্রহণ করেন?", "Y", [])})], dataset="t")
    rep = out.language_report
    assert (rep.languages["en"].n_views, rep.languages["en"].n_checked) == (1, 0)
    assert rep.languages["bn"].method.startswith("not checked") and rep.languages["bn"].n_checked == 0
    assert "not checked (no rule): bn" in rep.summary()


def test_majority_wrong_raises_naming_source_and_language():
    recs = [rec({"en": ("Where was {} born?", f"P{i}", []), "zh": ("Where was {} born?", f"P{i}", [])}, f"r{i}")
            for i in range(3)]
    with pytest.raises(LanguageMismatchError) as err:
        check_languages(recs, dataset="demo", sources={"zh": "data/demo_zh.json", "en": "data/demo_en.json"})
    msg = str(err.value)
    assert msg.startswith("data/demo_zh.json: language 'zh': 3 of 3 views do not look like 'zh' (they look like: en 3)")
    assert "record 'r0': 'Where was P0 born?'" in msg and "demo_en" not in msg


def test_minority_wrong_is_counted_or_skipped_and_empty_records_are_dropped():
    good = [rec({"en": ("Where was {} born?", f"P{i}", []), "zh": ("{}出生在哪里？", f"P{i}", [])}, f"r{i}")
            for i in range(3)]
    bad_view = rec({"en": ("Where was {} born?", "Q", []), "zh": ("Where was {} born?", "Q", [])}, "bad")
    only_bad = rec({"zh": ("Which river flows through the birthplace of {}?", "Q", [])}, "only")
    recs = [*good, bad_view, only_bad]
    out = check_languages(recs, dataset="t")
    assert len(out) == 5 and out.language_report.languages["zh"].n_wrong == 2
    out = check_languages(recs, dataset="t", skip_bad=True)
    assert [r.example_id for r in out] == ["r0", "r1", "r2", "bad"] and out[3].languages == ["en"]
    assert (out.language_report.n_skipped_views, out.language_report.n_dropped_records) == (2, 1)
    table = out.language_report.table()
    assert table.loc["zh", "wrong"] == 2 and table.loc["zh", "looks_like"] == "en 2" and table.loc["en", "wrong"] == 0


def test_detector_is_built_lazily_once_per_candidate_set():
    tree = ast.parse(Path(lc.__file__).read_text(encoding="utf-8"))
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not any("lingua" in ast.unparse(n) for n in top)          # never imported at module import
    lc._detector.cache_clear()
    recs = [rec({"en": ("Where was {} born?", "P", []), "fr": ("Où est née {} ?", "P", [])})]
    check_languages(recs, dataset="t")
    check_languages(recs, dataset="t")
    assert lc._detector.cache_info().misses == 1 and lc._detector.cache_info().hits == 1
    check_languages(recs, dataset="t", candidates={"en", "fr", "de"})
    assert lc._detector.cache_info().misses == 2


def test_config_is_validated():
    with pytest.raises(ValueError, match="lingua_mode must be 'screen', 'high' or 'low'"):
        LangCheckConfig(lingua_mode="fast")


# ------------------------------------------------------------------------------------------- load_records
def mkeb_rows() -> list[dict]:
    return json.loads((FIXTURES / "mkeb" / "MLiKE_v2.json").read_text(encoding="utf-8"))


def test_load_records_checks_languages(tmp_path):
    path = tmp_path / "mkeb.jsonl"
    save_records([Record.from_dict(r) for r in mkeb_rows()], path)
    recs = load_records(path, languages="en,fr,ja", n=2)
    assert len(recs) == 2 and recs.language_report.n_views == 6 and recs.language_report.n_wrong == 0
    rows = mkeb_rows()
    for row in rows:                                                  # the "fr" views hold the English text
        for name in ("edit", "paraphrase_prompts", "neighborhood_prompts", "multi_hop_questions"):
            row[name]["fr"] = row[name]["en"]
    save_records([Record.from_dict(r) for r in rows], path)
    with pytest.raises(LanguageMismatchError, match=rf"{path}: language 'fr': 3 of 3 views do not look like 'fr' "
                                                    r"\(they look like: en 3\)"):
        load_records(path)
    assert load_records(path, languages="en,ja").language_report.n_wrong == 0
    assert load_records(path, language_check=False).language_report is None
