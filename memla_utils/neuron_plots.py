"""Figures and small tables of notebooks 02 (knowledge neurons) and 03 (masks), from tidy frames.

Each function takes the frames built by :mod:`memla_utils.masks` / :mod:`memla_utils.suppression` and returns
a matplotlib figure; saving is :func:`memla_utils.artifacts.save_figure`'s job.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from .attribution_scores import PromptAttribution
from .languages import ordered


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def attribution_summary(attributions: Mapping[tuple[str, str], Sequence[PromptAttribution]]) -> pd.DataFrame:
    """One row per prompt: answer, target at the actual activations (summed over answer tokens: P(token | prefix)
    for ``target="prob"``; for ``method="memla4mke"`` the prefixes are memla4mke's greedy-extended prompts),
    maximum score, IG completeness error (of the path's IG sum, for either method)."""
    rows = []
    for (rid, lang), atts in attributions.items():
        for a in atts:
            rows.append({"example_id": rid, "language": lang, "prompt": a.prompt, "answer": a.answer,
                         "target_sum_over_tokens": a.target_value, "max_score": a.max_score,
                         "completeness_error": a.completeness_error})
    return pd.DataFrame(rows)


def layer_mass_frame(attributions: Mapping[tuple[str, str], Sequence[PromptAttribution]]) -> pd.DataFrame:
    """Share of each layer in a prompt's positive attribution, averaged per (language, layer)."""
    rows = []
    for (rid, lang), atts in attributions.items():
        for a in atts:
            pos = a.layer_positive_mass
            total = float(pos.sum())
            for layer, v in enumerate(pos.tolist()):
                rows.append({"example_id": rid, "language": lang, "layer": layer,
                             "share": v / total if total > 0 else float("nan")})
    df = pd.DataFrame(rows)
    return df.groupby(["language", "layer"], as_index=False)["share"].mean()


def per_layer_figure(df: pd.DataFrame, value: str, *, hue: str = "language", ylabel: str = "", title: str = "") -> Any:
    """Lines of ``value`` against layer, one per ``hue`` (mean over records)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    mean = df.groupby([hue, "layer"], as_index=False)[value].mean()
    for key in ordered(mean[hue].unique()):
        sub = mean[mean[hue] == key]
        ax.plot(sub["layer"], sub[value], marker="o", ms=3, label=key)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel or value)
    ax.set_title(title)
    ax.legend(title=hue, fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def jaccard_figure(mat: pd.DataFrame, *, title: str = "Overlap of knowledge-neuron sets (Jaccard)") -> Any:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(0.7 * len(mat) + 2.0, 0.6 * len(mat) + 1.6))
    im = ax.imshow(mat.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(mat.columns)), mat.columns)
    ax.set_yticks(range(len(mat.index)), mat.index)
    for i in range(len(mat.index)):
        for j in range(len(mat.columns)):
            v = float(mat.iloc[i, j])
            ax.text(j, i, "" if v != v else f"{v:.2f}", ha="center", va="center",
                    color="white" if v < 0.6 else "black", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def sensitivity_figure(thresholds: pd.DataFrame, steps: pd.DataFrame) -> Any:
    """Left: neurons kept vs threshold; right: overlap with the most-steps set vs IG steps."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9.0, 3.2))
    t = thresholds.groupby(["language", "threshold"], as_index=False)["n_neurons"].mean()
    for lang in ordered(t["language"].unique()):
        sub = t[t["language"] == lang]
        a.plot(sub["threshold"], sub["n_neurons"], marker="o", ms=3, label=lang)
    a.set_yscale("log")
    a.set_xlabel("threshold (share of the maximum score)")
    a.set_ylabel("neurons kept (mean over records)")
    a.legend(fontsize=8)
    a.grid(alpha=0.3)
    for (_rid, lang), sub in steps.groupby(["example_id", "language"]):
        b.plot(sub["steps"], sub["jaccard_vs_max_steps"], marker="o", ms=3, label=f"{lang} · Jaccard")
        b.plot(sub["steps"], sub["spearman_vs_max_steps"], marker="s", ms=3, ls="--", label=f"{lang} · Spearman")
    b.set_xlabel("IG steps")
    b.set_ylabel(f"agreement with {int(steps['steps'].max())} steps")
    b.set_ylim(0, 1.05)
    b.legend(fontsize=8)
    b.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def sanity_figure(summary: pd.DataFrame) -> Any:
    """Mean change in P(true answer) with 95% CIs: knowledge vs random neurons, per language and factor."""
    plt = _plt()
    factors = sorted(summary["factor"].unique())
    fig, axes = plt.subplots(1, len(factors), figsize=(4.6 * len(factors), 3.2), squeeze=False)
    langs = [l for l in ordered([l for l in summary["language"].unique() if l != "all"])] + ["all"]
    for ax, factor in zip(axes[0], factors):
        for k, what in enumerate(("knowledge", "random")):
            sub = summary[(summary["factor"] == factor) & (summary["neurons"] == what)].set_index("language")
            sub = sub.reindex([l for l in langs if l in sub.index])
            x = [langs.index(l) + (k - 0.5) * 0.35 for l in sub.index]
            err = [(sub["mean"] - sub["ci_low"]).fillna(0).clip(lower=0),
                   (sub["ci_high"] - sub["mean"]).fillna(0).clip(lower=0)]
            ax.bar(x, sub["mean"], width=0.35, yerr=err, capsize=3, label=f"{what} neurons")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(langs)), langs)
        verb = "suppressed (x0)" if factor == 0 else f"scaled x{factor:g}"
        ax.set_title(f"neurons {verb}", fontsize=10)
        ax.set_ylabel("relative change in P(true answer)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


__all__ = ["attribution_summary", "jaccard_figure", "layer_mass_frame", "per_layer_figure", "sanity_figure",
           "sensitivity_figure"]
