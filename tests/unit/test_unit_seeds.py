"""Every unit's numbers are independent of unit order, sharding and parallel edits (per-unit seeds)."""
from __future__ import annotations

import pandas as pd
import pytest

from memla_utils.masks import NeuronMasks, RecordMasks
from memla_utils.mkeb.record import EditTarget, Record
from memla_utils.runner import RunnerConfig, editor_kwargs, load_results, merge_results, run_experiment
from memla_utils.testing import tiny_model

METHODS = ["memla", "memla-random", "lora"]
OVERRIDES = {"memla": {"max_steps": 3, "learning_rate": 0.05}, "memla-random": {"max_steps": 3},
             "lora": {"steps": 2}}


def records() -> list[Record]:
    out = []
    for i, (subj, new, old) in enumerate([("France", "Tokyo", "Paris"), ("Spain", "Rome", "Madrid"),
                                          ("Japan", "Berlin", "Tokyo")]):
        out.append(Record(f"r{i}", "capital", {"en": EditTarget("The capital of {} is", subj, new, old)},
                          neighborhood_prompts={"en": ["The capital of Poland is"]},
                          neighborhood_answers={"en": ["Warsaw"]}))
    return out


def masks(record: Record, lang: str) -> RecordMasks:
    return RecordMasks(record.example_id, lang, NeuronMasks.from_sets({0: [1, 2], 2: [5]}, 64),
                       NeuronMasks.from_sets({1: [4]}, 64))


def metrics(run_dir) -> pd.Series:
    df = load_results(run_dir)
    df = df[df["kind"] == "metric"] if "kind" in df else df
    return df.set_index(["record", "method", "edit_lang", "eval_lang", "metric"])["value"].sort_index()


@pytest.fixture(scope="module")
def lm():
    return tiny_model("llama")


def test_order_sharding_and_parallel_edits_do_not_change_numbers(lm, tmp_path):
    cfg = RunnerConfig(editor_overrides=OVERRIDES, progress=False, seed=3)
    base = tmp_path / "base"
    run_experiment(lm, records(), METHODS, ["en"], ["en"], base, masks=masks, config=cfg)
    ref = metrics(base)
    assert len(ref) > 0

    rev = tmp_path / "reversed"  # the same units in the opposite order
    run_experiment(lm, records()[::-1], METHODS[::-1], ["en"], ["en"], rev, masks=masks, config=cfg)
    pd.testing.assert_series_equal(metrics(rev), ref)

    sharded = tmp_path / "sharded"  # two shards, the second one first
    for shard in ("1/2", "0/2"):
        run_experiment(lm, records(), METHODS, ["en"], ["en"], sharded, shard, masks=masks, config=cfg)
    merge_results(sharded)
    pd.testing.assert_series_equal(metrics(sharded), ref)

    par = tmp_path / "parallel"
    run_experiment(lm, records(), METHODS, ["en"], ["en"], par, masks=masks,
                   config=RunnerConfig(editor_overrides=OVERRIDES, progress=False, seed=3, parallel_edits=3))
    pd.testing.assert_series_equal(metrics(par), ref, rtol=1e-4, atol=1e-5)

    # the run seed reaches every editor (its per-unit draws derive from it); overrides still win
    cfg4 = RunnerConfig(editor_overrides={"lora": {"seed": 9}}, seed=4)
    assert editor_kwargs("memla", cfg4) == {"seed": 4}
    assert editor_kwargs("lora", cfg4) == {"seed": 9}
