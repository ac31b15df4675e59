"""Comparing two versions of a result table, value by value (the drift check's core, :mod:`memla_utils.drift`).

Tables are parsed from CSV (:func:`parse_csv`) or Markdown (:func:`parse_markdown`), rows matched by a key
(:func:`row_keys`) and cells compared (:func:`compare_tables`): exactly (display cells), numerically within
:data:`ABS_TOL` (CSV), or, across CPU models, within :data:`CROSS_CPU_RTOL` relative + :data:`CROSS_CPU_ATOL` or
one unit of the last displayed digit (:func:`close_value`). Each difference is a :class:`Difference`. Which files
are compared and how the commit's versions are read is :mod:`memla_utils.drift`'s job.
"""
from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

#: Absolute tolerance on non-integer numbers parsed from CSV tables.
ABS_TOL = 1e-9
#: Relative tolerance on non-integer numbers when the commit's tables were made on another CPU model (the
#: ``device.cpu_model`` of the two ``figures/MANIFEST.json``): float sums over many terms take other last bits
#: on another CPU's kernels. Measured 2026-12-02, the same code and inputs on an AMD EPYC and an Intel Xeon (2
#: cores each): notebook 06's perplexities differed by up to 1.3e-4 relative (95.6787 vs 95.6663 after three
#: sequential edits), its bootstrap bounds by 1e-4; edit metrics (ES/PS/NS/QS) and neuron counts were identical.
CROSS_CPU_RTOL = 1e-3
#: Absolute floor of the cross-CPU comparison, for small differences of large terms: an attribution's
#: completeness error (0.0067378 vs 0.0067210 in the same measurement) moves by more than 1e-3 relative.
CROSS_CPU_ATOL = 1e-4
#: Differences listed per file (the count of the rest is given).
MAX_PER_FILE = 20

_INT = re.compile(r"[+-]?\d+")
#: a number inside a display cell (sign, digits, optional decimals and exponent)
_NUM = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


@dataclass(frozen=True)
class Difference:
    """One difference: the file, the row key and column ("" for a file-level one), old and new values."""

    file: str
    key: str = ""
    column: str = ""
    old: str = ""
    new: str = ""

    def __str__(self) -> str:
        where = self.file + (f" [{self.key}]" if self.key else "") + (f" {self.column}" if self.column else "")
        if self.old and self.new:
            return f"{where}: {self.old!r} -> {self.new!r}"
        return f"{where}: {self.new or self.old}" if (self.old or self.new) else where



# ------------------------------------------------------------------------------------------------ values
def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def same_value(old: str, new: str, abs_tol: float = ABS_TOL) -> bool:
    """Equal as written, or two integers that are equal, or two numbers within ``abs_tol`` (NaN equals NaN);
    anything else (strings, a number against a string) must be identical."""
    if old == new:
        return True
    if _INT.fullmatch(old.strip()) and _INT.fullmatch(new.strip()):
        return int(old) == int(new)
    a, b = _number(old), _number(new)
    if a is None or b is None:
        return False
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= abs_tol


def _decimals(text: str) -> int:
    """Digits after the decimal point as displayed (``"+52.2"`` -> 1, ``"26"`` -> 0, ``"1e-05"`` -> 0)."""
    m = re.fullmatch(r"[+-]?\d*\.(\d+)", text.strip())
    return len(m.group(1)) if m else 0


def close_value(old: str, new: str, rtol: float, abs_tol: float = ABS_TOL) -> bool:
    """The cross-CPU comparison of two cells: :func:`same_value`, or two non-integer numbers within ``rtol`` of
    the larger magnitude plus :data:`CROSS_CPU_ATOL`, or within one unit of the last displayed digit (a rounded
    display value may flip).
    Integers and strings stay exact. Markdown cells holding several numbers (``"+87.9 [+52.2, +107.7]"``) are
    compared number by number, the text between them exactly."""
    if same_value(old, new, abs_tol):
        return True
    pa, pb = _NUM.split(old), _NUM.split(new)
    na, nb = _NUM.findall(old), _NUM.findall(new)
    if pa != pb or len(na) != len(nb) or not na:
        return False
    for a, b in zip(na, nb):
        if a == b:
            continue
        if _INT.fullmatch(a) and _INT.fullmatch(b):
            return False
        x, y = float(a), float(b)
        unit = 10.0 ** -max(_decimals(a), _decimals(b))
        if not (abs(x - y) <= rtol * max(abs(x), abs(y)) + CROSS_CPU_ATOL or abs(x - y) <= unit * (1 + 1e-9)):
            return False
    return True


