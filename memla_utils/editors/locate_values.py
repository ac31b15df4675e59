"""The target search of the locate-then-edit methods (ROME's ``compute_v``): :func:`optimize_target`.

It finds the vector ``δ`` that, added to a layer's down-projection output at the subject's last token, makes
the model predict ``target_new``: NLL over the prefixed prompts + ``kl_factor`` · KL on the bare subject +
weight decay, with a norm clamp (ROME's ``compute_v``; PMET also optimises a vector on the attention output of the
same layer, :func:`attention_module`). Two objectives give the same values up to float rounding: the reference
one with full forwards (:func:`_full_objective`) and a suffix-only one (:func:`_suffix_objective`,
:mod:`.fast_forward`). Re-exported by :mod:`memla_utils.editors.locate`.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..head_logprob import fusable, head_logprob, output_head
from ..head_projection import deferred_head
from ..models import LoadedModel, ModelAdapter
from ..text import build_batch, encode_prompt
from .base import EditError
from .fast_forward import SuffixRunner, gather_head, split_rows
from .locate_reads import Request, _capture_output, read_outputs, subject_last_position
from .objective import answer_nll, logits_at

#: attribute names under which the supported decoder layers keep their attention block
_ATTENTION_ATTRS = ("self_attn", "attn", "self_attention", "attention")


def attention_module(adapter: ModelAdapter, layer: int) -> nn.Module:
    adapter.check_layer(layer)
    block = adapter.layers[layer]
    for attr in _ATTENTION_ATTRS:
        if hasattr(block, attr):
            return getattr(block, attr)
    raise EditError(f"{type(block).__name__} has none of the attention attributes {_ATTENTION_ATTRS}; "
                    f"PMET cannot optimise its attention output")


@contextmanager
def _add_at(module: nn.Module, delta: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> Iterator[None]:
    """Add ``delta`` to ``module``'s output at (row, position) pairs during the block (differentiable)."""

    def hook(mod: nn.Module, args: tuple, out: Any) -> Any:
        hidden = out[0] if isinstance(out, tuple) else out
        add = torch.zeros_like(hidden)
        add = add.index_put((rows.to(hidden.device), positions.to(hidden.device)),
                            delta.to(hidden.dtype).expand(len(rows), -1))
        hidden = hidden + add
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


Objective = Any  # callable: deltas -> (nll, kl), both 0-d tensors


