"""The package functions that replaced logic in the notebooks: set-up, budgets, record and result tables."""
from __future__ import annotations

import random

import pandas as pd
import pytest
import torch

from memla_utils import baselines, report
from memla_utils.config import ParameterError, RunConfig
from memla_utils.mask_tables import mask_totals
from memla_utils.mkeb import build_stats_frame, records_table
from memla_utils.mkeb.builder import BuildStats
from memla_utils.mkeb.record import EditTarget, Record
from memla_utils.neuron_masks import NeuronMasks, RecordMasks
from memla_utils.notebook_setup import RUN_PARAMETERS, first, start_notebook


def _params(**over):
    base = {"model": "default", "device": "cpu", "dtype": "float32", "seed": 3, "languages": "en,zh",
            "edit_languages": "en", "n_records": 2, "methods": "memla,ft", "run_dir": "runs/x",
            "figures_dir": "figures/x", "mkeb_path": "data/mkeb/mkeb.jsonl", "record_selection": "first",
            "dataset": "mkeb", "shared_data_dir": "../shared/data"}
    return {**base, **over}


def test_start_notebook_equals_from_params_and_reads_only_declared_names():
    ns = _params(sweep_steps="10,20", steps=20, budget="auto", unrelated=object())
    cfg = start_notebook(ns, "sweep_steps", seed=False)
    want = RunConfig.from_params(**{k: v for k, v in ns.items() if k in RUN_PARAMETERS}, sweep_steps="10,20")
    assert cfg == want
    assert cfg.extra == {"sweep_steps": [10, 20]}  # steps, budget, unrelated: not listed, not read
    assert "extra" not in RUN_PARAMETERS and "seed" in RUN_PARAMETERS


def test_start_notebook_names_a_missing_extra_and_a_bad_value():
    with pytest.raises(NameError, match="'independent_languages'"):
        start_notebook(_params(), "independent_languages", seed=False)
    with pytest.raises((ParameterError, ValueError), match="n_records"):
        start_notebook(_params(n_records="many"), seed=False)


def test_start_notebook_seeds_and_sets_threads():
    before = torch.get_num_threads()
    try:
        start_notebook(_params(torch_threads=1), threads="torch_threads")
        assert torch.get_num_threads() == 1
        a = (random.random(), torch.rand(1).item())
        start_notebook(_params(torch_threads=0), threads="torch_threads")  # 0: leave torch's setting
        assert torch.get_num_threads() == 1
        assert (random.random(), torch.rand(1).item()) == a  # the same run seed, the same draws
    finally:
        torch.set_num_threads(before)


def test_first():
    assert first([1, 2, 3], 2) == [1, 2]
    assert first([1, 2, 3], "0") == [1, 2, 3] and first([1, 2, 3], -1) == [1, 2, 3]


def test_resolve_budget():
    assert baselines.resolve_budget("auto", "cpu") == "cpu-small"
    assert baselines.resolve_budget("auto", "cuda:0") == "paper"
    assert baselines.resolve_budget("paper", "cpu") == "paper"
    with pytest.raises(ValueError, match="parameter budget.*'tiny'"):
        baselines.resolve_budget("tiny", "cpu")


def _record(i: int) -> Record:
    return Record(f"r{i}", "capital", {"en": EditTarget("The capital of {} is", "France", "Tokyo", "Paris"),
                                        "zh": EditTarget("{}的首都是", "法国", "东京", "巴黎")})


def test_records_table_hides_text_when_asked():
    shown = records_table([_record(0)], show_text=True)
    assert shown.loc[0, "en"] == "The capital of France is" and "languages" not in shown
    hidden = records_table([_record(0), _record(1)], show_text=False)
    assert list(hidden.columns) == ["example_id", "languages"] and hidden.loc[1, "languages"] == "en,zh"
    assert "France" not in hidden.to_string()


def test_build_stats_frame():
    stats = BuildStats(facts={"capital": 5}, dropped_leak={"capital": 1}, dropped_no_target={"capital": 0},
                       dropped_no_multi_hop={"capital": 2}, records={"capital": 2})
    frame = build_stats_frame(stats)
    assert frame.loc["capital"].tolist() == [5, 1, 0, 2, 2]


def test_mask_totals_counts_each_mask_over_layers():
    rm = RecordMasks("r0", "en", NeuronMasks.from_sets({0: [1, 2], 2: [5]}, 8), NeuronMasks.from_sets({1: [4]}, 8))
    counts, totals = mask_totals([rm], n_layers=3)
    assert totals.loc["r0", "en·specific"] == 3 and totals.loc["r0", "en·independent"] == 1
    assert len(counts) == 2 * 3  # two masks x three layers, zeros included


def _results() -> pd.DataFrame:
    rows = []
    for rec, value in (("r0", 1.0), ("r1", 0.0)):
        for ev in ("en", "zh"):
            rows.append({"record": rec, "method": "memla", "edit_lang": "en", "eval_lang": ev, "metric": "ES",
                         "value": value if ev == "en" else 0.5, "n": 1, "kind": "metric"})
        rows.append({"record": rec, "method": "memla", "edit_lang": "en", "eval_lang": None, "metric": "seconds",
                     "value": 2.0 + value, "n": 1, "kind": "edit"})
    return pd.DataFrame(rows)


def test_result_tables_for_notebook_04():
    df = _results()
    mats = report.language_matrices(df, "memla")
    assert list(mats) == ["ES"]  # PS and NS have no values: left out
    assert mats["ES"].loc["en", "en"] == 0.5 and mats["ES"].loc["en", "zh"] == 0.5
    costs = report.edit_costs_table(df)
    assert costs.loc["memla", ("median", "seconds")] == 2.5 and costs.loc["memla", ("mean", "seconds")] == 2.5
    assert report.edit_seconds_note(df, "memla", 15) == ("**memla: median 2.5 s per edit** (max 3.0 s; target ≤ 15 s "
                                                         "on 2 CPU cores)")
    assert report.edit_seconds_note(df, "ft", 15) is None
