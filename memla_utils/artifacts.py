"""Writing tables (CSV, Markdown, LaTeX) and figures (PNG, PDF) the same way everywhere.

Every notebook saves through these two functions so artifacts have one naming scheme
(``<figures_dir>/<stem>.png|pdf``, ``<figures_dir>/tables/<stem>.csv|md|tex``) and are written atomically.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .cache import atomic_path


def save_table(df: pd.DataFrame, stem: str | Path, *, index: bool = False, float_format: str = "{:.3f}") -> list[Path]:
    """Write ``df`` as ``stem.csv`` (full precision), ``stem.md`` and ``stem.tex`` (rounded for reading)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    shown = df.copy()
    for col in shown.columns:
        if pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else float_format.format(v))
    paths = [stem.with_suffix(".csv"), stem.with_suffix(".md"), stem.with_suffix(".tex")]
    with atomic_path(paths[0]) as tmp:
        df.to_csv(tmp, index=index)
    with atomic_path(paths[1]) as tmp:
        tmp.write_text(shown.to_markdown(index=index) + "\n", encoding="utf-8")
    with atomic_path(paths[2]) as tmp:
        tmp.write_text(shown.to_latex(index=index, escape=True), encoding="utf-8")
    return paths


def save_figure(fig, stem: str | Path, *, dpi: int = 150) -> list[Path]:
    """Write a matplotlib figure as PNG and PDF (deterministic metadata, so reruns give the same PDF bytes)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for suffix, meta in ((".png", {"Software": None}), (".pdf", {"CreationDate": None, "Producer": None})):
        path = stem.with_suffix(suffix)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=dpi, bbox_inches="tight", metadata=meta)
        out.append(path)
    return out


def save_bar(df: pd.DataFrame, *, x: str, y: str, path: str | Path, title: str = "", ylabel: str = ""):
    """A simple labelled bar chart saved with :func:`save_figure`; returns the figure for display."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(df)), 3))
    sns.barplot(data=df, x=x, y=y, ax=ax, color="#4C72B0")
    ax.set_title(title)
    ax.set_ylabel(ylabel or y)
    ax.set_ylim(0, max(1.0, float(df[y].max()) * 1.05))
    save_figure(fig, path)
    plt.close(fig)
    return fig
