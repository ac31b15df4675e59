"""The paper's figures, saved as PNG + PDF without timestamps so the same numbers give the same files."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..languages import ordered
from .names import ABLATION_METHODS, PERCENT_METRICS, SCORE_METRICS, method_order
from .stats import per_record, scores


def _pyplot():
    import matplotlib.pyplot as plt  # backend: Agg when headless, inline in notebooks
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    plt.rcParams.update({"svg.hashsalt": "memla", "pdf.fonttype": 42, "savefig.dpi": 150})
    return plt, sns


def save_figure(fig: Any, name: str, out_dir: str | Path) -> list[Path]:
    """``<name>.png`` and ``<name>.pdf`` without creation dates (same figure → same bytes)."""
    plt, _ = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png, pdf = out / f"{name}.png", out / f"{name}.pdf"
    fig.savefig(png, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(pdf, bbox_inches="tight", metadata={"CreationDate": None, "ModDate": None, "Producer": None,
                                                     "Creator": None})
    plt.close(fig)
    return [png, pdf]


def heatmap_figure(df: pd.DataFrame, method: str, metrics: Sequence[str] = SCORE_METRICS) -> Any:
    """Edit language × evaluation language heatmaps of one method, one panel per metric (percent)."""
    plt, sns = _pyplot()
    t = scores(df, metrics)
    t = t[t["method"] == method]
    present = [m for m in metrics if m in set(t["metric"])]
    if not present:
        raise ValueError(f"no {'/'.join(metrics)} results for method {method!r}")
    n_edit, n_eval = t["edit_lang"].nunique(), t["eval_lang"].nunique()
    fig, axes = plt.subplots(1, len(present), figsize=((0.5 * n_eval + 0.9) * len(present), 0.5 * n_edit + 1.5),
                             squeeze=False)
    for ax, metric in zip(axes[0], present):
        cell = per_record(t[t["metric"] == metric], ["edit_lang", "eval_lang"])
        mat = cell.groupby(["edit_lang", "eval_lang"])["value"].mean().unstack("eval_lang") * 100
        mat = mat.reindex(index=ordered(mat.index), columns=ordered(mat.columns))
        sns.heatmap(mat, ax=ax, vmin=0, vmax=100, cmap="viridis", annot=True, fmt=".0f", cbar=False,
                    annot_kws={"size": 8}, linewidths=0.5, square=True)
        ax.set_title(metric)
        ax.set_xlabel("evaluation language")
        ax.set_ylabel("edit language" if ax is axes[0][0] else "")
    fig.suptitle(f"{method}: edit × evaluation language (%)")
    fig.tight_layout()
    return fig


def ablation_figure(stats: pd.DataFrame) -> Any:
    """Grouped bars (method per metric) with 95% intervals, one panel per scope (same / cross language)."""
    if stats.empty:
        raise ValueError("no ablation results (run memla and its ablations first)")
    return method_bars(stats, ABLATION_METHODS)


def method_bars(stats: pd.DataFrame, order: Sequence[str] | None = None) -> Any:
    """Bars of every method per metric (percent, 95% interval), panels: same language / cross-lingual.

    ``stats`` has ``method, scope, metric, mean, ci_low, ci_high`` (edit languages pooled).
    """
    plt, sns = _pyplot()
    if stats.empty:
        raise ValueError("no results to plot")
    scopes = [s for s in ("same", "cross") if s in set(stats["scope"])]
    order = list(order) if order is not None else method_order(stats["method"])
    methods = [m for m in order if m in set(stats["method"])]
    fig, axes = plt.subplots(1, len(scopes), figsize=(max(5.2, 0.12 * len(methods) * 4 + 2.0) * len(scopes), 3.4),
                             squeeze=False, sharey=True)
    palette = dict(zip(order, sns.color_palette("colorblind" if len(order) <= 10 else "tab20", len(order))))
    width = 0.8 / max(1, len(methods))
    for ax, scope in zip(axes[0], scopes):
        s = stats[stats["scope"] == scope]
        metrics = [m for m in SCORE_METRICS if m in set(s["metric"])]
        for i, method in enumerate(methods):
            row = s[s["method"] == method].set_index("metric").reindex(metrics)
            x = np.arange(len(metrics)) + (i - (len(methods) - 1) / 2) * width
            mean = row["mean"].to_numpy(dtype=float) * 100
            err = np.vstack([mean - row["ci_low"].to_numpy(dtype=float) * 100,
                             row["ci_high"].to_numpy(dtype=float) * 100 - mean])
            ax.bar(x, mean, width, label=method, color=palette[method],
                   yerr=np.nan_to_num(err), capsize=2, error_kw={"elinewidth": 0.8})
        ax.set_xticks(np.arange(len(metrics)), metrics)
        ax.set_title("edit language = evaluation language" if scope == "same" else "cross-lingual")
        ax.set_ylim(0, 105)
        ax.set_ylabel("score (%)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def sequential_figure(gdf: pd.DataFrame) -> Any:
    """General ability (and retention of earlier edits) vs number of accumulated edits, one line per method."""
    plt, sns = _pyplot()
    g = gdf[gdf["setting"] == "sequential"] if gdf is not None and not gdf.empty else pd.DataFrame()
    if g.empty:
        raise ValueError("no sequential-editing results")
    metrics = [m for m in ("perplexity", "fact_accuracy", "edit_retention") if m in set(g["metric"])]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.3), squeeze=False)
    curve = g.groupby(["method", "n_edits", "metric"])["after"].mean().reset_index()
    start = g.groupby(["method", "metric"])["before"].mean().reset_index().rename(columns={"before": "after"})
    start = start[start["after"].notna()].assign(n_edits=0)  # the unedited model: the curve's origin
    curve = pd.concat([start[curve.columns], curve], ignore_index=True).sort_values(["method", "n_edits"])
    for ax, metric in zip(axes[0], metrics):
        c = curve[curve["metric"] == metric].copy()
        if metric in PERCENT_METRICS:
            c["after"] = c["after"] * 100
        sns.lineplot(data=c, x="n_edits", y="after", hue="method", hue_order=method_order(c["method"]),
                     marker="o", ax=ax, palette="colorblind")
        ax.set_xlabel("accumulated edits")
        ax.set_ylabel(metric.replace("_", " ") + (" (%)" if metric in PERCENT_METRICS else ""))
        ax.set_title(metric.replace("_", " "))
        if ax is not axes[0][-1] and ax.get_legend() is not None:
            ax.get_legend().remove()
    return fig


def neuron_figure(neurons: pd.DataFrame) -> Any:
    """Knowledge neurons per layer per language (and the language-independent share, when given).

    ``neurons`` has columns ``layer``, ``language``, ``count`` (mean per record); rows with ``language`` =
    ``"independent"`` are drawn as the shared set.
    """
    plt, sns = _pyplot()
    need = {"layer", "language", "count"}
    if neurons is None or neurons.empty or not need <= set(neurons.columns):
        raise ValueError(f"neuron statistics need columns {sorted(need)}")
    fig, ax = plt.subplots(figsize=(6.0, 3.3))
    sns.lineplot(data=neurons, x="layer", y="count", hue="language", marker="o", ax=ax, palette="colorblind",
                 errorbar=None)
    ax.set_xlabel("layer")
    ax.set_ylabel("neurons per fact")
    ax.set_title("language-specific and language-independent neurons per layer")
    return fig
