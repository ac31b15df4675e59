"""Teacher-forced scoring of sentences and free text: total NLL (perplexity) and answer hits (accuracy).

One job: run a (possibly edited) model over token rows in length-sorted batches and return, per row and in total,
the summed negative log-likelihood (nats) of the scored tokens and the greedy hits on the answer tokens, projecting
only the scored positions through the vocabulary head where the head can be deferred
(:mod:`memla_utils.head_projection`). The general-ability probe (:mod:`memla_utils.general_probe`) scores its
true-fact sentences and prose chunks with it. MEMLA §5's general-ability evaluation is not released with memla4mke;
perplexity = exp(total NLL / tokens) over every token after BOS, as in this companion's general-ability study
(:mod:`memla_utils.general`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .head_projection import can_defer, deferred_head, project_blocks
from .models import LoadedModel
from .text import encode_prompt, join_prompt_answer


@dataclass
class SentenceScores:
    """One teacher-forced pass over ``prompt ⧺ answer`` sentences: NLL for perplexity, answer hits for accuracy.

    ``nll``/``n_tokens`` are totals; ``row_nll``/``row_tokens`` the same per sentence (for subsets).
    """

    nll: float            # summed over every scored token (nats)
    n_tokens: int         # tokens scored (all after BOS / after the context prefix)
    exact_match: list[float]
    token_accuracy: list[float]
    row_nll: list[float] = field(default_factory=list)
    row_tokens: list[int] = field(default_factory=list)


def _length_batches(rows: Sequence[list[int]], batch_size: int) -> list[list[int]]:
    """Indices of ``rows`` in batches of ``batch_size``, longest rows first (ties in input order), so that each
    batch pads its rows to a similar length: the prose chunks are 23-176 tokens long, and a batch of them in file
    order was padded to its longest row (padding cost as much as the text)."""
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i]), i))
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def _scored_positions(lm: LoadedModel, ids: torch.Tensor, att: torch.Tensor, keep: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL (nats, float32) and greedy hit of every position where ``keep [B, T-1]`` is set.

    Position t predicts token t + 1. Returns ``(nll [N], hit [N])`` in row-major order of ``keep``. With a
    deferrable head (:func:`memla_utils.head_projection.can_defer`) only those N positions go through the
    vocabulary projection (the padding and the context prefix do not), in blocks of
    :data:`~memla_utils.head_projection.HEAD_BLOCK_ROWS` rows; otherwise the full logits are computed and the
    positions taken from them. Both give the same values (``tests/unit/test_general.py``).
    """
    targets = ids[:, 1:][keep]
    if can_defer(lm.model):
        with deferred_head(lm.model) as got:
            lm.model(input_ids=ids, attention_mask=att)
        hidden = got[-1][:, :-1][keep]
        nll = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        hit = torch.empty(hidden.shape[0], dtype=torch.bool, device=hidden.device)
        for start, logits in project_blocks(lm.model, hidden):
            stop = start + logits.shape[0]
            logits = logits.float()
            nll[start:stop] = torch.nn.functional.cross_entropy(logits, targets[start:stop], reduction="none")
            hit[start:stop] = logits.argmax(-1) == targets[start:stop]
        return nll, hit
    logits = lm.model(input_ids=ids, attention_mask=att).logits[:, :-1].float()[keep]
    return (torch.nn.functional.cross_entropy(logits, targets, reduction="none"), logits.argmax(-1) == targets)


