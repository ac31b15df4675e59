"""All languages of a record evaluated at once (evaluate_record, score_answers_shared, length-grouped generation)
give the per-language evaluation's metrics, on tiny models of every architecture; the runner uses it."""
from __future__ import annotations

import pytest
import torch

import memla_utils.evaluate as ev
import memla_utils.evaluate_greedy as greedy
import memla_utils.evaluate_preedit as evaluate_preedit
import memla_utils.runner as runner
from memla_utils.evaluate import EvalConfig, evaluate_language, evaluate_record
from memla_utils.finite import NonFiniteError
from memla_utils.mkeb.record import EditTarget, Record
from memla_utils.models import wrap_model
from memla_utils.prefix_scoring import score_answers_shared
from memla_utils.runner import RunnerConfig, run_experiment
from memla_utils.scoring import score_answers
from memla_utils.testing import TINY_ARCHITECTURES, tiny_config, tiny_model, tiny_tokenizer
from memla_utils.text import encode_prompt, join_prompt_answer, normalize_prompt

LANGS = ("en", "zh", "ja", "th", "fr")


def multi_record() -> Record:
    """Every field in five languages (zh/ja/th: answers that straddle the prompt's end with byte-level BPE)."""
    return Record("m1", "capital", {
        "en": EditTarget("The capital of {} is", "France", "Tokyo", "Paris"),
        "zh": EditTarget("{}的首都是", "法国", "东京", "巴黎"),
        "ja": EditTarget("{}の首都は", "フランス", "東京", "パリ"),
        "th": EditTarget("เมืองหลวงของ{}คือ", "ฝรั่งเศส", "โตเกียว", "ปารีส"),
        "fr": EditTarget("La capitale de la {} est", "France", "Tokyo", None)},  # no old answer: ES n/a
        paraphrase_prompts={"en": ["France's capital is", "The capital city of France is"], "zh": ["法国首都是"],
                            "ja": ["フランスの首都といえば"], "fr": ["La capitale française est"]},
        neighborhood_prompts={"en": ["The capital of Japan is", "The capital of Spain is"], "zh": ["日本的首都是"],
                              "ja": ["日本の首都は", "ドイツの首都は"], "th": ["เมืองหลวงของญี่ปุ่นคือ"],
                              "fr": ["La capitale du Japon est"]},
        neighborhood_answers={"en": ["Tokyo", "Madrid"], "zh": ["东京"], "ja": ["東京", "ベルリン"],
                              "th": ["โตเกียว"], "fr": ["Tokyo"]},
        multi_hop_questions={"en": ["The currency of the country whose capital is Tokyo is"],
                             "zh": ["首都是东京的国家的货币是"]},
        multi_hop_new_answer={"en": "the Japanese yen", "zh": "日元"})


# Scored rows: prompts with two answers (one a prefix of the other: the shared ids reach into the answers),
# a prompt scored once, answers whose first token straddles the prompt's end.
PROMPTS = ["The capital of France is", "The capital of France is", "日本の首都は", "日本の首都は",
           "เมืองหลวงของฝรั่งเศสคือ", "เมืองหลวงของฝรั่งเศสคือ", "La capital de España es muy", "法国的首都是",
           "法国的首都是"]
ANSWERS = ["Paris", "Paris in Texas", "東京", "パリ", "ปารีส", "โตเกียว", "Madrid", "巴黎", "东京"]
LANGUAGES = ["en", "en", "ja", "ja", "th", "th", "es", "zh", "zh"]


def _assert_same_scores(plain: dict[str, torch.Tensor], shared: dict[str, torch.Tensor]) -> None:
    assert torch.allclose(plain["logprob"], shared["logprob"], atol=1e-4, rtol=0), plain["logprob"] - shared["logprob"]
    assert torch.equal(plain["token_accuracy"], shared["token_accuracy"])
    assert torch.equal(plain["exact_match"], shared["exact_match"])


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_shared_prefix_scoring_equals_plain_scoring(arch):
    lm = tiny_model(arch, seed=1)
    plain = score_answers(lm.model, lm.tokenizer, PROMPTS, ANSWERS, LANGUAGES)
    for bs in (1, 2, 3, 64):
        _assert_same_scores(plain, score_answers_shared(lm.model, lm.tokenizer, PROMPTS, ANSWERS, LANGUAGES,
                                                        batch_size=bs))
    empty = score_answers_shared(lm.model, lm.tokenizer, [], [], "en")
    assert all(v.shape == (0,) for v in empty.values())


