"""Greedy (argmax) continuations of prompts, batched, each stopped at the model's first EOS: the predictions
NS and QS score (:mod:`memla_utils.evaluate_metrics`).

memla4mke ``utils/evaluator.py`` continues each prompt greedily for as many tokens as the answer has. Deliberate
differences to memla4mke: greedy decoding appends token ids instead of decoding and re-tokenising the text after
every step (identical for the usual case, and well defined for zh/ja/th), and a continuation stops at the model's
first EOS (:func:`greedy_continuations`): memla4mke, one prompt at a time, kept predicting after EOS; batched
generation pads finished rows instead, so EOS and padding ids counted as predicted tokens and a prompt's NS
depended on the other prompts in its batch. Now EOS ends the continuation (it and anything after it are not
predicted tokens), so NS / QS do not depend on batch size, composition or padding side.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .head_projection import can_defer, deferred_head, project_blocks
from .models import LoadedModel
from .prefix_scoring import PADDING_SLACK, cache_kwarg, cache_of
from .text import encode_prompt, normalize_prompt


def eos_token_ids(lm: LoadedModel) -> list[int]:
    """Every id that ends a continuation: the tokenizer's EOS and the model config's and generation config's
    ``eos_token_id`` (an int or a list, e.g. Gemma 3 instruct's ``<eos>`` and ``<end_of_turn>``)."""
    found: set[int] = set()
    sources = (getattr(lm.tokenizer, "eos_token_id", None), getattr(lm.model.config, "eos_token_id", None),
               getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None))
    for src in sources:
        if src is None:
            continue
        found.update(int(i) for i in ([src] if isinstance(src, int) else src))
    return sorted(found)


def cut_at_eos(ids: Sequence[int], eos_ids: Sequence[int] | set[int]) -> list[int]:
    """The ids before the first EOS (EOS and whatever follows it, padding included, are not predicted tokens)."""
    stop = set(eos_ids)
    out: list[int] = []
    for i in ids:
        if i in stop:
            break
        out.append(int(i))
    return out


@torch.no_grad()
def _greedy_cache_free(lm: LoadedModel, rows: list[list[int]], steps: list[int], eos: set[int],
                       pad: int) -> list[list[int]]:
    """Greedy decoding with right padding and no KV cache: every step re-runs the unfinished rows in full."""
    seqs = [list(r) for r in rows]
    out: list[list[int]] = [[] for _ in rows]
    done = [k <= 0 for k in steps]
    while True:
        active = [b for b in range(len(rows)) if not done[b]]
        if not active:
            return out
        width = max(len(seqs[b]) for b in active)
        ids = torch.full((len(active), width), pad, dtype=torch.long)
        att = torch.zeros_like(ids)
        for i, b in enumerate(active):
            ids[i, :len(seqs[b])] = torch.tensor(seqs[b])
            att[i, :len(seqs[b])] = 1
        last = att.sum(1) - 1
        logits = lm.model(input_ids=ids.to(lm.device), attention_mask=att.to(lm.device)).logits
        nxt = logits[torch.arange(len(active), device=logits.device), last.to(logits.device)].argmax(-1).tolist()
        for b, t in zip(active, nxt):
            if t in eos:
                done[b] = True
                continue
            out[b].append(int(t))
            seqs[b].append(int(t))
            done[b] = len(out[b]) >= steps[b]