@torch.no_grad()
def _teacher_forced(lm: LoadedModel, rows: Sequence[list[int]], starts: Sequence[int],
                    answer_starts: Sequence[int], batch_size: int) -> SentenceScores:
    """Score token rows: position t predicts token t for t >= ``starts[i]``; answer hits from ``answer_starts``.

    Rows are batched by length (:func:`_length_batches`); the per-row results come back in input order, and a
    row's values do not depend on the batch it was scored in beyond float rounding. Totals sum the rows in input
    order.
    """
    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    dev = next(lm.model.parameters()).device
    n = len(rows)
    row_nll, row_tokens = [0.0] * n, [0] * n
    exact_match, token_accuracy = [0.0] * n, [0.0] * n
    for batch in _length_batches(rows, batch_size):
        width = max(len(rows[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        att = torch.zeros_like(ids)
        scored = torch.zeros((len(batch), width), dtype=torch.bool)   # position t predicts token t
        answer = torch.zeros_like(scored)
        for b, i in enumerate(batch):
            r = rows[i]
            ids[b, :len(r)] = torch.tensor(r)
            att[b, :len(r)] = 1
            scored[b, starts[i]:len(r)] = True
            answer[b, answer_starts[i]:len(r)] = True
        keep = (scored | answer)[:, 1:]
        nll_kept, hit_kept = _scored_positions(lm, ids.to(dev), att.to(dev), keep.to(dev))
        nll = torch.zeros(keep.shape, dtype=torch.float32, device=dev)
        hit = torch.zeros(keep.shape, dtype=torch.bool, device=dev)
        nll[keep], hit[keep] = nll_kept, hit_kept
        mask = scored[:, 1:].to(dev)
        amask = answer[:, 1:].to(dev)
        per_row_nll = (nll * mask).sum(-1).cpu().tolist()
        per_row_tokens = mask.sum(-1).cpu().tolist()
        hits = (hit & amask).sum(-1)
        n_ans = amask.sum(-1)
        acc = (hits / n_ans.clamp(min=1)).float().cpu().tolist()
        em = (hits == n_ans).float().cpu().tolist()
        for b, i in enumerate(batch):
            row_nll[i], row_tokens[i] = per_row_nll[b], int(per_row_tokens[b])
            token_accuracy[i], exact_match[i] = acc[b], em[b]
    return SentenceScores(float(sum(row_nll)), int(sum(row_tokens)), exact_match, token_accuracy, row_nll,
                          row_tokens)


def score_sentences(lm: LoadedModel, pairs: Sequence[tuple[str, str]], language: str, *, prefix: str = "",
                    batch_size: int = 16) -> SentenceScores:
    """Score true-fact sentences in one forward per batch (the vocabulary projection dominates the cost).

    Prompt and answer are joined by :func:`memla_utils.text.join_prompt_answer`. A ``prefix`` (an in-context
    edit's demonstrations) is prepended as context: conditioned on, not scored.
    """
    tok = lm.tokenizer
    ctx = encode_prompt(tok, prefix) if prefix else []
    rows, starts, answer_starts = [], [], []
    for prompt, answer in pairs:
        joined = join_prompt_answer(tok, prompt, answer, language)
        p = joined.prompt_ids[joined.n_special_prefix:] if ctx else joined.prompt_ids
        a = joined.answer_ids
        rows.append(ctx + p + a)
        starts.append(max(1, len(ctx)))
        answer_starts.append(len(ctx) + len(p))
    return _teacher_forced(lm, rows, starts, answer_starts, batch_size)


def score_text(lm: LoadedModel, texts: Sequence[str], *, prefix: str = "", batch_size: int = 16) -> SentenceScores:
    """Teacher-forced NLL of free text: every token after BOS (after ``prefix``, conditioned on) is scored."""
    tok = lm.tokenizer
    ctx = encode_prompt(tok, prefix) if prefix else []
    rows, starts = [], []
    for t in texts:
        ids = list(tok(t, add_special_tokens=False)["input_ids"]) if ctx else encode_prompt(tok, t)
        rows.append(ctx + ids)
        starts.append(max(1, len(ctx)))
    return _teacher_forced(lm, rows, starts, [len(r) for r in rows], batch_size)


def sentence_nll(lm: LoadedModel, pairs: Sequence[tuple[str, str]], language: str, *, prefix: str = "",
                 batch_size: int = 16) -> tuple[float, int]:
    """Total NLL (nats) and number of scored tokens of the sentences (see :func:`score_sentences`)."""
    sc = score_sentences(lm, pairs, language, prefix=prefix, batch_size=batch_size)
    return sc.nll, sc.n_tokens


__all__ = ["SentenceScores", "score_sentences", "score_text", "sentence_nll"]
