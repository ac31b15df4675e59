"""Teacher-forced answer scores with every prompt run once, however many answers it is scored with.

:func:`score_answers_shared` returns what :func:`memla_utils.scoring.score_answers` returns (the same rows,
the same definitions) with less arithmetic, for evaluation, where each prompt is scored with two answers
(``target_new`` and ``target_true``) and one record brings dozens of rows in 12 languages:

- **Shared prefixes.** Rows with the same prompt text form a group; the ids the group's rows have in common
  (the prompt, and more when the answers start alike) go through the model once, right padded, with a KV
  cache; the cache is then repeated for the group's rows (``Cache.batch_select_indices``) and each row's own
  remaining ids are run on it, with explicit position ids (a row's suffix continues at the length of its own
  prefix, whatever the padding between them). Same function, fewer tokens: on MKEB about 40% of the tokens.
  Groups of *different* prompts whose ids agree on at least :data:`SHARED_PREFIX_MIN_IDS` leading ids become
  one group: a block of in-context demonstrations (IKE puts the same ~250 ids before every prompt of an
  evaluation language) then runs once per language instead of once per prompt. MKEB's own prompts are far
  shorter than that, so without such a block the groups are exactly the per-prompt ones.
- **Logits only where they are needed.** The vocabulary projection (Gemma 3 270M: 262k x 640, more than the
  rest of the model per token) runs only at the positions that predict an answer token, per row (a boolean
  ``logits_to_keep``), not at every column any row of the batch needs; for the project's architectures it runs
  once for the hidden states of all chunks (:mod:`memla_utils.head_projection`), not once per forward.
- **Length-sorted batches**, so little padding is computed.

Tokenisation is :func:`memla_utils.text.join_prompt_answer`, as everywhere. The numbers equal
:func:`score_answers`' up to float rounding (different matrix shapes sum in a different order; the tests check
agreement to 1e-4 and identical comparisons). Models whose attention depends on the layout of the cache rather
than on positions (a sliding window shorter than the longest row: the holes left by padding would shift it) and
caches without ``batch_select_indices`` are scored without sharing (still with the other two savings).
"""
from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .head_projection import can_defer, deferred_head, project_blocks
from .text import join_prompt_answer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Row:
    """One prompt/answer pair: ``ids`` = prompt ids + answer ids; logits at positions ``first .. len(ids) - 2``
    predict the answer tokens ``ids[first + 1:]`` (``first`` = number of prompt ids - 1)."""

    ids: list[int]
    first: int


@dataclass(frozen=True)
class _Group:
    """Rows (indices into the call's rows) run on one shared prefix of ``k`` ids."""

    rows: list[int]
    k: int


def _rows(tokenizer, prompts: Sequence[str], answers: Sequence[str], langs: Sequence[str]) -> list[_Row]:
    """Tokenised rows, with :func:`memla_utils.text.build_batch`'s errors for unusable pairs."""
    out = []
    for prompt, answer, lang in zip(prompts, answers, langs):
        joined = join_prompt_answer(tokenizer, prompt, answer, lang)
        if not joined.prompt_ids:
            raise ValueError(f"prompt {prompt!r} gives no token before answer {answer!r} and the tokenizer adds no "
                             f"BOS: the first answer token cannot be scored")
        out.append(_Row(joined.prompt_ids + joined.answer_ids, len(joined.prompt_ids) - 1))
    return out


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    k = min(len(s) for s in seqs)
    for i in range(k):
        first = seqs[0][i]
        if any(s[i] != first for s in seqs[1:]):
            return i
    return k


#: Leading ids that rows of different prompts must have in common to share one prefix (:func:`_groups`): far
#: more than an MKEB prompt has (about 5-30 ids), far fewer than a block of in-context demonstrations (IKE, 8
#: demonstrations: about 250).
SHARED_PREFIX_MIN_IDS = 64


def _group_of(rows: Sequence[_Row], members: list[int]) -> list[_Group]:
    """One group sharing the ids ``members`` have in common (each keeps >= 1 id of its own unless it is alone),
    or single rows when they share nothing."""
    seqs = [rows[i].ids for i in members]
    k = min(_common_prefix(seqs), min(len(s) for s in seqs) - 1) if len(members) > 1 else len(seqs[0]) - 1
    if k < 1:  # nothing to share (or a one-token row): every row alone
        return [_Group([i], len(rows[i].ids) - 1) for i in members]
    return [_Group(members, k)]


