"""Neuron sets: which FFN neurons of each layer are selected (the data MEMLA's masks are made of).

A :class:`NeuronMasks` is a per-layer boolean vector over the FFN neurons (the adapter's neuron view); the
MEMLA editors restrict their LoRA updates to the down-projection weights attached to ``True`` neurons. A
:class:`RecordMasks` holds the two masks of one (record, edit language): language-specific (LSE) and
language-independent (LIE). How they are computed is :mod:`memla_utils.mask_compute`; this module depends on
nothing else of the package but the cache's atomic writes, so that :mod:`memla_utils.attribution` can build
neuron sets without importing the mask computation (which imports it).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from .cache import write_tensors_atomic


@dataclass
class NeuronMasks:
    """``masks[layer]`` = bool tensor ``[n_neurons]``; layers without selected neurons may be absent."""

    n_neurons: int
    masks: dict[int, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_sets(cls, neurons: Mapping[int, Iterable[int]], n_neurons: int) -> NeuronMasks:
        out: dict[int, torch.Tensor] = {}
        for layer, idx in neurons.items():
            m = torch.zeros(n_neurons, dtype=torch.bool)
            idx = list(idx)
            if idx:
                m[torch.tensor(idx, dtype=torch.long)] = True
                out[int(layer)] = m
        return cls(n_neurons, out)

    def to_sets(self) -> dict[int, set[int]]:
        return {l: set(torch.nonzero(m).flatten().tolist()) for l, m in self.masks.items() if m.any()}

    @property
    def layers(self) -> list[int]:
        return sorted(l for l, m in self.masks.items() if bool(m.any()))

    def counts(self) -> dict[int, int]:
        return {l: int(self.masks[l].sum()) for l in self.layers}

    @property
    def total(self) -> int:
        return sum(self.counts().values())

    def __and__(self, other: NeuronMasks) -> NeuronMasks:
        return NeuronMasks(self.n_neurons, {l: self.masks[l] & other.masks[l]
                                            for l in set(self.masks) & set(other.masks)})

    def __or__(self, other: NeuronMasks) -> NeuronMasks:
        layers = set(self.masks) | set(other.masks)
        z = torch.zeros(self.n_neurons, dtype=torch.bool)
        return NeuronMasks(self.n_neurons, {l: self.masks.get(l, z) | other.masks.get(l, z) for l in layers})

    def __sub__(self, other: NeuronMasks) -> NeuronMasks:
        z = torch.zeros(self.n_neurons, dtype=torch.bool)
        return NeuronMasks(self.n_neurons, {l: m & ~other.masks.get(l, z) for l, m in self.masks.items()})

    def to_tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        return {f"{prefix}layer{l}": m for l, m in self.masks.items()}

    def save(self, path: str | Path) -> None:
        write_tensors_atomic(Path(path), self.to_tensors(), metadata={"n_neurons": str(self.n_neurons)})

    @classmethod
    def load(cls, path: str | Path) -> NeuronMasks:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            n = int((f.metadata() or {})["n_neurons"])
        t = load_file(str(path))
        return cls(n, {int(k.removeprefix("layer")): v.bool() for k, v in t.items()})


@dataclass
class RecordMasks:
    """The two masks MEMLA needs for one (record, edit language)."""

    example_id: str
    edit_language: str
    specific: NeuronMasks      # LSE: edit language's neurons minus the independent ones
    independent: NeuronMasks   # LIE: intersection over the independence languages


def intersection(masks: Sequence[NeuronMasks]) -> NeuronMasks:
    """Neurons selected in every one of ``masks``."""
    if not masks:
        raise ValueError("intersection of no neuron sets is undefined")
    out = masks[0]
    for m in masks[1:]:
        out = out & m
    return NeuronMasks(out.n_neurons, {l: out.masks[l] for l in out.layers})


def union(masks: Sequence[NeuronMasks]) -> NeuronMasks:
    """Neurons selected in any of ``masks``."""
    if not masks:
        raise ValueError("union of no neuron sets is undefined")
    out = masks[0]
    for m in masks[1:]:
        out = out | m
    return NeuronMasks(out.n_neurons, {l: out.masks[l] for l in out.layers})


def random_masks_like(masks: NeuronMasks, seed: int) -> NeuronMasks:
    """Random neurons with the same per-layer counts (the control for ablations and the sanity check)."""
    gen = torch.Generator().manual_seed(int(seed))
    out: dict[int, torch.Tensor] = {}
    for layer, count in masks.counts().items():
        m = torch.zeros(masks.n_neurons, dtype=torch.bool)
        m[torch.randperm(masks.n_neurons, generator=gen)[:count]] = True
        out[layer] = m
    return NeuronMasks(masks.n_neurons, out)


def jaccard(a: NeuronMasks, b: NeuronMasks) -> float:
    """|a ∩ b| / |a ∪ b| over (layer, neuron) pairs; 1.0 when both are empty."""
    inter, uni = (a & b).total, (a | b).total
    return inter / uni if uni else 1.0


__all__ = ["NeuronMasks", "RecordMasks", "intersection", "jaccard", "random_masks_like", "union"]
