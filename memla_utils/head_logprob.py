"""Log-probabilities from the output head in vocabulary chunks, with their gradient in the same pass.

``log p(v | h) = z_v - logsumexp(z)``, ``z = softcap(W h + b)``. Autograd computes the logits ``[R, V]`` in one
product and the gradient ``Σ_v p_v ∂z_v/∂h`` in a second, reading the ``V x H`` projection twice (the default
model's 262k x 640 head: 671 MB per read; with a few rows both products are bound by that read, not by FLOPs).
:func:`logprob_and_grad` does both per chunk of the vocabulary with an online (rescaled) softmax, so each chunk is
used twice while it is in cache and memory stays ``O(R x chunk)``. The editors' few rows use a pass without
rescaling (``shift="target"``: each row shifted by its own target logit), whose per-chunk work is a few
operations, since at ~1,000 chunks per step the small operations, not the products, decided its time.

Each row ``r`` is either *hard*: ``f_r = log p_r(t_r)`` for a target id ``t_r`` (the knowledge-neuron
attribution; the answer tokens of the editors' target search), with ``∂f_r/∂h_r = z'_rt w_t − Σ_v p_rv z'_rv w_v``;
or *soft*: ``f_r = KL(q_r ‖ p_r)`` against a reference distribution ``q_r = softmax(y_r)`` given by its logits
``y_r`` (the term ROME's ``compute_v`` adds for the bare subject, ``y`` = the unedited model's logits). With
``δ = z − y``, ``KL = log Σ_v q_v e^δ_v − Σ_v q_v δ_v`` and ``∂KL/∂z_v = p_v − q_v``; both are accumulated from
``expm1(δ)`` (``A = Σ q·expm1(δ)·z'·w``, ``a = Σ q·expm1(δ)``, ``B = Σ q·z'·w``: gradient ``(A − a·B) / (1 + a)``
for a normalised ``q``), so no two large sums are subtracted: on the default model a ROME edit's weights came out
as close to a float64 run as with the logits path (a first version that took ``Σ q log p`` apart from the log
normaliser was 11x further off). A soft row may also be its own reference (``reference_out``): its logits are then
recorded from the same read of the head and its KL and gradient are 0; ROME's target search takes its unedited
logits this way in its first step, at δ = 0, instead of projecting them in a pass of their own.

:func:`head_logprob` wraps it as a differentiable function of ``h`` (the head itself is frozen): used by the
locate-then-edit target search (:mod:`memla_utils.editors.locate_values`: one row per answer token of each
prefixed prompt, plus the KL row); the attribution (:mod:`memla_utils.attribution_prep`) calls
:func:`logprob_and_grad` directly. It pays from a few rows on: values and gradient of the default model's head on
one CPU thread (2-core machine, shared with another run) took 130 / 148 / 214 ms for 2 / 5 / 12
rows, against 121 / 194 / 353 ms for the logits, ``log_softmax`` and autograd. So the answer NLL of FT, FT-L,
LoRA and MEND and MEMLA's loss (1-4 answer tokens per step) keep the logits path, and their numbers stay the same
bit for bit. Equal to
``torch.log_softmax(softcap(head(h)))`` and its autograd gradient up to float rounding
(``tests/unit/test_head_logprob.py``).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .head_projection import can_defer

#: Vocabulary rows per chunk for a few rows of ``h`` (the editors' target search: 4-16 rows, ``shift="target"``).
#: Measured on the default head's shape (262k x 640, random weights), 2 threads, 2-core CPU, values and gradient:
#: 12 rows with one soft row 115 / 120 / 129 ms at 512 / 1024 / 2048 rows per chunk (the ``"running"`` pass at
#: 2048: 145 ms); 3 hard rows 74 / 75 / 79 ms (93); with a bias or a soft cap 1024 and 2048 were ~12% faster than
#: 512 (session 36). A chunk of 1024 x 640 float32 (2.6 MB) stays in the two cores' L2
#: caches between its two products. The attribution, with hundreds of rows, uses its own
#: ``AttributionConfig.vocab_chunk`` (8192) and the ``"running"`` pass.
SMALL_ROWS_CHUNK = 1024


def output_head(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, float | None]:
    """``(weight [V, H], bias [V] or None, final-logit soft-cap or None)`` of ``model``'s output embedding.

    Raises ``ValueError`` when the model has no linear output embedding.
    """
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if head is None or not hasattr(head, "weight"):
        name = getattr(getattr(model, "config", None), "_name_or_path", type(model).__name__)
        raise ValueError(f"{name}: the model has no output embedding (lm_head) to score answers with")
    cap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    return head.weight, getattr(head, "bias", None), (float(cap) if cap else None)


SHIFTS = ("running", "target")


def _target_logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, softcap: float | None,
                   ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(w_t [R, H], z_t [R], z'_t [R])``: each row's target row of the head, its (capped) logit and the cap's
    derivative there (ones without a cap), float32."""
    wt = weight[ids].float()
    zt = (h * wt).sum(-1)
    if bias is not None:
        zt = zt + bias[ids].float()
    dzt = torch.ones_like(zt)
    if softcap is not None:
        t = torch.tanh(zt / softcap)
        zt, dzt = softcap * t, 1.0 - t * t
    return wt, zt, dzt


