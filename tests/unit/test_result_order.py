"""The same results give the same numbers however their rows are spread over shard files.

Which unit (record, edit language, method) lands in which ``results-shard*.jsonl`` file, and in which order, depends
on the number of workers and on timing. ``load_results`` must return one canonical order, and the report's
statistics (whose seeded bootstrap indexes values by position) must not depend on the order of the rows they get.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from memla_utils import report
from memla_utils.report import BootstrapConfig
from memla_utils.results_files import canonical_order
from memla_utils.runner import Unit, load_results, shard_file, work_units, write_unit

FAST = BootstrapConfig(n_boot=400, seed=0)
RECORDS = [f"r{i}" for i in range(6)]
METHODS = ["memla", "memla-lse", "ft", "rome"]
EDIT = ["zh", "en"]  # not in sorted order, as a run's edit languages may be given
EVAL = ["en", "zh", "ru"]
METRICS = ["ES", "PS", "NS", "QS"]


def unit_rows(unit: Unit) -> list[dict[str, Any]]:
    """A unit's rows as the runner computes them (metric rows per evaluation language, then edit rows); values
    drawn from the unit alone, distinct across records so the order handed to the bootstrap matters."""
    seed = [RECORDS.index(unit.record), EDIT.index(unit.edit_lang), ["unedited", *METHODS].index(unit.method)]
    rng = np.random.default_rng(seed)
    base = {"record": unit.record, "method": unit.method, "edit_lang": unit.edit_lang}
    rows = [{**base, "eval_lang": lang, "metric": m, "value": float(rng.random()), "n": 3, "kind": "metric"}
            for lang in EVAL for m in METRICS]
    if unit.method != "unedited":
        rows += [{**base, "eval_lang": None, "metric": "seconds", "value": float(rng.random()), "n": 1,
                  "kind": "edit"}]
    return rows


def units() -> list[Unit]:
    """The run's work list, as the runner makes it (record order as given, then edit language, then method)."""
    return work_units([_Rec(r) for r in RECORDS], METHODS, EDIT)


class _Rec:
    """Just what ``work_units`` reads of a record."""

    def __init__(self, example_id: str) -> None:
        self.example_id = example_id


def write_layout(run_dir: Path, shards: list[list[Unit]]) -> Path:
    """Write every shard's units, in the order given, to its own file (``shards[i]`` -> shard ``i/len(shards)``)."""
    run_dir.mkdir(parents=True)
    for i, share in enumerate(shards):
        for unit in share:
            write_unit(shard_file(run_dir, f"{i}/{len(shards)}"), unit, unit_rows(unit))
    return run_dir


def layouts(tmp_path: Path) -> dict[str, Path]:
    """One shard file; two files dealt round robin; two files holding the reversed work list in halves, the
    second shard's file also holding an interrupted attempt (rows without a done marker, other values) and a cut
    line."""
    work = units()
    rev = work[::-1]
    half = len(rev) // 2
    split = write_layout(tmp_path / "reversed", [rev[:half], rev[half:]])
    cut = shard_file(split, "1/2")
    text = cut.read_text(encoding="utf-8")
    stale = [{**r, "value": 0.5, "attempt": "interrupted"} for r in unit_rows(rev[half])]
    cut.write_text("".join(json.dumps(r) + "\n" for r in stale) + '{"record": "r0", "va\n' + text,
                   encoding="utf-8")
    return {"one": write_layout(tmp_path / "one", [work]),
            "round_robin": write_layout(tmp_path / "round_robin", [work[0::2], work[1::2]]),
            "reversed": split}


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, pd.DataFrame]:
    return {name: load_results(path) for name, path in layouts(tmp_path).items()}


def test_load_results_order_does_not_depend_on_the_shard_layout(runs):
    one = runs["one"]
    assert len(one) == len(units()) * len(EVAL) * len(METRICS) + len(RECORDS) * len(EDIT) * len(METHODS)
    for name in ("round_robin", "reversed"):
        pd.testing.assert_frame_equal(runs[name], one, obj=name, check_exact=True)


def test_load_results_sorts_by_unit_and_keeps_each_units_written_order(runs):
    one = runs["one"]
    keys = list(zip(one["record"], one["edit_lang"], one["method"]))
    assert keys == sorted(keys)
    first = one[(one["record"] == "r0") & (one["edit_lang"] == "en") & (one["method"] == "memla")]
    assert list(first["metric"]) == [*METRICS * len(EVAL), "seconds"]  # the order unit_rows wrote


