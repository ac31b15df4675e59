"""The paper's metrics on a tiny model: definitions, 'not available' handling, multilingual F1, pre-edit cache."""
from __future__ import annotations

import pytest

import memla_utils.evaluate as ev
from memla_utils.cache import ArtifactCache
from memla_utils.evaluate import (
    EvalConfig,
    PreEditCache,
    evaluate_language,
    greedy_continuations,
    set_f1,
    text_f1,
    text_tokens,
)
from memla_utils.mkeb.record import EditTarget, Record
from memla_utils.scoring import score_answers
from memla_utils.testing import tiny_model
from memla_utils.text import encode_answer


@pytest.fixture(scope="module")
def lm():
    return tiny_model("qwen2")


def full_record() -> Record:
    return Record("r1", "capital", {
        "en": EditTarget("The capital of {} is", "France", "Tokyo", "Paris"),
        "zh": EditTarget("{}的首都是", "法国", "东京", "巴黎"),
        "th": EditTarget("เมืองหลวงของ{}คือ", "ฝรั่งเศส", "โตเกียว", None)},
        paraphrase_prompts={"en": ["France's capital is", "The capital city of France is"]},
        neighborhood_prompts={"en": ["The capital of Japan is", "The capital of Spain is"], "zh": ["日本的首都是"]},
        neighborhood_answers={"en": ["Tokyo", "Madrid"], "zh": ["东京"]},
        multi_hop_questions={"en": ["The currency of the country whose capital is Tokyo is"]},
        multi_hop_new_answer={"en": "yen"})


def test_set_f1_is_memla4mke_calc_f1():
    assert set_f1([1, 2], [2, 3]) == pytest.approx(0.5)
    assert set_f1([1, 1, 2], [1]) == pytest.approx(2 / 3)  # sets: duplicates do not count twice
    assert set_f1([1], [2]) == 0.0
    with pytest.raises(ValueError):
        set_f1([], [])


def test_text_f1_splits_characters_where_there_are_no_spaces():
    assert text_tokens("东京 都", "zh") == ["东", "京", "都"]
    assert text_tokens("Tokyo, Japan!", "en") == ["tokyo", "japan"]
    assert text_tokens("กรุงเทพ", "th") == list("กรุงเทพ")
    assert text_f1("东京都", "东京", "zh") == pytest.approx(0.8)
    assert text_f1("東京です", "東京", "ja") == pytest.approx(2 * (2 / 4) * 1 / (2 / 4 + 1))
    assert text_f1("東京です", "東京", "en") == 0.0  # one 'word' each: the language matters
    assert text_f1("the Tokyo", "tokyo", "en") == pytest.approx(2 / 3)


def test_greedy_batch_equals_one_by_one(lm):
    prompts, lengths = ["The capital of France is", "日本の首都は", "La capital de España es muy"], [3, 2, 4]
    batch = greedy_continuations(lm, prompts, lengths, batch_size=8)
    single = [greedy_continuations(lm, [p], [k])[0] for p, k in zip(prompts, lengths)]
    assert batch == single and [len(c) for c in batch] == lengths


def test_es_ps_ns_qs_match_their_definitions(lm):
    rec = full_record()
    res = evaluate_language(lm, rec, "en")
    m = res.metrics
    s_new = score_answers(lm.model, lm.tokenizer, ["The capital of France is"], ["Tokyo"], "en")["logprob"]
    s_old = score_answers(lm.model, lm.tokenizer, ["The capital of France is"], ["Paris"], "en")["logprob"]
    assert m["ES"].value == float(s_new[0] > s_old[0]) and m["ES"].n == 1
    paras = rec.paraphrase_prompts["en"]
    p_new = score_answers(lm.model, lm.tokenizer, paras, ["Tokyo"] * 2, "en")["logprob"]
    p_old = score_answers(lm.model, lm.tokenizer, paras, ["Paris"] * 2, "en")["logprob"]
    assert m["PS"].value == pytest.approx(float((p_new > p_old).float().mean())) and m["PS"].n == 2
    f1s = []
    for p, a in zip(rec.neighborhood_prompts["en"], ["Tokyo", "Madrid"]):
        ids = encode_answer(lm.tokenizer, a, "en", p)
        f1s.append(set_f1(ids, greedy_continuations(lm, [p], [len(ids)])[0]))
    assert m["NS"].value == pytest.approx(sum(f1s) / 2) and m["NS"].n == 2
    assert m["QS"].n == 1 and 0.0 <= m["QS"].value <= 1.0
    assert set(ev.PAPER_METRICS) | set(ev.VARIANT_METRICS) >= set(m)


def test_missing_fields_are_not_available_never_zero(lm):
    rec = full_record()
    zh = evaluate_language(lm, rec, "zh").metrics
    assert zh["PS"].value is None and zh["PS"].n == 0         # no zh paraphrases
    assert zh["QS"].value is None and zh["QS_text_f1"].value is None  # no zh multi-hop
    assert zh["NS"].n == 1 and zh["ES"].value is not None
    th = evaluate_language(lm, rec, "th").metrics
    assert th["ES"].value is None and th["ES"].n == 0          # no target_true in th
    assert th["ES_token_acc"].value is not None               # the variant only needs target_new
    assert th["NS"].value is None
    assert th["NS_vs_unedited"].value is None                  # no reference given


def test_prompts_go_through_wrap(lm):
    rec = full_record()
    seen = []

    def wrap(prompt: str, lang: str) -> str:
        seen.append((prompt, lang))
        return "New fact: France's capital is Tokyo. " + prompt

    evaluate_language(lm, rec, "en", wrap=wrap)
    prompts = {p for p, _ in seen}
    assert "The capital of France is" in prompts and "The capital of Japan is" in prompts
    assert set(rec.paraphrase_prompts["en"]) <= prompts and all(l == "en" for _, l in seen)


def test_preedit_cache_computes_once_and_persists(lm, tmp_path, monkeypatch):
    calls = []
    real = ev.evaluate_language

    def counting(*a, **k):
        calls.append(a[2])
        return real(*a, **k)

    monkeypatch.setattr(ev, "evaluate_language", counting)
    cache = PreEditCache(ArtifactCache(tmp_path))
    first = cache.get(lm, full_record(), "en")
    assert cache.get(lm, full_record(), "en") is first and calls == ["en"]
    again = PreEditCache(ArtifactCache(tmp_path)).get(lm, full_record(), "en")  # from disk
    assert calls == ["en"] and again.metrics == first.metrics
    assert first.metrics["NS_vs_unedited"].value == 1.0
    # an unchanged model evaluated against its own reference agrees with itself
    res = real(lm, full_record(), "en", reference=first)
    assert res.metrics["NS_vs_unedited"].value == 1.0 and res.metrics["NS"] == first.metrics["NS"]


def test_limits_and_variants_switch(lm):
    m = evaluate_language(lm, full_record(), "en", config=EvalConfig(max_paraphrases=1, max_neighborhood=1,
                                                                     variants=False)).metrics
    assert m["PS"].n == 1 and m["NS"].n == 1 and set(m) == set(ev.PAPER_METRICS)
