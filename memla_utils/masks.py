"""Neuron sets and masks: language-independent (intersection over languages) vs language-specific (the rest).

A :class:`NeuronMasks` is a per-layer boolean vector over the FFN neurons (the adapter's neuron view); the
MEMLA editors restrict their LoRA updates to the down-projection weights attached to ``True`` neurons.
:func:`compute_record_masks` builds both masks of a (record, edit language) from the knowledge neurons of
:mod:`memla_utils.attribution` (which imports this module's classes lazily, so the import order is safe).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from .attribution import AttributionConfig, neurons_from_attributions, record_attributions, threshold_scores
from .cache import ArtifactCache, content_hash, write_tensors_atomic
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


def notebook_mask_config(independent_languages: str = "en,zh,fr", steps: int = 20, baseline: str = "eos_mean",
                         threshold: float = 0.3, attribution_prompts: str = "all") -> MaskConfig:
    """The MaskConfig that the notebooks' papermill parameters describe (03, 04 and 06 build it the same way).

    ``attribution_prompts``: ``"all"`` (edit prompt and paraphrases, as memla4mke) or ``"edit"`` (edit prompt
    only: about a third of the attribution cost).
    """
    if attribution_prompts not in ("edit", "all"):
        raise ValueError(f"attribution_prompts must be 'edit' or 'all', got {attribution_prompts!r}")
    langs: tuple[str, ...] | str = "all" if independent_languages.strip() == "all" else tuple(
        s.strip() for s in independent_languages.split(",") if s.strip())
    return MaskConfig(independent_languages=langs,
                      attribution=AttributionConfig(steps=int(steps), baseline=baseline, threshold=float(threshold),
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


# ---------------------------------------------------------------------------- saving (notebook 04 reuses them)
def mask_path(directory: str | Path, example_id: str, edit_language: str) -> Path:
    """``<dir>/<safe id>-<hash>_<lang>.safetensors`` (ids may hold ``:`` or ``/``)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", example_id)[:60]
    return Path(directory) / f"{safe}-{content_hash(example_id, 8)}_{edit_language}.safetensors"


def mask_source(lm: Any, config: MaskConfig) -> str:
    """Provenance of saved masks: the model fingerprint and every parameter that shaped them."""
    return content_hash({"model": lm.fingerprint, "dtype": str(lm.dtype), "masks": config.params()}, 16)


def save_record_masks(masks: RecordMasks, directory: str | Path, source: str = "") -> Path:
    """Both masks of one (record, edit language) in one safetensors file, atomically (``source``: mask_source)."""
    path = mask_path(directory, masks.example_id, masks.edit_language)
    tensors = {**masks.specific.to_tensors("specific."), **masks.independent.to_tensors("independent.")}
    write_tensors_atomic(path, tensors, metadata={"example_id": masks.example_id,
                                                  "edit_language": masks.edit_language,
                                                  "n_neurons": str(masks.specific.n_neurons), "source": source})
    return path