def _full_objective(lm: LoadedModel, layer: int, request: Request, prefixes: Sequence[str],
                    sites: Sequence[nn.Module]) -> tuple[list[torch.Tensor], Objective]:
    """The reference objective: one full forward of the prefixed prompts, one of the bare subject (KL)."""
    tok, model = lm.tokenizer, lm.model
    view = request.view
    prompts = [p + view.prompt for p in prefixes]
    batch = build_batch(tok, prompts, [view.target_new] * len(prompts), request.language).to(lm.device)
    rows = torch.arange(len(prompts))
    pos = torch.tensor([subject_last_position(tok, request, p) for p in prefixes])
    kl_ids = torch.tensor([encode_prompt(tok, view.subject or view.prompt)], device=lm.device)
    kl_pos = torch.tensor([kl_ids.shape[1] - 1])
    kl_cols = kl_pos.to(lm.device)
    with torch.no_grad():
        ref = logits_at(model, kl_ids, torch.ones_like(kl_ids), kl_cols)
        ref_logp = torch.log_softmax(ref.float(), -1)[:, -1]
        init_norms = [read_outputs(lm, m, [request])[0].norm().float() for m in sites]

    def objective(deltas: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        with ExitStack() as stack:
            for m, d in zip(sites, deltas):
                stack.enter_context(_add_at(m, d, rows, pos))
            nll = answer_nll(model, batch).mean()
        with ExitStack() as stack:
            for m, d in zip(sites, deltas):
                stack.enter_context(_add_at(m, d, torch.zeros(1, dtype=torch.long), kl_pos))
            kl_logits = logits_at(model, kl_ids, torch.ones_like(kl_ids), kl_cols)
            kl = F.kl_div(torch.log_softmax(kl_logits.float(), -1)[:, -1], ref_logp, log_target=True,
                          reduction="batchmean")
        return nll, kl

    return init_norms, objective


def _suffix_objective(lm: LoadedModel, layer: int, request: Request, prefixes: Sequence[str],
                      sites: Sequence[nn.Module]) -> tuple[list[torch.Tensor], Objective]:
    """The same objective from one suffix-only forward per step (:mod:`.fast_forward`).

    Rows: the prefixed prompts + answer, then the bare subject (KL). Each row is split at its subject token (or
    the last prompt token, if that comes first), layers below ``layer`` are replayed, and the head projects only
    the answer-predicting positions and the KL position: for the project's architectures (``can_defer``) with a
    frozen head, in one chunked pass per step that also yields the gradient (:mod:`memla_utils.head_logprob`);
    else through the model's head and ``log_softmax``. The KL's reference (the bare subject's unedited logits) is
    recorded by the first call's head pass, at δ = 0 (:func:`memla_utils.head_logprob.logprob_and_grad`'s
    ``reference_out``), so the recording pass that keeps the lower layers stops after the edited layer's MLP; on
    the logits path it comes from that recording pass, run to the end.
    """
    tok, model = lm.tokenizer, lm.model
    view = request.view
    prompts = [p + view.prompt for p in prefixes]
    batch = build_batch(tok, prompts, [view.target_new] * len(prompts), request.language)
    lengths = batch.attention_mask.sum(1).tolist()
    rows = [batch.input_ids[b, :n].tolist() for b, n in enumerate(lengths)]
    pos = [subject_last_position(tok, request, p) for p in prefixes]
    p_lens, a_lens = batch.prompt_lengths.tolist(), batch.answer_lengths.tolist()
    split = [min(q, pl - 1) for q, pl in zip(pos, p_lens)]
    kl_row = encode_prompt(tok, view.subject or view.prompt)
    rows.append(kl_row)
    pos.append(len(kl_row) - 1)
    split.append(len(kl_row) - 1)
    n = len(prompts)
    sel_rows, sel_cols, targets, owner = [], [], [], []
    for b in range(n):
        for j in range(a_lens[b]):
            sel_rows.append(b)
            sel_cols.append(p_lens[b] - 1 + j - split[b])
            targets.append(rows[b][p_lens[b] + j])
            owner.append(b)
    sel_rows.append(n)
    sel_cols.append(0)
    dev = lm.device
    sel_r, sel_c = torch.tensor(sel_rows), torch.tensor(sel_cols)
    targets_t = torch.tensor(targets, device=dev)
    owner_t = torch.tensor(owner, device=dev)
    counts = torch.bincount(owner_t, minlength=n).float()
    all_rows = torch.arange(n + 1)
    delta_cols = torch.tensor([q - s for q, s in zip(pos, split)])
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    runner = SuffixRunner(model, lm.adapter, split_rows(rows, split, pad), first=layer)
    fused = fusable(model)
    #: the KL's reference, the unedited logits [1, V] of the bare subject's row
    reference: list[torch.Tensor] = []
    with ExitStack() as stack:
        boxes = [stack.enter_context(_capture_output(m)) for m in sites]
        if fused:  # the reference comes from the first step's head pass, at δ = 0 (hidden_objective): the
            # recording stops after the edited layer's MLP, so the layers above and the head do not run twice
            runner.record(stop=lm.adapter.down_proj(layer))
        else:  # the bare subject's row only: projecting the answer rows too read the 262k-row head for ~7 rows
            stack.enter_context(gather_head(model, sel_r[-1:], sel_c[-1:]))
            reference.append(runner.record().logits[0, -1].float().unsqueeze(0))
    if "" in prefixes:  # the bare prompt's row: the original outputs read_outputs would give
        b = list(prefixes).index("")
        init_norms = [box["out"][b, int(delta_cols[b])].norm().float() for box in boxes]
    else:
        init_norms = [read_outputs(lm, m, [request])[0].norm().float() for m in sites]

    def logits_objective(deltas: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        with ExitStack() as stack:
            for m, d in zip(sites, deltas):
                stack.enter_context(_add_at(m, d, all_rows, delta_cols))
            stack.enter_context(gather_head(model, sel_r, sel_c))
            logits = runner.forward().logits[0].float()
        logp = torch.log_softmax(logits[:-1], -1)
        picked = logp.gather(-1, targets_t.unsqueeze(-1)).squeeze(-1)
        per_row = torch.zeros(n, device=picked.device).index_add(0, owner_t, picked)
        nll = (-per_row / counts.clamp(min=1.0)).mean()
        kl = F.kl_div(torch.log_softmax(logits[-1:], -1), torch.log_softmax(reference[0], -1), log_target=True,
                      reduction="batchmean")
        return nll, kl

    # the same loss from the final hidden states, the head read once per step (head_logprob): the answer tokens'
    # log-probabilities (hard rows) and KL(unedited ‖ edited) of the bare subject's row (soft, from its unedited
    # logits), as F.kl_div computes it with log_target and batchmean over its one row. The first call, at δ = 0,
    # is where the unedited logits come from: the KL row records its own logits in that call's head pass
    # (head_logprob's reference_out; KL and its gradient are 0 there, as they are mathematically)
    rows_t = torch.cat([targets_t, torch.tensor([-1], device=dev)])

    def hidden_objective(deltas: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if not reference and any(bool(d.detach().any()) for d in deltas):
            hidden_objective([torch.zeros_like(d) for d in deltas])  # a first call away from δ = 0: record first
        with ExitStack() as stack:
            for m, d in zip(sites, deltas):
                stack.enter_context(_add_at(m, d, all_rows, delta_cols))
            got = stack.enter_context(deferred_head(model))
            runner.forward()
        if reference:
            f = head_logprob(model, got[-1][sel_r, sel_c], rows_t, reference[0])
        else:
            out = torch.empty(1, output_head(model)[0].shape[0], device=dev)
            f = head_logprob(model, got[-1][sel_r, sel_c], rows_t, reference_out=out)
            reference.append(out)
        if not bool(torch.isfinite(f).all()):  # a logit ~88 above the unedited one: expm1 overflows in float32
            return logits_objective(deltas)
        per_row = torch.zeros(n, device=f.device).index_add(0, owner_t, f[:-1])
        nll = (-per_row / counts.clamp(min=1.0)).mean()
        return nll, f[-1]

    return init_norms, (hidden_objective if fused else logits_objective)

def optimize_target(lm: LoadedModel, layer: int, request: Request, prefixes: Sequence[str],
                    cfg: Any) -> tuple[torch.Tensor, dict[str, Any]]:  # cfg: locate.LocateConfig (above this module)
    """The vector ``δ`` ``[hidden]`` to add to ``layer``'s down-projection output at the subject's last token.

    Loss per step (ROME's ``compute_v``): ``nll_loss_factor`` · mean answer NLL over the prefixed prompts +
    ``kl_factor`` · KL(next-token distribution after the bare subject, before vs after) + ``v_weight_decay`` ·
    (‖δ‖ / ‖original output‖)²; Adam, early stop at ``early_stop_nll``, norm clamp after every step.
    ``cfg.fast_forward`` picks :func:`_suffix_objective` (default) or :func:`_full_objective` (same values up to
    float rounding). Raises ``EditError`` on a non-finite loss.
    """
    adapter = lm.adapter
    sites: list[nn.Module] = [adapter.down_proj(layer)]
    if cfg.optimize_attention:
        sites.append(attention_module(adapter, layer))
    build = _suffix_objective if cfg.fast_forward else _full_objective
    init_norms, objective = build(lm, layer, request, prefixes, sites)
    deltas = [torch.zeros(adapter.hidden_size, device=lm.device, requires_grad=True) for _ in sites]
    opt = torch.optim.Adam(deltas, lr=cfg.v_lr)
    history: list[float] = []
    for _ in range(max(1, cfg.v_steps)):
        nll, kl = objective(deltas)
        decay = sum((d.norm() / n.clamp(min=1e-8)) ** 2 for d, n in zip(deltas, init_norms))
        loss = cfg.nll_loss_factor * nll + cfg.kl_factor * kl + cfg.v_weight_decay * decay
        history.append(float(nll.detach()))
        if not torch.isfinite(loss):
            raise EditError(f"record {request.record.example_id!r} ({request.language}): non-finite loss while "
                            f"searching the target vector")
        if history[-1] < cfg.early_stop_nll:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for d, n in zip(deltas, init_norms):
                limit = cfg.clamp_norm_factor * float(n)
                if float(d.norm()) > limit > 0:
                    d.mul_(limit / float(d.norm()))
    info = {"target_nll": history, "delta_norm": float(deltas[0].detach().norm()), "out_norm": float(init_norms[0])}
    if cfg.optimize_attention:
        info["attention_delta_norm"] = float(deltas[1].detach().norm())
    return deltas[0].detach().to(torch.float64).cpu(), info


__all__ = ["attention_module", "optimize_target"]
