"""Attribution on the real default model (Gemma 3 270M): both methods against direct gradients, cached, masks."""
from __future__ import annotations

import pytest
import torch

from memla_utils.attribution import AttributionConfig, attribute_batch, knowledge_neurons
from memla_utils.cache import ArtifactCache
from memla_utils.mkeb.record import EditTarget, Record
from memla_utils.text import encode_answer, encode_prompt, join_prompt_answer

pytestmark = pytest.mark.integration
PROMPT, ANSWER = "The capital of France is", "Paris"
#: a multi-token answer for the memla4mke path (greedy extension per answer token)
MT_PROMPT, MT_ANSWER = "The capital of Andorra is", "Andorra la Vella"



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
    att = attribute_batch(lm, [(PROMPT, ANSWER, "en")], AttributionConfig(method="exact", steps=2,
                                                                        baseline="zero"))[0]
    assert att.scores.shape == (lm.adapter.n_layers, lm.adapter.n_neurons)
    for layer in (0, lm.adapter.n_layers // 2, lm.adapter.n_layers - 1):
        want = direct_scores(lm, layer, torch.zeros(lm.adapter.n_neurons))
        scale = float(want.abs().max())
        assert scale > 0
        torch.testing.assert_close(att.scores[layer], want, atol=1e-3 * scale, rtol=1e-3)
    assert 0 < att.target_value < 1  # P(Paris) at the clean activations


def garns_layer(lm, layer: int, steps: int = 2) -> torch.Tensor:
    """memla4mke's garns.get_scores_for_layer for one layer with full forwards (gate_proj output, position -1)."""
    tok, gate = lm.tokenizer, lm.model.model.layers[layer].mlp.gate_proj

    def run(ids: torch.Tensor, replace: torch.Tensor | None = None):
        seen = {}

        def hook(module, args, out):
            if replace is not None:
                out = out.clone()
                out[:, -1] = replace
            seen["a"] = out[:, -1]
            return out

        handle = gate.register_forward_hook(hook)
        try:
            return lm.model(input_ids=ids), seen["a"]
        finally:
            handle.remove()

    target_label = join_prompt_answer(tok, MT_PROMPT, MT_ANSWER, "en").answer_ids  # the project's answer ids
    prompt = MT_PROMPT
    with torch.no_grad():
        first, a0 = run(torch.tensor([tok(prompt)["input_ids"]]))
    greedy = tok.decode(first.logits[0, -1].argmax().item())
    total = torch.zeros_like(a0[0])
    for target in target_label:
        ids = torch.tensor([tok(prompt.strip())["input_ids"]])
        with torch.no_grad():
            _, a = run(ids)
            copies = ids.repeat(ids.shape[1], 1)
            copies[torch.arange(ids.shape[1]), torch.arange(ids.shape[1])] = tok.eos_token_id
            _, b = run(copies)
            b = b.mean(0, keepdim=True)
        x = torch.cat([b + (a - b) * k / steps for k in range(steps)]).requires_grad_(True)
        with torch.enable_grad():
            out, _ = run(ids.repeat(steps, 1), x)
            prob = torch.softmax(out.logits[:, -1].float(), -1)[:, target]
            (g,) = torch.autograd.grad(prob.sum(), x)
        total += g.sum(0) * a0[0] / steps
        prompt += greedy
    return total


def test_memla4mke_scores_equal_direct_gradients(default_lm):
    """The default method on the real model and tokenizer (the project's answer ids, greedy extension)."""
    lm = default_lm
    assert len(join_prompt_answer(lm.tokenizer, MT_PROMPT, MT_ANSWER, "en").answer_ids) >= 2
    att = attribute_batch(lm, [(MT_PROMPT, MT_ANSWER, "en")], AttributionConfig(method="memla4mke", steps=2))[0]
    for layer in (0, lm.adapter.n_layers - 1):
        want = garns_layer(lm, layer)
        scale = float(want.abs().max())
        assert scale > 0
        torch.testing.assert_close(att.scores[layer], want, atol=2e-3 * scale, rtol=1e-3)


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
