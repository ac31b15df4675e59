"""The paper's metrics on a tiny model: definitions, 'not available' handling, multilingual F1, pre-edit cache."""
from __future__ import annotations

import pytest

import memla_utils.evaluate as ev
import memla_utils.evaluate_preedit as evaluate_preedit
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
from memla_utils.testing import TINY_ARCHITECTURES, tiny_model
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
    real = ev.evaluate_record

    def counting(*a, **k):
        calls.append(list(a[2]))
        return real(*a, **k)

    monkeypatch.setattr(evaluate_preedit, "evaluate_record", counting)  # what PreEditCache calls
    cache = PreEditCache(ArtifactCache(tmp_path))
    first = cache.get(lm, full_record(), "en")
    assert cache.get(lm, full_record(), "en") is first and calls == [["en"]]
    again = PreEditCache(ArtifactCache(tmp_path)).get(lm, full_record(), "en")  # from disk
    assert calls == [["en"]] and again.metrics == first.metrics
    assert first.metrics["NS_vs_unedited"].value == 1.0
    # the record's other languages are computed together, once; the cached one is not recomputed
    many = cache.get_many(lm, full_record(), ["zh", "en", "th"])
    assert calls == [["en"], ["zh", "th"]] and list(many) == ["zh", "en", "th"] and many["en"] is first
    assert cache.get_many(lm, full_record(), ["th", "zh"]) == {"th": many["th"], "zh": many["zh"]}
    assert len(calls) == 2
    # an unchanged model evaluated against its own reference agrees with itself
    res = ev.evaluate_language(lm, full_record(), "en", reference=first)
    assert res.metrics["NS_vs_unedited"].value == 1.0 and res.metrics["NS"] == first.metrics["NS"]


def test_limits_and_variants_switch(lm):
    m = evaluate_language(lm, full_record(), "en", config=EvalConfig(max_paraphrases=1, max_neighborhood=1,
                                                                     variants=False)).metrics
    assert m["PS"].n == 1 and m["NS"].n == 1 and set(m) == set(ev.PAPER_METRICS)


# ----------------------------------------------------------------------------- EOS ends a continuation (§5)
PROMPTS = ["The capital of France is", "日本の首都は", "La capital de España es muy", "เมืองหลวงของฝรั่งเศสคือ",
           "The currency of Poland is the"]


def _force_eos(lm, prompts: list[str]) -> tuple[str, list[int]]:
    """Make EOS the argmax inside one prompt's greedy continuation, as an edited model may; return that prompt
    and its continuation before EOS. The EOS output row becomes a scaled copy of the row of a token the
    continuation produces at step >= 1 for the first time (step 0 if no prompt has one)."""
    head, eos = lm.model.get_output_embeddings().weight, lm.tokenizer.eos_token_id
    conts = greedy_continuations(lm, prompts, [8] * len(prompts))
    fresh = [(p, c, i) for p, c in zip(prompts, conts) for i in range(1, 8) if c[i] not in c[:i]]
    prompt, before, step = fresh[0] if fresh else (prompts[0], conts[0], 0)
    for scale in (2.0, 0.5):
        head.data[eos] = head.data[before[step]] * scale
        after = greedy_continuations(lm, [prompt], [8])[0]
        after = after[:after.index(eos)] if eos in after else after
        if len(after) <= step and after == before[:len(after)]:  # EOS at `step` (or already earlier)
            return prompt, after
    raise AssertionError("could not make EOS the argmax")


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_continuations_stop_at_eos_and_do_not_depend_on_the_batch(arch):
    lm = tiny_model(arch, seed=1)
    prompt, stopped = _force_eos(lm, PROMPTS)
    lengths = [8, 4, 6, 3, 5]
    prompts = [prompt] + [p for p in PROMPTS if p != prompt]
    alone = [greedy_continuations(lm, [p], [k])[0] for p, k in zip(prompts, lengths)]
    assert alone[0] == stopped and len(stopped) < 8  # stopped at EOS: EOS and padding are not predicted tokens
    assert all(len(c) <= k and not {lm.tokenizer.eos_token_id, lm.tokenizer.pad_token_id} & set(c)
               for c, k in zip(alone, lengths))
    for side in ("left", "right"):
        for bs in (1, 2, 3, 8):
            assert greedy_continuations(lm, prompts, lengths, batch_size=bs, padding_side=side) == alone, (side, bs)
        order = [4, 0, 2, 1, 3]  # another composition: other neighbours, other padding widths
        got = greedy_continuations(lm, [prompts[i] for i in order], [lengths[i] for i in order], batch_size=2,
                                   padding_side=side)
        assert got == [alone[i] for i in order], side


