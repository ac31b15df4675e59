"""Exact shortcuts for the repeated forward passes of gradient-based editors (ROME/MEMIT/PMET target search, FT).

An optimisation loop that perturbs layer ``L`` recomputes, at every step, a lot that cannot change:

* **layers below ``L``**: their outputs do not depend on anything edited at ``L``. :func:`record_layers` keeps
  them from one no-grad pass and :func:`replay_layers` makes those layers return the recorded outputs;
* **tokens before the perturbed position** (causal attention): when the perturbation is a vector added at one
  token, no earlier token changes at any layer. :func:`split_rows` splits each row at its own position; the
  prefix runs once with the model's key/value cache, and every step runs only the suffix against that cache.
  Rows are *aligned* at their split (the prefix left-padded, the suffix right-padded, explicit position ids), so
  every row's suffix starts at column 0 and rows of different prefix lengths share one batch;
* **vocabulary projection at unread positions**: :func:`gather_head` feeds the output head only the
  (row, position) pairs the loss reads, instead of every row at the union of those positions; or
  :func:`memla_utils.head_projection.deferred_head` hands the final hidden states to
  :func:`memla_utils.head_logprob.head_logprob`, which reads the head once per step for the log-probabilities and
  their gradient instead of twice; the prefix pass (run for its cache only) projects nothing.

The result equals the full forward up to float rounding (different padding and batch composition change the
order of some reductions); tests compare both paths' edited weights (``tests/unit/test_fast_forward.py``).
Every helper uses only module hooks, the model's own cache and ``forward`` arguments (no per-architecture code),
so it works for every architecture in :data:`memla_utils.models.ARCHITECTURES`.
"""
from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..head_projection import deferred_head
from ..models import ModelAdapter


class _Stop(Exception):
    """Raised by :func:`run_until`'s hook to end a forward once the needed module has run."""


# ------------------------------------------------------------------------------------------ layer replay
@contextmanager
def record_layers(adapter: ModelAdapter, n: int) -> Iterator[list[Any]]:
    """Record the outputs (whatever objects they are) of decoder layers ``0..n-1`` during the block's forward."""
    box: list[Any] = [None] * n
    handles = []
    for i in range(n):
        def hook(mod: nn.Module, args: tuple, out: Any, i: int = i) -> None:
            box[i] = out
        handles.append(adapter.layers[i].register_forward_hook(hook))
    try:
        yield box
    finally:
        for h in handles:
            h.remove()


@contextmanager
def replay_layers(adapter: ModelAdapter, outputs: Sequence[Any]) -> Iterator[None]:
    """Decoder layers ``0..len(outputs)-1`` return ``outputs[i]`` without computing anything.

    Valid only for a forward on exactly the inputs the outputs were recorded from (same ids, mask, positions
    and cache content) and while nothing in those layers changes. Layers below the first computed one neither
    read nor append to the key/value cache, which is what a suffix pass needs (their cache is not used later).
    """
    layers = [adapter.layers[i] for i in range(len(outputs))]
    for layer, out in zip(layers, outputs):
        if out is None:
            raise ValueError("replay_layers: a recorded output is missing (was the recording forward stopped early?)")
        layer.forward = (lambda *a, _out=out, **k: _out)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


# ------------------------------------------------------------------------------------------ output head
@contextmanager
def gather_head(model: nn.Module, rows: torch.Tensor, cols: torch.Tensor) -> Iterator[None]:
    """The output head sees only hidden states ``[rows, cols]``: logits become ``[1, len(rows), vocab]``.

    A pre-hook on ``model.get_output_embeddings()``; whatever the model does after the head (Gemma 2's
    soft-capping) is elementwise and still applies. Call the model with ``logits_to_keep=0``.
    """
    head = model.get_output_embeddings()

    def pre_hook(mod: nn.Module, args: tuple) -> tuple:
        hidden = args[0]
        return (hidden[rows.to(hidden.device), cols.to(hidden.device)].unsqueeze(0), *args[1:])

    handle = head.register_forward_pre_hook(pre_hook)
    try:
        yield
    finally:
        handle.remove()


# ------------------------------------------------------------------------------------------ early exit
def call_until(module: nn.Module, call: Any) -> Any:
    """``call()``, ended as soon as ``module`` has produced its output (hooks in the block still fire); returns
    ``call()``'s result, or None when it was ended."""
    def hook(mod: nn.Module, args: tuple, out: Any) -> None:
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        return call()
    except _Stop:
        return None
    finally:
        handle.remove()


def run_until(model: nn.Module, module: nn.Module, **inputs: Any) -> None:
    """Run ``model(**inputs)`` only until ``module`` has produced its output (hooks in the block still fire)."""
    call_until(module, lambda: model(**inputs))


