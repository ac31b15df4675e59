"""One forward pass for attribution rows that scale *different* layers (the "staircase"), used by the batched
pass of :mod:`memla_utils.attribution_ig`.

A row that scales layer ``l`` is a one-token continuation of its prompt's clean key/value cache whose layers
below ``l`` equal the clean forward, so it only has to run through layers ``l .. L-1``. Sorting a chunk's rows by
the layer they scale, the rows active at layer ``j`` are a prefix ``[0, n_j)`` of the batch (``n_j`` = rows with
``l <= j``): each decoder layer is called on that prefix only, the rows that start at ``j`` joining with their clean
input hidden state. Every row's FLOPs are the same as one forward per layer group (the layers it needs, nothing
else), but the matrix products see the whole prefix at once (``n_j`` rows instead of the rows of one layer),
which is what makes them efficient on a CPU; one forward and one backward call cover the chunk.

The layer calls are the model's own decoder layers; their per-row arguments (attention mask, position ids,
rotary embeddings, anything whose first dimension is the batch) are cut to the prefix. An argument whose first
dimension is neither 1 nor the batch (bloom's alibi: ``batch x heads``) cannot be cut that way:
:class:`StaircaseUnsupported` is raised and the caller falls back to one forward per layer group.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch


class StaircaseUnsupported(RuntimeError):
    """A decoder layer received a per-row argument that cannot be cut to a prefix of the batch."""


def _cut(obj: Any, rows: int, n: int) -> Any:
    """``obj`` with every tensor whose first dimension is the batch (``rows``) cut to its first ``n`` rows."""
    if torch.is_tensor(obj):
        if obj.dim() == 0 or obj.shape[0] == 1:
            return obj
        if obj.shape[0] == rows:
            return obj[:n]
        raise StaircaseUnsupported(f"decoder-layer argument of shape {tuple(obj.shape)} (batch {rows})")
    if isinstance(obj, tuple):
        return tuple(_cut(o, rows, n) for o in obj)
    if isinstance(obj, list):
        return [_cut(o, rows, n) for o in obj]
    if isinstance(obj, dict):
        return {k: _cut(v, rows, n) for k, v in obj.items()}
    return obj


@contextmanager
def staircase(layers: Sequence[torch.nn.Module], starts: Sequence[int], clean_in: torch.Tensor, out_len: int,
              ) -> Iterator[None]:
    """Make the decoder ``layers`` run the staircase for one forward of ``len(clean_in)`` rows.

    ``starts[j]`` = number of rows that scale a layer ``< j`` (non-decreasing, ``starts[L] = rows``, the rows
    sorted by layer); ``clean_in`` ``[rows, 1, hidden]``: each row's clean input of the layer it scales. Layer
    ``j`` computes rows ``[0, starts[j + 1])``: the previous layer's output for ``[0, starts[j])`` and the clean
    input for the rows joining at ``j``. Layers below the first scaled one pass their input through (``out_len``:
    the decoder layers return a tensor (0) or a tuple of that length). The layers' own forward hooks still run.
    """
    rows = int(clean_in.shape[0])

    def make(j: int, layer: torch.nn.Module) -> Callable[..., Any]:
        orig = layer.forward
        s, n = starts[j], starts[j + 1]

        def forward(*args: Any, **kwargs: Any) -> Any:
            hs = args[0] if args else kwargs["hidden_states"]
            if n == 0:  # no row has reached its layer yet
                return (hs, *([None] * (out_len - 1))) if out_len else hs
            new = clean_in[s:n].to(hs.dtype)
            hs = torch.cat([hs[:s], new]) if s else new
            rest = _cut(args[1:], rows, n)
            kw = _cut({k: v for k, v in kwargs.items() if k != "hidden_states"}, rows, n)
            return orig(hs, *rest, **kw)

        return forward

    with ExitStack() as stack:
        for j, layer in enumerate(layers):
            layer.forward = make(j, layer)
            stack.callback(delattr, layer, "forward")
        yield


def inject(x: torch.Tensor, start: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Point-hook function of one layer: rows ``[start, start + len(x))`` of ``acts`` ``[n, 1, N]`` take ``x``
    ``[len(x), N]`` at their (only) position; earlier rows keep their computed values (autograd flows through)."""
    def fn(acts: torch.Tensor) -> torch.Tensor:
        new = x[:, None, :].to(acts.dtype)
        return torch.cat([acts[:start], new]) if start else new
    return fn


__all__ = ["StaircaseUnsupported", "inject", "staircase"]
