"""method="memla4mke" equals a loop-style reimplementation of the released locator on every tiny architecture.

The reference below follows memla4mke line by line (``identify_kn/locate_kn.py`` calls
``garns.get_refined_neurons(prompts, gt[0], batch_size=4, steps=20, coarse_adaptive_threshold=0.3)``):

- ``KnowledgeNeurons._prepare_inputs``: strip the prompt, ``tokenizer(prompt)``, ``target = tokenizer.encode(gt)``;
- ``KnowledgeNeurons.get_baseline_with_activations`` / ``patch.register_hook``: the value is the *output* of
  ``input_ff_attr`` (``mlp.gate_proj`` for llama/qwen, ``mlp.c_fc`` for gpt) at position -1;
- ``garns.scaled_input``: per position, the prompt with that token replaced by EOS; points ``b + step * i``,
  ``i < steps``; mean over positions;
- ``garns.get_scores_for_layer``: chunks of ``batch_size`` points patched in (``patch.Patch``), gradient of the
  softmax probability of ``target[i]`` at position -1, summed, times the original prompt's value / steps; the
  prompt grows by the greedy token of the original prompt after every answer token; token scores summed;
- ``garns.get_coarse_neurons`` / ``get_refined_neurons``: scores > 0.3 x max, union over prompts.

It names the attributed module per architecture itself (not through the adapter), so it also checks
``ModelAdapter.pre_activation_proj``. The module names of GPT-2/BLOOM have no memla4mke counterpart beyond
``mlp.c_fc`` (gpt); ``dense_h_to_4h`` is BLOOM's first projection, the same role.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from memla_utils.attribution import (
    AttributionConfig,
    attribute_batch,
    attribute_prompt,
    neurons_from_attributions,
    record_attributions,
)
from memla_utils.cache import ArtifactCache
from memla_utils.masks import MaskConfig, notebook_mask_config
from memla_utils.mkeb.record import EditTarget, Record
from memla_utils.testing import TINY_ARCHITECTURES, tiny_model
from memla_utils.text import join_prompt_answer

PROMPT, ANSWER = "The capital of Japan is", "Tokyo"
#: the module whose output memla4mke attributes, per tiny architecture (knowledge_neurons.py: input_ff_attr)
POINT = {"gpt2": "mlp.c_fc", "bloom": "mlp.dense_h_to_4h", "llama": "mlp.gate_proj", "qwen2": "mlp.gate_proj",
         "gemma3_text": "mlp.gate_proj"}
GATED = {"gpt2": False, "bloom": False, "llama": True, "qwen2": True, "gemma3_text": True}


@pytest.fixture(scope="module", params=TINY_ARCHITECTURES)
def lm(request):
    return tiny_model(request.param)


def point_module(lm, layer: int) -> torch.nn.Module:
    m = lm.adapter.layers[layer]
    for part in POINT[lm.adapter.model_type].split("."):
        m = getattr(m, part)
    return m


def garns_reference(lm, prompt: str, ground_truth: str, steps: int = 4, batch_size: int = 2,
                    baseline: str = "eos_mean", language: str = "en") -> torch.Tensor:
    """``KnowledgeNeurons.get_scores`` of a ``garns`` instance (k_path=1), written as loops like the original.

    One departure, the project's rule for how text becomes tokens: the answer ids are the answer part of the
    joined prompt + answer (``join_prompt_answer``), not ``tokenizer.encode(ground_truth)`` (BOS + no space).
    """
    tok, model = lm.tokenizer, lm.model
    answer_ids = join_prompt_answer(tok, prompt, ground_truth, language).answer_ids

    def prepare_inputs(p: str):  # KnowledgeNeurons._prepare_inputs (decoder branch)
        p = p.replace("[MASK] .", "").strip()
        enc = tok(p, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}, -1, list(answer_ids)

    def forward(inputs, layer: int, replacement: torch.Tensor | None = None, mask_idx: int = -1):
        """model(**inputs) with register_hook (read) or patch.Patch (replace) on the attributed module."""
        seen = {}

        def hook(module, args, out):
            if replacement is not None:
                out = out.clone()
                out[:, mask_idx, :] = replacement
            seen["acts"] = out[:, mask_idx, :]
            return out

        handle = point_module(lm, layer).register_forward_hook(hook)
        try:
            outputs = model(**inputs)
        finally:
            handle.remove()
        return outputs, seen["acts"]

    def scaled_input(encoded_input, layer: int, mask_idx: int) -> torch.Tensor:  # garns.scaled_input
        with torch.no_grad():
            _, original = forward(encoded_input, layer)
            all_res = []
            for idx in range(encoded_input["input_ids"].size(1)):
                masked = copy.deepcopy(encoded_input)
                masked["input_ids"][0][idx] = tok.eos_token_id
                _, base = forward(masked, layer)
                if baseline == "zero":
                    base = torch.zeros_like(base)
                step = (original - base) / steps
                all_res.append(torch.cat([torch.add(base, step * i) for i in range(steps)], dim=0))
        return torch.stack(all_res).mean(dim=0)

    scores = []
    for layer_idx in range(lm.adapter.n_layers):  # KnowledgeNeurons.get_scores
        p = prompt
        encoded_input, mask_idx, target_label = prepare_inputs(p)
        n_sampling_steps = len(target_label)
        with torch.no_grad():
            baseline_outputs, baseline_activations = forward(encoded_input, layer_idx)
        n_batches = steps // batch_size
        d_accumulator = torch.zeros_like(baseline_activations.squeeze(0))
        for i in range(n_sampling_steps):
            if i > 0:
                encoded_input, mask_idx, target_label = prepare_inputs(p)
            if n_sampling_steps > 1:
                next_token_str = tok.decode(baseline_outputs.logits[:, mask_idx, :].argmax(dim=-1).item())
            scaled_weights = scaled_input(encoded_input, layer_idx, mask_idx)
            grads = []
            for batch_weights in scaled_weights.chunk(n_batches):
                batch_weights = batch_weights.clone().requires_grad_(True)
                inputs = {k: v.repeat(batch_size, 1) for k, v in encoded_input.items()}
                with torch.enable_grad():
                    outputs, _ = forward(inputs, layer_idx, batch_weights, mask_idx)
                    probs = F.softmax(outputs.logits[:, mask_idx, :].float(), dim=-1)
                    grad = torch.autograd.grad(torch.unbind(probs[:, target_label[i]]), batch_weights)[0]
                grads.append(grad.sum(dim=0))
            integrated_grads_this_step = torch.stack(grads, dim=0).sum(dim=0)
            integrated_grads_this_step *= baseline_activations.squeeze(0) / steps
            if n_sampling_steps > 1:
                p += next_token_str
            d_accumulator += integrated_grads_this_step
        scores.append(d_accumulator)
    return torch.stack(scores)


def assert_close(got: torch.Tensor, want: torch.Tensor) -> None:
    scale = float(want.abs().max())
    assert scale > 0, "reference attribution is all zeros: the test would be vacuous"
    torch.testing.assert_close(got, want, atol=2e-4 * scale, rtol=1e-3)


# ------------------------------------------------------------------------------------------- the hook point
def test_pre_activation_point_per_architecture(lm):
    """The adapter names the module memla4mke attributes, and its output unit n is neuron n (down-proj input n)."""
    adapter = lm.adapter
    assert adapter.gated is GATED[adapter.model_type]
    for layer in range(adapter.n_layers):
        assert adapter.pre_activation_proj(layer) is point_module(lm, layer)
        assert adapter.pre_activation_name(layer).endswith(f"{layer}.{POINT[adapter.model_type]}")
    ids = torch.tensor([lm.tokenizer(PROMPT)["input_ids"]])
    mlp, seen = adapter.layers[1].mlp, {}
    handle = adapter.up_proj(1).register_forward_hook(lambda m, a, out: seen.setdefault("up", out))
    try:
        with adapter.pre_activation_hook(1, capture=True) as pre, adapter.neuron_hook(1, capture=True) as neurons, \
                torch.no_grad():
            lm.model(input_ids=ids)
    finally:
        handle.remove()
    assert pre.activations.shape == neurons.activations.shape == (1, ids.shape[1], adapter.n_neurons)
    # neuron n is a function of pre-activation unit n: act(gate) * up (gated) or act(fc)
    if adapter.gated:
        torch.testing.assert_close(mlp.act_fn(pre.activations) * seen["up"], neurons.activations)
    else:
        act = mlp.act if hasattr(mlp, "act") else mlp.gelu_impl
        torch.testing.assert_close(act(pre.activations), neurons.activations)
    w_pre = adapter.pre_activation_proj(1).weight
    assert w_pre.shape[0 if adapter.neuron_axis == 1 else 1] == adapter.down_weight_as_linear(1).shape[1]


def test_replacing_the_pre_activation_changes_the_neurons_of_that_index_only(lm):
    adapter = lm.adapter
    ids = torch.tensor([lm.tokenizer(PROMPT)["input_ids"]])
    with adapter.neuron_hook(0, capture=True) as clean, torch.no_grad():
        lm.model(input_ids=ids)

    def bump(out):
        out = out.clone()
        out[:, -1, 5] += 1.0
        return out

    with adapter.pre_activation_hook(0, bump), adapter.neuron_hook(0, capture=True) as moved, torch.no_grad():
        lm.model(input_ids=ids)
    diff = (moved.activations - clean.activations).abs()[0]
    assert float(diff[-1, 5]) > 0
    diff[-1, 5] = 0
    assert float(diff.max()) == 0.0


# ------------------------------------------------------------------------------------------- the scores
def test_matches_released_algorithm(lm):
    """Batched memla4mke scores == the loop over garns.py on every architecture (EOS-mean baseline)."""
    got = attribute_prompt(lm, PROMPT, ANSWER, "en", AttributionConfig(method="memla4mke", steps=4))
    assert got.dtype == torch.float32 and got.shape == (lm.adapter.n_layers, lm.adapter.n_neurons)
    assert_close(got, garns_reference(lm, PROMPT, ANSWER, steps=4, batch_size=2))


def test_answer_ids_come_from_the_join_not_the_raw_encode(lm):
    """The multi-token path is exercised (several answer ids), and no BOS is attributed as an answer token."""
    ids = join_prompt_answer(lm.tokenizer, PROMPT, ANSWER, "en").answer_ids
    assert len(ids) >= 2 and lm.tokenizer.bos_token_id not in ids


def test_zh_prompt_and_zero_baseline_match():
    lm = tiny_model("gemma3_text")
    got = attribute_prompt(lm, "日本的首都是", "東京", "zh", AttributionConfig(method="memla4mke", steps=4,
                                                                        baseline="zero"))
    assert_close(got, garns_reference(lm, "日本的首都是", "東京", steps=4, batch_size=4, baseline="zero",
                                      language="zh"))


def test_trailing_space_follows_the_reference():
    """Prompts are stripped like _prepare_inputs; the greedy token is appended to the unstripped text."""
    lm = tiny_model("llama")
    got = attribute_prompt(lm, PROMPT + " ", ANSWER, "en", AttributionConfig(method="memla4mke", steps=4))
    assert_close(got, garns_reference(lm, PROMPT + " ", ANSWER, steps=4, batch_size=4))


def test_differs_from_exact():
    """The variants are different quantities (a guard against one silently running the other)."""
    lm = tiny_model("qwen2")
    m = attribute_prompt(lm, PROMPT, ANSWER, "en", AttributionConfig(method="memla4mke", steps=4))
    e = attribute_prompt(lm, PROMPT, ANSWER, "en", AttributionConfig(method="exact", steps=4))
    assert not torch.allclose(m, e, atol=1e-6)


def test_path_completeness_improves_with_steps():
    """The path IG sum ((a - b) x mean gradient) tends to F(a) - F(b) along memla4mke's path too."""
    lm = tiny_model("llama")
    coarse = attribute_batch(lm, [(PROMPT, ANSWER, "en")], AttributionConfig(method="memla4mke", steps=3))[0]
    fine = attribute_batch(lm, [(PROMPT, ANSWER, "en")], AttributionConfig(method="memla4mke", steps=200))[0]
    assert fine.completeness_error < 0.05
    assert fine.completeness_error < coarse.completeness_error
    assert float(fine.deltas.abs().max()) > 0


