"""A run's masks on disk: one safetensors file per (record, edit language), with its provenance.

Notebook 03 writes them (:func:`compute_run_mask_sets`); notebooks 04 and 06 reuse them only when the model and
the mask parameters match (:func:`run_masks`), so every notebook of a run edits with the same neurons.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from .cache import ArtifactCache, content_hash, write_tensors_atomic
from .mask_compute import MaskConfig, compute_record_masks, language_neurons, masks_from_sets
from .mkeb.record import Record
from .neuron_masks import NeuronMasks, RecordMasks


def mask_path(directory: str | Path, example_id: str, edit_language: str) -> Path:
    """``<dir>/<safe id>-<hash>_<lang>.safetensors`` (ids may hold ``:`` or ``/``)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", example_id)[:60]
    return Path(directory) / f"{safe}-{content_hash(example_id, 8)}_{edit_language}.safetensors"


def mask_source(lm: Any, config: MaskConfig) -> str:
    """Provenance of saved masks: the model fingerprint and every parameter that shaped them (the attribution
    method included, through ``MaskConfig.params``: masks of one method are never reused for the other)."""
    return content_hash({"model": lm.fingerprint, "dtype": str(lm.dtype), "masks": config.params()}, 16)


def save_record_masks(masks: RecordMasks, directory: str | Path, source: str = "", method: str = "") -> Path:
    """Both masks of one (record, edit language) in one safetensors file, atomically (``source``: mask_source;
    ``method``: the attribution method, stored readable as ``attribution_method`` next to the hash)."""
    path = mask_path(directory, masks.example_id, masks.edit_language)
    tensors = {**masks.specific.to_tensors("specific."), **masks.independent.to_tensors("independent.")}
    write_tensors_atomic(path, tensors, metadata={"example_id": masks.example_id,
                                                  "edit_language": masks.edit_language,
                                                  "n_neurons": str(masks.specific.n_neurons), "source": source,
                                                  "attribution_method": method})
    return path


def saved_method(path: str | Path) -> str:
    """The attribution method a saved masks file was made with (``""`` for files written before it was stored)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("attribution_method", "")


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
    """Neuron sets in every edit language, every one of ``languages`` and every independence language of
    ``config`` (one attribution batch per record), then the two masks of each (record, edit language) by set
    algebra, saved with their provenance for notebooks 04 and 06."""
    source = mask_source(lm, config)
    out = RunMaskSets({}, [], [])
    for record in records:
        wanted = dict.fromkeys([*edit_languages, *languages, *config.languages_for(record)])
        sets = language_neurons(lm, record, [l for l in wanted if l in record.edit], config.attribution, cache,
                                progress=progress)
        out.sets[record.example_id] = sets
        for lang in edit_languages:
            masks = masks_from_sets(record.example_id, lang, sets, config.languages_for(record))
            out.masks.append(masks)
            out.paths.append(save_record_masks(masks, directory, source, config.attribution.method))
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
            save_record_masks(masks, directory, source, config.attribution.method)
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
