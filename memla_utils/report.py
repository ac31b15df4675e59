"""The paper's tables, figures and claims, from the runner's tidy results, each number with its 95% interval.

Input: the tidy rows ``{record, method, edit_lang, eval_lang, metric, value, n}`` the runner writes (and the
general-ability rows of :mod:`memla_utils.general`). The unit of resampling is the *record* (one edited fact):
inside a cell, values are first averaged per record, then a percentile bootstrap over records gives the
interval, and ``n`` is the number of records. Missing methods or metrics stay visible as "missing" cells, and a
claim whose inputs are absent reads "not measured (reason)", never an error.

Outputs: tables as CSV (numeric long form: mean, ci_low, ci_high, n), Markdown and LaTeX (formatted wide form),
figures as PNG + PDF written without timestamps so the same numbers give the same files.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import ALL_METHODS
from .languages import ordered

log = logging.getLogger(__name__)

#: The paper's four editing metrics (reliability, generality, locality, portability/multi-hop).
SCORE_METRICS: tuple[str, ...] = ("ES", "PS", "NS", "QS")
#: MEMLA and its ablations (same editor, different masks) -- the rows of the ablation table.
ABLATION_METHODS: tuple[str, ...] = ("memla", "memla-lse", "memla-lie", "memla-unmasked", "memla-random")
#: Rows that are not editing methods but references.
REFERENCE_METHODS: tuple[str, ...] = ("unedited",)
#: Metrics shown as percentages (values in [0, 1]); everything else is shown as is.
PERCENT_METRICS: frozenset[str] = frozenset(SCORE_METRICS) | {"fact_accuracy", "fact_token_accuracy",
                                                              "edit_retention", "perplexity_rel"}
MISSING = "missing"


def baseline_methods(methods: Iterable[str]) -> list[str]:
    """Methods that are neither MEMLA (or an ablation) nor a reference row."""
    return [m for m in methods if not m.startswith("memla") and m not in REFERENCE_METHODS]


def method_order(methods: Iterable[str]) -> list[str]:
    """``ALL_METHODS`` order first (MEMLA, ablations, baselines), then references, then the rest by name."""
    rank = {m: i for i, m in enumerate((*ALL_METHODS, *REFERENCE_METHODS))}
    return sorted(set(methods), key=lambda m: (rank.get(m, len(rank)), m))


# ----------------------------------------------------------------------------------------------- statistics
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


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Rows with a usable numeric value, plus ``scope`` = same (edit = eval language) or cross."""
    need = {"record", "method", "metric", "value"}
    missing = need - set(df.columns)
    if missing:
        raise ValueError(f"results table lacks column(s) {sorted(missing)}; has {list(df.columns)}")
    out = df.copy()
    out["value"] = pd.to_numeric(out["value"], errors="coerce")
    out = out[out["value"].notna()]
    if "edit_lang" in out.columns and "eval_lang" in out.columns:
        out["scope"] = np.where(out["edit_lang"] == out["eval_lang"], "same", "cross")
    return out


