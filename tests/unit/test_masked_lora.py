"""LoRA factor orientation as in memla4mke, and per-unit initialisation seeds (issue: MEMLA as released)."""
from __future__ import annotations

import pytest
import torch

from memla_utils.editors import make_editor
from memla_utils.editors.masked_lora import MaskedLoRA, attach_all, make_pair
from memla_utils.masks import NeuronMasks, RecordMasks
from memla_utils.mkeb.record import EditTarget, Record
from memla_utils.scoring import answer_logprob
from memla_utils.seeds import unit_seed
from memla_utils.testing import TINY_ARCHITECTURES, tiny_model
from memla_utils.text import build_batch

SPEC = {0: [1, 2, 3], 1: [5]}
IND = {1: [4, 7]}


def record(example_id: str = "r1", subject: str = "France") -> Record:
    return Record(example_id, "capital", {"en": EditTarget("The capital of {} is", subject, "Tokyo", "Paris")})


def masks_for(lm, example_id: str = "r1") -> RecordMasks:
    n = lm.adapter.n_neurons
    return RecordMasks(example_id, "en", NeuronMasks.from_sets(SPEC, n), NeuronMasks.from_sets(IND, n))


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_neuron_side_factor_is_zero_at_start(arch):
    """memla4mke: B = zeros(n_neurons, r) on the neuron side, A = randn(r, hidden) on the hidden side."""
    lm = tiny_model(arch)
    loras = make_editor("memla").build_loras(lm, [masks_for(lm)], "en")
    assert loras
    for lora in loras:
        for p in lora.pairs:
            assert p.neuron.shape == (p.rank, int(p.index.numel()))
            assert p.hidden.shape == (lm.adapter.hidden_size, p.rank)
            assert torch.count_nonzero(p.neuron) == 0
            assert torch.count_nonzero(p.hidden) == p.hidden.numel()
            assert p.rank == 4 * int(p.index.numel())  # n_rank = 4 per selected neuron (memla4mke)
            # N(0, 1) entries: a loose check that the hidden side is a unit-variance draw
            assert 0.5 < float(p.hidden.detach().std()) < 1.5
    ablation = make_editor("memla-zero-hidden").build_loras(lm, [masks_for(lm)], "en")
    for lora in ablation:
        for p in lora.pairs:
            assert torch.count_nonzero(p.hidden) == 0 and torch.count_nonzero(p.neuron) == p.neuron.numel()


def _one_adam_step(lm, pair, layer: int, lr: float):
    """Run one Adam step of ``pair`` on the loss -log P(Tokyo | prompt); return the loss gradient w.r.t. the
    selected weight columns (``[hidden, n_selected]``, nn.Linear layout) computed independently."""
    batch = build_batch(lm.tokenizer, ["The capital of France is"], ["Tokyo"], ["en"])
    lora = MaskedLoRA(lm.adapter, layer, [pair])
    opt = torch.optim.Adam([pair.neuron, pair.hidden], lr=lr)
    with attach_all([lora]), torch.enable_grad():
        loss = -answer_logprob(lm.model, batch).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    # independent reference: the gradient of the same loss w.r.t. an additive update of the selected columns
    delta = torch.zeros(lm.adapter.hidden_size, int(pair.index.numel()), requires_grad=True)

    def hook(module, args, out):
        return out + (args[0].index_select(-1, pair.index) @ delta.t()).to(out.dtype)

    handle = lm.adapter.down_proj(layer).register_forward_hook(hook)
    try:
        with torch.enable_grad():
            (-answer_logprob(lm.model, batch).sum()).backward()
    finally:
        handle.remove()
    return delta.grad.detach()


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3_text"])
def test_one_adam_step_matches_hand_computed_reference(arch):
    """Neuron side zero: step 1 moves only the neuron factor, by lr * g / (|g| + eps) with g = hidden.T @ G."""
    lm = tiny_model(arch)
    lr, eps = 1e-2, 1e-8
    idx = torch.tensor([1, 4, 6])
    gen = torch.Generator().manual_seed(3)
    pair = make_pair("specific", idx, n_neurons=lm.adapter.n_neurons, hidden=lm.adapter.hidden_size, rank=4,
                     init_std=1.0, generator=gen, device=lm.device)
    hidden0 = pair.hidden.detach().clone()
    G = _one_adam_step(lm, pair, 1, lr)
    g = hidden0.t() @ G                                   # dL/d(neuron factor) at neuron = 0
    expected = -lr * g / (g.abs() + eps)                  # Adam's first step (bias-corrected m / sqrt(v))
    torch.testing.assert_close(pair.neuron.detach(), expected, rtol=1e-4, atol=1e-7)
    assert torch.equal(pair.hidden.detach(), hidden0)     # zero gradient at step 1: the hidden side stays put

    # the ablation orientation: only the hidden factor moves, each hidden unit by about lr (sign of its gradient)
    pair2 = make_pair("specific", idx, n_neurons=lm.adapter.n_neurons, hidden=lm.adapter.hidden_size, rank=4,
                      init_std=1.0, generator=torch.Generator().manual_seed(3), device=lm.device,
                      zero_factor="hidden")
    neuron0 = pair2.neuron.detach().clone()
    G2 = _one_adam_step(lm, pair2, 1, lr)
    g2 = G2 @ neuron0.t()                                  # dL/d(hidden factor) at hidden = 0
    torch.testing.assert_close(pair2.hidden.detach(), -lr * g2 / (g2.abs() + eps), rtol=1e-4, atol=1e-7)
    assert torch.equal(pair2.neuron.detach(), neuron0)
    # the two orientations give different first updates of the weights (they are not "the same update")
    d1 = (pair.hidden @ pair.neuron).detach()
    d2 = (pair2.hidden @ pair2.neuron).detach()
    assert not torch.allclose(d1, d2, atol=1e-6)