def _count_work(lm):
    """Hooks counting the real (unpadded) tokens the model runs and the positions the LM head projects."""
    seen = {"tokens": 0, "projected": 0}

    def body(module, args, kwargs):
        ids, att = kwargs["input_ids"], kwargs["attention_mask"]
        seen["tokens"] += int(att[:, -ids.shape[1]:].sum())

    def head(module, args, out):  # rows whose logits are computed (a deferred forward's head computes none)
        seen["projected"] += out.reshape(-1, out.shape[-1]).shape[0]

    handles = [lm.model.register_forward_pre_hook(body, with_kwargs=True),
               lm.model.get_output_embeddings().register_forward_hook(head)]
    return seen, handles


@pytest.mark.parametrize("arch", ["llama", "bloom"])
def test_each_prompt_runs_once_and_only_answer_positions_are_projected(arch, monkeypatch):
    import memla_utils.scoring as scoring

    lm = tiny_model(arch)
    joined = [join_prompt_answer(lm.tokenizer, p, a, lang) for p, a, lang in zip(PROMPTS, ANSWERS, LANGUAGES)]
    rows = [j.prompt_ids + j.answer_ids for j in joined]
    expected = 0  # per prompt text: the ids its rows share once, then each row's own ids but the last
    for prompt in dict.fromkeys(PROMPTS):
        mine = [r for r, p in zip(rows, PROMPTS) if p == prompt]
        k = len(mine[0]) - 1
        if len(mine) > 1:
            k = min(next((i for i in range(min(map(len, mine))) if len({r[i] for r in mine}) > 1),
                         min(map(len, mine))), min(map(len, mine)) - 1)
        expected += k + sum(len(r) - 1 - k for r in mine)
    seen, handles = _count_work(lm)
    try:
        score_answers_shared(lm.model, lm.tokenizer, PROMPTS, ANSWERS, LANGUAGES, batch_size=64)
        shared = dict(seen)
        seen.update(tokens=0, projected=0)
        # against a forward per row with the model's own logits at the batch's answer columns (score_answers
        # without its own deferred head)
        monkeypatch.setattr(scoring, "can_defer", lambda model: False)
        score_answers(lm.model, lm.tokenizer, PROMPTS, ANSWERS, LANGUAGES, batch_size=64)
    finally:
        for h in handles:
            h.remove()
    assert shared["tokens"] == expected < seen["tokens"]
    assert shared["projected"] <= sum(len(j.answer_ids) for j in joined) < seen["projected"]


def test_models_without_explicit_positions_score_without_sharing(monkeypatch):
    """A forward that does not take position_ids (a wrapper passing **kwargs) would number a row's own ids from
    the cache's padded length: such models are scored without shared prefixes, and still the same."""
    import memla_utils.prefix_scoring as ps

    lm = tiny_model("llama", seed=1)
    real = ps._accepts
    monkeypatch.setattr(ps, "_accepts", lambda model, name: name != "position_ids" and real(model, name))
    seen, handles = _count_work(lm)
    try:
        shared = score_answers_shared(lm.model, lm.tokenizer, PROMPTS, ANSWERS, LANGUAGES, batch_size=64)
    finally:
        for h in handles:
            h.remove()
    _assert_same_scores(score_answers(lm.model, lm.tokenizer, PROMPTS, ANSWERS, LANGUAGES), shared)
    full = sum(len(j.prompt_ids) + len(j.answer_ids) - 1 for j in
               (join_prompt_answer(lm.tokenizer, p, a, lang) for p, a, lang in zip(PROMPTS, ANSWERS, LANGUAGES)))
    assert seen["tokens"] == full


def _gemma(window: int):
    from transformers import AutoModelForCausalLM

    config = tiny_config("gemma3_text")
    config.sliding_window = window
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    for p in model.parameters():
        if p.dim() == 2:
            p.data.normal_(0.0, 0.2)
    return wrap_model(model, tiny_tokenizer(), name=f"tiny-gemma-window{window}")


