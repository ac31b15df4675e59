"""Metric and method names, and their reading order: one vocabulary for the statistics, tables, figures and claims."""
from __future__ import annotations

from collections.abc import Iterable

from ..config import ALL_METHODS

#: The paper's four editing metrics (reliability, generality, locality, portability/multi-hop).
SCORE_METRICS: tuple[str, ...] = ("ES", "PS", "NS", "QS")
#: The same four with ES / PS as the teacher-forced token accuracy of the new target (the runner's labelled
#: variants ``ES_token_acc`` / ``PS_token_acc``): what EasyEdit reports as reliability / generality on zsRE, and
#: the only ES / PS a record without ``target_true`` (MzsRE, Bi-ZsRE) has -- its paper ES / PS (P(new) > P(true))
#: are not available.
TOKEN_ACC_METRICS: tuple[str, ...] = ("ES_token_acc", "PS_token_acc", "NS", "QS")
#: MEMLA and its ablations (same editor, different masks) -- the rows of the ablation table.
ABLATION_METHODS: tuple[str, ...] = ("memla", "memla-lse", "memla-lie", "memla-unmasked", "memla-random",
                                     "memla-zero-hidden")
#: Rows that are not editing methods but references.
REFERENCE_METHODS: tuple[str, ...] = ("unedited",)
#: Metrics shown as percentages (values in [0, 1]); everything else is shown as is.
PERCENT_METRICS: frozenset[str] = frozenset(SCORE_METRICS) | frozenset(TOKEN_ACC_METRICS) | {"fact_accuracy", "fact_token_accuracy",
                                                              "edit_retention", "perplexity_rel",
                                                              "relation_spillover_accuracy",
                                                              "relation_spillover_perplexity_rel"}
MISSING = "missing"


def baseline_methods(methods: Iterable[str]) -> list[str]:
    """Methods that are neither MEMLA (or an ablation) nor a reference row."""
    return [m for m in methods if not m.startswith("memla") and m not in REFERENCE_METHODS]


def method_order(methods: Iterable[str]) -> list[str]:
    """``ALL_METHODS`` order first (MEMLA, ablations, baselines), then references, then the rest by name."""
    rank = {m: i for i, m in enumerate((*ALL_METHODS, *REFERENCE_METHODS))}
    return sorted(set(methods), key=lambda m: (rank.get(m, len(rank)), m))