def saved_source(path: str | Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("source", "")


@dataclass
class RunMaskSets:
    """Notebook 03's result: every record's per-language neuron sets and its masks per edit language."""

    sets: dict[str, dict[str, NeuronMasks]]   # example_id -> language -> knowledge neurons
    masks: list[RecordMasks]                  # one per (record, edit language), in record order
    paths: list[Path]                         # where each was saved


def compute_run_mask_sets(lm: Any, records: Sequence[Record], edit_languages: Sequence[str],
                          languages: Sequence[str], config: MaskConfig, directory: str | Path,
                          cache: ArtifactCache | None = None, *, progress: bool = False) -> RunMaskSets:
    """Neuron sets in every edit and run language (one attribution batch per record), then the two masks of each
    (record, edit language) by set algebra, saved with their provenance for notebooks 04 and 06."""
    source = mask_source(lm, config)
    wanted = list(dict.fromkeys([*edit_languages, *languages]))
    out = RunMaskSets({}, [], [])
    for record in records:
        sets = language_neurons(lm, record, [l for l in wanted if l in record.edit], config.attribution, cache,
                                progress=progress)
        out.sets[record.example_id] = sets
        for lang in edit_languages:
            masks = masks_from_sets(record.example_id, lang, sets, config.languages_for(record))
            out.masks.append(masks)
            out.paths.append(save_record_masks(masks, directory, source))
    return out


def run_masks(lm: Any, records: Sequence[Record], edit_languages: Sequence[str], directory: str | Path,
              config: MaskConfig | None = None, cache: ArtifactCache | None = None) -> dict[tuple[str, str], RecordMasks]:
    """The masks of a run, ``{(example_id, edit_language): RecordMasks}``, shared by notebooks 03, 04 and 06.

    A file notebook 03 saved under ``directory`` is reused when it was made from the same model and parameters;
    anything missing or made otherwise is computed (attribution is cached) and saved, so every notebook of a run
    edits with the same masks.
    """
    config = config or MaskConfig()
    source = mask_source(lm, config)
    out: dict[tuple[str, str], RecordMasks] = {}
    for record in records:
        for lang in edit_languages:
            path = mask_path(directory, record.example_id, lang)
            if path.is_file() and saved_source(path) == source:
                out[(record.example_id, lang)] = load_record_masks(path)
                continue
            masks = compute_record_masks(lm, record, lang, config, cache)
            save_record_masks(masks, directory, source)
            out[(record.example_id, lang)] = masks
    return out


def load_record_masks(path: str | Path) -> RecordMasks:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if not {"example_id", "edit_language", "n_neurons"} <= set(meta):
        raise ValueError(f"{path}: not a record-masks file (metadata lacks example_id/edit_language/n_neurons)")
    n = int(meta["n_neurons"])
    t = load_file(str(path))

    def part(prefix: str) -> NeuronMasks:
        return NeuronMasks(n, {int(k[len(prefix):].removeprefix("layer")): v.bool()
                               for k, v in t.items() if k.startswith(prefix)})

    return RecordMasks(meta["example_id"], meta["edit_language"], specific=part("specific."),
                       independent=part("independent."))


# ---------------------------------------------------------------------------- tables for the notebooks
def masks_summary(masks: Mapping[tuple[str, str], RecordMasks], records: Sequence[Record]):
    """One row per (record, edit language): neurons and layers of each mask, and the edit prompt."""
    import pandas as pd

    prompts = {(r.example_id, lang): r.for_language(lang).prompt for r in records for lang in r.edit}
    return pd.DataFrame([{"record": rid, "edit language": lang, "specific neurons": m.specific.total,
                          "specific layers": len(m.specific.layers), "independent neurons": m.independent.total,
                          "independent layers": len(m.independent.layers), "prompt": prompts.get((rid, lang))}
                         for (rid, lang), m in masks.items()])


def counts_frame(sets: dict[tuple[str, str], NeuronMasks], n_layers: int):
    """Tidy ``example_id, language, layer, n`` (zeros included) from ``{(example_id, language): set}``."""
    import pandas as pd

    rows = [{"example_id": rid, "language": lang, "layer": l, "n": int(m.masks[l].sum()) if l in m.masks else 0}
            for (rid, lang), m in sets.items() for l in range(n_layers)]
    return pd.DataFrame(rows, columns=["example_id", "language", "layer", "n"])


def jaccard_matrix(sets_by_record: dict[str, dict[str, NeuronMasks]], languages: Sequence[str]):
    """Mean over records of the Jaccard overlap of each pair of languages' neuron sets."""
    import pandas as pd

    mat = pd.DataFrame(0.0, index=list(languages), columns=list(languages))
    for a in languages:
        for b in languages:
            vals = [jaccard(s[a], s[b]) for s in sets_by_record.values() if a in s and b in s]
            mat.loc[a, b] = sum(vals) / len(vals) if vals else float("nan")
    return mat


def independent_share_frame(record_masks: Sequence[RecordMasks], n_layers: int):
    """Per (edit language, layer): independent / (specific + independent) neurons, pooled over records."""
    import pandas as pd

    rows = []
    for rm in record_masks:
        for l in range(n_layers):
            ind = int(rm.independent.masks[l].sum()) if l in rm.independent.masks else 0
            spec = int(rm.specific.masks[l].sum()) if l in rm.specific.masks else 0
            rows.append({"example_id": rm.example_id, "edit_language": rm.edit_language, "layer": l,
                         "independent": ind, "specific": spec})
    df = pd.DataFrame(rows, columns=["example_id", "edit_language", "layer", "independent", "specific"])
    agg = df.groupby(["edit_language", "layer"], as_index=False)[["independent", "specific"]].sum()
    total = agg["independent"] + agg["specific"]
    agg["share_independent"] = (agg["independent"] / total).where(total > 0)
    return agg


def threshold_sweep(attributions, thresholds: Sequence[float], reference: float = 0.3):
    """Neuron counts and Jaccard vs the ``reference`` threshold, from cached scores (no recomputation).

    ``attributions``: ``{(example_id, language): [PromptAttribution, ...]}``.
    """
    import pandas as pd

    rows = []
    for (rid, lang), atts in attributions.items():
        n = int(atts[0].scores.shape[1])
        ref = neurons_from_attributions(atts, reference, n)
        for t in thresholds:
            m = neurons_from_attributions(atts, float(t), n)
            rows.append({"example_id": rid, "language": lang, "threshold": float(t), "n_neurons": m.total,
                         "jaccard_vs_reference": jaccard(m, ref)})
    return pd.DataFrame(rows)


def steps_sweep(lm, record: Record, language: str, steps: Sequence[int], config: AttributionConfig | None = None,
                cache: ArtifactCache | None = None):
    """How the neuron set and the scores change with the number of IG steps (vs the largest count)."""
    import dataclasses

    import pandas as pd
    from scipy.stats import spearmanr

    config = config or AttributionConfig()
    steps = sorted(int(s) for s in steps)
    atts = {s: record_attributions(lm, record, language, dataclasses.replace(config, steps=s), cache)[language]
            for s in steps}
    ref_atts = atts[steps[-1]]
    ref = neurons_from_attributions(ref_atts, config.threshold, lm.adapter.n_neurons)
    rows = []
    for s, a in atts.items():
        m = neurons_from_attributions(a, config.threshold, lm.adapter.n_neurons)
        rho = [float(spearmanr(x.scores.flatten().numpy(), y.scores.flatten().numpy()).statistic)
               for x, y in zip(a, ref_atts)]
        rows.append({"example_id": record.example_id, "language": language, "steps": s, "n_neurons": m.total,
                     "jaccard_vs_max_steps": jaccard(m, ref), "spearman_vs_max_steps": sum(rho) / len(rho),
                     "completeness_error": max(x.completeness_error for x in a)})
    return pd.DataFrame(rows)


__all__ = ["MaskConfig", "NeuronMasks", "RecordMasks", "RunMaskSets", "compute_record_masks", "compute_run_mask_sets", "counts_frame", "independent_share_frame",
           "intersection", "jaccard", "jaccard_matrix", "language_neurons", "load_record_masks", "mask_path", "masks_summary",
           "mask_source", "masks_from_sets", "notebook_mask_config", "random_masks_like", "run_masks", "save_record_masks", "saved_source", "steps_sweep", "threshold_scores",
           "threshold_sweep", "union"]
