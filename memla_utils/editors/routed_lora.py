"""Many independent masked-LoRA edits trained in one batch: per-fact adapters routed by batch row.

The paper's protocol edits one fact, evaluates, reverts. Training each fact alone is launch-bound on a GPU (a
60-step edit of a 270M model is ~85 ms a step whatever the batch). Here F facts are trained *together but
independently*: every fact keeps its own LoRA pairs (same neurons, ranks and initialisation as a single edit),
packed per layer into zero-padded tensors, and each batch row is routed to the pairs of the fact it belongs
to. The losses are summed, so each fact's parameters receive exactly its own gradient; Adam is elementwise, so
each fact follows the trajectory it would follow alone (up to float reassociation). A fact that meets its
early-stopping rule is frozen (its parameters copied out) and its rows leave the batch.

Padding stays inert: padded neuron columns are multiplied by a zero column mask, padded ranks start at zero in
both factors, so their gradients, Adam moments and values stay exactly zero. ``a`` packs the neuron-side
factors (``[slot, rank, n]``), ``b`` the hidden-side factors (``[slot, hidden, rank]``), whichever of them the
single edit initialised to zero (:data:`.masked_lora.ZERO_FACTORS`).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

from ..models import ModelAdapter
from .masked_lora import ColumnUpdate, MaskedLoRA, hooked_down_proj


class Routing:
    """Which fact each row of the current batch belongs to (shared by every layer's :class:`RoutedLoRA`)."""

    def __init__(self) -> None:
        self.row_fact: torch.Tensor | None = None


@dataclass
class _Slot:
    fact: int
    name: str
    index: torch.Tensor | None
    rank: int
    width: int


class RoutedLoRA:
    """The LoRA pairs of several facts on one layer; row ``r`` sees only the pairs of fact ``routing.row_fact[r]``."""

    def __init__(self, adapter: ModelAdapter, layer: int, per_fact: Sequence[MaskedLoRA | None],
                 routing: Routing) -> None:
        adapter.check_layer(layer)
        self.adapter, self.layer, self.routing = adapter, layer, routing
        n_facts, n_neurons, hidden = len(per_fact), adapter.n_neurons, adapter.hidden_size
        self.slots: list[_Slot] = []
        pairs = []
        for f, lora in enumerate(per_fact):
            for p in (lora.pairs if lora is not None else []):
                width = n_neurons if p.index is None else int(p.index.numel())
                self.slots.append(_Slot(f, p.name, p.index, p.rank, width))
                pairs.append(p)
        if not self.slots:
            raise ValueError(f"layer {layer}: no fact has LoRA pairs here")
        per = [sum(1 for s in self.slots if s.fact == f) for f in range(n_facts)]
        self.n_pairs = max(per)
        n_max, r_max = max(s.width for s in self.slots), max(s.rank for s in self.slots)
        device = pairs[0].neuron.device
        null = len(self.slots)  # an all-zero slot for facts with fewer pairs (or none) on this layer
        a = torch.zeros(null + 1, r_max, n_max, device=device)
        b = torch.zeros(null + 1, hidden, r_max, device=device)
        index = torch.zeros(null + 1, n_max, dtype=torch.long, device=device)
        colmask = torch.zeros(null + 1, n_max, device=device)
        fact_slots = torch.full((n_facts, self.n_pairs), null, dtype=torch.long, device=device)
        filled = [0] * n_facts
        with torch.no_grad():
            for i, (s, p) in enumerate(zip(self.slots, pairs)):
                a[i, : s.rank, : s.width] = p.neuron.detach()
                b[i, :, : s.rank] = p.hidden.detach()
                index[i, : s.width] = torch.arange(n_neurons, device=device) if s.index is None else s.index
                colmask[i, : s.width] = 1.0
                fact_slots[s.fact, filled[s.fact]] = i
                filled[s.fact] += 1
        self.a, self.b = a.requires_grad_(True), b.requires_grad_(True)
        self.index, self.colmask, self.fact_slots = index, colmask, fact_slots

    def parameters(self) -> Iterator[torch.Tensor]:
        yield self.a
        yield self.b

    def _hook(self, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        rows = self.routing.row_fact
        if rows is None:
            raise RuntimeError("RoutedLoRA: set routing.row_fact (the fact of every batch row) before a forward")
        x = args[0]
        if rows.numel() != x.shape[0]:
            raise RuntimeError(f"RoutedLoRA: {rows.numel()} routed rows but the batch has {x.shape[0]}")
        sl = self.fact_slots[rows]                                   # [B, P]
        idx = self.index[sl]                                         # [B, P, n]
        bsz, t, n_neurons = x.shape
        xs = torch.gather(x.unsqueeze(2).expand(bsz, t, self.n_pairs, n_neurons), 3,
                          idx.unsqueeze(1).expand(bsz, t, *idx.shape[1:]))
        xs = xs.to(self.a.dtype) * self.colmask[sl].unsqueeze(1)   # [B, T, P, n]
        h = torch.einsum("btpn,bprn->btpr", xs, self.a[sl])
        return out + torch.einsum("btpr,bphr->bth", h, self.b[sl]).to(out.dtype)

    def attached(self) -> AbstractContextManager[None]:
        return hooked_down_proj(self.adapter, self.layer, self._hook)

    @torch.no_grad()
    def snapshot(self, fact: int) -> list[tuple[_Slot, torch.Tensor, torch.Tensor]]:
        """``(slot, neuron factor, hidden factor)`` copies of one fact's pairs on this layer (unpadded)."""
        return [(s, self.a[i, : s.rank, : s.width].clone(), self.b[i, :, : s.rank].clone())
                for i, s in enumerate(self.slots) if s.fact == fact]


def updates_from_snapshot(layer: int, snap: Sequence[tuple[_Slot, torch.Tensor, torch.Tensor]],
                          scale: float) -> list[ColumnUpdate]:
    """The merged updates (``scale * hidden @ neuron`` into the pair's columns) of one fact on one layer."""
    return [ColumnUpdate(layer, s.index, scale * (b @ a)) for s, a, b in snap]