def _groups(prompts: Sequence[str], rows: Sequence[_Row], share: bool,
            min_shared: int = SHARED_PREFIX_MIN_IDS) -> list[_Group]:
    """Rows with the same prompt text share the ids they have in common; every row keeps >= 1 id of its own
    unless it is the group's only row. A group whose rows differ from the first id splits into single rows.
    Prompts whose ids agree on at least ``min_shared`` leading ids form one group (in-context demonstrations)."""
    if not share:
        return [_Group([i], len(r.ids) - 1) for i, r in enumerate(rows)]
    by_prompt: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        by_prompt.setdefault(p, []).append(i)
    clusters: list[list[list[int]]] = []  # prompts (their rows) in id order; neighbours sharing >= min_shared ids
    for members in sorted(by_prompt.values(), key=lambda m: rows[m[0]].ids):
        first = rows[clusters[-1][0][0]].ids if clusters else None
        if first is not None and _common_prefix([first, rows[members[0]].ids]) >= min_shared:
            clusters[-1].append(members)
        else:
            clusters.append([members])
    out: list[_Group] = []
    for cluster in sorted(clusters, key=lambda c: c[0][0]):  # the inputs' order, as per prompt before
        if len(cluster) == 1:
            out.extend(_group_of(rows, cluster[0]))
        else:
            out.extend(_group_of(rows, sorted(i for members in cluster for i in members)))
    return out


