"""head_logprob: chunked log-probabilities and their gradient equal log_softmax(softcap(head(h))) and autograd."""
from __future__ import annotations

import pytest
import torch

from memla_utils.head_logprob import SHIFTS, head_logprob, logprob_and_grad, output_head
from memla_utils.testing import tiny_model


def _reference(h, weight, bias, cap, targets, soft):
    """f and df/dh by autograd on the full logits: log p(target), or F.kl_div against softmax(soft logits)."""
    import torch.nn.functional as F

    h = h.detach().clone().requires_grad_(True)
    z = h @ weight.T + (bias if bias is not None else 0)
    if cap:
        z = cap * torch.tanh(z / cap)
    logp = torch.log_softmax(z, -1)
    rows = []
    k = 0
    for r, t in enumerate(targets.tolist()):
        if t >= 0:
            rows.append(logp[r, t])
        else:
            ref = torch.log_softmax(soft[k:k + 1], -1)
            rows.append(F.kl_div(logp[r:r + 1], ref, log_target=True, reduction="batchmean"))
            k += 1
    f = torch.stack(rows)
    grads = [torch.autograd.grad(f[r], h, retain_graph=True)[0][r] for r in range(len(rows))]
    return f.detach(), torch.stack(grads)


@pytest.mark.parametrize("cap,with_bias", [(None, False), (30.0, False), (None, True), (5.0, True)])
@pytest.mark.parametrize("chunk", [7, 64, 1000])
@pytest.mark.parametrize("shift", SHIFTS)
def test_hard_and_soft_rows_equal_full_logits_and_autograd(cap, with_bias, chunk, shift):
    g = torch.Generator().manual_seed(0)
    V, H = 200, 16
    weight = torch.randn(V, H, generator=g)
    bias = torch.randn(V, generator=g) if with_bias else None
    h = torch.randn(5, H, generator=g) * 3
    targets = torch.tensor([3, -1, 199, 0, -1])
    soft = torch.randn(2, V, generator=g) * 4  # reference logits of the two soft rows
    f, grad = logprob_and_grad(h, targets, weight, bias, cap, chunk, soft=soft, shift=shift)
    ref_f, ref_grad = _reference(h, weight, bias, cap, targets, soft)
    torch.testing.assert_close(f, ref_f, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shift", SHIFTS)
def test_a_soft_row_near_its_reference_keeps_its_precision(shift):
    """KL and its gradient when the logits are within 1e-4 of the reference (the target search's first steps):
    float64 autograd is the truth; the chunked pass is at least as close to it as float32 autograd."""
    g = torch.Generator().manual_seed(3)
    V, H = 5000, 32
    weight = torch.randn(V, H, generator=g, dtype=torch.float64) * 0.3
    h0 = torch.randn(1, H, generator=g, dtype=torch.float64)
    ref_logits = h0 @ weight.T
    h = h0 + 1e-4 * torch.randn(1, H, generator=g, dtype=torch.float64)
    truth_f, truth_g = _reference(h, weight, None, None, torch.tensor([-1]), ref_logits)
    f32_f, f32_g = _reference(h.float(), weight.float(), None, None, torch.tensor([-1]), ref_logits.float())
    f, grad = logprob_and_grad(h.float(), torch.tensor([-1]), weight.float(), None, None, 512,
                               soft=ref_logits.float(), shift=shift)
    assert float(truth_f) > 0
    # the KL's error is the float32 logits' own rounding (shared by both float32 paths), not the summation's
    assert abs(float(f) - float(truth_f)) <= 1.5 * abs(float(f32_f) - float(truth_f)) + 1e-12
    err, err32 = (grad.double() - truth_g).abs().max(), (f32_g.double() - truth_g).abs().max()
    assert err <= 2 * err32 + 1e-9, (float(err), float(err32))
    assert err <= 1e-3 * truth_g.abs().max()


def _attribution_before_head_logprob(h, targets, weight, softcap, chunk):
    """attribution_prep._logprob_and_grad as it was before head_logprob.py (commit e19acc6), bias-free."""
    import math

    R, H = h.shape
    m = torch.full((R,), -math.inf)
    s = torch.zeros(R)
    u = torch.zeros(R, H)
    for c0 in range(0, weight.shape[0], chunk):
        w = weight[c0:c0 + chunk]
        z = (h @ w.T).float()
        dz = None
        if softcap is not None:
            t = torch.tanh(z / softcap)
            z, dz = softcap * t, 1.0 - t * t
        new_m = torch.maximum(m, z.max(-1).values)
        scale = torch.exp(m - new_m)
        e = z.sub_(new_m[:, None]).exp_()
        s = s * scale + e.sum(-1)
        u = u * scale[:, None] + ((e.mul_(dz) if dz is not None else e) @ w).float()
        m = new_m
    wt = weight[targets].float()
    zt = (h * wt).sum(-1)
    dzt = torch.ones_like(zt)
    if softcap is not None:
        t = torch.tanh(zt / softcap)
        zt, dzt = softcap * t, 1.0 - t * t
    return zt - (m + torch.log(s)), dzt[:, None] * wt - u / s[:, None]


@pytest.mark.parametrize("cap", [None, 30.0])
def test_hard_rows_in_float32_are_the_attribution_s_computation_bit_for_bit(cap):
    """Without soft rows and with float32 accumulation (the attribution's call) the values and gradients are the
    previous implementation's, bit for bit; float64 accumulation (the target search's) is close, not equal."""
    g = torch.Generator().manual_seed(1)
    weight, h = torch.randn(3000, 8, generator=g), torch.randn(4, 8, generator=g) * 4
    targets = torch.tensor([1, 2, 3, 2999])
    f1, g1 = logprob_and_grad(h, targets, weight, None, cap, 256)
    f0, g0 = _attribution_before_head_logprob(h, targets, weight, cap, 256)
    assert torch.equal(f1, f0) and torch.equal(g1, g0)
    f2, g2 = logprob_and_grad(h, targets, weight, None, cap, 256, acc_dtype=torch.float64)
    torch.testing.assert_close(f2, f1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g2, g1, rtol=1e-4, atol=1e-5)


def test_the_two_shifts_agree_within_float_rounding_and_target_is_the_editors():
    """``shift="target"`` (no rescaling: each hard row shifted by its own target logit) gives the running pass's
    values and gradients within float32 rounding, with hard and soft rows in any order, and head_logprob uses it."""
    g = torch.Generator().manual_seed(5)
    V, H = 4099, 24  # a last chunk shorter than the others
    weight, h = torch.randn(V, H, generator=g) * 0.5, torch.randn(7, H, generator=g) * 2
    targets = torch.tensor([-1, 10, 4098, -1, 7, 0, 2000])
    soft = torch.randn(2, V, generator=g) * 3
    run = logprob_and_grad(h, targets, weight, None, None, 512, soft=soft, acc_dtype=torch.float64)
    tgt = logprob_and_grad(h, targets, weight, None, None, 512, soft=soft, acc_dtype=torch.float64, shift="target")
    assert not torch.equal(run[1], tgt[1])  # a different computation ...
    torch.testing.assert_close(tgt[0], run[0], rtol=1e-6, atol=1e-6)  # ... with the same values
    torch.testing.assert_close(tgt[1], run[1], rtol=1e-5, atol=1e-7)
    seen = []

    import memla_utils.head_logprob as module

    real = module._target_shift_pass

    def spy(*args):
        seen.append(args[5])
        return real(*args)

    module._target_shift_pass = spy
    try:
        h_req = h.clone().requires_grad_(True)
        lin = torch.nn.Linear(H, V, bias=False)
        lin.weight.data = weight
        lin.weight.requires_grad_(False)
        model = type("M", (torch.nn.Module,), {"get_output_embeddings": lambda self: lin})()
        head_logprob(model, h_req, targets, soft).sum().backward()
    finally:
        module._target_shift_pass = real
    assert seen == [module.SMALL_ROWS_CHUNK]
    expected = logprob_and_grad(h, targets, weight, None, None, module.SMALL_ROWS_CHUNK, soft=soft, shift="target")
    assert torch.equal(h_req.grad, expected[1])


def test_a_logit_far_above_the_target_s_falls_back_to_the_running_pass():
    """exp(z_v - z_t) overflows float32 when a logit exceeds the target's by more than ~88: the target-shift pass
    then gives way to the running one, and the values stay finite and correct."""
    g = torch.Generator().manual_seed(6)
    V, H = 300, 8
    weight = torch.randn(V, H, generator=g) * 0.1
    h = torch.randn(2, H, generator=g)
    weight[17] = h[0] / h[0].norm() ** 2 * 150.0  # row 0's logit of token 17: 150, its target's: ~0
    targets = torch.tensor([3, 5])
    import memla_utils.head_logprob as module

    assert module._target_shift_pass(h, targets, weight, None, None, 64, None) is None
    f, grad = logprob_and_grad(h, targets, weight, None, None, 64, acc_dtype=torch.float64, shift="target")
    ref_f, ref_grad = _reference(h.double(), weight.double(), None, None, targets, None)
    assert bool(torch.isfinite(f).all()) and float(f[0]) < -100
    torch.testing.assert_close(f.double(), ref_f, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-5)


def test_a_head_not_in_float32_takes_the_running_pass():
    """shift="target" multiplies float32 buffers: a bfloat16 head (or bfloat16 products) takes the running pass."""
    g = torch.Generator().manual_seed(7)
    weight, h = torch.randn(500, 16, generator=g).bfloat16(), torch.randn(3, 16, generator=g)
    targets = torch.tensor([1, 2, 499])
    for mm_dtype in (torch.float32, torch.bfloat16):
        run = logprob_and_grad(h, targets, weight, None, None, 64, mm_dtype, acc_dtype=torch.float64)
        tgt = logprob_and_grad(h, targets, weight, None, None, 64, mm_dtype, acc_dtype=torch.float64, shift="target")
        assert torch.equal(run[0], tgt[0]) and torch.equal(run[1], tgt[1])


def test_an_unknown_shift_is_an_error():
    with pytest.raises(ValueError, match="shift must be one of"):
        logprob_and_grad(torch.randn(1, 4), torch.tensor([1]), torch.randn(10, 4), None, None, 4, shift="max")


def test_mismatched_soft_rows_are_an_error():
    weight, h = torch.randn(10, 4), torch.randn(2, 4)
    with pytest.raises(ValueError, match="1 soft rows"):
        logprob_and_grad(h, torch.tensor([1, -1]), weight, None, None, 4)
    with pytest.raises(ValueError, match="vocabulary of 10"):
        logprob_and_grad(h, torch.tensor([1, -1]), weight, None, None, 4, soft=torch.ones(1, 9))


@pytest.mark.parametrize("arch,kwargs", [("gemma3_text", {"final_logit_softcapping": 5.0}), ("gpt2", {}),
                                         ("bloom", {})])
def test_head_logprob_backpropagates_like_the_model_s_logits(arch, kwargs):
    lm = tiny_model(arch)
    model = lm.model
    for k, v in kwargs.items():  # Gemma 2/3's final-logit soft-capping, read from the config at every forward
        setattr(model.config, k, v)
    weight, bias, cap = output_head(model)
    assert (cap == 5.0) == bool(kwargs)
    g = torch.Generator().manual_seed(2)
    h = torch.randn(3, weight.shape[1], generator=g, requires_grad=True)
    soft = torch.randn(1, weight.shape[0], generator=g)
    targets = torch.tensor([5, -1, 11])
    f = head_logprob(model, h, targets, soft, chunk=17)
    loss = (f * torch.tensor([1.0, -2.0, 0.5])).sum()
    loss.backward()
    h2 = h.detach().clone().requires_grad_(True)
    logits = model.get_output_embeddings()(h2)
    if cap:
        logits = cap * torch.tanh(logits / cap)
    logp = torch.log_softmax(logits, -1)
    kl = torch.nn.functional.kl_div(logp[1:2], torch.log_softmax(soft, -1), log_target=True, reduction="batchmean")
    ref = torch.stack([logp[0, 5], kl, logp[2, 11]])
    (ref * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
    torch.testing.assert_close(f.detach(), ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h.grad, h2.grad, rtol=1e-4, atol=1e-6)


def test_a_head_that_requires_a_gradient_is_refused():
    lm = tiny_model("gpt2")
    lm.model.get_output_embeddings().weight.requires_grad_(True)
    with pytest.raises(ValueError, match="requires a gradient"):
        head_logprob(lm.model, torch.zeros(1, lm.model.config.hidden_size), torch.tensor([0]))


def test_a_second_derivative_through_the_head_pass_is_refused():
    lm = tiny_model("llama")
    h = torch.randn(2, lm.model.config.hidden_size, requires_grad=True)
    f = head_logprob(lm.model, h, torch.tensor([3, 4]))
    (g,) = torch.autograd.grad(f.sum(), h, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        torch.autograd.grad(g.sum(), h)


@pytest.mark.parametrize("cap,with_bias", [(None, False), (30.0, False), (None, True), (5.0, True)])
@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("overflow", [False, True])
def test_soft_rows_that_are_their_own_reference_record_their_logits_in_the_same_pass(cap, with_bias, shift, overflow):
    """reference_out: the soft rows' logits are written there (softcap(W h + b)), their f and gradient are 0
    (KL of a distribution to itself), the hard rows are as in any call; passing the record as ``soft`` for the same
    h then gives KL ~0. ``overflow``: a hard row's logit 150 above its target's sends the target-shift pass to the
    running one, which records the same logits."""
    g = torch.Generator().manual_seed(11)
    V, H = 300, 8
    weight = torch.randn(V, H, generator=g) * 0.3
    bias = torch.randn(V, generator=g) if with_bias else None
    h = torch.randn(4, H, generator=g)
    if overflow and not cap:
        weight[17] = h[0] / h[0].norm() ** 2 * 150.0
    targets = torch.tensor([3, -1, 299, -1])
    buf = torch.full((2, V), float("nan"))
    f, grad = logprob_and_grad(h, targets, weight, bias, cap, 64, acc_dtype=torch.float64, shift=shift,
                               reference_out=buf)
    z = h[[1, 3]] @ weight.T + (bias if bias is not None else 0)
    if cap:
        z = cap * torch.tanh(z / cap)
    torch.testing.assert_close(buf, z, rtol=1e-5, atol=1e-5)
    assert f[[1, 3]].tolist() == [0.0, 0.0] and not grad[[1, 3]].any()
    hard_f, hard_grad = _reference(h[[0, 2]], weight, bias, cap, targets[[0, 2]], None)
    torch.testing.assert_close(f[[0, 2]], hard_f, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad[[0, 2]], hard_grad, rtol=1e-4, atol=1e-5)
    again, again_grad = logprob_and_grad(h, targets, weight, bias, cap, 64, acc_dtype=torch.float64, shift=shift,
                                         soft=buf)
    assert float(again[[1, 3]].abs().max()) < 1e-6 and float(again_grad[[1, 3]].abs().max()) < 1e-5


def test_reference_out_is_checked():
    weight, h = torch.randn(10, 4), torch.randn(2, 4)
    with pytest.raises(ValueError, match="not both"):
        logprob_and_grad(h, torch.tensor([1, -1]), weight, None, None, 4, soft=torch.ones(1, 10),
                         reference_out=torch.empty(1, 10))
    with pytest.raises(ValueError, match="reference_out of shape"):
        logprob_and_grad(h, torch.tensor([1, -1]), weight, None, None, 4, reference_out=torch.empty(2, 10))
