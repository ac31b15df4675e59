"""Numbers with 95% intervals: the record is the unit of resampling, so ``n`` is the number of edited facts.

Inside a cell, values are first averaged per record, then a percentile bootstrap over records gives the interval.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..finite import NonFiniteError
from .names import ABLATION_METHODS, SCORE_METRICS


@dataclass(frozen=True)
class BootstrapConfig:
    """Percentile bootstrap over records. 2000 resamples keeps the 95% bounds stable to ~0.5 points at n=100."""

    n_boot: int = 2000
    level: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class CellStat:
    mean: float
    ci_low: float
    ci_high: float
    n: int


def bootstrap_ci(values: Sequence[float] | np.ndarray, boot: BootstrapConfig = BootstrapConfig()) -> CellStat:
    """Mean of ``values`` with a percentile-bootstrap interval; NaN bounds when fewer than two values.

    The generator is seeded from ``boot.seed`` alone, so the same values always give the same interval.
    """
    x = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))],
                   dtype=np.float64)
    if not np.isfinite(x).all():
        raise NonFiniteError(f"bootstrap_ci: {int((~np.isfinite(x)).sum())} infinite value(s) among {x.size}; an "
                             f"infinite score is an error upstream, not a number to average")
    if x.size == 0:
        return CellStat(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if x.size < 2:
        return CellStat(mean, math.nan, math.nan, int(x.size))
    rng = np.random.default_rng(boot.seed)
    idx = rng.integers(0, x.size, size=(boot.n_boot, x.size))
    means = x[idx].mean(axis=1)
    alpha = (1.0 - boot.level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return CellStat(mean, float(lo), float(hi), int(x.size))


def _require_finite(df: pd.DataFrame, column: str, bad: pd.Series, what: str) -> None:
    """Raise ``NonFiniteError`` naming the first row (record, method, languages, metric) where ``bad`` holds."""
    if bool(bad.any()):
        row = df[bad].iloc[0]
        name = ", ".join(f"{k} {row[k]!r}" for k in ("record", "method", "edit_lang", "eval_lang", "metric")
                         if k in df.columns)
        raise NonFiniteError(f"{int(bad.sum())} {what} row(s) have a non-finite {column!r}, first: {name} "
                             f"({column} = {row[column]!r}); a NaN or infinite score is an error upstream, not a "
                             f"number to average")


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Rows with a usable numeric value, plus ``scope`` = same (edit = eval language) or cross.

    A value that is ±inf, or missing/NaN on a row that claims to average ``n > 0`` prompts, raises
    ``NonFiniteError`` naming the row; a missing value with ``n == 0`` means "not available" and is dropped.
    """
    need = {"record", "method", "metric", "value"}
    missing = need - set(df.columns)
    if missing:
        raise ValueError(f"results table lacks column(s) {sorted(missing)}; has {list(df.columns)}")
    out = df.copy()
    out["value"] = pd.to_numeric(out["value"], errors="coerce")
    bad = np.isinf(out["value"])
    if "n" in out.columns:
        bad |= out["value"].isna() & (pd.to_numeric(out["n"], errors="coerce").fillna(0) > 0)
    _require_finite(out, "value", bad, "result")
    out = out[out["value"].notna()]
    if "edit_lang" in out.columns and "eval_lang" in out.columns:
        out["scope"] = np.where(out["edit_lang"] == out["eval_lang"], "same", "cross")
    return out


def in_value_order(df: pd.DataFrame, column: str = "value") -> pd.DataFrame:
    """``df`` sorted by ``column`` (stable; NaN last), for a group-by mean whose terms must not follow the row order.

    A group-by keeps each group's rows in the order they come in, and a float sum depends on the order of its
    terms (in the last bit); summed in order of value, the same values give the same mean however the rows of
    ``df`` were ordered (shard layout, number of workers, another caller's frame).
    """
    return df.sort_values(column, kind="stable", na_position="last")


