"""Losses shared by the gradient-based baselines (FT, FT-L, LoRA, MEND, the locate-then-edit target search).

Every loss is the teacher-forced NLL of an answer after a prompt, built with :func:`memla_utils.text.build_batch`
(token-level joining). Only the logits at answer positions are computed (``logits_to_keep``): with Gemma's 262k
vocabulary the output projection would otherwise dominate the cost of every step on CPU.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..mkeb.record import Record
from ..text import PromptAnswerBatch, build_batch


def logits_at(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              columns: torch.Tensor) -> torch.Tensor:
    """Logits ``[B, len(columns), V]`` at the given sequence positions only."""
    try:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=columns).logits
        if logits.shape[1] == columns.numel():
            return logits
    except TypeError:  # pragma: no cover - architectures without logits_to_keep
        pass
    return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, columns]  # pragma: no cover


def answer_nll(model: nn.Module, batch: PromptAnswerBatch) -> torch.Tensor:
    """Mean NLL per answer token for every row ``[B]`` (differentiable; float32)."""
    dev = next(model.parameters()).device
    batch = batch.to(dev)
    columns = torch.nonzero(batch.answer_mask.any(0)).flatten()
    logits = logits_at(model, batch.input_ids, batch.attention_mask, columns)
    logp = torch.log_softmax(logits.float(), dim=-1)
    targets = batch.answer_targets[:, columns]
    mask = batch.answer_mask[:, columns].float()
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask
    return -picked.sum(-1) / mask.sum(-1).clamp(min=1.0)


def edit_batch(tokenizer, record: Record, language: str, *, answer: str | None = None,
               prompts: Sequence[str] | None = None) -> PromptAnswerBatch:
    """The edit prompt (or ``prompts``) of ``record`` in ``language`` followed by ``target_new`` (or ``answer``)."""
    view = record.for_language(language)
    prompts = [view.prompt] if prompts is None else list(prompts)
    target = view.target_new if answer is None else answer
    return build_batch(tokenizer, prompts, [target] * len(prompts), language)


@torch.no_grad()
def new_vs_old(model: nn.Module, tokenizer, record: Record, language: str) -> dict[str, float]:
    """Mean log P(target_new) and, when present, log P(target_true) on the edit prompt (for logs and tests)."""
    view = record.for_language(language)
    out = {"logp_new": -float(answer_nll(model, edit_batch(tokenizer, record, language))[0])}
    if view.target_true:
        out["logp_old"] = -float(answer_nll(model, edit_batch(tokenizer, record, language,
                                                              answer=view.target_true))[0])
    return out


def trainable_copy_guard(model: nn.Module) -> dict[str, bool]:
    """Remember every parameter's ``requires_grad`` so an editor can switch some on and restore them after."""
    return {n: p.requires_grad for n, p in model.named_parameters()}


def restore_requires_grad(model: nn.Module, state: dict[str, bool]) -> None:
    for n, p in model.named_parameters():
        if n in state:
            p.requires_grad_(state[n])


def optimize(params: Sequence[torch.Tensor], loss_fn, *, steps: int, lr: float, early_stop: float = 0.0,
             after_step=None, weight_decay: float = 0.0) -> list[float]:
    """Adam on ``params`` for up to ``steps`` steps; ``loss_fn()`` returns ``(loss, nll)``; stops once nll <= early_stop.

    ``after_step`` (e.g. FT-L's norm projection) runs under ``no_grad`` after every update.
    """
    opt = torch.optim.Adam(list(params), lr=lr, weight_decay=weight_decay)
    history: list[float] = []
    for _ in range(max(1, steps)):
        loss, nll = loss_fn()
        history.append(float(nll.detach()))
        if not torch.isfinite(loss):
            raise ValueError("non-finite loss")
        if history[-1] <= early_stop:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        if after_step is not None:
            with torch.no_grad():
                after_step()
    return history
