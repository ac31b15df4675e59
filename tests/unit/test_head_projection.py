"""The vocabulary projection apart from the forward (issue 15): what each architecture computes, the same scores
and continuations as projecting inside every forward, fewer passes over the head, and a fallback for models it
does not know."""
from __future__ import annotations

import pytest
import torch

import memla_utils.head_projection as hp
from memla_utils.evaluate import greedy_continuations
from memla_utils.head_projection import MIN_BLOCK_ROWS, can_defer, deferred_head, project, project_blocks
from memla_utils.prefix_scoring import score_answers_shared
from memla_utils.testing import TINY_ARCHITECTURES, tiny_model

PROMPTS = ["The capital of Japan is", "The capital of France is", "Paris is the capital of", "日本的首都是",
           "The currency of Poland is the", "Tokyo"]
ANSWERS = ["Tokyo", "Paris", "France", "东京", "zloty", "is a city"]
LANGS = ["en", "en", "en", "zh", "en", "en"]


@pytest.fixture(scope="module", params=TINY_ARCHITECTURES)
def lm(request):
    return tiny_model(request.param)


def _ids(lm, text: str) -> torch.Tensor:
    return torch.tensor([lm.tokenizer(text)["input_ids"]])


def test_the_projection_is_what_the_model_computes(lm):
    assert can_defer(lm.model)
    ids = _ids(lm, "The capital of Japan is Tokyo")
    with torch.no_grad():
        full = lm.model(input_ids=ids).logits[0]
        with deferred_head(lm.model) as hidden:
            out = lm.model(input_ids=ids)
    assert out.logits.shape[1] == 0 and len(hidden) == 1  # the forward projected nothing
    mine = project(lm.model, hidden[0][0])
    torch.testing.assert_close(mine, full, rtol=1e-5, atol=1e-5)
    assert torch.equal(mine.argmax(-1), full.argmax(-1))


def test_gemma_soft_capping_is_applied():
    lm = tiny_model("gemma3_text")
    lm.model.config.final_logit_softcapping = 2.0  # small, so that the capping visibly matters
    try:
        ids = _ids(lm, "The capital of Japan is")
        with torch.no_grad():
            full = lm.model(input_ids=ids).logits[0]
            with deferred_head(lm.model) as hidden:
                lm.model(input_ids=ids)
            raw = lm.model.get_output_embeddings()(hidden[0][0])
        assert full.abs().max() < 2.0 and not torch.allclose(raw, full, atol=1e-3)
        torch.testing.assert_close(project(lm.model, hidden[0][0]), full, rtol=1e-5, atol=1e-5)
    finally:
        lm.model.config.final_logit_softcapping = None


def test_small_blocks_are_padded_and_blocks_cover_every_row():
    lm = tiny_model("llama")
    h = torch.randn(40, lm.model.config.hidden_size)
    rows = []
    handle = lm.model.get_output_embeddings().register_forward_hook(lambda m, a, o: rows.append(o.shape[0]))
    try:
        with torch.no_grad():
            one = project(lm.model, h[:3])
            blocks = list(project_blocks(lm.model, h, block=16))
    finally:
        handle.remove()
    assert rows == [MIN_BLOCK_ROWS, 16, 16, MIN_BLOCK_ROWS]  # 3 rows padded; 40 = 16 + 16 + 8 (padded)
    assert [s for s, _ in blocks] == [0, 16, 32] and sum(x.shape[0] for _, x in blocks) == 40
    torch.testing.assert_close(one, torch.cat([x for _, x in blocks])[:3], rtol=1e-6, atol=1e-6)


def _no_deferral(monkeypatch):
    monkeypatch.setattr(hp, "DEFERRABLE", frozenset())
    import memla_utils.evaluate_greedy as greedy
    import memla_utils.prefix_scoring as ps

    for mod in (greedy, ps):
        monkeypatch.setattr(mod, "can_defer", hp.can_defer)


def test_scores_and_continuations_equal_the_per_forward_projection(lm, monkeypatch):
    """Deferred (all chunks' rows in one projection) vs each forward projecting its own rows: the same
    continuations and comparisons, log-probabilities to float rounding; and fewer passes over the head."""
    calls = []
    handle = lm.model.get_output_embeddings().register_forward_hook(lambda m, a, o: calls.append(o.numel() > 0))

    def run():
        calls.clear()
        scores = score_answers_shared(lm.model, lm.tokenizer, PROMPTS, ANSWERS, LANGS, batch_size=2)
        conts = greedy_continuations(lm, PROMPTS, [4, 1, 3, 5, 2, 6], batch_size=2)
        return scores, conts, sum(calls)

    try:
        deferred = run()
        with monkeypatch.context() as m:
            _no_deferral(m)
            assert not can_defer(lm.model)
            direct = run()
    finally:
        handle.remove()
    torch.testing.assert_close(deferred[0]["logprob"], direct[0]["logprob"], rtol=1e-5, atol=1e-5)
    for k in ("token_accuracy", "exact_match"):
        assert torch.equal(deferred[0][k], direct[0][k])
    assert deferred[1] == direct[1]
    assert deferred[2] < direct[2]  # batch_size=2: several chunks, one projection per step for all of them


def test_a_model_of_another_type_is_not_deferred():
    lm = tiny_model("llama")
    lm.model.config.model_type = "not-a-known-architecture"
    try:
        assert not can_defer(lm.model)
    finally:
        lm.model.config.model_type = "llama"
    assert can_defer(lm.model)