def test_every_edit_draws_its_own_initialisation_independent_of_order():
    lm = tiny_model("llama")
    editor = make_editor("memla", seed=7)
    first = editor.build_loras(lm, [masks_for(lm, "r1")], "en")
    other = editor.build_loras(lm, [masks_for(lm, "r2")], "en")
    again = editor.build_loras(lm, [masks_for(lm, "r1")], "en")  # after another edit's draw: same values
    assert not torch.equal(first[0].pairs[0].hidden, other[0].pairs[0].hidden)
    for a, b in zip(first, again):
        for p, q in zip(a.pairs, b.pairs):
            assert torch.equal(p.hidden, q.hidden)
    # language, method and run seed all enter the seed
    assert not torch.equal(first[0].pairs[0].hidden, editor.build_loras(lm, [masks_for(lm, "r1")], "zh")[0]
                           .pairs[0].hidden)
    assert not torch.equal(first[0].pairs[0].hidden, make_editor("memla-lse", seed=7).build_loras(
        lm, [masks_for(lm, "r1")], "en")[0].pairs[0].hidden)
    assert not torch.equal(first[0].pairs[0].hidden, make_editor("memla", seed=8).build_loras(
        lm, [masks_for(lm, "r1")], "en")[0].pairs[0].hidden)
    # the global RNG plays no part
    torch.manual_seed(123)
    assert torch.equal(first[0].pairs[0].hidden, editor.build_loras(lm, [masks_for(lm, "r1")], "en")[0]
                       .pairs[0].hidden)


def test_unit_seed_is_stable_and_distinct():
    assert unit_seed(0, "a", "b") == unit_seed(0, "a", "b")
    assert unit_seed(0, "a", "b") != unit_seed(0, "b", "a")
    assert unit_seed(0, "a") != unit_seed(1, "a")
    assert 0 <= unit_seed(5, "x") < 2**63
    with pytest.raises(TypeError, match="run seed must be an int"):
        unit_seed("0", "a")  # type: ignore[arg-type]


def test_weights_outside_selected_neurons_bit_identical_after_edit():
    lm = tiny_model("qwen2")
    before = {k: v.detach().clone() for k, v in lm.model.state_dict().items()}
    edit = make_editor("memla", max_steps=5, learning_rate=0.05).edit(lm, record(), "en", masks=masks_for(lm))
    after = lm.model.state_dict()
    changed_any = False
    for layer in range(lm.adapter.n_layers):
        name = f"{lm.adapter.down_proj_name(layer)}.weight"
        w0, w1 = before[name], after[name]
        sel = sorted(set(SPEC.get(layer, [])) | set(IND.get(layer, [])))
        rest = [i for i in range(lm.adapter.n_neurons) if i not in sel]
        assert torch.equal(w0[:, rest], w1[:, rest])
        changed_any |= not torch.equal(w0[:, sel], w1[:, sel]) if sel else False
    assert changed_any
    for k in before:
        if "down_proj" not in k:
            assert torch.equal(before[k], after[k]), k
    edit.revert()
