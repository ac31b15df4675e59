"""Neuron sets and masks, in one import for the notebooks: language-independent (intersection over languages)
vs language-specific (the rest).

- :mod:`memla_utils.neuron_masks`: the sets (:class:`NeuronMasks`, :class:`RecordMasks`), their algebra, random
  sets of equal counts, Jaccard;
- :mod:`memla_utils.mask_compute`: MEMLA's two masks of a (record, edit language) from the knowledge neurons;
- :mod:`memla_utils.mask_files`: saving, loading and computing a run's masks;
- :mod:`memla_utils.mask_tables`: the notebooks' tables of neuron sets and attribution sweeps.

Nothing in the package imports this module (each imports the one it needs), so it creates no import cycle.
"""
from __future__ import annotations

from .attribution_scores import threshold_scores
from .mask_compute import (
    MaskConfig,
    compute_record_masks,
    language_neurons,
    masks_from_sets,
    notebook_attribution_config,
    notebook_mask_config,
)
from .mask_files import (
    RunMaskSets,
    compute_run_mask_sets,
    load_record_masks,
    mask_path,
    mask_source,
    run_masks,
    save_record_masks,
    saved_method,
    saved_source,
)
from .mask_tables import (
    counts_frame,
    independent_share_frame,
    jaccard_matrix,
    mask_totals,
    masks_summary,
    method_overlap,
    neuron_sets,
    run_attributions,
    steps_sweep,
    threshold_sweep,
)
from .neuron_masks import NeuronMasks, RecordMasks, intersection, jaccard, random_masks_like, union

__all__ = ["MaskConfig", "NeuronMasks", "RecordMasks", "RunMaskSets", "compute_record_masks", "compute_run_mask_sets",
           "counts_frame", "independent_share_frame", "intersection", "jaccard", "jaccard_matrix", "language_neurons",
           "load_record_masks", "mask_path", "mask_totals", "neuron_sets", "run_attributions", "mask_source", "masks_from_sets", "masks_summary", "method_overlap",
           "notebook_attribution_config", "notebook_mask_config", "random_masks_like", "run_masks", "save_record_masks",
           "saved_method",
           "saved_source", "steps_sweep", "threshold_scores", "threshold_sweep", "union"]
