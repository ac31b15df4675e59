"""Tables the mask notebooks show: counts per layer, overlaps, independent shares, threshold and step sweeps, and
the agreement of the two attribution methods."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from .attribution_config import METHODS, AttributionConfig
from .attribution_parallel import prefill_attributions
from .attribution_records import record_attributions
from .attribution_scores import neurons_from_attributions
from .cache import ArtifactCache
from .mkeb.record import Record
from .neuron_masks import NeuronMasks, RecordMasks, jaccard


def masks_summary(masks: Mapping[tuple[str, str], RecordMasks], records: Sequence[Record]):
    """One row per (record, edit language): neurons and layers of each mask, and the edit prompt."""
    import pandas as pd

    prompts = {(r.example_id, lang): r.for_language(lang).prompt for r in records for lang in r.edit}
    return pd.DataFrame([{"record": rid, "edit language": lang, "specific neurons": m.specific.total,
                          "specific layers": len(m.specific.layers), "independent neurons": m.independent.total,
                          "independent layers": len(m.independent.layers), "prompt": prompts.get((rid, lang))}
                         for (rid, lang), m in masks.items()])


def run_attributions(lm, records: Sequence[Record], languages: Sequence[str], config: AttributionConfig,
                     cache: ArtifactCache | None = None, *, progress: bool = False) -> dict[tuple[str, str], list]:
    """``{(example_id, language): [PromptAttribution, ...]}`` for every record in each of ``languages`` it has
    (:func:`memla_utils.attribution.record_attributions`: cached prompts are read, the rest computed). On a CPU
    with several cores the prompts not cached are computed first in one-thread worker processes
    (:func:`memla_utils.attribution_parallel.prefill_attributions`; ``$MEMLA_WORKERS``), the same bits."""
    cache = cache if cache is not None else ArtifactCache()
    prefill_attributions(lm, records, languages, config, cache, progress=progress)
    return {(rec.example_id, lang): atts for rec in records
            for lang, atts in record_attributions(lm, rec, [lang for lang in languages if lang in rec.edit], config,
                                                  cache, progress=progress).items()}


def neuron_sets(attributions: Mapping[tuple[str, str], list], threshold: float, n_neurons: int
                ) -> dict[tuple[str, str], NeuronMasks]:
    """The knowledge neurons of each ``(example_id, language)`` at ``threshold``
    (:func:`memla_utils.attribution.neurons_from_attributions`)."""
    return {key: neurons_from_attributions(atts, threshold, n_neurons) for key, atts in attributions.items()}


def mask_totals(record_masks: Sequence[RecordMasks], n_layers: int):
    """MEMLA's masks per record: ``(counts, totals)``, with ``counts`` tidy per layer (:func:`counts_frame`, the
    language column reading ``"<edit language>·specific"`` / ``"·independent"``) and ``totals`` the neurons of
    each mask summed over layers (rows: example ids; columns: those labels)."""
    labelled = {(rm.example_id, f"{rm.edit_language}·specific"): rm.specific for rm in record_masks}
    labelled |= {(rm.example_id, f"{rm.edit_language}·independent"): rm.independent for rm in record_masks}
    counts = counts_frame(labelled, n_layers)
    return counts, counts.groupby(["example_id", "language"])["n"].sum().unstack("language")


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
    atts = {s: record_attributions(lm, record, language, dataclasses.replace(config, steps=s), cache,
                                   dense=True)[language]  # Spearman needs every score
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


def method_overlap(lm, records: Sequence[Record], languages: Sequence[str], config: AttributionConfig | None = None,
                   cache: ArtifactCache | None = None, *, progress: bool = False):
    """Per (record, language): the neuron sets of the two attribution methods and how much they agree.

    Both sets use ``config``'s steps, baseline, target, prompts and threshold; only ``method`` differs
    (``memla4mke``, the released locator, vs ``exact``, see :mod:`memla_utils.attribution`). Columns:
    ``example_id, language, n_memla4mke, n_exact, n_shared`` (neurons, union over the prompts),
    ``jaccard`` (``n_shared / |union|``, 1.0 when both are empty) and ``spearman`` (rank correlation of the two
    score tensors ``[n_layers, n_neurons]``, mean over the prompts). Languages a record lacks are skipped.
    Scores are cached per method (the method is part of the key), so a rerun computes nothing.
    """
    import dataclasses

    import pandas as pd
    from scipy.stats import spearmanr

    config = config or AttributionConfig()
    cache = cache if cache is not None else ArtifactCache()
    for m in METHODS:  # the prompts not cached, in one-thread worker processes where a CPU has several cores
        prefill_attributions(lm, records, languages, dataclasses.replace(config, method=m), cache, dense=True,
                             progress=progress)
    rows = []
    for record in records:
        langs = [l for l in languages if l in record.edit]
        if not langs:
            continue
        atts = {m: record_attributions(lm, record, langs, dataclasses.replace(config, method=m), cache,
                                       progress=progress, dense=True) for m in METHODS}  # Spearman: all scores
        for lang in langs:
            sets = {m: neurons_from_attributions(atts[m][lang], config.threshold, lm.adapter.n_neurons)
                    for m in METHODS}
            rho = [float(spearmanr(x.scores.flatten().numpy(), y.scores.flatten().numpy()).statistic)
                   for x, y in zip(atts["memla4mke"][lang], atts["exact"][lang])]
            rows.append({"example_id": record.example_id, "language": lang,
                         "n_memla4mke": sets["memla4mke"].total, "n_exact": sets["exact"].total,
                         "n_shared": (sets["memla4mke"] & sets["exact"]).total,
                         "jaccard": jaccard(sets["memla4mke"], sets["exact"]), "spearman": sum(rho) / len(rho)})
    return pd.DataFrame(rows, columns=["example_id", "language", "n_memla4mke", "n_exact", "n_shared", "jaccard",
                                       "spearman"])
