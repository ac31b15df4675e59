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


#: How a run chooses its records (``RunConfig.record_selection``).
SELECTIONS: tuple[str, ...] = ("first", "stratified")


def select_records(records: Sequence[Record], n: int, *, selection: str = "first", seed: int = 0) -> list[Record]:
    """The ``n`` records a run evaluates.

    ``"first"``: the first ``n`` in file order (the small preset). ``"stratified"``: ``n / k`` of each of the
    file's ``k`` relations (:func:`stratified_sample` with ``seed``); ``n`` must be a multiple of ``k`` so that
    every relation has the same count. Raises ``ValueError`` naming ``n`` / ``selection`` when it cannot.
    """
    if n < 1:
        raise ValueError(f"n_records must be >= 1, got {n}")
    if selection == "first":
        if n > len(records):
            raise ValueError(f"n_records={n} but only {len(records)} records are available")
        return list(records[:n])
    if selection != "stratified":
        raise ValueError(f"record_selection must be one of {SELECTIONS}, got {selection!r}")
    relations = sorted({relation_of(r) for r in records})
    if n % len(relations):
        raise ValueError(f"record_selection='stratified' needs n_records to be a multiple of the {len(relations)} "
                         f"relations ({', '.join(relations)}) for equal counts, got n_records={n}")
    return stratified_sample(records, n // len(relations), seed=seed)


def split_records(records: Sequence[Record], n: int, n_train: int, *, selection: str = "first",
                  seed: int = 0) -> tuple[list[Record], list[Record]]:
    """The evaluated records (:func:`select_records`) and a disjoint training split: the first ``n_train`` of the
    remaining records in file order (MEND's training data, IKE's demonstrations). Raises ``ValueError`` when
    fewer than ``n_train`` remain."""
    chosen = select_records(records, n, selection=selection, seed=seed)
    ids = {r.example_id for r in chosen}
    rest = [r for r in records if r.example_id not in ids]
    if n_train > len(rest):
        raise ValueError(f"n_train_records={n_train} but only {len(rest)} records remain after the {n} evaluated")
    return chosen, rest[:n_train]


__all__ = ["SELECTIONS", "relation_of", "select_records", "split_records", "stratified_sample"]
