"""Teacher-forced answer scoring: projecting only the answer positions gives the values of the model's own logits."""
from __future__ import annotations

import pytest
import torch

import memla_utils.scoring as scoring
from memla_utils.testing import tiny_model

PROMPTS = ["The capital of France is", "Paris", "The official language of the Kingdom of Spain is", "东京是"]
ANSWERS = ["Tokyo", "is the capital of France", "Spanish", "日本的首都"]


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma3_text", "qwen2", "bloom"])
def test_deferred_head_scores_equal_the_models_logits(arch, monkeypatch):
    lm = tiny_model(arch, seed=2)
    fast = scoring.score_answers(lm.model, lm.tokenizer, PROMPTS, ANSWERS, "en", batch_size=3)
    calls: list[int] = []
    head = lm.model.get_output_embeddings()
    handle = head.register_forward_hook(lambda m, a, o: calls.append(a[0].reshape(-1, a[0].shape[-1]).shape[0]))
    try:
        scoring.score_answers(lm.model, lm.tokenizer, PROMPTS, ANSWERS, "en", batch_size=3)
    finally:
        handle.remove()
    monkeypatch.setattr(scoring, "can_defer", lambda model: False)
    slow = scoring.score_answers(lm.model, lm.tokenizer, PROMPTS, ANSWERS, "en", batch_size=3)
    for key in ("logprob", "token_accuracy", "exact_match"):
        torch.testing.assert_close(fast[key], slow[key], rtol=1e-6, atol=1e-6)
    assert torch.equal(fast["exact_match"], slow["exact_match"])
    # only the answer positions were projected (padded blocks aside), not the union of the batch's answer columns
    answer_tokens = sum(len(lm.tokenizer(" " + a, add_special_tokens=False)["input_ids"]) for a in ANSWERS)
    assert sum(n for n in calls if n) <= max(16, answer_tokens + 16) * 2
