"""Where each claim of the claims table is measured: the notebook cell, the figure and the table.

The landing page links every row of ``figures/tables/claims.csv`` (by its ``key`` column, written by
:mod:`memla_utils.report.claims`) to the code cell that computes the underlying numbers, and to the figure and
table that show them. A cell is named by a piece of its source (``cell_marker``) rather than by its index or id,
so that inserting cells does not move the link; the builder fails with the claim and notebook named when the
marker no longer matches exactly one code cell.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from nbformat import NotebookNode


class EvidenceError(ValueError):
    """A claim has no evidence entry, or its entry no longer matches the notebook."""


@dataclass(frozen=True)
class Evidence:
    """One claim's evidence.

    ``notebook``: the notebook's stem (``04_memla``); ``cell_marker``: a substring of exactly one code cell of it;
    ``figures``/``tables``: stems of files under ``figures/`` and ``figures/tables/`` (absent ones are shown as
    "not produced in this run", not linked); ``what``: a few words on what the cell computes.
    """

    notebook: str
    cell_marker: str
    what: str
    figures: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()


#: claim key (``claims.csv`` column ``key``) -> where it is measured. Keys follow report/claims.PAPER_FIGURES.
CLAIM_EVIDENCE: dict[str, Evidence] = {
    "cross_lingual": Evidence("05_baselines", "report.main_stats(", "baselines' ES/PS/NS, same vs cross language",
                              figures=("methods_bars",), tables=("main_comparison", "baselines_main")),
    "cross_lingual_mean": Evidence("05_baselines", "report.main_stats(", "baselines' ES/PS/NS, same vs cross "
                                   "language", figures=("methods_bars",), tables=("main_comparison", "baselines_main")),
    "zh_ru": Evidence("04_memla", "report.language_matrices(", "MEMLA's edit × evaluation language matrix",
                      figures=("memla_language_matrix",), tables=("memla_per_language",)),
    "lse_lie": Evidence("04_memla", "report.ablation_stats(", "MEMLA and its LSE-only / LIE-only ablations",
                        figures=("memla_ablations", "ablation_bars"), tables=("ablation", "memla_ablations")),
    "multihop": Evidence("06_multihop_general", "report.multihop_stats(", "multi-hop QS per method",
                         tables=("multihop",)),
    # a marker that the cell has in the executed notebooks of earlier runs too (results/<preset>/notebooks)
    "general": Evidence("06_multihop_general", "Change after one edit vs the unedited model",
                        "perplexity and unrelated facts after edits",
                        figures=("sequential_editing",), tables=("general_single", "general_sequential")),
    "neurons_exist": Evidence("03_masks", "independent_share_frame(", "language-independent neurons per layer",
                              figures=("masks_independent_share",), tables=("masks_independent_share",
                                                                            "masks_counts")),
    "suppression": Evidence("02_knowledge_neurons", "sanity_effects(", "suppressing knowledge vs random neurons",
                            figures=("kn_sanity_check",), tables=("kn_sanity_summary", "kn_sanity_effects")),
    "neurons_matter": Evidence("04_memla", "report.ablation_stats(", "MEMLA vs MEMLA on random neurons",
                               figures=("memla_ablations", "ablation_bars"), tables=("ablation", "memla_ablations")),
}


def cell_label(notebook: str, marker: str) -> str:
    """The Sphinx label the builder puts in front of the cell ``marker`` names, e.g.
    ``cell-04_memla-report-ablation-stats`` (distinct markers give distinct labels)."""
    return f"cell-{notebook}-" + "-".join(re.findall(r"[A-Za-z0-9]+", marker)).lower()


def evidence_for(key: str) -> Evidence:
    """The evidence entry of a claim key; :class:`EvidenceError` naming the key when there is none."""
    try:
        return CLAIM_EVIDENCE[key]
    except KeyError:
        raise EvidenceError(f"claim key {key!r} (figures/tables/claims.csv) has no entry in "
                            f"memla_utils/book/evidence.py CLAIM_EVIDENCE; add where it is measured") from None


def find_cell(nb: NotebookNode, notebook: str, marker: str) -> int:
    """Index of the one code cell of ``nb`` whose source contains ``marker``.

    Raises :class:`EvidenceError` naming the notebook and marker when none or several cells match.
    """
    hits = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and marker in c.source]
    if len(hits) != 1:
        raise EvidenceError(f"notebook {notebook}: {len(hits)} code cells contain {marker!r} (need exactly one); "
                            f"update memla_utils/book/evidence.py CLAIM_EVIDENCE")
    return hits[0]