# ------------------------------------------------------------------------------------------ split batches
def _cache_arg(model: nn.Module) -> str:
    """The name under which ``model.forward`` takes the key/value cache (``cache`` or ``past_key_values``)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _takes_positions(model: nn.Module) -> bool:
    """BLOOM (ALiBi) has no position ids: it derives positions from the attention mask, which handles padding."""
    return "position_ids" in inspect.signature(model.forward).parameters


@dataclass
class SplitBatch:
    """Rows split at per-row positions ``split[b]``: a left-padded prefix ``[B, s]`` and a right-padded suffix
    ``[B, t]``; suffix column ``c`` of row ``b`` is token ``split[b] + c`` of that row."""

    prefix_ids: torch.Tensor
    prefix_mask: torch.Tensor
    prefix_pos: torch.Tensor
    suffix_ids: torch.Tensor
    suffix_mask: torch.Tensor
    suffix_pos: torch.Tensor
    split: torch.Tensor

    def to(self, device: torch.device | str) -> SplitBatch:
        return SplitBatch(**{k: v.to(device) for k, v in vars(self).items()})

    @property
    def full_mask(self) -> torch.Tensor:
        return torch.cat([self.prefix_mask, self.suffix_mask], dim=1)


def split_rows(rows: Sequence[Sequence[int]], split: Sequence[int], pad_id: int) -> SplitBatch:
    """Align token rows at ``split`` (each ``0 <= split[b] < len(rows[b])``); see :class:`SplitBatch`."""
    if len(rows) != len(split) or not rows:
        raise ValueError(f"split_rows: {len(rows)} rows but {len(split)} split positions")
    for r, s in zip(rows, split):
        if not 0 <= s < len(r):
            raise ValueError(f"split_rows: split {s} outside a row of {len(r)} tokens")
    b, s_max = len(rows), max(split)
    t_max = max(len(r) - s for r, s in zip(rows, split))
    pid = torch.full((b, s_max), pad_id, dtype=torch.long)
    pmask = torch.zeros((b, s_max), dtype=torch.long)
    ppos = torch.zeros((b, s_max), dtype=torch.long)
    sid = torch.full((b, t_max), pad_id, dtype=torch.long)
    smask = torch.zeros((b, t_max), dtype=torch.long)
    spos = torch.zeros((b, t_max), dtype=torch.long)
    for i, (r, s) in enumerate(zip(rows, split)):
        r = list(r)
        if s:
            pid[i, s_max - s:] = torch.tensor(r[:s])
            pmask[i, s_max - s:] = 1
            ppos[i, s_max - s:] = torch.arange(s)
        n = len(r) - s
        sid[i, :n] = torch.tensor(r[s:])
        smask[i, :n] = 1
        spos[i] = torch.arange(s, s + t_max)
    return SplitBatch(pid, pmask, ppos, sid, smask, spos, torch.tensor(list(split)))


class SuffixRunner:
    """Forwards of a :class:`SplitBatch`'s suffix against its prefix's cache, from decoder layer ``first`` up.

    Build it once (one prefix pass, one recording pass of the suffix through layers ``< first``), then call
    :meth:`forward` as often as needed inside the hooks that perturb layer ``first`` or above; each call gets a
    fresh copy of the prefix cache.
    """

    def __init__(self, model: nn.Module, adapter: ModelAdapter, batch: SplitBatch, first: int) -> None:
        self.model, self.adapter, self.first = model, adapter, first
        self.batch = batch.to(next(model.parameters()).device)
        self._cache_name = _cache_arg(model)
        self._positions = _takes_positions(model)
        self._cache = None
        with torch.no_grad():
            if self.batch.prefix_ids.shape[1]:
                with deferred_head(model):  # only the cache is kept: projecting the last position read the whole head
                    out = model(**self._inputs(self.batch.prefix_ids, self.batch.prefix_mask, self.batch.prefix_pos),
                                use_cache=True, logits_to_keep=1)
                self._cache = getattr(out, self._cache_name, None)
                if self._cache is None:
                    self._cache = out.past_key_values
            self.lower: list[Any] = []

    def _inputs(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> dict[str, Any]:
        kw: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if self._positions:
            kw["position_ids"] = pos
        return kw

    def forward(self, **extra: Any) -> Any:
        """The model's output on the suffix (``logits_to_keep=0``: combine with :func:`gather_head`)."""
        b = self.batch
        kw = self._inputs(b.suffix_ids, b.full_mask if self._cache is not None else b.suffix_mask, b.suffix_pos)
        if self._cache is not None:
            kw[self._cache_name] = copy.deepcopy(self._cache)
            kw["use_cache"] = True
        else:
            kw["use_cache"] = False
        kw.setdefault("logits_to_keep", 0)
        kw.update(extra)
        if not self.lower:
            return self.model(**kw)
        with replay_layers(self.adapter, self.lower):
            return self.model(**kw)

    def record(self, stop: nn.Module | None = None, **extra: Any) -> Any:
        """A no-grad :meth:`forward` that records layers ``< first`` for the later calls; returns its output.

        ``stop``: a module of layer ``first`` or above after whose output the forward ends (:func:`call_until`;
        hooks in the caller's block still fire, the layers above and the head do not run); then returns None.
        """
        self.lower = []
        with torch.no_grad(), record_layers(self.adapter, self.first) as box:
            out = self.forward(**extra) if stop is None else call_until(stop, lambda: self.forward(**extra))
        self.lower = list(box)
        if any(o is None for o in self.lower):
            raise ValueError(f"SuffixRunner.record: the forward stopped before layer {self.first - 1} finished")
        return out


__all__ = ["SplitBatch", "SuffixRunner", "call_until", "gather_head", "record_layers", "replay_layers", "run_until",
           "split_rows"]