def per_record(df: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """One value per (cell, record): the mean of that record's rows in the cell."""
    return df.groupby([*by, "record"], dropna=False, sort=False)["value"].mean().reset_index()


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


def paired_difference(df: pd.DataFrame, method_a: str, methods_b: Sequence[str],
                      boot: BootstrapConfig = BootstrapConfig()) -> tuple[CellStat, str | None]:
    """Record-paired ``a − best(b)``: the strongest of ``methods_b`` (highest mean) on the shared records.

    ``df`` holds one score per (method, record) in ``value``. Returns the stat and the chosen competitor.
    """
    rec = df.groupby(["method", "record"])["value"].mean()
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
        if float(vb.loc[shared].mean()) > best_mean:
            best, best_mean = b, float(vb.loc[shared].mean())
            best_diff = (a.loc[shared] - vb.loc[shared]).to_numpy()
    if best is None:
        return CellStat(math.nan, math.nan, math.nan, 0), None
    return bootstrap_ci(best_diff, boot), best


# ----------------------------------------------------------------------------------------------- tables
def scores(df: pd.DataFrame, metrics: Sequence[str] = SCORE_METRICS) -> pd.DataFrame:
    """Only the editing-metric rows (ES/PS/NS/QS), not timings or labelled variants."""
    t = tidy(df)
    return t[t["metric"].isin(metrics)]


def main_stats(df: pd.DataFrame, *, sources: Sequence[str] = ("en", "zh"), boot: BootstrapConfig = BootstrapConfig(),
               ) -> pd.DataFrame:
    """Method × source (edit) language × scope (same / cross) × metric, the paper's main comparison."""
    t = scores(df)
    t = t[t["edit_lang"].isin(sources)]
    return cell_stats(t, ["method", "edit_lang", "scope", "metric"], boot)


def ablation_stats(df: pd.DataFrame, boot: BootstrapConfig = BootstrapConfig()) -> pd.DataFrame:
    """MEMLA and its ablations, edit languages pooled, by scope and metric."""
    t = scores(df)
    t = t[t["method"].isin(ABLATION_METHODS)]
    return cell_stats(t, ["method", "scope", "metric"], boot)


def per_language_stats(df: pd.DataFrame, boot: BootstrapConfig = BootstrapConfig()) -> pd.DataFrame:
    """Every (metric, method, edit language, evaluation language) cell."""
    return cell_stats(scores(df), ["metric", "method", "edit_lang", "eval_lang"], boot)


def multihop_stats(df: pd.DataFrame, *, sources: Sequence[str] = ("en", "zh"),
                   boot: BootstrapConfig = BootstrapConfig()) -> pd.DataFrame:
    """QS by method, edit language (en / zh) and evaluation language."""
    t = scores(df, ("QS",))
    return cell_stats(t[t["edit_lang"].isin(sources)], ["method", "edit_lang", "eval_lang"], boot)


def general_stats(gdf: pd.DataFrame, boot: BootstrapConfig = BootstrapConfig()) -> pd.DataFrame:
    """General ability after editing: change vs the unedited model, by setting, method, edits, language, metric.

    ``gdf`` holds :mod:`memla_utils.general` rows; the interval is about the change: ``after − before`` for
    accuracies, ``after / before − 1`` for perplexity (metric ``perplexity_rel``).
    """
    if gdf is None or gdf.empty:
        return pd.DataFrame(columns=["setting", "method", "n_edits", "eval_lang", "metric", "mean", "ci_low",
                                     "ci_high", "n", "before", "after"])
    g = gdf.copy()
    ppl = g["metric"] == "perplexity"  # perplexity scales differ by language: report the relative change
    g.loc[ppl, "delta"] = pd.to_numeric(g.loc[ppl, "after"]) / pd.to_numeric(g.loc[ppl, "before"]) - 1.0
    g.loc[ppl, "metric"] = "perplexity_rel"
    g["value"] = pd.to_numeric(g["delta"], errors="coerce")
    keys = ["setting", "method", "n_edits", "eval_lang", "metric"]
    levels = g.groupby(keys, dropna=False)[["before", "after"]].mean().reset_index()
    g = g[g["value"].notna()]
    stats = cell_stats(g, keys, boot)
    return stats.merge(levels, on=keys, how="left")


def format_cell(mean: float, lo: float, hi: float, n: int, metric: str | None = None) -> str:
    """``57.1 [50.0, 64.3] n=3`` (percent for score metrics); ``missing`` for an empty cell."""
    if n == 0 or mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return MISSING
    k = 100.0 if metric in PERCENT_METRICS else 1.0
    digits = 1 if k == 100.0 or abs(mean) >= 10 else 3
    text = f"{mean * k:.{digits}f}"
    if not (math.isnan(lo) or math.isnan(hi)):
        text += f" [{lo * k:.{digits}f}, {hi * k:.{digits}f}]"
    return f"{text} n={int(n)}"


def wide(stats: pd.DataFrame, index: Sequence[str], columns: Sequence[str], *, metric: str | None = None,
         rows: Sequence[Any] | None = None) -> pd.DataFrame:
    """Formatted wide table; ``rows`` (e.g. the requested methods) are kept even when they have no results."""
    index, columns = list(index), list(columns)
    if stats.empty:
        frame = pd.DataFrame(index=pd.Index(rows or [], name=index[0] if len(index) == 1 else None))
        return frame
    s = stats.copy()
    s["cell"] = [format_cell(r["mean"], r["ci_low"], r["ci_high"], r["n"],
                             metric if metric is not None else r.get("metric")) for _, r in s.iterrows()]
    table = s.pivot_table(index=index, columns=columns, values="cell", aggfunc="first")
    table = table[sorted(table.columns, key=_column_key)]
    if rows is not None and len(index) == 1:
        table = table.reindex(list(rows))
    return table.fillna(MISSING)


_LEVEL_ORDER = {v: i for i, v in enumerate((*SCORE_METRICS, "same", "cross", "perplexity", "perplexity_rel",
                                             "fact_accuracy",
                                             "fact_token_accuracy", "edit_retention"))}


def _column_key(col: Any) -> tuple:
    """Columns in reading order: metrics ES/PS/NS/QS, same before cross, languages in MKEB order."""
    from .languages import MKEB_LANGUAGES

    lang_rank = {c: i for i, c in enumerate(MKEB_LANGUAGES)}
    parts = col if isinstance(col, tuple) else (col,)
    return tuple((_LEVEL_ORDER.get(p, lang_rank.get(p, 100)), str(p)) if not isinstance(p, (int, float))
                 else (p, "") for p in parts)


def _flat_columns(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    idx_names = [str(n) if n is not None else "" for n in frame.index.names]
    cols = [" ".join(str(c) for c in (col if isinstance(col, tuple) else (col,))) for col in frame.columns]
    body = [[*(k if isinstance(k, tuple) else (k,)), *vals] for k, vals in zip(frame.index, frame.to_numpy().tolist())]
    return [*idx_names, *cols], [[str(x) for x in row] for row in body]


def to_markdown(frame: pd.DataFrame, caption: str = "") -> str:
    header, body = _flat_columns(frame)
    esc = [[c.replace("|", "\\|") for c in row] for row in [header, *body]]
    lines = ([f"**{caption}**", ""] if caption else []) + ["| " + " | ".join(esc[0]) + " |",
                                                            "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in esc[1:]]
    return "\n".join(lines) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "→": r"$\rightarrow$", "−": "-"}


def _tex(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in s)


def to_latex(frame: pd.DataFrame, caption: str = "", label: str = "") -> str:
    header, body = _flat_columns(frame)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{" + "l" * len(header) + "}",
             r"\toprule", " & ".join(_tex(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex(c) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(r"\caption{" + _tex(caption) + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_table(name: str, stats: pd.DataFrame, formatted: pd.DataFrame, out_dir: str | Path, *,
                caption: str = "") -> list[Path]:
    """``<name>.csv`` (numeric, long), ``<name>.md`` and ``<name>.tex`` (formatted) under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, tex_path = out / f"{name}.csv", out / f"{name}.md", out / f"{name}.tex"
    stats.to_csv(csv_path, index=False, float_format="%.6g", lineterminator="\n")
    md_path.write_text(to_markdown(formatted, caption), encoding="utf-8")
    tex_path.write_text(to_latex(formatted, caption, label=f"tab:{name}"), encoding="utf-8")
    log.info("wrote table %s (%d cells)", name, len(stats))
    return [csv_path, md_path, tex_path]


# ----------------------------------------------------------------------------------------------- figures
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


# ----------------------------------------------------------------------------------------------- claims
#: What the paper reports for each claim (quoted beside the measured effect).
PAPER_FIGURES: dict[str, str] = {
    "cross_lingual": "+7.14% average over the baselines (cross-lingual)",
    "zh_ru": "+13.95% for zh→ru",
    "lse_lie": "removing either editor lowers the scores (ablation)",
    "multihop": "MEMLA has the best multi-hop (QS) scores",
    "general": "general ability barely affected by editing",
    "neurons_exist": "language-independent neurons exist (shared by all languages)",
    "neurons_matter": "masking to the located neurons beats editing other neurons",
    "suppression": "not reported in the paper (the companion's check that located neurons carry the fact)",
}


@dataclass(frozen=True)
class ClaimConfig:
    """Verdict rules. ``general_tolerance``: a relative change within ±5% counts as "barely affected"
    (the paper gives no number; 5% is this companion's choice, stated in the claims table)."""

    main_metrics: tuple[str, ...] = ("ES", "PS", "NS")
    general_tolerance: float = 0.05


def verdict(stat: CellStat, *, tolerance: float | None = None) -> str:
    """supported / not supported / inconclusive at this n, from the interval (two-sided 95%)."""
    if stat.n == 0 or math.isnan(stat.mean):
        return "not measured"
    if math.isnan(stat.ci_low) or math.isnan(stat.ci_high):
        return f"inconclusive at n={stat.n}"
    if tolerance is None:
        if stat.ci_low > 0:
            return "supported"
        if stat.ci_high < 0:
            return "not supported"
        return f"inconclusive at n={stat.n}"
    if -tolerance <= stat.ci_low and stat.ci_high <= tolerance:
        return "supported"
    if stat.ci_low > tolerance or stat.ci_high < -tolerance:
        return "not supported"
    return f"inconclusive at n={stat.n}"


def _claim(key: str, claim: str, measure: str, stat: CellStat | None, note: str = "", *,
           reason: str | None = None, tolerance: float | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"claim": claim, "measured as": measure, "paper": PAPER_FIGURES.get(key, ""), "key": key}
    if reason is not None or stat is None:
        row.update(effect=math.nan, ci_low=math.nan, ci_high=math.nan, n=0,
                   verdict=f"not measured ({reason or 'no input'})", note=note)
        return row
    row.update(effect=stat.mean, ci_low=stat.ci_low, ci_high=stat.ci_high, n=stat.n,
               verdict=verdict(stat, tolerance=tolerance), note=note)
    if row["verdict"] == "not measured":
        row["verdict"] = "not measured (no shared records)"
    return row


def _score_per_record(t: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """One score per (method, record): mean over the chosen metrics of the record's cell means."""
    t = t[t["metric"].isin(metrics)]
    cell = t.groupby(["method", "record", "metric"])["value"].mean().reset_index()
    return cell.groupby(["method", "record"])["value"].mean().reset_index()


def _vs_baselines(t: pd.DataFrame, metrics: Sequence[str], boot: BootstrapConfig) -> tuple[CellStat | None, str]:
    methods = set(t["method"])
    if "memla" not in methods:
        return None, "no memla results"
    base = baseline_methods(method_order(methods))
    if not base:
        return None, "no baseline results"
    stat, best = paired_difference(_score_per_record(t, metrics), "memla", base, boot)
    if best is None:
        return None, "memla and the baselines share no record"
    return stat, f"memla − strongest baseline ({best}) on {', '.join(m for m in metrics if m in set(t['metric']))}"


def claims_table(results: pd.DataFrame | None, general: pd.DataFrame | None = None,
                 suppression: pd.DataFrame | None = None, masks: pd.DataFrame | None = None, *,
                 boot: BootstrapConfig = BootstrapConfig(), config: ClaimConfig = ClaimConfig()) -> pd.DataFrame:
    """Each paper claim with the measured effect, its 95% interval, n (records) and a verdict.

    Effects are record-paired differences in score fractions (0.07 = 7 points). Missing inputs give
    "not measured (reason)".
    """
    rows: list[dict[str, Any]] = []
    t = scores(results) if results is not None and not results.empty else None
    main = list(config.main_metrics)
    main_txt = "/".join(main)

    # 1. cross-lingual editing, average
    claim = "MEMLA beats the baselines on cross-lingual editing"
    if t is None:
        rows.append(_claim("cross_lingual", claim, "", None, reason="no editing results"))
    else:
        stat, how = _vs_baselines(t[t["scope"] == "cross"], main, boot)
        rows.append(_claim("cross_lingual", claim, f"{how}, edit ≠ eval language" if stat else "", stat,
                           reason=None if stat else how))
    # 2. zh -> ru
    claim = "MEMLA beats the baselines for zh→ru"
    if t is None:
        rows.append(_claim("zh_ru", claim, "", None, reason="no editing results"))
    else:
        sub = t[(t["edit_lang"] == "zh") & (t["eval_lang"] == "ru")]
        if sub.empty:
            rows.append(_claim("zh_ru", claim, "", None, reason="no zh→ru results: needs edit language zh and "
                                                               "evaluation language ru"))
        else:
            stat, how = _vs_baselines(sub, main, boot)
            rows.append(_claim("zh_ru", claim, how if stat else "", stat, reason=None if stat else how))
    # 3. LSE + LIE together
    claim = "LSE and LIE together beat either alone"
    if t is None:
        rows.append(_claim("lse_lie", claim, "", None, reason="no editing results"))
    else:
        per = _score_per_record(t, main)
        have = [m for m in ("memla-lse", "memla-lie") if m in set(per["method"])]
        if "memla" not in set(per["method"]) or not have:
            rows.append(_claim("lse_lie", claim, "", None, reason="needs memla and memla-lse/memla-lie results"))
        else:
            stat, best = paired_difference(per, "memla", have, boot)
            rows.append(_claim("lse_lie", claim, f"memla − better single editor ({best}) on {main_txt}, all "
                                                 f"language pairs", stat,
                               note="" if len(have) == 2 else f"only {have[0]} available",
                               reason=None if best else "no shared records"))
    # 4. multi-hop
    claim = "MEMLA improves multi-hop reasoning (QS)"
    if t is None or t[t["metric"] == "QS"].empty:
        rows.append(_claim("multihop", claim, "", None, reason="no QS results (records without multi-hop "
                                                               "questions?)"))
    else:
        stat, how = _vs_baselines(t, ("QS",), boot)
        rows.append(_claim("multihop", claim, how + ", all language pairs" if stat else "", stat,
                           reason=None if stat else how))
    # 5. general ability
    claim = "General ability is barely affected"
    g = general[(general["method"] == "memla") & (general["setting"] == "single")] \
        if general is not None and not general.empty else None
    if g is None or g.empty:
        rows.append(_claim("general", claim, "", None, reason="no general-ability results for memla"))
    else:
        ppl = g[g["metric"] == "perplexity"].copy()
        if ppl.empty:
            rows.append(_claim("general", claim, "", None, reason="no perplexity results for memla"))
        else:
            ppl["value"] = ppl["after"] / ppl["before"] - 1.0
            stat = bootstrap_ci(per_record(ppl, [])["value"].to_numpy(), boot)
            rows.append(_claim("general", claim, "relative perplexity change after one memla edit "
                                                 f"(supported if the 95% interval lies within "
                                                 f"±{config.general_tolerance:.0%})", stat,
                               tolerance=config.general_tolerance))
        acc = g[g["metric"] == "fact_accuracy"].copy()
        if not acc.empty:
            acc["value"] = acc["delta"]
            stat = bootstrap_ci(per_record(acc, [])["value"].to_numpy(), boot)
            rows.append(_claim("general", claim + " (unrelated facts)",
                               f"change in unrelated-fact accuracy after one memla edit (within "
                               f"±{config.general_tolerance:.0%} points)", stat, tolerance=config.general_tolerance))
    # 6. language-independent neurons exist
    claim = "Language-independent neurons exist"
    if masks is None or masks.empty or "independent" not in masks.columns:
        rows.append(_claim("neurons_exist", claim, "", None, reason="no mask statistics in run_dir "
                                                                    "(notebook 03)"))
    else:
        per = masks.groupby("record")["independent"].sum() if "record" in masks.columns else masks["independent"]
        stat = bootstrap_ci((per.to_numpy(dtype=float) > 0).astype(float), boot)
        rows.append(_claim("neurons_exist", claim, "share of facts with ≥1 language-independent neuron",
                           stat, note=f"mean {float(per.mean()):.1f} independent neurons per fact"))
    # 7. ... and matter: suppression check, and masked vs random-neuron editing
    claim = "Knowledge neurons matter (suppression lowers P(true) more than random neurons)"
    if suppression is None or suppression.empty:
        rows.append(_claim("suppression", claim, "", None, reason="no suppression-check table in run_dir "
                                                                  "(notebook 02)"))
    else:
        stat, how = suppression_effect(suppression, boot)
        rows.append(_claim("suppression", claim, how, stat, reason=None if stat else how))
    claim = "Editing the located neurons beats editing random neurons"
    if t is None or not {"memla", "memla-random"} <= set(t["method"]):
        rows.append(_claim("neurons_matter", claim, "", None, reason="needs memla and memla-random results"))
    else:
        stat, best = paired_difference(_score_per_record(t[t["scope"] == "cross"], main), "memla",
                                       ["memla-random"], boot)
        rows.append(_claim("neurons_matter", claim, f"memla − memla-random on {main_txt}, cross-lingual", stat,
                           reason=None if best else "no shared records"))
    return pd.DataFrame(rows)


def suppression_effect(table: pd.DataFrame, boot: BootstrapConfig = BootstrapConfig(),
                       ) -> tuple[CellStat | None, str]:
    """Random-neuron minus knowledge-neuron change in P(true) under suppression (positive = neurons matter).

    Reads notebook 02's tidy effects (:func:`memla_utils.suppression.sanity_effects`: ``example_id, language,
    factor, neurons, effect``; suppression = factor 0), or ``intervention``/``value`` columns, or one row per
    fact with ``knowledge`` and ``random`` columns. Paired per (fact, language), averaged per fact; n = facts.
    """
    t = table.rename(columns={"example_id": "record", "effect": "value"}).copy()
    if "factor" in t.columns:
        t = t[pd.to_numeric(t["factor"], errors="coerce") == 0]
    if "intervention" in t.columns:
        t = t[t["intervention"].astype(str).str.startswith("suppress")]
    if {"knowledge", "random"} <= set(t.columns):
        t["diff"] = pd.to_numeric(t["random"], errors="coerce") - pd.to_numeric(t["knowledge"], errors="coerce")
        diff = t.groupby("record")["diff"].mean() if "record" in t.columns else t["diff"]
    elif {"neurons", "value"} <= set(t.columns):
        keys = [c for c in ("record", "language") if c in t.columns]
        if not keys:
            return None, "suppression table has no record/language column to pair on"
        piv = t.pivot_table(index=keys, columns="neurons", values="value", aggfunc="mean")
        if not {"knowledge", "random"} <= set(piv.columns):
            return None, f"suppression table has neuron sets {sorted(piv.columns)}, expected knowledge and random"
        paired = (piv["random"] - piv["knowledge"]).rename("diff").reset_index()
        diff = paired.groupby(keys[0])["diff"].mean()
    else:
        return None, f"suppression table columns {sorted(table.columns)} not understood"
    stat = bootstrap_ci(diff.dropna().to_numpy(), boot)
    return stat, ("relative change in P(true) with random neurons suppressed − with the fact's knowledge neurons "
                  "suppressed (same counts per layer), per fact")


def format_claims(claims: pd.DataFrame) -> pd.DataFrame:
    """The claims table as shown to readers: effect and interval in points (×100)."""
    def fmt(r: pd.Series) -> str:
        if r["n"] == 0 or math.isnan(r["effect"]):
            return "—"
        k = 100.0
        ci = "" if math.isnan(r["ci_low"]) else f" [{r['ci_low'] * k:+.1f}, {r['ci_high'] * k:+.1f}]"
        return f"{r['effect'] * k:+.1f}{ci}"
    out = pd.DataFrame({"claim": claims["claim"], "measured effect ×100 [95% CI]": claims.apply(fmt, axis=1),
                        "n": claims["n"].astype(int), "verdict": claims["verdict"], "paper": claims["paper"],
                        "measured as": claims["measured as"]})
    return out.set_index("claim")


# ----------------------------------------------------------------------------------------------- inputs
def _read_tidy(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return pd.DataFrame(rows)
    data = json.loads(path.read_text(encoding="utf-8"))
    return pd.DataFrame(data if isinstance(data, list) else data.get("rows", []))


def find_table(run_dir: str | Path, pattern: str, *, skip_prefix: str | None = None) -> pd.DataFrame | None:
    """The first ``*pattern*.{csv,jsonl,json}`` under ``run_dir`` (sorted, so the choice is stable), or None."""
    root = Path(run_dir)
    if not root.exists():
        return None
    for ext in ("csv", "jsonl", "json"):
        for path in sorted(root.rglob(f"*{pattern}*.{ext}")):
            if "notebooks" in path.parts or path.name == "MANIFEST.json" or \
                    (skip_prefix and path.name.startswith(skip_prefix)):
                continue
            try:
                df = _read_tidy(path)
            except (ValueError, json.JSONDecodeError) as err:
                log.warning("could not read %s: %s", path, err)
                continue
            log.info("using %s for %s", path, pattern)
            return df
    return None


def load_results_table(run_dir: str | Path) -> pd.DataFrame:
    """The runner's tidy results under ``run_dir`` (empty frame when nothing has been run yet)."""
    try:
        from .runner import load_results  # the runner owns its file layout
    except ImportError:
        load_results = None
    if load_results is not None:
        try:
            df = load_results(run_dir)
            if df is not None and not df.empty:
                return df
        except FileNotFoundError:
            pass
    df = find_table(run_dir, "results", skip_prefix="results-shard")  # e.g. a results table exported elsewhere
    return df if df is not None else pd.DataFrame(columns=["record", "method", "edit_lang", "eval_lang", "metric",
                                                           "value", "n"])


def load_mask_stats(run_dir: str | Path) -> pd.DataFrame | None:
    """Per (record, edit language, layer): independent and specific neuron counts, from the record-mask files
    (:func:`memla_utils.masks.save_record_masks`) anywhere under ``run_dir``; None when there are none."""
    from .masks import load_record_masks

    root = Path(run_dir)
    if not root.exists():
        return None
    rows = []
    for path in sorted(root.rglob("*.safetensors")):
        try:
            rm = load_record_masks(path)
        except Exception:  # noqa: BLE001 - not a masks file (a saved edit, a corrupt file): not ours to judge
            log.debug("%s is not a record-masks file", path)
            continue
        layers = sorted(set(rm.independent.masks) | set(rm.specific.masks))
        for layer in layers or [0]:
            ind = int(rm.independent.masks[layer].sum()) if layer in rm.independent.masks else 0
            spec = int(rm.specific.masks[layer].sum()) if layer in rm.specific.masks else 0
            rows.append({"record": rm.example_id, "edit_language": rm.edit_language, "layer": layer,
                         "independent": ind, "specific": spec})
    if not rows:
        return None
    return pd.DataFrame(rows).drop_duplicates(["record", "edit_language", "layer"])


def neuron_layer_frame(mask_stats: pd.DataFrame) -> pd.DataFrame:
    """``layer, language, count`` for :func:`neuron_figure`: language-specific neurons per edit language and the
    language-independent ones, mean per (record, edit language)."""
    per = mask_stats.groupby(["edit_language", "layer"])[["specific", "independent"]].mean().reset_index()
    spec = per.rename(columns={"specific": "count"}).assign(
        language=lambda d: "specific (" + d["edit_language"] + ")")[["layer", "language", "count"]]
    ind = per.groupby("layer")["independent"].mean().reset_index().rename(columns={"independent": "count"})
    ind["language"] = "independent"
    return pd.concat([spec, ind[["layer", "language", "count"]]], ignore_index=True)


def load_general_table(run_dir: str | Path) -> pd.DataFrame:
    """Rows written by notebook 06 (:func:`memla_utils.general.write_rows`) or an empty frame."""
    path = Path(run_dir) / "general" / "general.jsonl"
    if not path.is_file():
        return pd.DataFrame()
    return _read_tidy(path)


@dataclass
class ReportOutputs:
    """What :func:`write_report` produced: formatted tables by name, the claims, and every file written."""

    tables: dict[str, pd.DataFrame]
    claims: pd.DataFrame
    files: list[Path]
    missing: dict[str, str]


def write_report(run_dir: str | Path, figures_dir: str | Path, *, methods: Sequence[str] | None = None,
                 sources: Sequence[str] = ("en", "zh"), cfg: Any = None,
                 boot: BootstrapConfig = BootstrapConfig()) -> ReportOutputs:
    """Every table (``figures_dir/tables``) and figure (``figures_dir``), the claims table and a manifest.

    Works with whatever exists in ``run_dir``: requested methods without results appear as "missing" rows,
    figures whose inputs are absent are skipped and listed in ``missing``.
    """
    from .manifest import build_manifest

    run_dir, figures_dir = Path(run_dir), Path(figures_dir)
    tables_dir = figures_dir / "tables"
    results = load_results_table(run_dir)
    general = load_general_table(run_dir)
    t = scores(results) if not results.empty else results
    have = set(t["method"]) if not t.empty else set()
    rows = method_order(set(methods or ()) | have)
    out: dict[str, pd.DataFrame] = {}
    files: list[Path] = []
    missing: dict[str, str] = {}

    def table(name: str, stats: pd.DataFrame, formatted: pd.DataFrame, caption: str) -> None:
        out[name] = formatted
        files.extend(write_table(name, stats, formatted, tables_dir, caption=caption))

    st = main_stats(results, sources=sources, boot=boot) if not t.empty else cell_stats(t, [])
    table("main_comparison", st, wide(st, ["method"], ["edit_lang", "scope", "metric"], rows=rows),
          "Main comparison: score (%) [95% bootstrap CI] n=records, by source language and same/cross language")
    st = ablation_stats(results, boot) if not t.empty else cell_stats(t, [])
    table("ablation", st, wide(st, ["method"], ["scope", "metric"], rows=list(ABLATION_METHODS)),
          "LSE/LIE ablation: MEMLA, LSE only, LIE only, unmasked LoRA, random neurons")
    per_lang = per_language_stats(results, boot) if not t.empty else pd.DataFrame()
    for metric in SCORE_METRICS:
        st = per_lang[per_lang["metric"] == metric] if not per_lang.empty else cell_stats(t, [])
        table(f"per_language_{metric}", st, wide(st, ["method"], ["edit_lang", "eval_lang"], metric=metric, rows=rows),
              f"{metric} per edit language and evaluation language")
    st = multihop_stats(results, sources=sources, boot=boot) if not t.empty else cell_stats(t, [])
    table("multihop", st, wide(st, ["method"], ["edit_lang", "eval_lang"], metric="QS", rows=rows),
          "Multi-hop (QS, %) by edit language and evaluation language")
    gst = general_stats(general, boot)
    single = gst[gst["setting"] == "single"] if not gst.empty else gst
    grows = method_order({"memla", *(general["method"] if not general.empty else [])})
    table("general_single", single, wide(single, ["method"], ["metric", "eval_lang"], rows=grows),
          "General ability after one edit: change vs the unedited model (perplexity: relative, %; accuracy: points)")
    seq = general[general["setting"] == "sequential"] if not general.empty else general
    if not seq.empty:
        seq_st = seq.groupby(["method", "n_edits", "metric"])[["before", "after"]].mean().reset_index()
        seq_st["n"] = seq.groupby(["method", "n_edits", "metric"]).size().to_numpy()
        fmt = seq_st.assign(cell=[format_cell(a, math.nan, math.nan, n, m)
                                  for a, n, m in zip(seq_st["after"], seq_st["n"], seq_st["metric"])])
        seq_wide = fmt.pivot_table(index="method", columns=["metric", "n_edits"], values="cell",
                                   aggfunc="first").fillna(MISSING)
    else:
        seq_st, seq_wide = pd.DataFrame(columns=["method", "n_edits", "metric", "before", "after", "n"]), \
            pd.DataFrame(index=pd.Index(grows, name="method"))
    table("general_sequential", seq_st, seq_wide,
          "Sequential editing: general ability after N accumulated edits (mean over languages; n = languages)")

    suppression = find_table(run_dir, "suppression")
    if suppression is None:  # notebook 02 writes its per-fact sanity effects as a table
        suppression = find_table(tables_dir, "kn_sanity_effects")
    masks = load_mask_stats(run_dir)
    claims = claims_table(results if not results.empty else None, general if not general.empty else None,
                          suppression, masks, boot=boot)
    table("claims", claims, format_claims(claims), "The paper's claims checked on this run")

    for method in [m for m in rows if m in have]:
        try:
            files.extend(save_figure(heatmap_figure(results, method), f"heatmap_{method}", figures_dir))
        except ValueError as err:
            missing[f"heatmap_{method}"] = str(err)
    for name, make in (("ablation_bars", lambda: ablation_figure(ablation_stats(results, boot))),
                       ("methods_bars", lambda: method_bars(cell_stats(scores(results), ["method", "scope", "metric"],
                                                                       boot))),
                       ("sequential_editing", lambda: sequential_figure(general)),
                       ("neurons_per_layer", lambda: neuron_figure(
                           neuron_layer_frame(masks) if masks is not None else find_table(run_dir, "neurons_per_layer")))):
        try:
            if results.empty and name in ("ablation_bars", "methods_bars"):
                raise ValueError("no results")
            files.extend(save_figure(make(), name, figures_dir))
        except (ValueError, KeyError) as err:
            missing[name] = str(err)
            log.info("figure %s skipped: %s", name, err)

    params: dict[str, Any] = {"bootstrap": dict(boot.__dict__)}
    if cfg is None:
        params["run_dir"] = str(run_dir)
    run_manifest = run_dir / "manifest.json"  # the runner's: which model produced the results
    model = json.loads(run_manifest.read_text(encoding="utf-8")) if run_manifest.is_file() else {}
    manifest = build_manifest("report", cfg=cfg, parameters=params, model_name=model.get("model"),
                              model_fingerprint=model.get("model_fingerprint"),
                              inputs={"results_rows": int(len(results)), "results_digest": table_digest(results),
                                      "general_rows": int(len(general)), "missing": missing})
    for f in files:
        manifest.add(f, root=figures_dir)
    files.append(manifest.write(figures_dir / "MANIFEST.json"))
    return ReportOutputs(out, claims, files, missing)


def table_digest(frame: pd.DataFrame) -> str:
    """sha256 of a table's CSV text: lets a test check that the same input gives the same table."""
    return hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()[:16]


__all__ = ["ABLATION_METHODS", "BootstrapConfig", "CellStat", "ClaimConfig", "MISSING", "PAPER_FIGURES",
           "ReportOutputs", "SCORE_METRICS", "ablation_figure", "ablation_stats", "baseline_methods", "bootstrap_ci",
           "cell_stats", "claims_table", "find_table", "format_cell", "format_claims", "general_stats",
           "heatmap_figure", "load_general_table", "load_mask_stats", "load_results_table", "main_stats",
           "method_bars", "method_order", "multihop_stats", "neuron_figure", "neuron_layer_frame", "paired_difference",
           "per_language_stats", "save_figure", "scores", "sequential_figure", "suppression_effect", "table_digest",
           "tidy", "to_latex", "to_markdown", "verdict", "wide", "write_report", "write_table"]