def test_neuron_sets_equal_the_reference_refined_neurons():
    """garns.get_refined_neurons: per prompt scores > 0.3 x max, union over prompts."""
    lm = tiny_model("gpt2")
    record = Record("jp", "capital", {"en": EditTarget("The capital of {} is", "Japan", "Kyoto", "Tokyo")},
                    paraphrase_prompts={"en": ["Japan's capital city is"]})
    cfg = AttributionConfig(method="memla4mke", steps=4)
    atts = record_attributions(lm, record, "en", cfg, ArtifactCache(enabled=False))["en"]
    got = neurons_from_attributions(atts, 0.3, lm.adapter.n_neurons)
    want: set[tuple[int, int]] = set()
    for prompt in [PROMPT, "Japan's capital city is"]:
        scores = garns_reference(lm, prompt, "Tokyo", steps=4, batch_size=2)
        want |= {tuple(x) for x in torch.nonzero(scores > scores.max().item() * 0.3).tolist()}
    assert want
    assert {(l, n) for l, ns in got.to_sets().items() for n in ns} == want


# ------------------------------------------------------------------------------------------- configs
def test_default_method_is_memla4mke_and_in_every_key():
    assert AttributionConfig().method == "memla4mke"
    assert MaskConfig().attribution.method == "memla4mke"
    assert notebook_mask_config().attribution.method == "memla4mke"
    assert notebook_mask_config(attribution_method="exact").attribution.method == "exact"
    with pytest.raises(ValueError, match="attribution_method"):
        notebook_mask_config(attribution_method="ig")
    a, b = AttributionConfig(), AttributionConfig(method="exact")
    assert a.score_params()["method"] == "memla4mke" and a.score_params() != b.score_params()
    assert MaskConfig(attribution=a).params() != MaskConfig(attribution=b).params()
