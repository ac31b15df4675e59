"""Neuron-masked LoRA on one layer's FFN down projection: the trainable piece under every MEMLA variant.

memla4mke (``memla/editor.py``, ``NeuronBasedEditor.register_hook_or_not``, the Llama path that runs) treats
the down projection's input as ``x[..., n_neurons]`` and learns per layer ``delta = (B @ A) * mask`` with
``B = zeros(n_neurons, r)`` (the **neuron side**, zero at start), ``A = randn(r, hidden)`` (the **hidden
side**, N(0, 1)), ``r = n_rank * n_selected``, and a 0/1 mask that keeps only the rows of the selected
neurons; the hook adds ``x @ delta`` and the merge adds ``0.5 * delta.T`` to the weight.

Gradients of the unselected rows of ``B`` are exactly zero (the mask multiplies them), so they stay zero under
Adam and the same update is obtained by keeping only ``B[neurons]``. In nn.Linear layout (``[hidden,
n_neurons]``) a pair here is ``delta[:, neurons] = hidden_factor @ neuron_factor`` with ``hidden_factor =
A.T`` (``[hidden, r]``) and ``neuron_factor = B[neurons].T`` (``[r, n_selected]``): the forward adds
``(x[..., neurons] @ neuron_factor.T) @ hidden_factor.T``. Weights of other neurons are never touched
(bit-identical), and the cost scales with the number of neurons, not the layer width. ``index=None`` gives the
unmasked LoRA of the same rank (the ablation).

Which factor starts at zero is a choice with consequences, not a detail (:data:`ZERO_FACTORS`):

- ``"neuron"`` (memla4mke, the default of every preset): the neuron-side factor is zero, the hidden-side
  factor random. The first Adam step moves each selected neuron's row along the gradient's sign, in the
  random hidden directions of ``A``; the edit takes several steps.
- ``"hidden"`` (this companion before it was checked against memla4mke; kept as the labelled ablation
  ``memla-zero-hidden``): the hidden-side factor is zero and every first Adam step pushes *all* hidden units
  along the sign of their gradient, so edits overshoot in one or two steps and spill onto other prompts of
  the relation. The two are not the same update (tests show the first steps differ).

memla4mke's mGPT path builds the factors the other way round (zero on the hidden side) and its shapes do not
match as released (``x @ delta`` with ``delta`` of shape ``[hidden, n_neurons]``); see the README.
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


#: Which factor of a pair starts at zero: "neuron" = memla4mke (default), "hidden" = the labelled ablation.
ZERO_FACTORS: tuple[str, ...] = ("neuron", "hidden")


@dataclass
class LoraPair:
    """One low-rank pair ``delta[:, index] = hidden @ neuron`` (``index=None``: every neuron, plain LoRA)."""

    name: str                   # "specific" / "independent" / "unmasked"
    neuron: torch.Tensor        # [rank, n_selected] neuron-side factor (memla4mke ``B[neurons].T``; trainable)
    hidden: torch.Tensor        # [hidden, rank]     hidden-side factor (memla4mke ``A.T``; trainable)
    index: torch.Tensor | None  # long [n_selected] neuron ids, or None for all neurons

    @property
    def rank(self) -> int:
        return int(self.neuron.shape[0])

    def delta(self) -> torch.Tensor:
        """The update of the selected columns in nn.Linear layout: ``[hidden, n_selected]``."""
        return self.hidden @ self.neuron


def make_pair(name: str, index: torch.Tensor | None, *, n_neurons: int, hidden: int, rank: int,
              init_std: float, generator: torch.Generator, device: torch.device,
              zero_factor: str = "neuron") -> LoraPair:
    """A pair initialised as in memla4mke: one factor ``N(0, init_std^2)`` (``torch.randn``), the other zero.

    ``zero_factor="neuron"`` (memla4mke): neuron side zero, hidden side random (drawn as memla4mke's ``A`` of
    shape ``[rank, hidden]``, then transposed). ``"hidden"``: the other way round (ablation). The draw comes
    from ``generator`` only (seeded per unit by the caller), never from the global RNG.
    Raises ``ValueError`` for ``rank < 1`` or an unknown ``zero_factor``.
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    if zero_factor not in ZERO_FACTORS:
        raise ValueError(f"zero_factor must be one of {ZERO_FACTORS}, got {zero_factor!r}")
    width = n_neurons if index is None else int(index.numel())
    if zero_factor == "neuron":
        h = (torch.randn(rank, hidden, generator=generator) * init_std).t().contiguous()
        n = torch.zeros(rank, width)
    else:
        h = torch.zeros(hidden, rank)
        n = torch.randn(rank, width, generator=generator) * init_std
    return LoraPair(name, n.to(device).requires_grad_(True), h.to(device).requires_grad_(True),
                    None if index is None else index.to(device))


class MaskedLoRA:
    """The LoRA pairs attached to one layer; ``attached()`` hooks them into forwards, ``merge()`` bakes them in."""

    def __init__(self, adapter: ModelAdapter, layer: int, pairs: Sequence[LoraPair]) -> None:
        adapter.check_layer(layer)
        self.adapter, self.layer, self.pairs = adapter, layer, list(pairs)

    def parameters(self) -> Iterator[torch.Tensor]:
        for p in self.pairs:
            yield p.neuron
            yield p.hidden

    @property
    def rank(self) -> int:
        return sum(p.rank for p in self.pairs)

    def _hook(self, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        x = args[0]
        extra = None
        for p in self.pairs:
            xs = x if p.index is None else x.index_select(-1, p.index)
            d = (xs.to(p.neuron.dtype) @ p.neuron.t()) @ p.hidden.t()
            extra = d if extra is None else extra + d
        return out if extra is None else out + extra.to(out.dtype)

    def attached(self) -> AbstractContextManager[None]:
        return hooked_down_proj(self.adapter, self.layer, self._hook)

    def param_name(self) -> str:
        return f"{self.adapter.down_proj_name(self.layer)}.weight"

    @torch.no_grad()
    def updates(self, scale: float) -> list[ColumnUpdate]:
        """``scale * hidden @ neuron`` of every pair, as column updates of this layer."""
        return [ColumnUpdate(self.layer, p.index, scale * p.delta().detach()) for p in self.pairs]

    def merge(self, scale: float) -> None:
        """Add ``scale * hidden @ neuron`` to the selected columns of the down projection (others stay bit-identical)."""
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
