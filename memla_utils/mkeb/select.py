"""Choosing records: the relation of a record, and a seeded sample with equal counts per relation."""
from __future__ import annotations

import random
from collections.abc import Sequence

from .record import Record


def relation_of(record: Record) -> str:
    """The relation a record edits: ``meta['relation']``, else its relation description, else the id prefix."""
    rel = record.meta.get("relation") if isinstance(record.meta, dict) else None
    return str(rel or record.relation_description or record.example_id.split(":")[0])


def stratified_sample(records: Sequence[Record], per_relation: int, *, seed: int = 0) -> list[Record]:
    """``per_relation`` records of every relation, drawn with ``random.Random(f"stratified:{seed}:{relation}")``
    (independent of the other relations and of file order within a relation), returned relation by relation
    interleaved (so any prefix covers every relation), each relation's draw in file order.

    Raises ``ValueError`` naming the relations with fewer than ``per_relation`` records.
    """
    if per_relation < 1:
        raise ValueError(f"per_relation must be >= 1, got {per_relation}")
    by_rel: dict[str, list[Record]] = {}
    for r in records:
        by_rel.setdefault(relation_of(r), []).append(r)
    short = {rel: len(rs) for rel, rs in by_rel.items() if len(rs) < per_relation}
    if short:
        raise ValueError(f"stratified_sample: {per_relation} records per relation asked, but these relations have "
                         f"fewer: {short}")
    drawn = {}
    for rel in sorted(by_rel):
        pool = by_rel[rel]
        idx = sorted(random.Random(f"stratified:{seed}:{rel}").sample(range(len(pool)), per_relation))
        drawn[rel] = [pool[i] for i in idx]
    return [drawn[rel][i] for i in range(per_relation) for rel in sorted(drawn)]


__all__ = ["relation_of", "stratified_sample"]
