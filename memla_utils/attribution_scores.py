"""Attribution scores of one prompt and the knowledge neurons they select (memla4mke: above 0.3 x the maximum,
union over a record's prompts): the data that :mod:`memla_utils.attribution` computes and caches, and its compact
form for a multi-session run's durable cache (issue 16)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .neuron_masks import NeuronMasks

#: Compact form (durable cache of a multi-session run): only scores above this share of the prompt's maximum are
#: kept. Every neuron set at a threshold >= it is the dense one's; the smallest threshold the notebooks use is
#: 0.1 (notebook 03's sweep), memla4mke's is 0.3. ~550 of the default model's 36,864 scores per prompt, 4 kB.
COMPACT_FLOOR = 0.05


@dataclass
class PromptAttribution:
    """Scores of one (prompt, answer, language) plus what the completeness check needs.

    ``score_floor`` is 0 for the dense scores; a compact copy (:meth:`compact`, read back from a multi-session
    run's durable cache) keeps only the scores above ``score_floor`` x the maximum (the rest are 0): its neuron
    sets at any threshold >= ``score_floor``, :attr:`max_score`, :attr:`layer_positive_mass`, sums, deltas and
    target value are the dense ones' bit for bit (``tests/unit/test_attribution_store.py``); rank statistics over
    all scores (Spearman) need the dense scores (``record_attributions(..., dense=True)``).
    """

    prompt: str
    answer: str
    language: str
    scores: torch.Tensor          # [n_layers, n_neurons] float32
    #: [n_layers]: per layer, sum over neurons of (a - b) x mean gradient along the path, summed over answer
    #: tokens: the sum of the scores for method "exact"; for "memla4mke" (whose scores multiply by a, not a - b)
    #: the IG of the same path and gradients, so that completeness still checks the gradient computation
    attribution_sums: torch.Tensor
    deltas: torch.Tensor          # [n_layers]: F(actual) - F(baseline of that layer), summed over answer tokens
    target_value: float           # F at the actual activations, summed over answer tokens
    #: [n_layers]: sum of the positive scores of each layer (computed from the dense scores when not given)
    layer_positive_mass: torch.Tensor | None = None
    max_score: float | None = None  # the maximum score (from the dense scores when not given)
    score_floor: float = 0.0        # 0: dense; > 0: scores <= score_floor x max_score were dropped (compact)

    def __post_init__(self) -> None:
        if self.layer_positive_mass is None:
            self.layer_positive_mass = self.scores.clamp(min=0).sum(-1)
        if self.max_score is None:
            self.max_score = float(self.scores.max())

    @property
    def compact_form(self) -> bool:
        return self.score_floor > 0

    @property
    def completeness_error(self) -> float:
        """max_l |sum of scores - delta| relative to max_l |delta| (IG's completeness, up to Riemann error)."""
        scale = float(self.deltas.abs().max())
        return float((self.attribution_sums - self.deltas).abs().max()) / scale if scale > 0 else 0.0

    def to_tensors(self) -> dict[str, torch.Tensor]:
        if self.compact_form:
            raise ValueError("PromptAttribution.to_tensors: this copy is compact; store it with compact_tensors()")
        return {"scores": self.scores, "attribution_sums": self.attribution_sums, "deltas": self.deltas,
                "target_value": torch.tensor([self.target_value], dtype=torch.float64)}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], prompt: str, answer: str, language: str) -> PromptAttribution:
        return cls(prompt, answer, language, t["scores"].float(), t["attribution_sums"].float(), t["deltas"].float(),
                   float(t["target_value"][0]))

    def compact(self, floor: float = COMPACT_FLOOR) -> PromptAttribution:
        """This attribution with only the scores above ``floor`` x :attr:`max_score` kept (the rest set to 0)."""
        if self.compact_form:
            if floor < self.score_floor:
                raise ValueError(f"cannot compact at floor {floor}: this copy only has scores above "
                                 f"{self.score_floor} x the maximum")
            if floor == self.score_floor:
                return self
        keep = self._kept(floor)
        return PromptAttribution(self.prompt, self.answer, self.language, torch.where(keep, self.scores, 0.0),
                                 self.attribution_sums, self.deltas, self.target_value,
                                 self.layer_positive_mass, self.max_score, float(floor))

    def _kept(self, floor: float) -> torch.Tensor:
        top = float(self.max_score)
        return self.scores > floor * top if top > 0 else torch.zeros_like(self.scores, dtype=torch.bool)

    def compact_tensors(self, floor: float = COMPACT_FLOOR) -> dict[str, torch.Tensor]:
        """The compact form as tensors (flat indices int64 + float32 values of the kept scores, shape, sums)."""
        c = self.compact(floor)
        flat = c._kept(c.score_floor).flatten().nonzero().flatten()
        return {"indices": flat.to(torch.int64), "values": c.scores.flatten()[flat].contiguous(),
                "shape": torch.tensor(list(c.scores.shape), dtype=torch.int64),
                "attribution_sums": c.attribution_sums, "deltas": c.deltas,
                "layer_positive_mass": c.layer_positive_mass,
                "scalars": torch.tensor([c.target_value, float(c.max_score), c.score_floor], dtype=torch.float64)}

    @classmethod
    def from_compact_tensors(cls, t: dict[str, torch.Tensor], prompt: str, answer: str,
                             language: str) -> PromptAttribution:
        """Inverse of :meth:`compact_tensors` (raises ``ValueError`` on inconsistent tensors)."""
        shape = [int(v) for v in t["shape"].tolist()]
        idx, vals = t["indices"].to(torch.int64), t["values"].float()
        if idx.shape != vals.shape or (idx.numel() and int(idx.max()) >= math.prod(shape)):
            raise ValueError(f"compact attribution of {prompt!r} [{language}]: indices and values do not fit "
                             f"shape {shape}")
        scores = torch.zeros(math.prod(shape), dtype=torch.float32)
        scores[idx] = vals
        target, top, floor = (float(v) for v in t["scalars"].tolist())
        return cls(prompt, answer, language, scores.view(shape), t["attribution_sums"].float(), t["deltas"].float(),
                   target, t["layer_positive_mass"].float(), top, floor)


def threshold_scores(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Boolean ``[n_layers, n_neurons]``: scores above ``threshold`` x the maximum over all layers (memla4mke).

    On a compact copy's scores (maximum > 0, so kept) the result equals the dense one's for ``threshold`` >= its
    floor; :func:`neurons_from_attributions` checks that."""
    top = float(scores.max())
    if top <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    return scores > threshold * top


def neurons_from_attributions(attributions: Sequence[PromptAttribution], threshold: float,
                              n_neurons: int | None = None) -> NeuronMasks:
    """Union over prompts of each prompt's thresholded neurons."""
    if not attributions:
        raise ValueError("no attributions to select neurons from")
    keep = torch.zeros_like(attributions[0].scores, dtype=torch.bool)
    for att in attributions:
        if threshold < att.score_floor:
            raise ValueError(f"threshold {threshold} is below the floor {att.score_floor} of the compact scores of "
                             f"{att.prompt!r} [{att.language}] (a multi-session run's durable cache keeps only "
                             f"scores above it); use a threshold >= {att.score_floor}")
        keep |= threshold_scores(att.scores, threshold)
    n = n_neurons or int(keep.shape[1])
    return NeuronMasks(n, {l: keep[l].clone() for l in range(keep.shape[0]) if bool(keep[l].any())})


__all__ = ["COMPACT_FLOOR", "PromptAttribution", "neurons_from_attributions", "threshold_scores"]