# ------------------------------------------------------------------------------------------------ tables
@dataclass
class Table:
    """A parsed table: header, rows of strings, and the lines around it (caption, source line)."""

    header: list[str]
    rows: list[list[str]]
    text: list[str] = field(default_factory=list)


def parse_csv(text: str) -> Table:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return Table([], [])
    return Table(rows[0], rows[1:])


def _md_cells(line: str) -> list[str]:
    body = line.strip()[1:-1] if line.strip().endswith("|") else line.strip()[1:]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", body)]


def parse_markdown(text: str) -> Table:
    """The first pipe table of a Markdown file (header, rows) and every other non-empty line."""
    lines = text.splitlines()
    header: list[str] = []
    rows: list[list[str]] = []
    other: list[str] = []
    in_table = done = False
    for i, line in enumerate(lines):
        is_row = line.lstrip().startswith("|")
        if not done and not in_table and is_row and i + 1 < len(lines) and \
                re.fullmatch(r"\s*\|?[\s:|-]+\|?\s*", lines[i + 1]) and "-" in lines[i + 1]:
            header, in_table = _md_cells(line), True
            continue
        if in_table:
            if is_row and re.fullmatch(r"\s*\|?[\s:|-]+\|?\s*", line) and "-" in line and not rows:
                continue  # the separator line
            if is_row:
                rows.append(_md_cells(line))
                continue
            in_table, done = False, True
        if line.strip():
            other.append(line.strip())
    return Table(header, rows, other)


def row_keys(header: Sequence[str], old: Sequence[Sequence[str]], new: Sequence[Sequence[str]],
             excluded: Sequence[str] = ()) -> int:
    """How many leading columns key the rows: the fewest that are unique in both tables (0: by row number).

    Excluded columns never key rows.
    """
    for k in range(1, len(header) + 1):
        if any(h in excluded for h in header[:k]):
            break
        if len({tuple(r[:k]) for r in old}) == len(old) and len({tuple(r[:k]) for r in new}) == len(new):
            return k
    return 0


def compare_tables(name: str, old: Table, new: Table, *, exact: bool, abs_tol: float = ABS_TOL,
                   excluded: Sequence[str] = (), rtol: float | None = None) -> list[Difference]:
    """Differences between two versions of a table (``exact``: cells must be identical strings; ``rtol``: cells
    compared with :func:`close_value` instead, exact or not)."""
    diffs: list[Difference] = []
    if old.text != new.text:  # caption, source line: exact
        for i in range(max(len(old.text), len(new.text))):
            a = old.text[i] if i < len(old.text) else ""
            b = new.text[i] if i < len(new.text) else ""
            if a != b:
                diffs.append(Difference(name, f"line {i + 1} outside the table", "", a, b))
    if old.header != new.header:
        gone = [h for h in old.header if h not in new.header]
        added = [h for h in new.header if h not in old.header]
        diffs.append(Difference(name, "columns", "", f"{old.header}" + (f" (removed {gone})" if gone else ""),
                                f"{new.header}" + (f" (added {added})" if added else "")))
        return diffs
    header = old.header
    k = row_keys(header, old.rows, new.rows, excluded)

    def key(i: int, row: Sequence[str]) -> str:
        if not k:
            return f"row {i + 1}"
        return ", ".join(f"{h}={v}" if h else v for h, v in zip(header[:k], row[:k]))

    a = {key(i, r): r for i, r in enumerate(old.rows)}
    b = {key(i, r): r for i, r in enumerate(new.rows)}
    for kk in a:
        if kk not in b:
            diffs.append(Difference(name, kk, "(row)", "present", "removed"))
    for kk in b:
        if kk not in a:
            diffs.append(Difference(name, kk, "(row)", "absent", "added"))
    for kk, ra in a.items():
        rb = b.get(kk)
        if rb is None:
            continue
        if len(ra) != len(rb):
            diffs.append(Difference(name, kk, "(cells)", str(len(ra)), str(len(rb))))
            continue
        for h, va, vb in zip(header, ra, rb):
            if h in excluded:
                continue
            if rtol is not None:
                same = close_value(va, vb, rtol, abs_tol)
            else:
                same = va == vb if exact else same_value(va, vb, abs_tol)
            if not same:
                diffs.append(Difference(name, kk, h, va, vb))
    return diffs


__all__ = ["ABS_TOL", "CROSS_CPU_ATOL", "CROSS_CPU_RTOL", "MAX_PER_FILE", "Difference", "Table", "close_value",
           "compare_tables", "parse_csv", "parse_markdown", "row_keys", "same_value"]
