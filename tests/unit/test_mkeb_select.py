"""Seeded, stratified record selection (the medium preset's records)."""
from __future__ import annotations

import pytest

from memla_utils.mkeb.record import EditTarget, Record
from memla_utils.mkeb.select import relation_of, stratified_sample


def recs() -> list[Record]:
    out = []
    for rel, n in (("capital", 5), ("currency", 7), ("language", 4)):
        for i in range(n):
            out.append(Record(f"{rel}:{i}", f"country → {rel}", {"en": EditTarget("{} x", "S", "a", "b")}))
    return out


def test_equal_counts_seeded_and_independent_of_other_relations():
    a = stratified_sample(recs(), 3, seed=0)
    assert [relation_of(r) for r in a[:3]] == ["country → capital", "country → currency", "country → language"]
    assert {relation_of(r) for r in a} == {"country → capital", "country → currency", "country → language"}
    assert all(sum(relation_of(r) == rel for r in a) == 3 for rel in {relation_of(r) for r in a})
    assert a == stratified_sample(recs(), 3, seed=0)
    assert a != stratified_sample(recs(), 3, seed=1)
    # dropping another relation's records does not change this relation's draw
    fewer = [r for r in recs() if not r.example_id.startswith("currency")]
    caps = [r.example_id for r in a if r.example_id.startswith("capital")]
    assert caps == [r.example_id for r in stratified_sample(fewer, 3) if r.example_id.startswith("capital")]


def test_too_few_records_is_a_clear_error():
    with pytest.raises(ValueError, match="'country → language': 4"):
        stratified_sample(recs(), 5)


def test_select_first_and_stratified():
    from memla_utils.mkeb.select import select_records

    assert [r.example_id for r in select_records(recs(), 2)] == ["capital:0", "capital:1"]
    s = select_records(recs(), 6, selection="stratified", seed=3)
    assert sorted(relation_of(r) for r in s).count("country → currency") == 2
    assert s == stratified_sample(recs(), 2, seed=3)
    with pytest.raises(ValueError, match="multiple of the 3 relations"):
        select_records(recs(), 7, selection="stratified")
    with pytest.raises(ValueError, match="record_selection must be one of"):
        select_records(recs(), 3, selection="random")
    with pytest.raises(ValueError, match="only 16 records"):
        select_records(recs(), 17)


def test_split_records_is_disjoint_and_in_file_order():
    from memla_utils.mkeb.select import split_records

    ev, tr = split_records(recs(), 3, 4, selection="stratified", seed=0)
    assert not {r.example_id for r in ev} & {r.example_id for r in tr}
    order = [r.example_id for r in recs()]
    assert [r.example_id for r in tr] == sorted((r.example_id for r in tr), key=order.index)
    assert len(tr) == 4
    with pytest.raises(ValueError, match="n_train_records=20"):
        split_records(recs(), 3, 20)


def test_run_records_first_equals_the_notebooks_old_slicing():
    from memla_utils.config import RunConfig
    from memla_utils.mkeb import load_records

    cfg = RunConfig(n_records=3, languages=["en", "zh"], edit_languages=["en"])
    ev, tr = cfg.run_records(n_train=2)
    old = load_records(cfg.mkeb_path, languages=cfg.languages, n=5)
    assert [r.example_id for r in ev] == [r.example_id for r in old[:3]]
    assert [r.example_id for r in tr] == [r.example_id for r in old[3:]]


def test_medium_preset_draws_equal_counts_per_relation_from_mkeb():
    from memla_utils.config import RunConfig

    cfg = RunConfig.from_params(preset="medium", n_records=10, languages="en,zh")
    ev, tr = cfg.run_records(n_train=4)
    counts = {}
    for r in ev:
        counts[relation_of(r)] = counts.get(relation_of(r), 0) + 1
    assert len(counts) == 5 and set(counts.values()) == {2}
    assert not {r.example_id for r in ev} & {r.example_id for r in tr} and len(tr) == 4
    with pytest.raises(ValueError, match="multiple of the 5 relations"):
        RunConfig.from_params(preset="medium", n_records=12, languages="en,zh").run_records()
