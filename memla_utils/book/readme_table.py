"""The README's results tables, generated from the committed claims tables (never pasted by hand).

    python -m memla_utils.book.readme_table            # check: exit 1 with a diff when README.md is stale
    python -m memla_utils.book.readme_table --write    # rewrite the blocks between the markers

Each block of :data:`BLOCKS` (the small preset's between ``<!-- results-table:start -->`` and
``<!-- results-table:end -->``, every other run's between ``<!-- results-table:<preset>:start -->`` and
``<!-- results-table:<preset>:end -->``) holds either the claims (claim, verdict, effect ×100 with its interval, n)
of its run's ``claims.csv`` (``figures/tables/``, ``figures/medium/tables/``), formatted by
:func:`memla_utils.report.format_claims` exactly as ``claims.md`` is, or, for the MzsRE and Bi-ZsRE runs (issue 16:
one table per benchmark), the compact main comparison of :func:`comparison_table`; each points to its run's book.
The small preset's block must be in the README; another block is checked and written when its markers are there.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..cache import PROJECT_ROOT
from ..report.claims import format_claims

START = "<!-- results-table:start -->"
END = "<!-- results-table:end -->"
README = PROJECT_ROOT / "README.md"
FIGURES = PROJECT_ROOT / "figures"
#: The claims table's columns shown in the README (names as format_claims writes them).
COLUMNS: tuple[str, ...] = ("verdict", "measured effect ×100 [95% CI]", "n")


@dataclass(frozen=True)
class TableBlock:
    """One results block of the README: its markers, its run's figures folder (below the figures root), its book,
    and what it shows: ``"claims"`` (the claims table) or the name of a main-comparison table of the run
    (:func:`comparison_table`; the other benchmarks' runs, whose claims rest on NS alone)."""

    preset: str
    start: str
    end: str
    subdir: str  # the run's figures folder relative to the figures root ("" for the small preset's figures/)
    table: str = "claims"

    @property
    def source(self) -> str:
        return f"{Path('figures', self.subdir).as_posix()}/tables/{self.table}.csv"

    def figures(self, root: Path) -> Path:
        return Path(root) / self.subdir if self.subdir else Path(root)

    @property
    def book(self) -> str:
        make = "`make book`" if self.preset == "small" else f"`make book PRESET={self.preset}`"
        return f"{make} (open `runs/{self.preset}/book/html/index.html`)"


def _markers(preset: str) -> tuple[str, str]:
    return f"<!-- results-table:{preset}:start -->", f"<!-- results-table:{preset}:end -->"


#: The README's results blocks: the small preset (required); the medium run, its paper-budget baselines and the
#: MzsRE / Bi-ZsRE runs (issue 16: one table per benchmark) when their markers are there.
BLOCKS: tuple[TableBlock, ...] = (
    TableBlock("small", START, END, ""),
    TableBlock("medium", *_markers("medium"), "medium"),
    TableBlock("medium-paper", *_markers("medium-paper"), "medium-paper"),
    TableBlock("mzsre", *_markers("mzsre"), "mzsre", "main_comparison_token_acc"),
    TableBlock("bizsre", *_markers("bizsre"), "bizsre", "main_comparison_token_acc"),
)
#: Column labels of :func:`comparison_table`'s metrics (token-accuracy ES / PS: the records have no true answer).
METRIC_LABELS: dict[str, str] = {"ES_token_acc": "ES (tok)", "PS_token_acc": "PS (tok)", "NS": "NS", "QS": "QS",
                                 "ES": "ES", "PS": "PS"}


class ReadmeTableError(ValueError):
    """README.md lacks the markers (or has them twice / out of order), or the claims table is missing."""


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def results_table(figures_dir: Path = FIGURES) -> str:
    """The Markdown table of the claims in ``figures_dir/tables/claims.csv`` (ReadmeTableError when absent)."""
    path = Path(figures_dir) / "tables" / "claims.csv"
    if not path.is_file():
        raise ReadmeTableError(f"no claims table {path} (notebook 07 / `make paper` writes it)")
    shown = format_claims(pd.read_csv(path))
    missing = [c for c in COLUMNS if c not in shown.columns]
    if missing:
        raise ReadmeTableError(f"{path}: format_claims gave no column {missing}")
    lines = ["| claim | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for claim, row in shown.iterrows():
        lines.append("| " + " | ".join(_cell(v) for v in (claim, *(row[c] for c in COLUMNS))) + " |")
    return "\n".join(lines)


def comparison_table(figures_dir: Path, table: str) -> str:
    """A compact Markdown table of ``figures_dir/tables/<table>.csv`` (the report's long form: method, edit_lang,
    scope, metric, mean, ci_low, ci_high, n): one row per method, one column per (edit language, same / cross,
    metric) with ``mean [95% CI]`` ×100, and the records' n (one number when every cell has it, else its range).
    ReadmeTableError when the table is absent or lacks a column."""
    from ..report.names import method_order

    path = Path(figures_dir) / "tables" / f"{table}.csv"
    if not path.is_file():
        raise ReadmeTableError(f"no table {path} (notebook 07 / `make paper` writes it)")
    df = pd.read_csv(path)
    need = ["method", "edit_lang", "scope", "metric", "mean", "ci_low", "ci_high", "n"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ReadmeTableError(f"{path}: no column {missing}")
    metrics = [m for m in METRIC_LABELS if m in set(df["metric"])]
    columns = [(e, sc, m) for e in dict.fromkeys(df["edit_lang"]) for sc in ("same", "cross") for m in metrics
               if ((df["edit_lang"] == e) & (df["scope"] == sc) & (df["metric"] == m)).any()]
    cells = {(r.method, r.edit_lang, r.scope, r.metric): r for r in df.itertuples(index=False)}
    header = [f"{e} {sc} {METRIC_LABELS[m]}" for e, sc, m in columns]
    lines = ["| method | " + " | ".join(header) + " | n |", "|---" * (len(header) + 2) + "|"]
    for method in method_order(df["method"]):
        row, ns = [], []
        for e, sc, m in columns:
            r = cells.get((method, e, sc, m))
            if r is None or pd.isna(r.mean) or int(r.n) == 0:
                row.append("missing")
                continue
            ci = "" if pd.isna(r.ci_low) or pd.isna(r.ci_high) else f" [{100 * r.ci_low:.1f}, {100 * r.ci_high:.1f}]"
            row.append(f"{100 * r.mean:.1f}{ci}")
            ns.append(int(r.n))
        n = "0" if not ns else str(ns[0]) if min(ns) == max(ns) else f"{min(ns)}-{max(ns)}"
        lines.append("| " + " | ".join(_cell(v) for v in (method, *row, n)) + " |")
    return "\n".join(lines)


def block(figures_dir: Path = FIGURES, which: TableBlock = BLOCKS[0]) -> str:
    """Everything between (and including) ``which``'s markers, from ``figures_dir/tables/<which.table>.csv``."""
    if which.table == "claims":
        body, tail = results_table(figures_dir), ("Every claim with what the paper reports, how it is measured and "
                                                  "links to the notebook cell, figure and table behind it, plus every "
                                                  "figure, table and executed notebook of the run: the book, "
                                                  f"{which.book}.")
    else:
        body, tail = comparison_table(figures_dir, which.table), (
            "Scores ×100 with their 95% bootstrap interval over records; *same* = the edit language, *cross* = the "
            "mean over the other evaluation languages; ES / PS (tok) = teacher-forced token accuracy of the new "
            f"target. Every other table, figure and the executed notebooks: the book, {which.book}.")
    return "\n".join([
        which.start,
        f"<!-- generated from {which.source} by `python -m memla_utils.book.readme_table --write`; "
        "do not edit by hand -->",
        "",
        body,
        "",
        tail,
        which.end,
    ])


def replace_block(text: str, new_block: str, *, where: str = "README.md", start: str = START, end: str = END) -> str:
    """``text`` with its ``start``..``end`` block replaced by ``new_block``; ReadmeTableError naming ``where``
    when the markers are missing, repeated or out of order."""
    starts, ends = text.count(start), text.count(end)
    if starts != 1 or ends != 1:
        raise ReadmeTableError(f"{where} must hold {start} and {end} once each (found {starts} and {ends})")
    i, j = text.index(start), text.index(end)
    if j < i:
        raise ReadmeTableError(f"{where}: {end} comes before {start}")
    return text[:i] + new_block + text[j + len(end):]


def generated(text: str, figures_root: Path = FIGURES, *, where: str = "README.md") -> str:
    """``text`` with every block of :data:`BLOCKS` regenerated (the first always, the others when their markers
    are in ``text``)."""
    for i, which in enumerate(BLOCKS):
        if i and which.start not in text and which.end not in text:
            continue
        text = replace_block(text, block(which.figures(figures_root), which), where=where, start=which.start,
                             end=which.end)
    return text


def _read(readme: Path) -> str:
    """The README's text, or :class:`ReadmeTableError` naming the file."""
    try:
        return Path(readme).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ReadmeTableError(f"{readme}: cannot be read ({err.__class__.__name__}: {err})") from None


def stale_diff(readme: Path = README, figures_dir: Path = FIGURES) -> str:
    """A unified diff from the README's blocks to the generated ones; empty when they agree."""
    text = _read(readme)
    want = generated(text, figures_dir, where=str(readme))
    return "".join(difflib.unified_diff(text.splitlines(True), want.splitlines(True), str(readme),
                                        f"{readme} (generated)"))


def write(readme: Path = README, figures_dir: Path = FIGURES) -> bool:
    """Rewrite the blocks; returns whether the file changed."""
    text = _read(readme)
    want = generated(text, figures_dir, where=str(readme))
    if want != text:
        Path(readme).write_text(want, encoding="utf-8")
    return want != text


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m memla_utils.book.readme_table", description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite the README block (default: only check)")
    ap.add_argument("--readme", type=Path, default=README)
    ap.add_argument("--figures", type=Path, default=FIGURES,
                    help="figures root: tables/claims.csv for the small block, <preset>/tables/claims.csv for the "
                         "medium and medium-paper blocks, <preset>/tables/main_comparison_token_acc.csv for the "
                         "mzsre and bizsre blocks")
    args = ap.parse_args(argv)
    try:
        if args.write:
            changed = write(args.readme, args.figures)
            print(f"{args.readme}: results tables {'updated' if changed else 'already up to date'}")
            return 0
        diff = stale_diff(args.readme, args.figures)
    except ReadmeTableError as err:
        print(f"readme_table: {err}", file=sys.stderr)
        return 1
    if diff:
        print(diff + f"\n{args.readme}: a results table differs from its claims.csv under {args.figures}; "
              "run `python -m memla_utils.book.readme_table --write`", file=sys.stderr)
        return 1
    print(f"{args.readme}: results tables match the claims tables under {args.figures}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