def _pad_right(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, s in enumerate(seqs):
        if s:
            ids[b, :len(s)] = torch.tensor(s)
            att[b, :len(s)] = 1
    return ids, att


def _accepts(model: nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _masks_logits_to_keep(model: nn.Module) -> bool:
    """True when the model's forward takes a 2-D boolean ``logits_to_keep`` (transformers' ``slice_logits_to_keep``,
    used by the module that defines the model class: Llama, Qwen2, Gemma 3, GPT-2, BLOOM in transformers 5)."""
    module = inspect.getmodule(type(model))
    return _accepts(model, "logits_to_keep") and hasattr(module, "slice_logits_to_keep")


def _forward(model: nn.Module, keep: torch.Tensor, *, defer: bool = False, **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """``(logits at the True positions of keep [N, V], the returned cache)`` for one forward; with ``defer`` the
    final hidden states there ``[N, H]`` instead (:func:`memla_utils.head_projection.deferred_head`).

    Projects only those positions where the model supports it (module docstring), else the union of their
    columns (1-D ``logits_to_keep``) or every column, and picks the positions from that.
    """
    n = int(keep.sum())
    with deferred_head(model) if defer else contextlib.nullcontext([]) as hidden:
        if _masks_logits_to_keep(model):
            out = model(**kwargs, logits_to_keep=keep)
            got = hidden[0] if defer else out.logits
            if got.dim() == 2 and got.shape[0] == n:
                return got, cache_of(out)
            what = ("hidden states", "hidden") if defer else ("logits", "vocabulary")
            raise RuntimeError(f"{type(model).__name__}: a boolean logits_to_keep gave {what[0]} of shape "
                               f"{tuple(got.shape)}, expected ({n}, {what[1]})")
        cols = torch.nonzero(keep.any(0)).flatten()
        if _accepts(model, "logits_to_keep"):
            out = model(**kwargs, logits_to_keep=cols)
            return (hidden[0] if defer else out.logits)[keep[:, cols]], cache_of(out)
        out = model(**kwargs)
        return (hidden[0] if defer else out.logits)[keep], cache_of(out)


def cache_of(out: Any) -> Any:
    """The KV cache a forward returned (``cache`` in transformers >= 5.x, ``past_key_values`` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def cache_kwarg(model: nn.Module) -> str:
    """The name under which ``model.forward`` takes the KV cache (``cache`` or ``past_key_values``)."""
    return "cache" if _accepts(model, "cache") else "past_key_values"


def _can_share(model: nn.Module, longest: int) -> bool:
    """Prefix sharing leaves padding holes between a row's prefix and suffix in the cache: harmless where
    attention depends on positions and the mask, not where a sliding window counts cache slots. Positions must
    be passed explicitly (``position_ids`` in the forward's signature) or come from the mask (BLOOM's ALiBi);
    a wrapper that only forwards ``**kwargs`` would number the suffix from the cache's length."""
    config = getattr(model, "config", None)
    window = getattr(config, "sliding_window", None)
    if isinstance(window, int) and 0 < window < longest:
        return False
    return _accepts(model, "position_ids") or getattr(config, "model_type", None) == "bloom"


@dataclass
class _ChunkLogits:
    """Logits of one chunk: ``logits[N, V]`` (prefix positions first, then suffix positions) and, per row of the
    chunk (in group order), the indices into ``logits`` of the positions predicting its answer tokens."""

    logits: torch.Tensor
    per_row: list[list[int]]


@torch.no_grad()
def _score_chunk(model: nn.Module, rows: Sequence[_Row], groups: Sequence[_Group], pad: int,
                 dev: torch.device, defer: bool = False) -> _ChunkLogits | None:
    """Run one chunk of groups: the prefixes (right padded, with a cache when some row has ids of its own),
    then every row's own ids on its group's cache. None when the cache cannot be repeated per row. With
    ``defer`` the chunk's ``logits`` are the final hidden states at those positions (projected by the caller)."""
    prefixes = [rows[g.rows[0]].ids[:g.k] for g in groups]
    ids1, att1 = _pad_right(prefixes, pad)
    keep1 = torch.zeros_like(att1, dtype=torch.bool)  # prefix positions that predict some row's answer token
    for b, g in enumerate(groups):
        for i in g.rows:
            keep1[b, rows[i].first:min(g.k, len(rows[i].ids) - 1)] = True
    owner = [b for b, g in enumerate(groups) for _ in g.rows]
    members = [i for g in groups for i in g.rows]
    suffixes = [rows[i].ids[groups[b].k:len(rows[i].ids) - 1] for b, i in zip(owner, members)]
    need_suffix = any(suffixes)
    kw: dict[str, Any] = {"input_ids": ids1.to(dev), "attention_mask": att1.to(dev)}
    if _accepts(model, "position_ids"):
        kw["position_ids"] = torch.arange(ids1.shape[1], device=dev).expand_as(ids1)
    logits1, cache = _forward(model, keep1.to(dev), defer=defer, **kw, use_cache=need_suffix)
    index1 = torch.full(keep1.shape, -1, dtype=torch.long)  # (group, position) -> row of logits1
    index1[keep1] = torch.arange(int(keep1.sum()))
    parts = [logits1]
    if need_suffix:
        if not hasattr(cache, "batch_select_indices"):
            return None
        second = [j for j, suffix in enumerate(suffixes) if suffix]  # rows with ids of their own
        slot = {j: n for n, j in enumerate(second)}
        ids2, att2 = _pad_right([suffixes[j] for j in second], pad)
        keep2 = torch.zeros_like(att2, dtype=torch.bool)
        for n, j in enumerate(second):
            keep2[n, max(0, rows[members[j]].first - groups[owner[j]].k):len(suffixes[j])] = True
        own = torch.tensor([owner[j] for j in second])
        cache.batch_select_indices(own.to(dev))
        kw = {"input_ids": ids2.to(dev), "attention_mask": torch.cat([att1[own], att2], 1).to(dev),
              cache_kwarg(model): cache}
        if _accepts(model, "position_ids"):  # a row's own ids continue at its prefix's length
            k_of = torch.tensor([groups[owner[j]].k for j in second])
            kw["position_ids"] = (k_of[:, None] + torch.arange(ids2.shape[1])[None, :]).to(dev)
        logits2, _ = _forward(model, keep2.to(dev), defer=defer, **kw, use_cache=True)
        index2 = torch.full(keep2.shape, -1, dtype=torch.long)
        index2[keep2] = torch.arange(int(keep2.sum())) + logits1.shape[0]
        parts.append(logits2)
    per_row: list[list[int]] = []
    for j, (b, i) in enumerate(zip(owner, members)):
        r, k = rows[i], groups[b].k
        idx = [int(index1[b, t]) for t in range(r.first, min(k, len(r.ids) - 1))]
        idx += [int(index2[slot[j], t - k]) for t in range(max(r.first, k), len(r.ids) - 1)]
        per_row.append(idx)
    return _ChunkLogits(torch.cat(parts) if len(parts) > 1 else logits1, per_row)


#: Padding a batch may add, as a share of its real tokens, before a longer row starts the next batch: on a CPU a
#: padded position costs as much as a real one; a forward costs a read of every weight. MKEB, Gemma 3 270M, 12
#: languages: one batch per width class (0.2) halves the padded prefix positions of one 64-row batch.
PADDING_SLACK = 0.2


def _chunks(groups: Sequence[_Group], batch_size: int, slack: float = PADDING_SLACK) -> list[list[_Group]]:
    """Consecutive groups (sorted by prefix length) with at most ``batch_size`` rows per chunk (a larger group
    is a chunk of its own), cut where the next group's prefix would pad the chunk's prefixes by more than
    ``slack`` of their real length."""
    out: list[list[_Group]] = []
    n = real = 0
    for g in groups:
        if out and n + len(g.rows) <= batch_size and (len(out[-1]) + 1) * g.k <= (1 + slack) * (real + g.k):
            out[-1].append(g)
            n, real = n + len(g.rows), real + g.k
        else:
            out.append([g])
            n, real = len(g.rows), g.k
    return out


@torch.no_grad()
def score_answers_shared(model: nn.Module, tokenizer, prompts: Sequence[str], answers: Sequence[str],
                         languages: Sequence[str] | str, *, batch_size: int = 16) -> dict[str, torch.Tensor]:
    """:func:`memla_utils.scoring.score_answers` with each prompt run once (module docstring).

    Returns ``logprob`` (sum of log P(answer token | prefix), accumulated in float32), ``token_accuracy`` (share
    of answer tokens that are the argmax) and ``exact_match`` (all are), each ``[N]`` float32 on CPU, in the
    order of the inputs. ``batch_size``: rows per forward (memory only; a group of rows with one prompt is never
    split). Raises ``ValueError`` for lists of different lengths, an empty answer or a prompt without ids.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    langs = [languages] * len(prompts) if isinstance(languages, str) else list(languages)
    if len(langs) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(langs)} languages")
    names = ("logprob", "token_accuracy", "exact_match")
    if not prompts:
        return {k: torch.zeros(0) for k in names}
    rows = _rows(tokenizer, prompts, answers, langs)
    share = _can_share(model, max(len(r.ids) for r in rows))
    groups = _groups(prompts, rows, share)
    if share:
        groups.sort(key=lambda g: (g.k, max(len(rows[i].ids) for i in g.rows)))
    else:
        groups.sort(key=lambda g: len(rows[g.rows[0]].ids))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    dev = next(model.parameters()).device
    result = {k: torch.zeros(len(rows)) for k in names}
    defer = can_defer(model)
    # every (row, answer token) pair: the index of the logits row predicting it, the token, the pairs of one row
    # contiguous (in its answer's order)
    pair_at: list[int] = []
    pair_row: dict[int, slice] = {}
    hidden: list[torch.Tensor] = []
    offset = 0
    todo = _chunks(groups, batch_size)
    while todo:
        chunk = todo.pop(0)
        got = _score_chunk(model, rows, chunk, pad, dev, defer)
        if got is None:  # this cache cannot be repeated per row: the chunk's rows alone
            log.info("%s: the KV cache cannot be repeated per row; scoring without shared prefixes",
                     type(model).__name__)
            todo.insert(0, [_Group([i], len(rows[i].ids) - 1) for g in chunk for i in g.rows])
            continue
        members = [i for g in chunk for i in g.rows]
        if defer:  # projected below, all chunks together
            for i, idx in zip(members, got.per_row):
                pair_row[i] = slice(len(pair_at), len(pair_at) + len(idx))
                pair_at.extend(offset + j for j in idx)
            hidden.append(got.logits)
            offset += got.logits.shape[0]
            continue
        logp = torch.log_softmax(got.logits.float(), dim=-1)
        best = got.logits.argmax(-1)
        for i, idx in zip(members, got.per_row):
            at = torch.tensor(idx, device=logp.device)
            target = torch.tensor(rows[i].ids[rows[i].first + 1:], device=logp.device)
            _fill(result, i, logp[at, target], best[at] == target)
    if hidden:
        at = torch.tensor(pair_at, device=dev)
        target = torch.zeros_like(at)
        for i, sl in pair_row.items():
            target[sl] = torch.tensor(rows[i].ids[rows[i].first + 1:], device=dev)
        logp_pair = torch.zeros(len(pair_at), device=dev)
        hit_pair = torch.zeros(len(pair_at), dtype=torch.bool, device=dev)
        for start, logits in project_blocks(model, torch.cat(hidden)):
            sel = torch.nonzero((at >= start) & (at < start + logits.shape[0])).flatten()
            local = at[sel] - start
            logp_pair[sel] = torch.log_softmax(logits.float(), dim=-1)[local, target[sel]]
            hit_pair[sel] = logits.argmax(-1)[local] == target[sel]
        for i, sl in pair_row.items():
            _fill(result, i, logp_pair[sl], hit_pair[sl])
    return result


def _fill(result: dict[str, torch.Tensor], i: int, logp: torch.Tensor, hit: torch.Tensor) -> None:
    """Row ``i``'s scores from its answer tokens' log-probabilities and argmax hits (in the answer's order)."""
    result["logprob"][i] = logp.sum().cpu()
    result["token_accuracy"][i] = hit.float().mean().cpu()
    result["exact_match"][i] = float(bool(hit.all()))


__all__ = ["SHARED_PREFIX_MIN_IDS", "score_answers_shared"]
