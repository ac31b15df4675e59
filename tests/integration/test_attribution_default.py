"""Attribution on the real default model (Gemma 3 270M): exact against direct gradients, cached, masks."""
from __future__ import annotations

import pytest
import torch

from memla_utils.attribution import AttributionConfig, attribute_batch, knowledge_neurons
from memla_utils.cache import ArtifactCache
from memla_utils.mkeb.record import EditTarget, Record
from memla_utils.text import encode_answer, encode_prompt

pytestmark = pytest.mark.integration
PROMPT, ANSWER = "The capital of France is", "Paris"



def direct_scores(lm, layer: int, base: torch.Tensor, steps: int = 2) -> torch.Tensor:
    """IG of one layer with full forwards of the model (its own lm_head, all logits), no shortcut."""
    p = encode_prompt(lm.tokenizer, PROMPT)
    (target,) = encode_answer(lm.tokenizer, ANSWER, "en", PROMPT)
    ids = torch.tensor([p])
    pos = len(p) - 1
    with lm.adapter.neuron_hook(layer, capture=True) as probe, torch.no_grad():
        lm.model(input_ids=ids)
    a = probe.activations[0, pos].float()
    grad = torch.zeros_like(a)
    for alpha in torch.linspace(0, 1, steps):
        x = (base + alpha * (a - base)).requires_grad_(True)

        def patch(acts, x=x):
            acts = acts.clone()
            acts[0, pos] = x
            return acts

        with lm.adapter.neuron_hook(layer, patch), torch.enable_grad():
            prob = torch.softmax(lm.model(input_ids=ids).logits[0, pos].float(), -1)[target]
            (g,) = torch.autograd.grad(prob, x)
        grad += g
    return (a - base) * grad / steps


def test_batched_scores_equal_direct_gradients(default_lm):
    lm = default_lm
    att = attribute_batch(lm, [(PROMPT, ANSWER, "en")], AttributionConfig(steps=2, baseline="zero"))[0]
    assert att.scores.shape == (lm.adapter.n_layers, lm.adapter.n_neurons)
    for layer in (0, lm.adapter.n_layers // 2, lm.adapter.n_layers - 1):
        want = direct_scores(lm, layer, torch.zeros(lm.adapter.n_neurons))
        scale = float(want.abs().max())
        assert scale > 0
        torch.testing.assert_close(att.scores[layer], want, atol=1e-3 * scale, rtol=1e-3)
    assert 0 < att.target_value < 1  # P(Paris) at the clean activations


def test_default_config_knowledge_neurons_cached(default_lm, tmp_path):
    lm = default_lm
    record = Record("capital:FR", "capital", {"en": EditTarget("The capital of {} is", "France", "Rome", "Paris")})
    cache = ArtifactCache(tmp_path)
    cfg = AttributionConfig()
    kn = knowledge_neurons(lm, record, "en", cfg, cache)
    assert 0 < kn.total < lm.adapter.n_layers * lm.adapter.n_neurons // 100  # a sparse set
    (stored,) = list(tmp_path.rglob("*.safetensors"))
    mtime = stored.stat().st_mtime_ns
    again = knowledge_neurons(lm, record, "en", cfg, cache)
    assert again.to_sets() == kn.to_sets() and stored.stat().st_mtime_ns == mtime
