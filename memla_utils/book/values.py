"""Glued values: every number the book's prose shows is read from a run file at build time, never typed.

A reference names the file, the place in it and the display format, e.g.
``figures:tables/claims.csv#3/effect@pct`` (row 3 of the claims table, column ``effect``, shown ×100 with a sign)
or ``figures:MANIFEST.json#model.fingerprint`` (a dotted path into a JSON manifest). ``figures:`` is the run's
figures folder (``figures/`` for the small preset), ``run:`` its run folder (``runs/<preset>``).

The Sphinx role ``{run-value}`` (:mod:`memla_utils.book.sphinx_ext`) turns a reference into
``<span class="run-value" data-ref="...">text</span>``; :func:`check_html` reads every such span of a built
site back and compares its text with the file it names, so a value that drifted from its source is found.
"""
from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

#: The roots a reference may start from.
ROOTS: tuple[str, ...] = ("figures", "run")
#: Display formats: ``text`` as is; ``int``; ``pct`` ×100 with sign and one decimal (the claims table's
#: convention, report.claims.format_claims); ``seconds`` rounded to whole seconds; ``level`` a fraction as a
#: percentage without sign (0.95 -> 95).
FORMATS: tuple[str, ...] = ("text", "int", "pct", "seconds", "level")
MISSING = "—"

_REF = re.compile(r"^(?P<root>[a-z]+):(?P<path>[^#@]+)#(?P<locator>[^@]+)(?:@(?P<fmt>[a-z]+))?$")


class GlueError(ValueError):
    """A reference is malformed or names a file, row, column or key that is not there."""


@dataclass(frozen=True)
class ValueRef:
    """One glued value: ``root:path#locator@fmt``. CSV locators are ``<row>/<column>`` (row = 0-based data
    row); JSON locators are dotted paths (``git.commit``); at each level the whole rest is tried as one key
    first, so keys with dots work (``timings.04_memla.ipynb``)."""

    root: str
    path: str
    locator: str
    fmt: str = "text"

    @classmethod
    def parse(cls, text: str) -> ValueRef:
        m = _REF.match(text.strip())
        if not m:
            raise GlueError(f"glued value {text!r}: expected root:path#locator@format, "
                              f"e.g. figures:tables/claims.csv#0/effect@pct")
        ref = cls(m["root"], m["path"], m["locator"], m["fmt"] or "text")
        if ref.root not in ROOTS:
            raise GlueError(f"glued value {text!r}: root {ref.root!r} is not one of {ROOTS}")
        if ref.fmt not in FORMATS:
            raise GlueError(f"glued value {text!r}: format {ref.fmt!r} is not one of {FORMATS}")
        if ref.path.endswith(".csv") and ref.locator.count("/") != 1:
            raise GlueError(f"glued value {text!r}: a CSV locator is <row>/<column>")
        return ref

    def __str__(self) -> str:
        return f"{self.root}:{self.path}#{self.locator}" + (f"@{self.fmt}" if self.fmt != "text" else "")

    def file(self, roots: Mapping[str, Path]) -> Path:
        return Path(roots[self.root]) / self.path


