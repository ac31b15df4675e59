"""The baselines of a run ranked by their cross-lingual score: which are "the three strongest" (issue 16).

The MzsRE and Bi-ZsRE presets run MEMLA, LSE, LIE and "the three strongest baselines of the medium run". This module
says which those are, by the same score the claims table's cross-lingual claim uses (:mod:`.claims`: per record, the
mean over ES, PS and NS of the record's cell means, evaluation language ≠ edit language), so the ranking and the
"memla − strongest baseline" row can never name different winners for the same records.
"""
from __future__ import annotations

import pandas as pd

from .claims import ClaimConfig, _score_per_record
from .names import baseline_methods, method_order
from .stats import BootstrapConfig, bootstrap_ci, scores

#: Columns of :func:`baseline_ranking`.
RANKING_COLUMNS: tuple[str, ...] = ("rank", "method", "mean", "ci_low", "ci_high", "n")


def baseline_ranking(results: pd.DataFrame | None, *, config: ClaimConfig = ClaimConfig(),  # noqa: B008 - frozen dataclass, immutable
                     boot: BootstrapConfig = BootstrapConfig()) -> pd.DataFrame:  # noqa: B008 - frozen dataclass, immutable
    """Every baseline of ``results`` ranked by its cross-lingual score, strongest first.

    ``results``: the run's rows (:func:`memla_utils.report.inputs.load_results_table`). The score of a (method,
    record) is the mean over ``config.main_metrics`` (ES, PS, NS) of its cross-lingual cell means (edit language ≠
    evaluation language), as in :func:`memla_utils.report.claims.claims_table`'s cross-lingual claim. Baselines
    are compared on the records **every** baseline has a score for, so a baseline that skipped records (ROME /
    MEMIT / PMET without a subject) is not ranked on an easier subset; ``n`` is that number of records. Ties in
    the mean keep :func:`memla_utils.report.names.method_order`. Returns :data:`RANKING_COLUMNS` (``mean`` and
    the 95% bootstrap interval in [0, 1]); empty when there are no baseline scores.
    """
    empty = pd.DataFrame(columns=list(RANKING_COLUMNS))
    if results is None or results.empty:
        return empty
    t = scores(results)
    t = t[t["scope"] == "cross"]
    per_record = _score_per_record(t, list(config.main_metrics))
    methods = baseline_methods(method_order(set(per_record["method"])))
    if not methods:
        return empty
    by_method = {m: per_record[per_record["method"] == m].set_index("record")["value"] for m in methods}
    common = set.intersection(*(set(v.index) for v in by_method.values()))
    if not common:
        return empty
    shared = sorted(common)
    rows = []
    for order, m in enumerate(methods):
        s = bootstrap_ci(by_method[m].loc[shared].to_numpy(), boot)
        rows.append({"method": m, "mean": s.mean, "ci_low": s.ci_low, "ci_high": s.ci_high, "n": s.n,
                     "_order": order})
    out = pd.DataFrame(rows).sort_values(["mean", "_order"], ascending=[False, True], kind="stable")
    out.insert(0, "rank", range(1, len(out) + 1))
    return out.drop(columns="_order").reset_index(drop=True)[list(RANKING_COLUMNS)]


def strongest_baselines(ranking: pd.DataFrame, k: int = 3) -> list[str]:
    """The first ``k`` methods of :func:`baseline_ranking`'s table. Raises ``ValueError`` for ``k < 1`` or a
    table with fewer than ``k`` baselines (naming both numbers)."""
    if k < 1:
        raise ValueError(f"strongest_baselines: k must be >= 1, got {k}")
    if len(ranking) < k:
        raise ValueError(f"strongest_baselines: asked for {k} baselines, the ranking has {len(ranking)}")
    return [str(m) for m in ranking.sort_values("rank")["method"].head(k)]

