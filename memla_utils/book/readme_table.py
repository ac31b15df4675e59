"""The README's one results table, generated from the committed claims table (never pasted by hand).

    python -m memla_utils.book.readme_table            # check: exit 1 with a diff when README.md is stale
    python -m memla_utils.book.readme_table --write    # rewrite the block between the markers

The block between ``<!-- results-table:start -->`` and ``<!-- results-table:end -->`` in README.md holds the
claims (claim, verdict, effect ×100 with its interval, n) of ``figures/tables/claims.csv``, formatted by
:func:`memla_utils.report.format_claims` exactly as ``claims.md`` is, and points to the book for the rest.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
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


def block(figures_dir: Path = FIGURES) -> str:
    """Everything between (and including) the markers."""
    return "\n".join([
        START,
        "<!-- generated from figures/tables/claims.csv by `python -m memla_utils.book.readme_table --write`; "
        "do not edit by hand -->",
        "",
        results_table(figures_dir),
        "",
        "Every claim with what the paper reports, how it is measured and links to the notebook cell, figure and "
        "table behind it, plus every figure, table and executed notebook of the run: the book, `make book` "
        "(open `runs/small/book/html/index.html`).",
        END,
    ])


def replace_block(text: str, new_block: str, *, where: str = "README.md") -> str:
    """``text`` with its marker block replaced by ``new_block``; ReadmeTableError naming ``where`` when the
    markers are missing, repeated or out of order."""
    starts, ends = text.count(START), text.count(END)
    if starts != 1 or ends != 1:
        raise ReadmeTableError(f"{where} must hold {START} and {END} once each (found {starts} and {ends})")
    i, j = text.index(START), text.index(END)
    if j < i:
        raise ReadmeTableError(f"{where}: {END} comes before {START}")
    return text[:i] + new_block + text[j + len(END):]


def stale_diff(readme: Path = README, figures_dir: Path = FIGURES) -> str:
    """A unified diff from the README's block to the generated one; empty when they agree."""
    text = Path(readme).read_text(encoding="utf-8")
    want = replace_block(text, block(figures_dir), where=str(readme))
    return "".join(difflib.unified_diff(text.splitlines(True), want.splitlines(True), str(readme),
                                        f"{readme} (generated)"))


def write(readme: Path = README, figures_dir: Path = FIGURES) -> bool:
    """Rewrite the block; returns whether the file changed."""
    text = Path(readme).read_text(encoding="utf-8")
    want = replace_block(text, block(figures_dir), where=str(readme))
    if want != text:
        Path(readme).write_text(want, encoding="utf-8")
    return want != text


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m memla_utils.book.readme_table", description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite the README block (default: only check)")
    ap.add_argument("--readme", type=Path, default=README)
    ap.add_argument("--figures", type=Path, default=FIGURES, help="figures folder holding tables/claims.csv")
    args = ap.parse_args(argv)
    try:
        if args.write:
            changed = write(args.readme, args.figures)
            print(f"{args.readme}: results table {'updated' if changed else 'already up to date'}")
            return 0
        diff = stale_diff(args.readme, args.figures)
    except ReadmeTableError as err:
        print(f"readme_table: {err}", file=sys.stderr)
        return 1
    if diff:
        print(diff + f"\n{args.readme}: the results table differs from {args.figures}/tables/claims.csv; "
              "run `python -m memla_utils.book.readme_table --write`", file=sys.stderr)
        return 1
    print(f"{args.readme}: results table matches {args.figures}/tables/claims.csv")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
