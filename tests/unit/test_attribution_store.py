"""The durable cache of a multi-session run (issue 16): compact attribution scores give every number the dense
ones give (neuron sets at thresholds >= the floor, maximum, per-layer positive mass, summary and sweep tables),
a part on a fresh machine reads them instead of recomputing, and unedited evaluations are mirrored as JSON."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

import memla_utils.attribution_records as attribution_records  # where record_attributions finds attribute_batch
from memla_utils.attribution import (
    COMPACT_FLOOR,
    AttributionConfig,
    PromptAttribution,
    neurons_from_attributions,
    record_attributions,
)
from memla_utils.cache import DURABLE_ENV, ArtifactCache, cache_key
from memla_utils.mask_tables import threshold_sweep
from memla_utils.mkeb.record import EditTarget, Record
from memla_utils.neuron_plots import attribution_summary, layer_mass_frame
from memla_utils.run_identity import IDENTITY_FILE, check_run_identity, run_identity
from memla_utils.testing import TINY_ARCHITECTURES, tiny_model

THRESHOLDS = (COMPACT_FLOOR, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7)


def make_record() -> Record:
    return Record(example_id="r1", relation_description="capital",
                  edit={"en": EditTarget("The capital of {} is", "Japan", "Kyoto", "Tokyo"),
                        "zh": EditTarget("{}的首都是", "日本", "京都", "東京")},
                  paraphrase_prompts={"en": ["Japan's capital city is"]})


@pytest.fixture(scope="module", params=TINY_ARCHITECTURES)
def dense(request):
    lm = tiny_model(request.param)
    atts = record_attributions(lm, make_record(), ["en", "zh"], AttributionConfig(steps=3),
                               ArtifactCache(enabled=False))
    return {("r1", lang): a for lang, a in atts.items()}


def test_compact_scores_give_the_dense_numbers(dense):
    compact = {key: [a.compact() for a in atts] for key, atts in dense.items()}
    dropped = sum(int(((a.scores != 0) & (c.scores == 0)).sum())
                  for key in dense for a, c in zip(dense[key], compact[key]))
    assert dropped > 0  # the compact form really drops scores, so the equalities below say something
    for key in dense:
        for a, c in zip(dense[key], compact[key]):
            assert c.compact_form and not a.compact_form
            assert c.max_score == a.max_score == float(a.scores.max())
            assert torch.equal(c.layer_positive_mass, a.scores.clamp(min=0).sum(-1))
            assert c.completeness_error == a.completeness_error and c.target_value == a.target_value
        for t in THRESHOLDS:
            assert neurons_from_attributions(compact[key], t, 64).to_sets() == \
                neurons_from_attributions(dense[key], t, 64).to_sets()
    pd.testing.assert_frame_equal(attribution_summary(compact), attribution_summary(dense))
    pd.testing.assert_frame_equal(layer_mass_frame(compact), layer_mass_frame(dense))
    pd.testing.assert_frame_equal(threshold_sweep(compact, THRESHOLDS[1:]), threshold_sweep(dense, THRESHOLDS[1:]))


def test_compact_tensors_round_trip_bit_for_bit(dense):
    for atts in dense.values():
        for a in atts:
            back = PromptAttribution.from_compact_tensors(a.compact_tensors(), a.prompt, a.answer, a.language)
            c = a.compact()
            assert torch.equal(back.scores, c.scores) and back.score_floor == c.score_floor == COMPACT_FLOOR
            assert torch.equal(back.layer_positive_mass, c.layer_positive_mass)
            assert torch.equal(back.attribution_sums, a.attribution_sums) and torch.equal(back.deltas, a.deltas)
            assert (back.max_score, back.target_value) == (a.max_score, a.target_value)


def test_a_threshold_below_the_floor_is_refused_and_nonpositive_maxima_keep_nothing():
    a = PromptAttribution("p", "a", "en", torch.tensor([[1.0, 0.03, -0.5]]), torch.zeros(1), torch.zeros(1), 0.0)
    with pytest.raises(ValueError, match="below the floor"):
        neurons_from_attributions([a.compact()], COMPACT_FLOOR / 2)
    assert neurons_from_attributions([a], COMPACT_FLOOR / 2).total == 2  # the dense scores can
    neg = PromptAttribution("p", "a", "en", -torch.ones(2, 3), torch.zeros(2), torch.zeros(2), 0.0)
    c = neg.compact()
    assert c.max_score == -1.0 and not c.scores.any()
    assert neurons_from_attributions([c], 0.3).total == neurons_from_attributions([neg], 0.3).total == 0


def test_a_part_on_a_fresh_machine_reads_the_durable_copy(tmp_path, monkeypatch):
    """Part 1 computes (and writes the compact copy to the durable cache); part 2 has an empty local cache and
    recomputes nothing, with the same numbers; ``dense=True`` recomputes the dense scores, bit for bit."""
    lm = tiny_model("gemma3_text")
    cfg, record = AttributionConfig(steps=3), make_record()
    durable = tmp_path / "run" / "cache"
    first = record_attributions(lm, record, ["en", "zh"], cfg, ArtifactCache(tmp_path / "a", durable=durable))
    assert all(a.compact_form for atts in first.values() for a in atts)
    stored = list(durable.rglob("*.safetensors"))
    assert len(stored) == 3 and all(p.stat().st_size < 4000 for p in stored)
    dense_first = record_attributions(lm, record, ["en", "zh"], cfg, ArtifactCache(tmp_path / "a", durable=False))

    real = attribution_records.attribute_batch

    def boom(*args, **kwargs):
        raise AssertionError("recomputed although the durable cache holds it")

    monkeypatch.setattr(attribution_records, "attribute_batch", boom)
    monkeypatch.setenv(DURABLE_ENV, str(durable))  # how the batch driver hands it to the notebooks
    second = record_attributions(lm, record, ["en", "zh"], cfg, ArtifactCache(tmp_path / "b"))
    for lang in first:
        for x, y in zip(first[lang], second[lang]):
            assert torch.equal(x.scores, y.scores) and x.max_score == y.max_score
    monkeypatch.setattr(attribution_records, "attribute_batch", real)
    again = record_attributions(lm, record, ["en"], cfg, ArtifactCache(tmp_path / "c"), dense=True)["en"]
    assert not again[0].compact_form and torch.equal(again[0].scores, dense_first["en"][0].scores)


def test_a_local_hit_fills_a_missing_durable_copy(tmp_path):
    lm = tiny_model("llama")
    cfg, record = AttributionConfig(steps=3), make_record()
    record_attributions(lm, record, "zh", cfg, ArtifactCache(tmp_path / "a", durable=False))
    durable = tmp_path / "cache"
    record_attributions(lm, record, "zh", cfg, ArtifactCache(tmp_path / "a", durable=durable))
    assert len(list(durable.rglob("*.safetensors"))) == 1


def test_unedited_evaluations_are_mirrored_and_other_kinds_are_not(tmp_path):
    durable = tmp_path / "durable"
    writer = ArtifactCache(tmp_path / "a", durable=durable)
    pre, cov = cache_key("preedit", record="r1"), cache_key("cov", layer=3)
    writer.put_json(pre, {"es": 1.0})
    writer.put_json(cov, {"big": True})
    assert (durable / "preedit" / f"{pre}.json").is_file() and not (durable / "cov").exists()
    reader = ArtifactCache(tmp_path / "b", durable=durable)
    assert reader.get_json(pre) == {"es": 1.0} and reader.get_json(cov) is None
    assert ArtifactCache(tmp_path / "b", durable=False).get_json(pre) is None
    assert ArtifactCache(tmp_path / "b", enabled=False, durable=durable).get_json(pre) is None


def test_a_restarted_run_keeps_its_durable_cache(tmp_path):
    recs = [make_record()]
    check_run_identity(tmp_path, run_identity("model-a", recs))
    (tmp_path / "cache" / "preedit").mkdir(parents=True)
    (tmp_path / "cache" / "preedit" / "k.json").write_text(json.dumps({"x": 1}))
    (tmp_path / "results-shard000of001.jsonl").write_text("{}\n")
    check_run_identity(tmp_path, run_identity("model-b", recs), restart=True)
    assert (tmp_path / "cache" / "preedit" / "k.json").is_file()
    assert not (tmp_path / "results-shard000of001.jsonl").exists()
    assert json.loads((tmp_path / IDENTITY_FILE).read_text())["model"] == "model-b"


@pytest.mark.parametrize("preset,expected", [("medium", True), ("mzsre", True), ("small", False), (None, False)])
def test_the_batch_driver_points_multi_session_runs_at_their_durable_cache(tmp_path, monkeypatch, preset, expected):
    import os

    import memla_utils.batch as batch

    seen = {}
    monkeypatch.setattr(batch, "check_identity", lambda plan, restart: None)
    monkeypatch.setattr(batch, "_run_notebooks",
                        lambda plan, *a, **k: seen.setdefault("env", os.environ.get(DURABLE_ENV)))
    monkeypatch.setenv(DURABLE_ENV, "/left/over/from/an/earlier/chain")
    plan = batch.BatchPlan({"run_dir": str(tmp_path / "run"), "figures_dir": str(tmp_path / "fig")})
    batch.run_chain(plan, notebook_paths=[], preset=preset)
    assert seen["env"] == (str(plan.run_dir / "cache") if expected else None)
    assert DURABLE_ENV not in os.environ  # nothing else in this process writes to the run's durable cache


def test_a_part_on_another_thread_count_is_refused(tmp_path, monkeypatch):
    """float32 sums split by thread give other last bits: the run's identity names the CPU thread count, so a
    part on a machine with more cores (or another torch_threads) cannot extend the run silently."""
    import memla_utils.batch as batch

    plan = batch.BatchPlan({**batch.PRESETS["small"], "run_dir": str(tmp_path / "run"),
                            "figures_dir": str(tmp_path / "fig"), "torch_threads": 1})
    batch.check_identity(plan, restart=False)
    assert "1 CPU threads" in json.loads((tmp_path / "run" / IDENTITY_FILE).read_text())["model"]
    batch.check_identity(plan, restart=False)  # same threads: the run goes on
    plan.parameters["torch_threads"] = 0
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    with pytest.raises(batch.BatchError, match="16 CPU threads"):
        batch.check_identity(plan, restart=False)
