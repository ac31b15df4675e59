"""Neuron-masked LoRA on one layer's FFN down projection: the trainable piece under every MEMLA variant.

memla4mke computes a full ``B @ A`` and multiplies it by a 0/1 mask that keeps only the weights attached to
the selected neurons (the down projection's *input* columns). Gradients of ``A`` outside those columns are
zero, so the same update is obtained by keeping only ``A[:, neurons]``: the forward adds
``(x[..., neurons] @ A_sel^T) @ B^T`` and the merge writes ``B @ A_sel`` into those columns only. Weights of
other neurons are never touched (bit-identical), and the cost scales with the number of neurons, not the
layer width. ``index=None`` gives the unmasked LoRA of the same rank (the ablation).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..models import ModelAdapter


@dataclass
class ColumnUpdate:
    """A merged change of one down projection: ``delta`` added to the columns ``index`` (``None``: all)."""

    layer: int
    index: torch.Tensor | None   # long [n_selected] neuron ids, or None for all neurons
    delta: torch.Tensor          # [hidden, n_selected] (nn.Linear layout)


@torch.no_grad()
def apply_column_updates(adapter: ModelAdapter, updates: Sequence[ColumnUpdate]) -> None:
    """Add each update to its layer's down projection; columns outside ``index`` stay bit-identical."""
    for u in updates:
        w = adapter.down_weight_as_linear(u.layer)  # [hidden, n_neurons] view
        upd = u.delta.detach().to(w.device, w.dtype)
        if u.index is None:
            w.add_(upd)
        else:
            w.index_add_(1, u.index.to(w.device), upd)


@dataclass
class LoraPair:
    """One low-rank pair ``delta[:, index] = B @ A`` (``index=None``: every neuron, i.e. plain LoRA)."""

    name: str                   # "specific" / "independent" / "unmasked"
    a: torch.Tensor             # [rank, n_selected] (trainable)
    b: torch.Tensor             # [hidden, rank]     (trainable, zero at start)
    index: torch.Tensor | None  # long [n_selected] neuron ids, or None for all neurons

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])

    def delta(self) -> torch.Tensor:
        """The update of the selected columns in nn.Linear layout: ``[hidden, n_selected]``."""
        return self.b @ self.a


def make_pair(name: str, index: torch.Tensor | None, *, n_neurons: int, hidden: int, rank: int,
              a_std: float, generator: torch.Generator, device: torch.device) -> LoraPair:
    """A pair initialised as in memla4mke: ``A ~ N(0, a_std^2)`` (they use ``torch.randn``), ``B = 0``."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    width = n_neurons if index is None else int(index.numel())
    a = (torch.randn(rank, width, generator=generator) * a_std).to(device).requires_grad_(True)
    b = torch.zeros(hidden, rank, device=device, requires_grad=True)
    return LoraPair(name, a, b, None if index is None else index.to(device))


class MaskedLoRA:
    """The LoRA pairs attached to one layer; ``attached()`` hooks them into forwards, ``merge()`` bakes them in."""

    def __init__(self, adapter: ModelAdapter, layer: int, pairs: Sequence[LoraPair]) -> None:
        adapter.check_layer(layer)
        self.adapter, self.layer, self.pairs = adapter, layer, list(pairs)

    def parameters(self) -> Iterator[torch.Tensor]:
        for p in self.pairs:
            yield p.a
            yield p.b

    @property
    def rank(self) -> int:
        return sum(p.rank for p in self.pairs)

    def _hook(self, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        x = args[0]
        extra = None
        for p in self.pairs:
            xs = x if p.index is None else x.index_select(-1, p.index)
            d = (xs.to(p.a.dtype) @ p.a.t()) @ p.b.t()
            extra = d if extra is None else extra + d
        return out if extra is None else out + extra.to(out.dtype)

    def attached(self) -> AbstractContextManager[None]:
        return hooked_down_proj(self.adapter, self.layer, self._hook)

    def param_name(self) -> str:
        return f"{self.adapter.down_proj_name(self.layer)}.weight"

    @torch.no_grad()
    def updates(self, scale: float) -> list[ColumnUpdate]:
        """``scale * B @ A`` of every pair, as column updates of this layer."""
        return [ColumnUpdate(self.layer, p.index, scale * p.delta().detach()) for p in self.pairs]

    def merge(self, scale: float) -> None:
        """Add ``scale * B @ A`` to the selected columns of the down projection (others stay bit-identical)."""
        apply_column_updates(self.adapter, self.updates(scale))


@contextmanager
def hooked_down_proj(adapter: ModelAdapter, layer: int, hook: Callable[..., torch.Tensor]) -> Iterator[None]:
    """``hook(module, args, out)`` adds to the output of ``layer``'s down projection for the block."""
    handle = adapter.down_proj(layer).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def attach_all(loras: Sequence[Any]) -> Iterator[None]:
    """Hook every layer's LoRA (anything with ``attached()``: MaskedLoRA, RoutedLoRA) in for the block."""
    with ExitStack() as stack:
        for lora in loras:
            stack.enter_context(lora.attached())
        yield
