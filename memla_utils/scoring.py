"""Teacher-forced answer probabilities: the primitive under metrics, editor losses and attribution targets.

Log-probabilities are accumulated in float32 whatever the model's dtype.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .head_projection import can_defer, deferred_head, project_blocks
from .text import PromptAnswerBatch, build_batch


def token_logprobs(logits: torch.Tensor, batch: PromptAnswerBatch) -> torch.Tensor:
    """Per-position log P(answer token) ``[B, T]`` (zero outside the answer)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, batch.answer_targets.unsqueeze(-1)).squeeze(-1)
    return picked * batch.answer_mask


def answer_logits(model: nn.Module, batch: PromptAnswerBatch) -> tuple[torch.Tensor, PromptAnswerBatch]:
    """Logits only at the columns that predict answer tokens, and the batch narrowed to those columns.

    The vocabulary projection dominates small multilingual models (Gemma 3 270M: 262k x 640), so projecting only
    the answer columns (``logits_to_keep`` with an index tensor) makes scoring several times faster.
    """
    cols = torch.nonzero(batch.answer_mask.any(0)).flatten()
    try:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       logits_to_keep=cols.to(batch.input_ids.device)).logits
    except TypeError:  # architectures without logits_to_keep
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, cols]
    narrowed = PromptAnswerBatch(batch.input_ids, batch.attention_mask, batch.answer_mask[:, cols],
                                 batch.answer_targets[:, cols], batch.prompt_lengths, batch.answer_lengths)
    return logits, narrowed


def answer_logprob(model: nn.Module, batch: PromptAnswerBatch) -> torch.Tensor:
    """Sum over answer tokens of log P(token | prefix) for every row: ``[B]`` (gradients flow if enabled)."""
    dev = next(model.parameters()).device
    logits, narrowed = answer_logits(model, batch.to(dev))
    return token_logprobs(logits, narrowed).sum(-1)


def _answer_scores(model: nn.Module, batch: PromptAnswerBatch) -> tuple[torch.Tensor, torch.Tensor, PromptAnswerBatch]:
    """Per-position log P(answer token) ``[B, C]`` (zero outside the answer), greedy hits ``[B, C]`` and the batch
    narrowed to the ``C`` answer columns (no gradients).

    With a deferrable head (:func:`memla_utils.head_projection.can_defer`) only the answer positions go through
    the vocabulary projection, in blocks of at least 16 rows: the union of a batch's answer columns is several
    times the answer positions (rows of other lengths), and a row's float32 logits are the same bits in any block
    of >= 16 rows on this CPU's BLAS, so the values equal :func:`answer_logits`' (``tests/unit/test_scoring.py``).
    """
    if not can_defer(model):
        logits, narrowed = answer_logits(model, batch)
        return token_logprobs(logits, narrowed), (logits.argmax(-1) == narrowed.answer_targets) & \
            narrowed.answer_mask, narrowed
    cols = torch.nonzero(batch.answer_mask.any(0)).flatten()
    with deferred_head(model) as got:
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
              logits_to_keep=cols.to(batch.input_ids.device))
    narrowed = PromptAnswerBatch(batch.input_ids, batch.attention_mask, batch.answer_mask[:, cols],
                                 batch.answer_targets[:, cols], batch.prompt_lengths, batch.answer_lengths)
    keep = narrowed.answer_mask
    hidden, targets = got[-1][keep], narrowed.answer_targets[keep]
    picked = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    hit = torch.empty(hidden.shape[0], dtype=torch.bool, device=hidden.device)
    for start, logits in project_blocks(model, hidden):
        stop = start + logits.shape[0]
        logp = torch.log_softmax(logits.float(), dim=-1)
        picked[start:stop] = logp.gather(-1, targets[start:stop].unsqueeze(-1)).squeeze(-1)
        hit[start:stop] = logits.argmax(-1) == targets[start:stop]
    lp = torch.zeros(keep.shape, dtype=torch.float32, device=hidden.device)
    hits = torch.zeros(keep.shape, dtype=torch.bool, device=hidden.device)
    lp[keep], hits[keep] = picked, hit
    return lp, hits, narrowed


@torch.no_grad()
def score_answers(model: nn.Module, tokenizer, prompts: Sequence[str], answers: Sequence[str],
                  languages: Sequence[str] | str, *, batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Log-probability, per-token accuracy and exact match of each answer (teacher forced), on CPU tensors.

    Returns ``logprob`` (sum), ``token_accuracy`` (share of answer tokens that are the argmax) and
    ``exact_match`` (all answer tokens are the argmax), each ``[N]`` float32.
    """
    langs = [languages] * len(prompts) if isinstance(languages, str) else list(languages)
    out: dict[str, list[torch.Tensor]] = {"logprob": [], "token_accuracy": [], "exact_match": []}
    dev = next(model.parameters()).device
    for s in range(0, len(prompts), batch_size):
        batch = build_batch(tokenizer, prompts[s:s + batch_size], answers[s:s + batch_size],
                            langs[s:s + batch_size]).to(dev)
        lp, hit, batch = _answer_scores(model, batch)
        out["logprob"].append(lp.sum(-1).cpu())
        n = batch.answer_mask.sum(-1).clamp(min=1)
        out["token_accuracy"].append((hit.sum(-1) / n).float().cpu())
        out["exact_match"].append((hit.sum(-1) == batch.answer_mask.sum(-1)).float().cpu())
    if not prompts:
        return {k: torch.zeros(0) for k in out}
    return {k: torch.cat(v) for k, v in out.items()}