def test_cell_stats_do_not_depend_on_the_shard_layout(runs):
    ref = report.per_language_stats(runs["one"], FAST)
    assert ref["ci_low"].notna().all()
    for name in ("round_robin", "reversed"):
        pd.testing.assert_frame_equal(report.per_language_stats(runs[name], FAST), ref, obj=name, check_exact=True)
        main = report.main_stats(runs[name], boot=FAST)
        pd.testing.assert_frame_equal(main, report.main_stats(runs["one"], boot=FAST), obj=name, check_exact=True)


def test_claims_do_not_depend_on_the_shard_layout(runs):
    ref = report.claims_table(runs["one"], boot=FAST)
    assert ref.loc[ref["key"] == "cross_lingual", "ci_low"].notna().all()
    for name in ("round_robin", "reversed"):
        pd.testing.assert_frame_equal(report.claims_table(runs[name], boot=FAST), ref, obj=name, check_exact=True)


def test_report_statistics_do_not_depend_on_row_order_of_any_frame(runs):
    """Frames not read by ``load_results`` (another caller's, shuffled): the same intervals, to the last bit."""
    rows = runs["one"]
    for seed in range(5):
        shuffled = rows.sample(frac=1.0, random_state=seed).reset_index(drop=True)
        for stats in (report.per_language_stats, report.ablation_stats):
            pd.testing.assert_frame_equal(stats(shuffled, FAST), stats(rows, FAST), check_exact=True)
        pd.testing.assert_frame_equal(report.claims_table(shuffled, boot=FAST), report.claims_table(rows, boot=FAST),
                                      check_exact=True)
    t = report.scores(rows)
    per = report.per_record(t, ["method"])
    pd.testing.assert_frame_equal(report.per_record(t.iloc[::-1], ["method"]), per, check_exact=True)
    assert list(per["record"]) == sorted(RECORDS) * per["method"].nunique()


def test_per_record_means_do_not_depend_on_row_order_to_the_last_bit():
    """Many rows per record, of different magnitudes: a float sum in row order would differ in the last bit."""
    rng = np.random.default_rng(3)
    df = pd.DataFrame([{"record": f"r{r}", "method": m, "metric": "ES",
                        "value": float(rng.random() * 10.0 ** rng.integers(-3, 4))}
                       for r in range(4) for m in ("memla", "ft") for _ in range(12)])
    per, cells = report.per_record(df, ["method"]), report.cell_stats(df, ["method"], FAST)
    pair = report.paired_difference(df, "memla", ["ft"], FAST)
    for seed in range(20):
        shuffled = df.sample(frac=1.0, random_state=seed)
        pd.testing.assert_frame_equal(report.per_record(shuffled, ["method"]), per, check_exact=True)
        pd.testing.assert_frame_equal(report.cell_stats(shuffled, ["method"], FAST), cells, check_exact=True)
        assert report.paired_difference(shuffled, "memla", ["ft"], FAST) == pair


def test_canonical_order_survives_missing_and_mixed_type_keys():
    """A hand-edited row without a record or with a numeric one neither breaks the sort nor moves the others."""
    df = pd.DataFrame({"record": ["r1", None, "r0", 7, float("nan"), "r0"], "edit_lang": ["en"] * 6,
                       "method": ["ft", "ft", "ft", "ft", "ft", "ft"], "value": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    got = canonical_order(df)
    assert list(got["value"]) == [4.0, 3.0, 6.0, 1.0, 2.0, 5.0]  # "7" < "r0" < "r1" as text, missing last in order
    assert list(canonical_order(df.iloc[::-1])["value"]) == [4.0, 6.0, 3.0, 1.0, 5.0, 2.0]  # a unit keeps its order


def test_the_strongest_baseline_of_a_tie_does_not_turn_on_float_rounding():
    """Two baselines with the same scores up to the last bit (0.1 + 0.2 vs 0.3): the one named first wins, whichever
    sum rounds up (the small preset's claims breakdown flipped between PMET and IKE with the summation order)."""
    from memla_utils.report.stats import paired_difference

    rows = [("memla", "r0", 0.5), ("memla", "r1", 0.7),
            ("pmet", "r0", 0.3), ("pmet", "r1", 0.6),
            ("ike", "r0", 0.1 + 0.2), ("ike", "r1", 0.6)]  # 0.30000000000000004: ike's mean is one ulp higher
    df = pd.DataFrame(rows, columns=["method", "record", "value"])
    assert df[df.method == "ike"].value.mean() > df[df.method == "pmet"].value.mean()
    assert paired_difference(df, "memla", ["pmet", "ike"])[1] == "pmet"
    assert paired_difference(df, "memla", ["ike", "pmet"])[1] == "ike"
    stronger = pd.concat([df, pd.DataFrame([("rome", "r0", 0.4), ("rome", "r1", 0.6)], columns=df.columns)])
    assert paired_difference(stronger, "memla", ["pmet", "ike", "rome"])[1] == "rome"  # a real difference wins