@pytest.mark.parametrize("window", [8, 128])
def test_sliding_window_models_score_the_same(window):
    """A window shorter than the rows (8): no sharing, the padding holes would shift it; a long one: shared."""
    lm = _gemma(window)
    plain = score_answers(lm.model, lm.tokenizer, PROMPTS, ANSWERS, LANGUAGES)
    seen, handles = _count_work(lm)
    try:
        shared = score_answers_shared(lm.model, lm.tokenizer, PROMPTS, ANSWERS, LANGUAGES, batch_size=4)
    finally:
        for h in handles:
            h.remove()
    _assert_same_scores(plain, shared)
    full = sum(len(j.prompt_ids) + len(j.answer_ids) - 1 for j in
               (join_prompt_answer(lm.tokenizer, p, a, lang) for p, a, lang in zip(PROMPTS, ANSWERS, LANGUAGES)))
    assert (seen["tokens"] == full) == (window == 8)


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_record_evaluation_equals_per_language_evaluation(arch):
    lm = tiny_model(arch, seed=1)
    rec = multi_record()
    per = {lang: evaluate_language(lm, rec, lang) for lang in LANGS}
    together = evaluate_record(lm, rec, LANGS)
    assert list(together) == list(LANGS)
    for lang in LANGS:
        assert together[lang].metrics == per[lang].metrics, lang
        assert together[lang].continuations == per[lang].continuations, lang
    assert together["fr"].metrics["ES"].value is None and together["th"].metrics["PS"].n == 0
    assert together["en"].metrics["NS"].n == 2 and together["zh"].metrics["QS"].n == 1

    def wrap(prompt: str, lang: str) -> str:  # an edit that changes what the model sees (IKE-like)
        return "New fact: France's capital is Tokyo. " + prompt

    small = EvalConfig(batch_size=2)
    per_w = {lang: evaluate_language(lm, rec, lang, wrap=wrap, reference=per[lang]) for lang in LANGS}
    for config in (None, small):
        got = evaluate_record(lm, rec, LANGS, wrap=wrap, config=config, references=per)
        for lang in LANGS:
            assert got[lang].metrics == per_w[lang].metrics and got[lang].continuations == per_w[lang].continuations
    assert any(per_w[lang].metrics != per[lang].metrics for lang in LANGS)  # the wrap mattered


def test_record_evaluation_raises_on_nan_naming_the_record():
    lm = tiny_model("qwen2")
    handle = lm.model.get_output_embeddings().register_forward_hook(lambda m, a, out: out * float("nan"))
    try:
        with pytest.raises(NonFiniteError, match=r"record 'm1'"):
            evaluate_record(lm, multi_record(), LANGS)
    finally:
        handle.remove()


def test_generation_batches_group_similar_prompt_lengths():
    chunks = greedy._generation_chunks([1, 3, 1, 0, 2, 1, 1], [5, 2, 3, 4, 1, 9, 5], batch_size=2)
    # sorted by (prompt length, index), any continuation lengths together; cut where a batch is full (0 after
    # [1, 2]) or padding would exceed PADDING_SLACK (1 after 4: 2 x 2 > 1.2 x 3); length 0 (3): nothing to run
    assert chunks == [[4], [1, 2], [0, 6], [5]]


def test_runner_evaluates_unedited_once_per_record_and_each_edit_in_one_call(tmp_path, monkeypatch):
    lm = tiny_model("llama")
    calls: list[tuple[str, tuple[str, ...], bool]] = []
    real = ev.evaluate_record

    def counting(lm_, record, languages, **kw):
        calls.append((record.example_id, tuple(languages), kw.get("references") is not None))
        return real(lm_, record, languages, **kw)

    monkeypatch.setattr(evaluate_preedit, "evaluate_record", counting)  # the pre-edit cache's
    monkeypatch.setattr(runner, "evaluate_record", counting)  # the edited model's
    rec = multi_record()
    run_experiment(lm, [rec], ["ft", "memla"], ["en", "zh"], list(LANGS), tmp_path / "run",
                   config=RunnerConfig(editor_overrides={"ft": {"steps": 1}, "memla": {"max_steps": 1}},
                                       progress=False, cache_preedit=False))
    unedited = [c for c in calls if not c[2]]
    assert unedited == [("m1", LANGS, False)]  # every language at once, shared by every method and edit language
    assert sorted(c for c in calls if c[2]) == [("m1", LANGS, True)] * 4  # 2 methods x 2 edit languages
    rows = runner.load_results(tmp_path / "run")
    assert set(rows[rows["kind"] == "metric"]["eval_lang"]) == set(LANGS)


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_a_finished_row_leaves_the_decoding_batch(arch):
    """One prefill for both prompts, then only the row that still wants tokens is decoded (batch of 1)."""
    lm = tiny_model(arch)
    eos = set(ev.eos_token_ids(lm))
    widths: list[tuple[int, int]] = []
    hook = lm.model.register_forward_pre_hook(lambda m, a, kw: widths.append(tuple(kw["input_ids"].shape)),
                                              with_kwargs=True)
    try:
        prompts = ["The capital of France is", "Paris is the capital of"]
        rows = [encode_prompt(lm.tokenizer, normalize_prompt(p)) for p in prompts]
        got = greedy._greedy_kv(lm, rows, [1, 4], eos - eos, lm.tokenizer.pad_token_id or 0)  # no EOS: full lengths
    finally:
        hook.remove()
    assert [len(g) for g in got] == [1, 4]
    assert widths[0][0] == 2 and widths[1:] == [(1, 1)] * 3  # prefill of 2 rows, then 3 steps of the long row
    alone = [greedy._greedy_kv(lm, [r], [k], set(), lm.tokenizer.pad_token_id or 0)[0] for r, k in zip(rows, [1, 4])]
    assert got == alone
