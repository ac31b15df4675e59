"""Runner: tidy rows, error rows, resume after interruption, sharding across processes, summaries."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

import memla_utils.runner as runner
from memla_utils.report import language_matrix, summarize
from memla_utils.runner import (
    COLUMNS,
    finished_units,
    load_results,
    merge_results,
    parse_shard,
    run_experiment,
    shard_units,
    work_units,
)
from memla_utils.testing import tiny_model

HELPERS = '''
from memla_utils.masks import NeuronMasks, RecordMasks
from memla_utils.mkeb.record import EditTarget, Record
from memla_utils.runner import RunnerConfig


def records(bad=False):
    out = []
    for i, (subj, new, old) in enumerate([("France", "Tokyo", "Paris"), ("Spain", "Rome", "Madrid"),
                                          ("Japan", "Berlin", "Tokyo")]):
        zh_new = "" if (bad and i == 1) else "东京"
        out.append(Record(f"r{i}", "capital", {
            "en": EditTarget("The capital of {} is", subj, new, old),
            "zh": EditTarget("{}的首都是", subj, zh_new, "巴黎")},
            neighborhood_prompts={"en": ["The capital of Poland is"], "zh": ["日本的首都是"]},
            neighborhood_answers={"en": ["Warsaw"], "zh": ["东京"]}))
    return out


def masks(record, lang):
    return RecordMasks(record.example_id, lang, NeuronMasks.from_sets({0: [1, 2], 2: [5]}, 64),
                       NeuronMasks.from_sets({1: [4]}, 64))


def empty_masks_for_r1_zh(record, lang):
    """No neurons for r1 in zh: MEMLA can only find that out while editing (an error row, not a skip)."""
    if (record.example_id, lang) == ("r1", "zh"):
        return RecordMasks(record.example_id, lang, NeuronMasks.from_sets({}, 64), NeuronMasks.from_sets({}, 64))
    return masks(record, lang)


CONFIG = RunnerConfig(editor_overrides={"memla": {"max_steps": 2}, "memla-lie": {"max_steps": 2}}, progress=False)
'''
ns: dict = {}
exec(HELPERS, ns)
records, masks, CONFIG = ns["records"], ns["masks"], ns["CONFIG"]
empty_masks_for_r1_zh = ns["empty_masks_for_r1_zh"]
METHODS = ["memla", "memla-lie"]



@pytest.fixture(scope="module")
def lm():
    return tiny_model("llama")


def run(lm, run_dir, shard="0/1", recs=None, masks=masks, **kw):
    return run_experiment(lm, recs or records(), METHODS, ["en", "zh"], ["en", "zh"], run_dir, shard,
                          masks=masks, config=CONFIG, **kw)


def test_shard_parsing_and_partition():
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "a/b", "1", "-1/2"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    units = work_units(records(), METHODS, ["en", "zh"])
    assert len(units) == 3 * 2 * 3 and units[0].method == "unedited"
    parts = [shard_units(units, f"{i}/3") for i in range(3)]
    assert sorted(u for p in parts for u in p) == sorted(units)  # disjoint and covering
    assert all(abs(len(p) - len(units) / 3) < 1 for p in parts)


def test_rows_are_tidy_and_a_failed_edit_is_an_error_row(lm, tmp_path):
    run(lm, tmp_path, masks=empty_masks_for_r1_zh)
    df = merge_results(tmp_path)
    assert list(df.columns[:7]) == COLUMNS
    assert set(df["method"]) == {"unedited", *METHODS}
    err = df[df["kind"] == "error"]
    assert set(zip(err["record"], err["edit_lang"])) == {("r1", "zh")}  # both methods, only the bad unit
    assert err["message"].str.contains("r1").all() and err["message"].str.contains("no selected neurons").all()
    ok = df[(df["kind"] == "edit") & (df["record"] == "r0") & (df["method"] == "memla")]
    assert {"seconds", "eval_seconds", "steps", "peak_rss_mb"} <= set(ok["metric"])
    assert (ok.set_index("metric").loc["steps", "value"] == ok.set_index("metric").loc["steps", "value"]).all()
    metric = df[df["kind"] == "metric"]
    assert set(metric["eval_lang"]) == {"en", "zh"}
    # the unedited reference does not depend on the edit language
    un = metric[metric["method"] == "unedited"].pivot_table(index=["record", "eval_lang", "metric"],
                                                             columns="edit_lang", values="value")
    pd.testing.assert_series_equal(un["en"], un["zh"], check_names=False)
    assert metric[metric["metric"] == "PS"]["value"].isna().all()  # no paraphrases: n/a, not 0


def test_resume_redoes_only_unfinished_units(lm, tmp_path, monkeypatch):
    path = run(lm, tmp_path)
    first = merge_results(tmp_path)
    lines = path.read_text().splitlines()
    # simulate an interruption: the last unit lost its done marker and half of a row
    assert json.loads(lines[-1])["kind"] == "done"
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-2][: len(lines[-2]) // 2])
    last = json.loads(lines[-1])
    assert (last["record"], last["edit_lang"], last["method"]) not in finished_units(tmp_path)
    calls = []
    real = runner._run_unit
    monkeypatch.setattr(runner, "_run_unit", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    run(lm, tmp_path)
    assert [(u.record, u.edit_lang, u.method) for u in calls] == [(last["record"], last["edit_lang"], last["method"])]
    again = merge_results(tmp_path)
    key = ["record", "method", "edit_lang", "eval_lang", "metric"]
    a = first[first["kind"] == "metric"].set_index(key)["value"].sort_index()
    b = again[again["kind"] == "metric"].set_index(key)["value"].sort_index()
    pd.testing.assert_series_equal(a, b)  # same numbers, no duplicates
    calls.clear()
    run(lm, tmp_path)
    assert calls == []


def test_shards_in_separate_processes_merge_to_the_single_run(lm, tmp_path):
    (tmp_path / "helpers.py").write_text(HELPERS)
    script = textwrap.dedent(f'''
        import sys
        import torch
        torch.set_num_threads(1)
        sys.path.insert(0, {str(tmp_path)!r})
        from helpers import CONFIG, masks, records
        from memla_utils.runner import run_experiment
        from memla_utils.testing import tiny_model
        run_experiment(tiny_model("llama"), records(), {METHODS!r}, ["en", "zh"], ["en", "zh"],
                       {str(tmp_path / "sharded")!r}, sys.argv[1], masks=masks, config=CONFIG)
    ''')
    procs = [subprocess.Popen([sys.executable, "-c", script, f"{i}/2"], stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    assert len(list((tmp_path / "sharded").glob("results-shard*of002.jsonl"))) == 2
    merged = merge_results(tmp_path / "sharded")
    run(lm, tmp_path / "single")
    single = merge_results(tmp_path / "single")
    key = ["record", "method", "edit_lang", "eval_lang", "metric"]
    m = merged[merged["kind"] == "metric"].set_index(key)["value"].sort_index()
    s = single[single["kind"] == "metric"].set_index(key)["value"].sort_index()
    assert not m.index.duplicated().any()
    pd.testing.assert_series_equal(m, s)  # same units, same numbers, whichever process ran them


def test_merge_refuses_missing_units(lm, tmp_path):
    run(lm, tmp_path, shard="0/2")
    with pytest.raises(ValueError, match="not finished"):
        merge_results(tmp_path)
    part = merge_results(tmp_path, strict=False)
    assert set(zip(part["record"], part["edit_lang"], part["method"])) <= {
        u.as_tuple() for u in work_units(records(), METHODS, ["en", "zh"])}


def test_bad_arguments_are_named(lm, tmp_path):
    with pytest.raises(ValueError, match="disjoint"):
        run(lm, tmp_path, train_records=records()[:1])
    with pytest.raises(Exception, match="r0.*'fr'"):
        run_experiment(lm, records(), METHODS, ["en"], ["fr"], tmp_path, masks=masks, config=CONFIG)
    with pytest.raises(ValueError, match="duplicate"):
        run(lm, tmp_path, recs=records() + records()[:1])


def synthetic() -> pd.DataFrame:
    rows = []
    for edit in ("en", "zh"):
        for ev, v in {"en": 1.0, "zh": 0.5, "fr": 0.0}.items():
            for rec, shift in (("a", 0.0), ("b", 0.2)):
                value = v if edit == "en" else 1 - v
                rows.append({"record": rec, "method": "m", "edit_lang": edit, "eval_lang": ev, "metric": "ES",
                             "value": value * (1 - shift), "n": 1, "kind": "metric", "message": None})
    rows.append({"record": "a", "method": "m", "edit_lang": "en", "eval_lang": None, "metric": "seconds",
                 "value": 3.0, "n": 1, "kind": "edit", "message": None})
    return pd.DataFrame(rows)


def test_summarize_mono_vs_cross_and_matrix():
    df = synthetic()
    table = summarize(df, metrics=["ES"])
    assert table.loc[("m", "en"), ("ES", "mono")] == pytest.approx(0.9)          # mean(1.0, 0.8)
    assert table.loc[("m", "en"), ("ES", "cross")] == pytest.approx((0.45 + 0.0) / 2)
    assert table.loc[("m", "zh"), ("ES", "mono")] == pytest.approx(0.45)
    assert table.loc[("m", "zh"), ("ES", "cross")] == pytest.approx((0.0 + 0.9) / 2)
    mat = language_matrix(df, "m", "ES")
    assert list(mat.index) == ["en", "zh"] and list(mat.columns) == ["en", "zh", "fr"]
    assert mat.loc["zh", "fr"] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="no 'PS'"):
        language_matrix(df, "m", "PS")


def test_load_results_of_an_empty_dir_is_an_empty_table(tmp_path):
    df = load_results(tmp_path)
    assert df.empty and list(df.columns[:7]) == COLUMNS


def test_parallel_edits_give_the_single_edit_results(lm, tmp_path):
    """MEMLA facts trained in parallel batches, each evaluated alone: the same rows as one edit at a time."""
    from dataclasses import replace

    recs = records()  # r1 has no neurons in zh (found while editing): its error stays its own
    run_experiment(lm, recs, METHODS, ["en", "zh"], ["en", "zh"], tmp_path / "one", masks=empty_masks_for_r1_zh,
                   config=CONFIG)
    run_experiment(lm, recs, METHODS, ["en", "zh"], ["en", "zh"], tmp_path / "par", masks=empty_masks_for_r1_zh,
                   config=replace(CONFIG, parallel_edits=3))
    one, par = load_results(tmp_path / "one"), load_results(tmp_path / "par")
    key = ["record", "method", "edit_lang", "eval_lang", "metric"]
    m1 = one[one["kind"] == "metric"].set_index(key)["value"].sort_index()
    m2 = par[par["kind"] == "metric"].set_index(key)["value"].sort_index()
    assert m1.index.equals(m2.index) and len(m1) > 0
    pd.testing.assert_series_equal(m1, m2, rtol=1e-3, atol=1e-3)
    errors = par[par["kind"] == "error"]
    assert set(zip(errors["record"], errors["edit_lang"])) == {("r1", "zh")}
    assert errors["message"].str.contains("r1").all()
    batched = par[(par["metric"] == "parallel_edits")]
    assert set(batched["value"]) == {2.0, 3.0}  # en: 3 facts per batch; zh: 2 (r1 failed before training)
    with pytest.raises(ValueError, match="parallel_edits"):
        replace(CONFIG, parallel_edits=0)


def test_a_passed_deadline_stops_between_units_and_the_next_part_resumes(lm, tmp_path, monkeypatch):
    """batch --hours: the runner stops before the next unit once $MEMLA_DEADLINE has passed; nothing is lost."""
    import time as _time

    from memla_utils.run_parts import DEADLINE_ENV, DeadlineReached

    monkeypatch.setenv(DEADLINE_ENV, str(_time.time() - 1))
    with pytest.raises(DeadlineReached, match="after 0 of"):
        run(lm, tmp_path)
    assert not finished_units(tmp_path)
    monkeypatch.delenv(DEADLINE_ENV)
    run(lm, tmp_path)
    assert len(finished_units(tmp_path)) == 3 * 2 * (len(METHODS) + 1)  # records x edit languages x (unedited + methods)