def test_ns_does_not_depend_on_batch_size():
    lm = tiny_model("llama", seed=1)
    rec = full_record()
    prompt, stopped = _force_eos(lm, rec.neighborhood_prompts["en"])
    by_size = [evaluate_language(lm, rec, "en", config=EvalConfig(batch_size=bs)) for bs in (1, 2, 16)]
    for key in ("NS", "QS", "NS_text_f1", "QS_text_f1"):
        assert by_size[0].metrics[key] == by_size[1].metrics[key] == by_size[2].metrics[key], key
    assert by_size[0].continuations == by_size[1].continuations == by_size[2].continuations
    i = rec.neighborhood_prompts["en"].index(prompt)
    assert by_size[2].continuations["NS"][i] == stopped[:len(encode_answer(lm.tokenizer, ["Tokyo", "Madrid"][i],
                                                                            "en", prompt))]


def test_eos_ids_include_the_generation_config():
    lm = tiny_model("qwen2", seed=2)
    base = greedy_continuations(lm, [PROMPTS[0]], [4])[0]
    assert ev.eos_token_ids(lm) == [lm.tokenizer.eos_token_id]
    lm.model.generation_config.eos_token_id = [lm.tokenizer.eos_token_id, base[1]]
    assert ev.eos_token_ids(lm) == sorted({lm.tokenizer.eos_token_id, base[1]})
    for side in ("left", "right"):
        assert greedy_continuations(lm, [PROMPTS[0]], [4], padding_side=side)[0] == base[:1]
    assert ev.cut_at_eos([5, 6, 1, 0, 0], [1]) == [5, 6] and ev.cut_at_eos([1, 5], {1}) == []


def test_generation_starts_from_the_normalised_prompt(lm):
    assert greedy_continuations(lm, ["The capital of France is  "], [3]) == \
        greedy_continuations(lm, ["The capital of France is"], [3])


@pytest.mark.integration
def test_real_model_continuations_do_not_depend_on_the_batch(default_lm):
    """Gemma 3 270M, EOS made the argmax inside one continuation (as after an edit): the same continuations
    alone, in any batch, with either padding."""
    lm = default_lm
    prompts = ["The capital of France is Paris. The capital of Japan is", "法国的首都是", "日本の首都は",
               "The mother tongue of Marie Curie is", "เมืองหลวงของฝรั่งเศสคือ"]
    head = lm.model.get_output_embeddings().weight
    eos = lm.tokenizer.eos_token_id
    saved = head.data[eos].clone()
    try:
        forced, stopped = _force_eos(lm, prompts)
        lengths = [8 if p == forced else 4 for p in prompts]
        alone = [greedy_continuations(lm, [p], [k])[0] for p, k in zip(prompts, lengths)]
        assert alone[prompts.index(forced)] == stopped and len(stopped) < 8
        for side in ("left", "right"):
            assert greedy_continuations(lm, prompts, lengths, batch_size=8, padding_side=side) == alone, side
        assert greedy_continuations(lm, prompts[::-1], lengths[::-1], batch_size=2) == alone[::-1]
    finally:
        head.data[eos] = saved
