"""The README's results tables, generated from the committed claims tables (never pasted by hand).

    python -m memla_utils.book.readme_table            # check: exit 1 with a diff when README.md is stale
    python -m memla_utils.book.readme_table --write    # rewrite the blocks between the markers

Each block of :data:`BLOCKS` (the small preset's between ``<!-- results-table:start -->`` and
``<!-- results-table:end -->``, the medium run's between ``<!-- results-table:medium:start -->`` and
``<!-- results-table:medium:end -->``) holds the claims (claim, verdict, effect ×100 with its interval, n) of its
run's ``claims.csv`` (``figures/tables/``, ``figures/medium/tables/``), formatted by
:func:`memla_utils.report.format_claims` exactly as ``claims.md`` is, and points to that run's book for the rest.
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
    """One results block of the README: its markers, its run's figures folder (below the figures root) and book."""

    preset: str
    start: str
    end: str
    subdir: str  # the run's figures folder relative to the figures root ("" for the small preset's figures/)

    def figures(self, root: Path) -> Path:
        return Path(root) / self.subdir if self.subdir else Path(root)

    @property
    def book(self) -> str:
        make = "`make book`" if self.preset == "small" else f"`make book PRESET={self.preset}`"
        return f"{make} (open `runs/{self.preset}/book/html/index.html`)"


#: The README's results blocks: the small preset (required) and the medium run (when its markers are there).
BLOCKS: tuple[TableBlock, ...] = (
    TableBlock("small", START, END, ""),
    TableBlock("medium", "<!-- results-table:medium:start -->", "<!-- results-table:medium:end -->", "medium"),
)


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


def block(figures_dir: Path = FIGURES, which: TableBlock = BLOCKS[0]) -> str:
    """Everything between (and including) ``which``'s markers, from ``figures_dir/tables/claims.csv``."""
    source = f"{Path('figures', which.subdir).as_posix()}/tables/claims.csv"
    return "\n".join([
        which.start,
        f"<!-- generated from {source} by `python -m memla_utils.book.readme_table --write`; do not edit by hand -->",
        "",
        results_table(figures_dir),
        "",
        "Every claim with what the paper reports, how it is measured and links to the notebook cell, figure and "
        f"table behind it, plus every figure, table and executed notebook of the run: the book, {which.book}.",
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


def stale_diff(readme: Path = README, figures_dir: Path = FIGURES) -> str:
    """A unified diff from the README's blocks to the generated ones; empty when they agree."""
    text = Path(readme).read_text(encoding="utf-8")
    want = generated(text, figures_dir, where=str(readme))
    return "".join(difflib.unified_diff(text.splitlines(True), want.splitlines(True), str(readme),
                                        f"{readme} (generated)"))


def write(readme: Path = README, figures_dir: Path = FIGURES) -> bool:
    """Rewrite the blocks; returns whether the file changed."""
    text = Path(readme).read_text(encoding="utf-8")
    want = generated(text, figures_dir, where=str(readme))
    if want != text:
        Path(readme).write_text(want, encoding="utf-8")
    return want != text


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m memla_utils.book.readme_table", description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite the README block (default: only check)")
    ap.add_argument("--readme", type=Path, default=README)
    ap.add_argument("--figures", type=Path, default=FIGURES,
                    help="figures root: tables/claims.csv, and medium/tables/claims.csv for the medium block")
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