def _generation_chunks(lengths: Sequence[int], prompt_lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of the prompts, in batches of similar prompt length (any continuation lengths).

    Sorted by (prompt length, index) and cut where a batch is full or a longer prompt would pad the batch by more
    than :data:`memla_utils.prefix_scoring.PADDING_SLACK` of its real tokens: little left padding is computed.
    Rows of one batch want different numbers of tokens; :func:`_greedy_kv` drops each row from the batch (and
    from the key/value cache) once it has its tokens, so no row decodes a step beyond its own length. Prompts
    with length <= 0 are left out.
    """
    order = sorted((i for i, k in enumerate(lengths) if k > 0), key=lambda i: (prompt_lengths[i], i))
    chunks: list[list[int]] = []
    real = 0
    for i in order:
        last = chunks[-1] if chunks else []
        if (last and len(last) < batch_size
                and (len(last) + 1) * prompt_lengths[i] <= (1 + PADDING_SLACK) * (real + prompt_lengths[i])):
            last.append(i)
            real += prompt_lengths[i]
        else:
            chunks.append([i])
            real = prompt_lengths[i]
    return chunks


@dataclass
class _Decoding:
    """One left-padded batch of :func:`_greedy_kv_batches` while it decodes: its rows still decoding (``live``:
    row of the batch -> index into the batch's rows), their mask, last positions, cache and next tokens."""

    steps: list[int]
    ids: torch.Tensor
    att: torch.Tensor
    pos: torch.Tensor
    out_ids: list[list[int]]
    live: list[int]
    cache: Any = None
    nxt: torch.Tensor | None = None

    def forward(self, model: torch.nn.Module, name: str) -> Any:
        """The batch's next forward: the prefill, then one token per live row."""
        if self.cache is None:
            return model(input_ids=self.ids, attention_mask=self.att, position_ids=self.pos, use_cache=True,
                         logits_to_keep=1)
        return model(input_ids=self.nxt[:, None], attention_mask=self.att, position_ids=self.pos[:, -1:],
                     use_cache=True, **{name: self.cache})

    def advance(self, nxt: torch.Tensor, eos: set[int]) -> None:
        """Append the predicted tokens; drop rows that are done (EOS or enough tokens) from the batch and cache."""
        keep: list[int] = []
        for j, b in enumerate(self.live):
            t = int(nxt[j])
            if t in eos:
                continue
            self.out_ids[b].append(t)
            if len(self.out_ids[b]) < self.steps[b]:
                keep.append(j)
        if len(keep) < len(self.live):
            self.live = [self.live[j] for j in keep]
            if not keep:
                return
            sel = torch.tensor(keep, device=self.att.device)
            self.cache.batch_select_indices(sel)
            self.att, nxt, self.pos = self.att[sel], nxt[sel], self.pos[sel]
        self.att = torch.cat([self.att, self.att.new_ones((len(self.live), 1))], dim=1)
        self.pos = self.pos[:, -1:] + 1
        self.nxt = nxt


@torch.no_grad()
def _greedy_kv_batches(lm: LoadedModel, batches: Sequence[list[list[int]]], steps: Sequence[list[int]],
                       eos: set[int], pad: int) -> list[list[list[int]]]:
    """Greedy decoding of several left-padded batches with the model's key/value cache, all batches one step at
    a time: one prefill per batch, then one token per step for its rows still decoding. A row leaves its batch
    (and the cache, ``Cache.batch_select_indices``) once it has ``steps[b]`` tokens or predicts an EOS; position
    ids follow each row's real tokens as in ``model.generate`` (``attention_mask.cumsum(-1) - 1``), so a row's
    continuation equals generate's. Where the head can be deferred (:mod:`memla_utils.head_projection`), the
    batches' rows of one step share one vocabulary projection; otherwise each forward projects its own rows.
    Returns, per batch, the continuation of each row."""
    model = lm.model
    defer, name = can_defer(model), cache_kwarg(model)
    states = []
    for rows, st in zip(batches, steps):
        ids, att = _pad_left(rows, pad)
        ids, att = ids.to(lm.device), att.to(lm.device)
        states.append(_Decoding(list(st), ids, att, (att.cumsum(-1) - 1).clamp(min=0), [[] for _ in rows],
                                list(range(len(rows)))))
    while True:
        active = [s for s in states if s.live]
        if not active:
            return [s.out_ids for s in states]
        with deferred_head(model) if defer else contextlib.nullcontext([]) as hidden:
            nxt = []
            for s in active:
                out = s.forward(model, name)
                s.cache = cache_of(out)
                if not defer:
                    nxt.append(out.logits[:, -1].argmax(-1))
        if defer:
            h = torch.cat([x[:, -1] for x in hidden])
            best = torch.cat([logits.argmax(-1) for _, logits in project_blocks(model, h)])
            nxt = list(best.split([len(s.live) for s in active]))
        for s, n in zip(active, nxt):
            s.advance(n, eos)


def _greedy_kv(lm: LoadedModel, rows: list[list[int]], steps: list[int], eos: set[int],
               pad: int) -> list[list[int]]:
    """:func:`_greedy_kv_batches` of one batch."""
    return _greedy_kv_batches(lm, [rows], [steps], eos, pad)[0]


def _pad_left(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, width - len(r):] = torch.tensor(list(r))
        att[b, width - len(r):] = 1
    return ids, att


@torch.no_grad()
def greedy_continuations(lm: LoadedModel, prompts: Sequence[str], n_tokens: Sequence[int], *,
                         batch_size: int = 16, padding_side: str = "left") -> list[list[int]]:
    """Greedy (argmax) continuation of each prompt: at most ``n_tokens[i]`` token ids, stopped at the first EOS.

    Generation starts from :func:`memla_utils.text.normalize_prompt` of each prompt (as in the prompt/answer
    join). Any of :func:`eos_token_ids` ends a continuation and is not part of it, so the result of one prompt
    does not depend on ``batch_size``, on the other prompts in its batch or on ``padding_side`` (up to float
    rounding of near-ties): ``"left"`` (default) decodes left-padded batches of prompts of similar length with
    the model's key/value cache, dropping each row once it is done, all batches one step at a time with one
    vocabulary projection per step (:func:`_generation_chunks`, :func:`_greedy_kv_batches`; ``batch_size``
    prompts at most per batch), ``"right"`` a cache-free loop over right-padded rows (slower; a cross-check).
    Returns
    ``len(prompts)`` lists of ids (possibly empty), in the order of ``prompts``.
    """
    if len(prompts) != len(n_tokens):
        raise ValueError(f"{len(prompts)} prompts but {len(n_tokens)} lengths")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    eos = eos_token_ids(lm)
    lengths = [int(k) for k in n_tokens]
    rows = [encode_prompt(tok, normalize_prompt(p)) for p in prompts]
    if padding_side == "right":
        out: list[list[int]] = []
        for s in range(0, len(rows), batch_size):
            out.extend(_greedy_cache_free(lm, rows[s:s + batch_size], lengths[s:s + batch_size], set(eos), pad))
        return out
    result: list[list[int]] = [[] for _ in prompts]
    chunks = _generation_chunks(lengths, [len(r) for r in rows], batch_size)
    decoded = _greedy_kv_batches(lm, [[rows[i] for i in c] for c in chunks], [[lengths[i] for i in c] for c in chunks],
                                 set(eos), pad)
    for chunk, got in zip(chunks, decoded):
        for i, ids in zip(chunk, got):
            result[i] = ids
    return result


__all__ = ["cut_at_eos", "eos_token_ids", "greedy_continuations"]
