"""Neuron sets and masks: language-independent (intersection over languages) vs language-specific (the rest).

A :class:`NeuronMasks` is a per-layer boolean vector over the FFN neurons (the adapter's neuron view); the
MEMLA editors restrict their LoRA updates to the down-projection weights attached to ``True`` neurons.
:func:`compute_record_masks` builds both masks of a (record, edit language) from the knowledge neurons of
:mod:`memla_utils.attribution` (which imports this module's classes lazily, so the import order is safe).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from .attribution import METHODS, AttributionConfig, neurons_from_attributions, record_attributions, threshold_scores
from .cache import ArtifactCache, write_tensors_atomic
from .languages import PAPER_INDEPENDENT_LANGUAGES, validate_languages
from .mkeb.record import Record, RecordError


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


# ============================================================================ computing the masks of a record
log = logging.getLogger(__name__)


@dataclass
class MaskConfig:
    """Which languages define language-independent neurons, and how neurons are attributed.

    ``independent_languages`` defaults to en, zh, fr as in memla4mke (the paper's code); ``"all"`` intersects
    over every language the record has. Languages a record lacks are left out of its intersection.
    ``attribution`` defaults to :class:`AttributionConfig` (``method="memla4mke"``, the released locator).
    """

    independent_languages: tuple[str, ...] | str = PAPER_INDEPENDENT_LANGUAGES
    attribution: AttributionConfig = field(default_factory=AttributionConfig)

    def __post_init__(self) -> None:
        if isinstance(self.independent_languages, str) and self.independent_languages.strip() == "all":
            self.independent_languages = "all"
        else:
            self.independent_languages = tuple(validate_languages(self.independent_languages,
                                                                  parameter="MaskConfig.independent_languages"))
        if not isinstance(self.attribution, AttributionConfig):
            raise ValueError(f"MaskConfig.attribution must be an AttributionConfig, got "
                             f"{type(self.attribution).__name__}")

    def params(self) -> dict[str, Any]:
        """Everything that determines a record's masks (for cache keys and saved-mask provenance)."""
        a = self.attribution
        return {"independent_languages": self.independent_languages, "scores": a.score_params(),
                "threshold": a.threshold, "use_paraphrases": a.use_paraphrases, "answer": a.answer}

    def languages_for(self, record: Record) -> list[str]:
        """The independence languages present in ``record`` (in the configured order)."""
        if self.independent_languages == "all":
            return list(record.languages)
        return [l for l in self.independent_languages if l in record.edit]


def notebook_mask_config(independent_languages: str | Sequence[str] = "en,zh,fr", steps: int = 20,
                         baseline: str = "eos_mean", threshold: float = 0.3, attribution_prompts: str = "all",
                         attribution_method: str = "memla4mke") -> MaskConfig:
    """The MaskConfig that the notebooks' papermill parameters describe (03, 04 and 06 build it the same way).

    ``attribution_prompts``: ``"all"`` (edit prompt and paraphrases, as memla4mke) or ``"edit"`` (edit prompt
    only: about a third of the attribution cost). ``attribution_method``: ``"memla4mke"`` (the released
    locator's computation, the paper's) or ``"exact"`` (exact IG of the down projection's inputs); see
    :mod:`memla_utils.attribution`.
    """
    if attribution_prompts not in ("edit", "all"):
        raise ValueError(f"attribution_prompts must be 'edit' or 'all', got {attribution_prompts!r}")
    if attribution_method not in METHODS:
        raise ValueError(f"attribution_method must be one of {METHODS}, got {attribution_method!r}")
    from .config import coerce_parameter  # a list, a comma string or one code (notebook parameter)

    given = coerce_parameter("independent_languages", independent_languages)
    langs: tuple[str, ...] | str = "all" if given == "all" else tuple(given)
    return MaskConfig(independent_languages=langs,
                      attribution=AttributionConfig(method=attribution_method, steps=int(steps), baseline=baseline,
                                                    threshold=float(threshold),
                                                    use_paraphrases=attribution_prompts == "all"))


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


def language_neurons(lm, record: Record, languages: Sequence[str], config: AttributionConfig | None = None,
                     cache: ArtifactCache | None = None, *, progress: bool = False) -> dict[str, NeuronMasks]:
    """Knowledge neurons of ``record`` per language; all uncached prompts of all languages in one batch."""
    config = config or AttributionConfig()
    atts = record_attributions(lm, record, list(languages), config, cache, progress=progress)
    return {lang: neurons_from_attributions(a, config.threshold, lm.adapter.n_neurons) for lang, a in atts.items()}


def masks_from_sets(example_id: str, edit_language: str, sets: dict[str, NeuronMasks],
                    independent_languages: Sequence[str]) -> RecordMasks:
    """Independent = intersection over ``independent_languages``; specific = edit language's set minus it."""
    if edit_language not in sets:
        raise RecordError(f"record {example_id!r}: no neuron set for edit language {edit_language!r}")
    langs = [l for l in independent_languages if l in sets]
    if len(langs) < 2:
        log.warning("record %r: only %s of the independence languages present; the 'independent' set is not a "
                    "cross-lingual intersection", example_id, langs or "none")
    n = sets[edit_language].n_neurons
    independent = intersection([sets[l] for l in langs]) if langs else NeuronMasks(n)
    specific = sets[edit_language] - independent
    specific = NeuronMasks(n, {l: specific.masks[l] for l in specific.layers})
    return RecordMasks(example_id, edit_language, specific=specific, independent=independent)


def compute_record_masks(lm, record: Record, edit_language: str, config: MaskConfig | None = None,
                         cache: ArtifactCache | None = None) -> RecordMasks:
    """MEMLA's two masks for one (record, edit language): language-specific (LSE) and -independent (LIE)."""
    config = config or MaskConfig()
    if edit_language not in record.edit:
        raise RecordError(f"record {record.example_id!r} has no edit language {edit_language!r} "
                          f"(it has: {', '.join(record.edit)})")
    langs = config.languages_for(record)
    needed = list(dict.fromkeys([*langs, edit_language]))
    sets = language_neurons(lm, record, needed, config.attribution, cache)
    return masks_from_sets(record.example_id, edit_language, sets, langs)


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


_SPLIT = {"mask_files": ("RunMaskSets", "compute_run_mask_sets", "load_record_masks", "mask_path", "mask_source",
                         "run_masks", "save_record_masks", "saved_method", "saved_source"),
          "mask_tables": ("counts_frame", "independent_share_frame", "jaccard_matrix", "masks_summary",
                          "method_overlap", "steps_sweep", "threshold_sweep")}


def __getattr__(name: str) -> Any:
    """Re-export the mask files and the notebook tables (their modules import this one)."""
    import importlib

    for module, names in _SPLIT.items():
        if name in names:
            return getattr(importlib.import_module(f".{module}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MaskConfig", "NeuronMasks", "RecordMasks", "compute_record_masks", "intersection", "jaccard",
           "language_neurons", "masks_from_sets", "notebook_mask_config", "random_masks_like", "threshold_scores",
           "union", *(n for names in _SPLIT.values() for n in names)]
