"""Shared prefixes across prompts (in-context demonstrations) in score_answers_shared."""
from __future__ import annotations

import pytest
import torch

from memla_utils.prefix_scoring import SHARED_PREFIX_MIN_IDS, _groups, _rows, score_answers_shared
from memla_utils.scoring import score_answers
from memla_utils.testing import TINY_ARCHITECTURES, tiny_model, tiny_tokenizer

SHORT_PROMPTS = ["The capital of France is", "The capital of France is", "日本の首都は", "La capital de España es",
                 "The capital of Japan is"]
SHORT_ANSWERS = ["Paris", "Paris in Texas", "東京", "Madrid", "Tokyo"]
SHORT_LANGS = ["en", "en", "ja", "es", "en"]


def _demonstrations(tokenizer) -> str:
    """An IKE-like block of demonstrations, at least SHARED_PREFIX_MIN_IDS + 4 ids and short enough for the tiny
    models' 128 positions with a prompt and an answer after it."""
    block, demo = "", "New Fact: The capital of Spain is Tokyo\nPrompt: Spain's capital is Tokyo\n\n"
    while len(tokenizer(block, add_special_tokens=False)["input_ids"]) < SHARED_PREFIX_MIN_IDS + 4:
        block += demo
    return block + "New Fact: The capital of France is Tokyo\nPrompt: "


def ike_rows(tokenizer):
    demos = _demonstrations(tokenizer)
    prompts = [demos + p for p in ("The capital of France is", "France's capital is", "The capital of Japan is")]
    prompts = [p for p in prompts for _ in range(2)] + ["The capital of Spain is"]  # + one row without the block
    answers = ["Tokyo", "Paris", "Tokyo", "Paris", "Tokyo", "Kyoto", "Madrid"]
    return prompts, answers, ["en"] * len(prompts)


def test_prompts_sharing_a_demonstration_block_form_one_group():
    tok = tiny_tokenizer()
    prompts, answers, langs = ike_rows(tok)
    rows = _rows(tok, prompts, answers, langs)
    groups = _groups(prompts, rows, share=True)
    assert sorted(len(g.rows) for g in groups) == [1, 6]  # the six demonstration rows together, the other alone
    big = next(g for g in groups if len(g.rows) == 6)
    assert big.k >= SHARED_PREFIX_MIN_IDS
    assert all(rows[i].ids[:big.k] == rows[big.rows[0]].ids[:big.k] for i in big.rows)
    assert all(len(rows[i].ids) - 1 >= big.k for i in big.rows)  # every row keeps an id of its own
    # without the cross-prompt rule: one group per prompt text, as before
    assert len(_groups(prompts, rows, share=True, min_shared=10**6)) == 4


def test_short_prompts_group_by_prompt_text_alone():
    """MKEB-length prompts never reach the threshold: the groups (and their order) are the per-prompt ones."""
    tok = tiny_tokenizer()
    rows = _rows(tok, SHORT_PROMPTS, SHORT_ANSWERS, SHORT_LANGS)
    assert _groups(SHORT_PROMPTS, rows, True) == _groups(SHORT_PROMPTS, rows, True, min_shared=10**6)


def _count_tokens(lm):
    seen = {"tokens": 0}

    def body(module, args, kwargs):
        ids, att = kwargs["input_ids"], kwargs["attention_mask"]
        seen["tokens"] += int(att[:, -ids.shape[1]:].sum())

    return seen, lm.model.register_forward_pre_hook(body, with_kwargs=True)


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_demonstration_rows_score_as_plain_scoring_with_fewer_tokens(arch, monkeypatch):
    import memla_utils.prefix_scoring as ps

    lm = tiny_model(arch, seed=2)
    prompts, answers, langs = ike_rows(lm.tokenizer)
    plain = score_answers(lm.model, lm.tokenizer, prompts, answers, langs)
    seen, handle = _count_tokens(lm)
    try:
        for bs in (2, 64):
            shared = score_answers_shared(lm.model, lm.tokenizer, prompts, answers, langs, batch_size=bs)
            assert torch.allclose(plain["logprob"], shared["logprob"], atol=1e-4, rtol=0)
            assert torch.equal(plain["token_accuracy"], shared["token_accuracy"])
            assert torch.equal(plain["exact_match"], shared["exact_match"])
        merged = seen["tokens"]
        seen["tokens"] = 0
        monkeypatch.setattr(ps, "SHARED_PREFIX_MIN_IDS", 10**6)  # per-prompt groups only
        monkeypatch.setattr(ps._groups, "__defaults__", (10**6,))
        for bs in (2, 64):
            score_answers_shared(lm.model, lm.tokenizer, prompts, answers, langs, batch_size=bs)
        per_prompt = seen["tokens"]
    finally:
        handle.remove()
    if ps._can_share(lm.model, 128):  # the tiny Gemma 3's 16-slot window turns sharing off for long rows
        # the block (>= SHARED_PREFIX_MIN_IDS shared ids) runs once, not three times, in each of the two calls
        assert merged <= per_prompt - 2 * 2 * SHARED_PREFIX_MIN_IDS
    else:
        assert merged == per_prompt