def per_record(df: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """One value per (cell, record): the mean of that record's rows in the cell, sorted by cell and record.

    Independent of the order of ``df``'s rows (shard layout, workers): sorted by record, not in order of first
    appearance, because :func:`cell_stats` hands the values to the seeded :func:`bootstrap_ci`, which indexes
    them by position; and each mean sums its terms in order of value (:func:`in_value_order`).
    """
    return in_value_order(df).groupby([*by, "record"], dropna=False, sort=True)["value"].mean().reset_index()


def cell_stats(df: pd.DataFrame, by: Sequence[str], boot: BootstrapConfig = BootstrapConfig()) -> pd.DataFrame:
    """``by`` + mean, ci_low, ci_high, n (records) for every cell of a tidy table."""
    by = list(by)
    if df.empty:
        return pd.DataFrame(columns=[*by, "mean", "ci_low", "ci_high", "n"])
    rec = per_record(df, by)
    rows = []
    for key, grp in rec.groupby(by, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        s = bootstrap_ci(grp["value"].to_numpy(), boot)
        rows.append({**dict(zip(by, key)), "mean": s.mean, "ci_low": s.ci_low, "ci_high": s.ci_high, "n": s.n})
    return pd.DataFrame(rows)


#: relative difference below which two means are the same for choosing the strongest method (float rounding)
TIE_RTOL = 1e-12


def paired_difference(df: pd.DataFrame, method_a: str, methods_b: Sequence[str],
                      boot: BootstrapConfig = BootstrapConfig()) -> tuple[CellStat, str | None]:
    """Record-paired ``a − best(b)``: the strongest of ``methods_b`` (highest mean) on the shared records.

    Means within :data:`TIE_RTOL` of each other are a tie, won by the method named first in ``methods_b``: which
    of two equally strong baselines is "the strongest" must not turn on the last bit of a float sum.

    ``df`` holds one score per (method, record) in ``value``. Returns the stat and the chosen competitor.
    The differences go to the bootstrap sorted by record, whatever the order of ``df``'s rows.
    """
    rec = in_value_order(df).groupby(["method", "record"], sort=True)["value"].mean()
    if method_a not in rec.index.get_level_values(0):
        return CellStat(math.nan, math.nan, math.nan, 0), None
    a = rec.loc[method_a]
    best, best_mean, best_diff = None, -math.inf, None
    for b in methods_b:
        if b not in rec.index.get_level_values(0):
            continue
        vb = rec.loc[b]
        shared = a.index.intersection(vb.index)
        if len(shared) == 0:
            continue
        mean_b = float(vb.loc[shared].mean())
        if best is None or mean_b > best_mean + TIE_RTOL * max(1.0, abs(best_mean)):  # a tie keeps the earlier one
            best, best_mean = b, mean_b
            best_diff = (a.loc[shared] - vb.loc[shared]).to_numpy()
    if best is None:
        return CellStat(math.nan, math.nan, math.nan, 0), None
    return bootstrap_ci(best_diff, boot), best


def scores(df: pd.DataFrame, metrics: Sequence[str] = SCORE_METRICS) -> pd.DataFrame:
    """Only the editing-metric rows (ES/PS/NS/QS), not timings or labelled variants."""
    t = tidy(df)
    return t[t["metric"].isin(metrics)]


def main_stats(df: pd.DataFrame, *, sources: Sequence[str] = ("en", "zh"), boot: BootstrapConfig = BootstrapConfig(),
               metrics: Sequence[str] = SCORE_METRICS) -> pd.DataFrame:
    """Method × source (edit) language × scope (same / cross) × metric, the paper's main comparison
    (``metrics``: :data:`TOKEN_ACC_METRICS` for records without a true answer, :func:`needs_token_accuracy`)."""
    t = scores(df, metrics)
    t = t[t["edit_lang"].isin(sources)]
    return cell_stats(t, ["method", "edit_lang", "scope", "metric"], boot)


def ablation_stats(df: pd.DataFrame, boot: BootstrapConfig = BootstrapConfig(),
                   metrics: Sequence[str] = SCORE_METRICS) -> pd.DataFrame:
    """MEMLA and its ablations, edit languages pooled, by scope and metric."""
    t = scores(df, metrics)
    t = t[t["method"].isin(ABLATION_METHODS)]
    return cell_stats(t, ["method", "scope", "metric"], boot)


def per_language_stats(df: pd.DataFrame, boot: BootstrapConfig = BootstrapConfig(),
                       metrics: Sequence[str] = SCORE_METRICS) -> pd.DataFrame:
    """Every (metric, method, edit language, evaluation language) cell."""
    return cell_stats(scores(df, metrics), ["metric", "method", "edit_lang", "eval_lang"], boot)


def needs_token_accuracy(df: pd.DataFrame) -> bool:
    """True when the results have no paper ES / PS at all (their records have no ``target_true``: MzsRE,
    Bi-ZsRE) but do have the token-accuracy variants: the report then adds the :data:`TOKEN_ACC_METRICS` tables.
    Never true for MKEB runs, whose tables stay exactly as they were."""
    if df is None or df.empty or "metric" not in df.columns:
        return False
    return scores(df, ("ES", "PS")).empty and not scores(df, ("ES_token_acc", "PS_token_acc")).empty


def multihop_stats(df: pd.DataFrame, *, sources: Sequence[str] = ("en", "zh"),
                   boot: BootstrapConfig = BootstrapConfig()) -> pd.DataFrame:
    """QS by method, edit language (en / zh) and evaluation language."""
    t = scores(df, ("QS",))
    return cell_stats(t[t["edit_lang"].isin(sources)], ["method", "edit_lang", "eval_lang"], boot)


def general_stats(gdf: pd.DataFrame, boot: BootstrapConfig = BootstrapConfig()) -> pd.DataFrame:
    """General ability after editing: change vs the unedited model, by setting, method, edits, language, metric.

    ``gdf`` holds :mod:`memla_utils.general` rows; the interval is about the change: ``after − before`` for
    accuracies, ``after / before − 1`` for perplexities (metrics ``perplexity_rel`` on the prose,
    ``relation_spillover_perplexity_rel`` on the edited relation's true facts).
    """
    if gdf is None or gdf.empty:
        return pd.DataFrame(columns=["setting", "method", "n_edits", "eval_lang", "metric", "mean", "ci_low",
                                     "ci_high", "n", "before", "after"])
    g = gdf.copy()
    for col in ("before", "after", "delta"):  # None (no reference) is allowed; NaN/inf after editing is not
        if col in g.columns:
            g[col] = pd.to_numeric(g[col], errors="coerce")
            _require_finite(g, col, np.isinf(g[col]) | (g[col].isna() if col == "after" else False),
                            "general-ability")
    # perplexity scales differ by language: report the relative change (prose and relation spill-over alike)
    ppl = g["metric"].astype(str).str.endswith("perplexity")
    g.loc[ppl, "delta"] = pd.to_numeric(g.loc[ppl, "after"]) / pd.to_numeric(g.loc[ppl, "before"]) - 1.0
    g.loc[ppl, "metric"] = g.loc[ppl, "metric"].astype(str) + "_rel"
    g["value"] = pd.to_numeric(g["delta"], errors="coerce")
    keys = ["setting", "method", "n_edits", "eval_lang", "metric"]
    levels = g.groupby(keys, dropna=False)[["before", "after"]].mean().reset_index()
    g = g[g["value"].notna()]
    stats = cell_stats(g, keys, boot)
    return stats.merge(levels, on=keys, how="left")