@lru_cache(maxsize=64)
def _csv_rows(path: Path, mtime: float) -> tuple[tuple[str, ...], tuple[dict[str, str], ...]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = tuple(reader)
        return tuple(reader.fieldnames or ()), rows


def read_raw(ref: ValueRef, roots: Mapping[str, Path]) -> Any:
    """The value as stored: a CSV cell's string, or the JSON value. Errors name the file and the place."""
    path = ref.file(roots)
    if not path.is_file():
        raise GlueError(f"glued value {ref}: file {path} does not exist")
    if path.suffix == ".csv":
        row_s, column = ref.locator.split("/", 1)
        fields, rows = _csv_rows(path, path.stat().st_mtime)
        if not row_s.isdigit() or int(row_s) >= len(rows):
            raise GlueError(f"glued value {ref}: {path} has {len(rows)} data rows, no row {row_s}")
        if column not in fields:
            raise GlueError(f"glued value {ref}: {path} has no column {column!r} (columns: {', '.join(fields)})")
        return rows[int(row_s)][column]
    if path.suffix == ".json":
        node: Any = json.loads(path.read_text(encoding="utf-8"))
        rest = ref.locator
        while rest:
            if not isinstance(node, dict):
                raise GlueError(f"glued value {ref}: {path}: {rest!r} is below a non-object value")
            key = rest if rest in node else rest.split(".", 1)[0]
            if key not in node:
                raise GlueError(f"glued value {ref}: {path} has no key {key!r}")
            node = node[key]
            rest = rest[len(key) + 1:]
        return node
    raise GlueError(f"glued value {ref}: only .csv and .json files can be glued, not {path.name}")


def _number(raw: Any) -> float:
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return math.nan
    return float(raw)


def _as_text(raw: Any) -> str:
    if raw is None:
        return MISSING
    if isinstance(raw, (list, tuple)):
        return ", ".join(str(v) for v in raw)
    return str(raw)


def format_value(raw: Any, fmt: str) -> str:
    """How a stored value is shown (lists as comma-separated text). Missing/NaN numbers show as an em dash,
    never as a number."""
    if fmt == "text":
        return _as_text(raw)
    x = _number(raw)
    if not math.isfinite(x):
        return MISSING
    if fmt == "int":
        return str(int(round(x)))
    if fmt == "pct":
        return f"{x * 100:+.1f}"
    if fmt == "seconds":
        return f"{x:.0f}"
    if fmt == "level":
        return f"{x * 100:g}"
    raise GlueError(f"unknown format {fmt!r}; one of {FORMATS}")


def matches(text: str, raw: Any, fmt: str) -> bool:
    """Whether ``text`` (as shown) is ``raw`` (as stored) at the precision of ``fmt``, parsed back
    independently of :func:`format_value` (so a wrong formatter is caught too)."""
    text = " ".join(text.split())
    if fmt == "text":
        return text == " ".join(_as_text(raw).split())
    x = _number(raw)
    if not math.isfinite(x):
        return text == MISSING
    try:
        shown = float(text.replace("−", "-"))
    except ValueError:
        return False
    tolerance = {"int": 0.0, "pct": 0.05 / 100, "seconds": 0.5, "level": 1e-9}[fmt]
    value = shown / 100 if fmt in ("pct", "level") else shown
    return abs(value - x) <= tolerance + 1e-9 * max(1.0, abs(x))


@dataclass(frozen=True)
class GluedSpan:
    page: str
    ref: str
    text: str


class _SpanParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.spans: list[tuple[str, str]] = []
        self._open: list[list[str]] = []  # [ref, text] for run-value spans being read; None-likes for others
        self._depth: list[bool] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "span":
            return
        a = dict(attrs)
        is_value = "run-value" in (a.get("class") or "").split()
        self._depth.append(is_value)
        if is_value:
            self._open.append([a.get("data-ref") or "", ""])

    def handle_endtag(self, tag: str) -> None:
        if tag != "span" or not self._depth:
            return
        if self._depth.pop():
            ref, text = self._open.pop()
            self.spans.append((ref, text))

    def handle_data(self, data: str) -> None:
        for item in self._open:
            item[1] += data


def glued_spans(html_dir: Path) -> Iterator[GluedSpan]:
    """Every ``run-value`` span of every page under ``html_dir``."""
    for page in sorted(Path(html_dir).rglob("*.html")):
        parser = _SpanParser()
        parser.feed(page.read_text(encoding="utf-8"))
        for ref, text in parser.spans:
            yield GluedSpan(str(page.relative_to(html_dir)), ref, text)


def check_html(html_dir: Path, roots: Mapping[str, Path]) -> tuple[int, list[str]]:
    """Compare every glued value of a built site with its source file.

    Returns (number of glued values checked, problems); each problem names the page, the reference, what the
    page shows and what the file holds.
    """
    n, problems = 0, []
    for span in glued_spans(html_dir):
        n += 1
        try:
            ref = ValueRef.parse(span.ref)
            raw = read_raw(ref, roots)
        except GlueError as err:
            problems.append(f"{span.page}: {err}")
            continue
        if not matches(span.text, raw, ref.fmt):
            problems.append(f"{span.page}: {ref} shows {span.text!r} but the file holds {raw!r}")
    return n, problems
