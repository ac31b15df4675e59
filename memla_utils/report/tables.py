"""Tidy statistics shaped into the paper's wide tables, formatted as CSV, Markdown and LaTeX.

Cells that have no results stay visible as "missing" rather than disappearing from the table.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..evaluate import PAPER_METRICS
from ..languages import ordered
from .names import MISSING, PERCENT_METRICS, SCORE_METRICS

log = logging.getLogger(__name__)


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
_LEVEL_ORDER.update({"ES_token_acc": _LEVEL_ORDER["ES"], "PS_token_acc": _LEVEL_ORDER["PS"]})  # where ES / PS stand


def _column_key(col: Any) -> tuple:
    """Columns in reading order: metrics ES/PS/NS/QS, same before cross, languages in MKEB order."""
    from ..languages import MKEB_LANGUAGES

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
                caption: str = "", source: str | None = None) -> list[Path]:
    """``<name>.csv`` (numeric, long), ``<name>.md`` and ``<name>.tex`` (formatted) under ``out_dir``.

    ``source`` (the ``source:`` line naming the manifest the table comes from) ends the Markdown and is a
    comment in the LaTeX; the CSV stays a plain table.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, tex_path = out / f"{name}.csv", out / f"{name}.md", out / f"{name}.tex"
    stats.to_csv(csv_path, index=False, float_format="%.6g", lineterminator="\n")
    md_path.write_text(to_markdown(formatted, caption) + (f"\n{source}\n" if source else ""), encoding="utf-8")
    tex_path.write_text(to_latex(formatted, caption, label=f"tab:{name}") + (f"% {source}\n" if source else ""),
                        encoding="utf-8")
    log.info("wrote table %s (%d cells)", name, len(stats))
    return [csv_path, md_path, tex_path]


def _metric_frame(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["kind"] == "metric") & df["value"].notna()]


def summarize(df: pd.DataFrame, metrics: Sequence[str] = PAPER_METRICS) -> pd.DataFrame:
    """Per (method, edit_lang): each metric monolingual (eval == edit) and cross-lingual (mean over the
    other evaluation languages of the per-language means, as memla4mke averages ``edit_to_others``)."""
    m = _metric_frame(df)
    m = m[m["metric"].isin(metrics)]
    per_lang = m.groupby(["method", "edit_lang", "eval_lang", "metric"], dropna=False)["value"].mean().reset_index()
    per_lang["setting"] = (per_lang["eval_lang"] == per_lang["edit_lang"]).map({True: "mono", False: "cross"})
    table = per_lang.groupby(["method", "edit_lang", "metric", "setting"])["value"].mean().unstack(["metric", "setting"])
    cols = [(mt, s) for mt in metrics for s in ("mono", "cross") if (mt, s) in table.columns]
    table = table.reindex(columns=pd.MultiIndex.from_tuples(cols, names=["metric", "setting"]))
    return table


def language_matrix(df: pd.DataFrame, method: str, metric: str) -> pd.DataFrame:
    """Mean ``metric`` of ``method`` as an edit-language × evaluation-language table."""
    m = _metric_frame(df)
    m = m[(m["method"] == method) & (m["metric"] == metric)]
    if m.empty:
        raise ValueError(f"no {metric!r} values for method {method!r} in these results")
    mat = m.pivot_table(index="edit_lang", columns="eval_lang", values="value", aggfunc="mean")
    return mat.reindex(index=ordered(mat.index), columns=ordered(mat.columns))


def edit_costs_table(results: pd.DataFrame) -> pd.DataFrame:
    """Median and mean of every per-edit measurement (seconds, evaluation seconds, steps, peak memory) per
    method: the rows of kind ``"edit"``, one column pair per measurement (notebook 04)."""
    edits = results[results["kind"] == "edit"]
    return edits.pivot_table(index="method", columns="metric", values="value", aggfunc=["median", "mean"])


#: The columns :func:`failed_edits` shows.
FAILED_EDIT_COLUMNS = ("record", "method", "edit_lang", "message")


def failed_edits(results: pd.DataFrame, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """The units whose edit failed (rows of kind ``"error"``: the runner keeps the message and goes on), of
    ``methods`` (all when ``None``), one row each with :data:`FAILED_EDIT_COLUMNS`; empty (same columns) when none
    failed. Notebooks 04 and 05."""
    rows = results[results["kind"] == "error"] if "kind" in results else results.iloc[:0]
    if methods is not None:
        rows = rows[rows["method"].isin(list(methods))]
    return rows.reindex(columns=list(FAILED_EDIT_COLUMNS)).reset_index(drop=True)


def language_matrices(results: pd.DataFrame, method: str, metrics: Sequence[str] = ("ES", "PS", "NS")
                      ) -> dict[str, pd.DataFrame]:
    """:func:`language_matrix` of each metric ``method`` has values for (the others are left out)."""
    have = set(_metric_frame(results[results["method"] == method])["metric"])
    return {metric: language_matrix(results, method, metric) for metric in metrics if metric in have}


def edit_seconds_note(results: pd.DataFrame, method: str, target_s: float) -> str | None:
    """``"**memla: median 2.1 s per edit** (max 4.0 s; target ≤ 15 s on 2 CPU cores)"`` from the unit rows'
    edit seconds, or ``None`` when ``method`` has no finished edit in ``results``."""
    sec = results[(results["kind"] == "edit") & (results["metric"] == "seconds") & (results["method"] == method)]
    if not len(sec):
        return None
    return (f"**{method}: median {sec['value'].median():.1f} s per edit** (max {sec['value'].max():.1f} s; "
            f"target ≤ {target_s:g} s on 2 CPU cores)")
