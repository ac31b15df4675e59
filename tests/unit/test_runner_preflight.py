"""The runner decides before any method runs which records it can use, and skips a record for every method.

Before (issue 13 §3): ROME edited a zh record whose prompt is in traditional characters at its last prompt token,
MEMLA edited the same record normally, and a record with a blank paraphrase was scored (PS = 1.0 with n = 1); the
methods were compared on different records and nothing said so.
"""
from __future__ import annotations

import json
import logging

import pytest

from memla_utils.covariance import CorpusConfig, CovarianceConfig
from memla_utils.manifest import build_manifest, skipped_in
from memla_utils.masks import NeuronMasks, RecordMasks
from memla_utils.mkeb.record import EditTarget, Record
from memla_utils.runner import RunnerConfig, load_results, merge_results, preflight, run_experiment, skipped_records
from memla_utils.testing import tiny_model

COV = CovarianceConfig(corpus=CorpusConfig(languages=("en", "zh"), samples_per_language=2, sample_tokens=12),
                       n_samples=4)
CONFIG = RunnerConfig(editor_overrides={"memla": {"max_steps": 2},
                                        "rome": dict(covariance=COV, n_context=0, v_steps=2)}, progress=False)


def records() -> list[Record]:
    def rec(i, zh_prompt, zh_subject, en_para="France's capital is"):
        return Record(f"r{i}", "capital", {
            "en": EditTarget("The capital of {} is", "France", "Tokyo", "Paris"),
            "zh": EditTarget(zh_prompt, zh_subject, "东京", "巴黎")},
            paraphrase_prompts={"en": [en_para]})
    return [rec(0, "{}的首都是", "法国"),
            rec(1, "法國的首都是", "法国"),            # traditional prompt, simplified subject: no subject to locate
            rec(2, "{}的首都是", "法国", en_para="  "),  # blank paraphrase
            rec(3, "{}的首都是", "法国")]


def masks(record, lang):
    return RecordMasks(record.example_id, lang, NeuronMasks.from_sets({0: [1, 2], 2: [5]}, 64),
                       NeuronMasks.from_sets({1: [4]}, 64))


pytestmark = pytest.mark.usefixtures("module_cache")  # a fresh artifact cache for this module (conftest)


@pytest.fixture(scope="module")
def lm():
    return tiny_model("llama")


def test_preflight_skips_for_every_method_with_reasons():
    kept, skipped = preflight(records(), ["memla", "rome"], ["en", "zh"], ["en", "zh"], CONFIG)
    assert [r.example_id for r in kept] == ["r0", "r3"]
    by_id = {s["record"]: s for s in skipped}
    assert set(by_id) == {"r1", "r2"}
    r1 = by_id["r1"]["problems"]
    assert [(p["method"], p["language"]) for p in r1] == [("rome", "zh")]  # MEMLA could edit it, ROME cannot
    assert "'法国'" in r1[0]["reason"] and "'法國的首都是'" in r1[0]["reason"]
    assert "paraphrase_prompts.en[0]" in by_id["r2"]["reason"]


def test_run_skips_before_any_method_runs_and_lists_the_skips(lm, tmp_path, caplog, monkeypatch):
    import memla_utils.runner as runner

    edited = []
    real = runner._run_unit
    monkeypatch.setattr(runner, "_run_unit", lambda *a, **k: edited.append(a[1]) or real(*a, **k))
    with caplog.at_level(logging.WARNING, logger="memla_utils.runner"):
        run_experiment(lm, records(), ["memla", "rome"], ["en", "zh"], ["en", "zh"], tmp_path, masks=masks,
                       config=CONFIG)
    assert {u.record for u in edited} == {"r0", "r3"}  # nothing ran for r1/r2, not even the unedited reference
    assert "skipping 2 of 4 record(s)" in caplog.text
    df = merge_results(tmp_path)
    assert set(df["record"]) == {"r0", "r3"}
    assert not (df["kind"] == "error").any()
    for method in ("unedited", "memla", "rome"):  # the same records for every method
        assert set(df[df["method"] == method]["record"]) == {"r0", "r3"}
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert [s["record"] for s in manifest["skipped"]] == ["r1", "r2"]
    assert all(s["reason"] for s in manifest["skipped"])
    assert skipped_records(tmp_path) == manifest["skipped"] == skipped_in(tmp_path)
    m = build_manifest("test")
    m.add_skipped(skipped_in(tmp_path))
    assert [s["record"] for s in m.to_dict()["skipped"]] == ["r1", "r2"]


def test_a_later_call_with_a_stricter_method_takes_the_record_out_of_the_whole_run(lm, tmp_path):
    """Notebook 04 runs MEMLA, notebook 05 the baselines on the same run folder: once ROME cannot use r1, MEMLA's
    rows for r1 leave the results too, and later calls skip r1 whatever their methods."""
    recs = [r for r in records() if r.example_id in ("r0", "r1")]
    run_experiment(lm, recs, ["memla"], ["zh"], ["zh"], tmp_path, masks=masks, config=CONFIG)
    assert set(load_results(tmp_path)["record"]) == {"r0", "r1"}
    run_experiment(lm, recs, ["rome"], ["zh"], ["zh"], tmp_path, config=CONFIG)
    df = merge_results(tmp_path)
    assert set(df["record"]) == {"r0"} and set(df["method"]) == {"unedited", "memla", "rome"}
    kept, skipped = preflight(recs, ["memla"], ["zh"], ["zh"], CONFIG, already_skipped=skipped_records(tmp_path))
    assert [r.example_id for r in kept] == ["r0"] and skipped[0]["record"] == "r1"