def _kl_rows(a: torch.Tensor, q_delta: torch.Tensor, mass: torch.Tensor, big_a: torch.Tensor,
             big_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(q̂ ‖ p) ``[S]`` and its gradient ``[S, H]`` (float32) of the soft rows, for the normalised q̂ = q / Σq
    (Σq = 1 up to float32 rounding over the vocabulary), from a = Σ q expm1(δ), Σ q δ, M = Σ q, A = Σ q expm1(δ) z' w
    and B = Σ q z' w: KL = log1p(a / M) − Σ q δ / M and ∂KL/∂h = (M·A − a·B) / (M (M + a)); no large sums are
    subtracted."""
    f = (torch.log1p(a / mass) - q_delta / mass).float()
    grad = ((mass[:, None] * big_a - a[:, None] * big_b) / (mass * (mass + a))[:, None]).float()
    return f, grad


def _capped(z: torch.Tensor, softcap: float | None, dz: torch.Tensor | None) -> None:
    """In place: ``z <- softcap * tanh(z / softcap)`` and ``dz <-`` its derivative in the raw logit, ``1 - tanh²``
    (unless ``dz`` is None); nothing without a cap."""
    if softcap is None:
        return
    z.div_(softcap).tanh_()
    if dz is not None:
        torch.mul(z, z, out=dz).neg_().add_(1.0)
    z.mul_(softcap)


def _target_shift_pass(h: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       softcap: float | None, chunk: int, soft: torch.Tensor | None,
                       reference_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """:func:`logprob_and_grad` with ``shift="target"``: ``(f [R], grad [R, H])``, or ``None`` on overflow.

    Hard rows: ``log p(t) = -log Σ_v exp(z_v - z_t)`` and ``∂/∂h = z'_t w_t - Σ_v exp(z_v - z_t) z'_v w_v / s``;
    the shift ``z_t`` (the row's own target logit) is fixed before the pass, so no chunk rescales earlier sums
    (``exp(z_v - z_t) <= 1 / p(t)``: finite unless ``p(t) < e^-88``, then ``None``). Soft rows: the
    ``expm1`` accumulation of :func:`logprob_and_grad`, unchanged. Rows are put in the order soft, hard, and each
    chunk's products go into one preallocated ``[R + 2S, chunk]`` buffer whose rows ``S:`` (the hard rows'
    exponentials, the soft rows' ``q·expm1(δ)·z'`` and ``q·z'``) are the second product's input. Sums over the
    vocabulary in float64, products in float32. ``h`` is float32. With ``reference_out`` (and no ``soft``) the soft
    rows are their own reference: their logits are written there chunk by chunk, and they take no further work.
    """
    dev = h.device
    R, H = h.shape
    V = weight.shape[0]
    soft_idx = (targets < 0).nonzero().flatten()
    hard_idx = (targets >= 0).nonzero().flatten()
    ns, nh = int(soft_idx.numel()), int(hard_idx.numel())
    hp = h[torch.cat([soft_idx, hard_idx])].contiguous()
    wt, zt, dzt = _target_logits(hp[ns:], weight, bias, softcap, targets[hard_idx])
    own = reference_out is not None  # the soft rows only record their logits (KL of a distribution to itself: 0)
    extra = 0 if own else ns  # rows of the second product beyond the hard ones: A and B of each soft row
    shift = zt[:, None]
    w_chunks = weight.split(chunk)
    wt_chunks = weight.T.split(chunk, dim=1)  # the same chunks transposed, as views made in one call
    b_chunks = bias.float().split(chunk) if bias is not None else None
    sums = torch.empty(len(w_chunks), nh, dtype=torch.float64, device=dev)
    acc = torch.zeros(nh + 2 * extra, H, dtype=torch.float64, device=dev)
    if own:
        out_chunks = reference_out.split(chunk, -1)
    elif ns:
        ref = soft.float()
        q = torch.softmax(ref, -1)
        delta = torch.empty(ns, V, device=dev)
        ref_chunks, q_chunks, delta_chunks = ref.split(chunk, -1), q.split(chunk, -1), delta.split(chunk, -1)
    width = -1
    for k, (w, w_t) in enumerate(zip(w_chunks, wt_chunks)):
        if w.shape[0] != width:  # the first chunk, and the shorter last one
            width = w.shape[0]
            buf = torch.empty(R + 2 * extra, width, device=dev)
            dz = torch.empty(R, width, device=dev) if softcap is not None else None
            prod = torch.empty(nh + 2 * extra, H, device=dev)
            z, e_hard, qe, qz = buf[:R], buf[ns:R], buf[R:R + extra], buf[R + extra:]
        torch.mm(hp, w_t, out=z)
        if b_chunks is not None:
            z.add_(b_chunks[k])
        _capped(z, softcap, dz)
        if own:
            out_chunks[k].copy_(z[:ns])
        elif ns:
            torch.sub(z[:ns], ref_chunks[k], out=delta_chunks[k])
            torch.expm1(delta_chunks[k], out=qe).mul_(q_chunks[k])
            qz.copy_(q_chunks[k])
            if dz is not None:
                qe.mul_(dz[:ns])
                qz.mul_(dz[:ns])
        e_hard.sub_(shift).exp_()
        torch.sum(e_hard, -1, dtype=torch.float64, out=sums[k])
        if dz is not None:
            e_hard.mul_(dz[ns:])
        torch.mm(buf[ns:], w, out=prod)
        acc.add_(prod)
    s = sums.sum(0)
    u = acc[:nh]
    if not (bool(torch.isfinite(s).all()) and bool(torch.isfinite(u).all())):
        return None
    logp = torch.empty(R, device=dev)
    grad = torch.empty(R, H, device=dev)
    logp[hard_idx] = (-torch.log(s)).float()  # z_t - (shift + log s) with shift = z_t
    grad[hard_idx] = (dzt[:, None].double() * wt.double() - u / s[:, None]).float()
    if own:
        logp[soft_idx], grad[soft_idx] = 0.0, 0.0
    elif ns:
        a = (q * torch.expm1(delta)).sum(-1, dtype=torch.float64)
        q_delta = (q * delta).sum(-1, dtype=torch.float64)
        mass = q.sum(-1, dtype=torch.float64)
        logp[soft_idx], grad[soft_idx] = _kl_rows(a, q_delta, mass, acc[nh:nh + ns], acc[nh + ns:])
    return logp, grad


@torch.no_grad()
def logprob_and_grad(h: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     softcap: float | None, chunk: int, mm_dtype: torch.dtype = torch.float32,
                     soft: torch.Tensor | None = None, acc_dtype: torch.dtype = torch.float32,
                     shift: str = "running", reference_out: torch.Tensor | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``f [R]`` and ``∂f_r/∂h_r`` ``[R, H]`` (float32) for final hidden states ``h`` ``[R, H]``.

    ``targets`` ``[R]`` (long): row ``r``'s hard target id, or ``-1`` for a soft row; ``soft`` ``[S, V]``: the
    reference logits ``y`` of the soft rows, in row order (``S`` = number of ``-1`` targets; ``None`` when there
    are none), in the space of ``z`` (after bias and soft-capping). ``f_r`` is ``log p(target)`` for a hard row and
    ``KL(softmax(y_r) ‖ p_r)`` for a soft one. The products run in ``mm_dtype`` (accumulating in float32); the
    softmax normaliser and the gradient are accumulated over the chunks in ``acc_dtype`` (float32: the
    attribution's computation, unchanged; float64: :func:`head_logprob`, whose values are then closer to a float64
    run than float32 autograd's), the soft rows' sums always in float64. A soft row whose logits rose by more than
    ~88 above the reference's overflows ``expm1`` in float32: its ``f`` is then not finite (callers fall back to
    the logits).

    ``shift`` picks how the softmax is kept in range: ``"running"`` (the attribution's computation) rescales its
    sums whenever a chunk raises a row's running maximum (about 20 small operations per chunk); ``"target"``
    (:func:`head_logprob`) shifts each hard row by its own target logit once (:func:`_target_shift_pass`: no
    rescaling, the products written into preallocated buffers, about 8 operations per chunk), accumulates in
    float64 whatever ``acc_dtype`` says, and falls back to ``"running"`` when a logit exceeds its row's target
    logit by so much that the shifted exponentials overflow (``log p(target) < ~-88``), or when ``mm_dtype`` or the
    head's dtype is not float32. Both give the same values up to float rounding (``tests/unit/test_head_logprob.py``).

    ``reference_out`` ``[S, V]`` (with ``soft=None``): the soft rows are their own reference, as in the first step
    of ROME's target search, where nothing is edited yet and the KL's reference is the row's own distribution. Their
    logits (in the space of ``z``) are written into ``reference_out`` from the same read of the head, and their
    ``f`` and gradient are 0 (``KL(p ‖ p) = 0``, ``∂KL/∂z = p - p``); a later call passes ``reference_out`` as
    ``soft``. Raises ``ValueError`` when the soft rows and ``soft`` (or ``reference_out``) do not match, when both
    are given, or for an unknown ``shift``.
    """
    hf = h.float()
    hm = h.to(mm_dtype)
    R, H = hf.shape
    soft_rows = (targets < 0).nonzero().flatten()
    n_soft = int(soft_rows.numel())
    if reference_out is not None:
        if soft is not None:
            raise ValueError("logprob_and_grad: give the soft rows' reference logits (soft) or a buffer to record "
                             "them in (reference_out), not both")
        if tuple(reference_out.shape) != (n_soft, weight.shape[0]):
            raise ValueError(f"logprob_and_grad: {n_soft} soft rows (target -1) but reference_out of shape "
                             f"{tuple(reference_out.shape)} for a vocabulary of {weight.shape[0]}")
    elif n_soft != (0 if soft is None else soft.shape[0]) or (soft is not None and soft.shape[1] != weight.shape[0]):
        raise ValueError(f"logprob_and_grad: {n_soft} soft rows (target -1) but soft targets of shape "
                         f"{None if soft is None else tuple(soft.shape)} for a vocabulary of {weight.shape[0]}")
    if shift not in SHIFTS:
        raise ValueError(f"logprob_and_grad: shift must be one of {SHIFTS}, got {shift!r}")
    if shift == "target" and mm_dtype == torch.float32 and weight.dtype == torch.float32:
        done = _target_shift_pass(hf, targets, weight, bias, softcap, chunk, soft, reference_out)
        if done is not None:
            return done
    if reference_out is not None:  # the running pass: the soft rows as hard rows of a dummy target, then recorded
        logp, grad = logprob_and_grad(h, targets.clamp(min=0), weight, bias, softcap, chunk, mm_dtype,
                                      acc_dtype=acc_dtype)
        for c0 in range(0, weight.shape[0], chunk):
            z = (hm[soft_rows] @ weight[c0:c0 + chunk].to(mm_dtype).T).float()
            if bias is not None:
                z += bias[c0:c0 + chunk].float()
            _capped(z, softcap, None)
            reference_out[:, c0:c0 + chunk] = z
        logp[soft_rows], grad[soft_rows] = 0.0, 0.0
        return logp, grad
    wide = acc_dtype != torch.float32
    m = torch.full((R,), -math.inf, device=h.device)
    s = torch.zeros(R, device=h.device, dtype=acc_dtype)
    u = torch.zeros(R, H, device=h.device, dtype=acc_dtype)
    if n_soft:
        f64 = dict(dtype=torch.float64, device=h.device)
        ref = soft.float()
        log_q = torch.log_softmax(ref, -1)
        a, q_delta, mass = torch.zeros(n_soft, **f64), torch.zeros(n_soft, **f64), torch.zeros(n_soft, **f64)
        big_a, big_b = torch.zeros(n_soft, H, **f64), torch.zeros(n_soft, H, **f64)
    for c0 in range(0, weight.shape[0], chunk):
        w = weight[c0:c0 + chunk].to(mm_dtype)
        z = (hm @ w.T).float()
        if bias is not None:
            z = z + bias[c0:c0 + chunk].float()
        dz = None
        if softcap is not None:
            t = torch.tanh(z / softcap)
            z, dz = softcap * t, 1.0 - t * t
        if n_soft:
            q = log_q[:, c0:c0 + chunk].exp()
            delta = z[soft_rows] - ref[:, c0:c0 + chunk]
            qe = q * torch.expm1(delta)
            a += qe.sum(-1, dtype=torch.float64)
            q_delta += (q * delta).sum(-1, dtype=torch.float64)
            mass += q.sum(-1, dtype=torch.float64)
            if dz is not None:
                qe, q = qe * dz[soft_rows], q * dz[soft_rows]
        new_m = torch.maximum(m, z.amax(-1))  # amax: no argmax indices to compute
        e = z.sub_(new_m[:, None]).exp_()  # in place: these chunks are the largest buffers of the pass
        if wide:
            scale = torch.exp(m.to(acc_dtype) - new_m.to(acc_dtype))
            s = s * scale + e.sum(-1, dtype=acc_dtype)
        else:
            scale = torch.exp(m - new_m)
            s = s * scale + e.sum(-1)
        e = e.mul_(dz) if dz is not None else e
        if n_soft:  # one product for all: each product call packs the chunk of the head again
            prod = (torch.cat([e, qe, q]).to(mm_dtype) @ w).float()
            u = u * scale[:, None] + prod[:R].to(acc_dtype)
            big_a += prod[R:R + n_soft].double()
            big_b += prod[R + n_soft:].double()
        else:
            u = u * scale[:, None] + (e.to(mm_dtype) @ w).float().to(acc_dtype)
        m = new_m
    wt, zt, dzt = _target_logits(hf, weight, bias, softcap, targets.clamp(min=0))
    if wide:
        logp = (zt.to(acc_dtype) - (m.to(acc_dtype) + torch.log(s))).float()
        grad = (dzt[:, None].to(acc_dtype) * wt.to(acc_dtype) - u / s[:, None]).float()
    else:
        logp = zt - (m + torch.log(s))
        grad = dzt[:, None] * wt - u / s[:, None]
    if n_soft:
        logp[soft_rows], grad[soft_rows] = _kl_rows(a, q_delta, mass, big_a, big_b)
    return logp, grad


class _HeadLogProb(torch.autograd.Function):
    """``f = logprob_and_grad(h, ...)[0]`` with the gradient of the same pass (the head is not differentiated)."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                softcap: float | None, chunk: int, soft: torch.Tensor | None,
                reference_out: torch.Tensor | None) -> torch.Tensor:
        f, grad = logprob_and_grad(h.detach(), targets, weight, bias, softcap, chunk, weight.dtype, soft=soft,
                                   acc_dtype=torch.float64, shift="target", reference_out=reference_out)
        ctx.save_for_backward(grad)
        ctx.h_dtype = h.dtype
        return f

    @staticmethod
    @once_differentiable  # the saved gradient is a constant: a second derivative through it would be silently 0
    def backward(ctx: Any, grad_f: torch.Tensor) -> tuple[Any, ...]:
        (grad,) = ctx.saved_tensors
        return (grad_f[:, None] * grad).to(ctx.h_dtype), None, None, None, None, None, None, None


def fusable(model: nn.Module) -> bool:
    """Whether :func:`head_logprob` can replace ``model``'s logits in a loss: its logits are ``softcap(head(h))``
    (:func:`memla_utils.head_projection.can_defer`: the project's architectures) and the head is frozen (no
    parameter of it requires a gradient, which :func:`head_logprob` does not compute)."""
    return can_defer(model) and not any(p.requires_grad for p in model.get_output_embeddings().parameters())


def head_logprob(model: nn.Module, h: torch.Tensor, targets: torch.Tensor, soft: torch.Tensor | None = None,
                 chunk: int = SMALL_ROWS_CHUNK, reference_out: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable ``f [R]`` of :func:`logprob_and_grad` for ``model``'s head and final hidden states ``h``
    ``[R, H]`` (gradient w.r.t. ``h`` only; the products in the head's dtype, as the model computes its logits).
    ``reference_out``: see :func:`logprob_and_grad` (the soft rows record their own logits there).
    Raises ``ValueError`` when the head's weight or bias requires a
    gradient (this function would not give it one)."""
    weight, bias, cap = output_head(model)
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        raise ValueError("head_logprob: the output head requires a gradient, which this function does not compute; "
                         "freeze it (requires_grad_(False)) or use the model's own logits")
    return _HeadLogProb.apply(h, targets.to(h.device), weight, bias, cap, int(chunk), soft, reference_out)


__all__ = ["SHIFTS", "SMALL_ROWS_CHUNK", "fusable", "head_logprob", "logprob_and_grad", "output_head"]
