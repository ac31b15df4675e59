"""Attribution and the suppression check in one-thread worker processes (issue 15): the same bits and rows as in
the notebook's process, nothing computed twice, a deadline and a failing worker handled, the pool refused where
it cannot help."""
from __future__ import annotations

import functools

import pytest
import torch

from memla_utils.attribution import AttributionConfig
from memla_utils.attribution_parallel import plan_prefill, prefill_attributions
from memla_utils.cache import ArtifactCache
from memla_utils.mask_tables import run_attributions
from memla_utils.mkeb.record import EditTarget, Record
from memla_utils.model_spec import ModelSpec
from memla_utils.model_workers import pool_size
from memla_utils.run_parts import DEADLINE_ENV, DeadlineReached
from memla_utils.suppression import SanityConfig, sanity_effects
from memla_utils.testing import tiny_model

CONFIG = AttributionConfig(steps=3)
SPEC = ModelSpec("tiny-llama", factory=functools.partial(tiny_model, "llama"))


def records() -> list[Record]:
    return [Record(example_id="r1", relation_description="capital",
                   edit={"en": EditTarget("The capital of {} is", "Japan", "Kyoto", "Tokyo"),
                         "zh": EditTarget("{}的首都是", "日本", "京都", "東京")},
                   paraphrase_prompts={"en": ["Japan's capital city is"]}),
            Record(example_id="r2", relation_description="capital",
                   edit={"en": EditTarget("The capital of {} is", "France", "Lyon", "Paris")})]


@pytest.fixture(scope="module")
def lm():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def serial(lm, tmp_path_factory):
    """Every prompt computed in this process (one worker), into its own cache."""
    cache = ArtifactCache(tmp_path_factory.mktemp("serial"), durable=False)
    assert prefill_attributions(lm, records(), ["en", "zh"], CONFIG, cache, workers=1) == 0
    return run_attributions(lm, records(), ["en", "zh"], CONFIG, cache)


def test_two_workers_give_the_serial_bits_and_a_rerun_computes_nothing(lm, serial, tmp_path, monkeypatch):
    cache = ArtifactCache(tmp_path, durable=False)
    assert len(plan_prefill(lm, records(), ["en", "zh"], CONFIG, cache)) == 4  # r1: en x 2 prompts, zh; r2: en
    assert prefill_attributions(lm, records(), ["en", "zh"], CONFIG, cache, workers=2, spec=SPEC) == 4
    assert plan_prefill(lm, records(), ["en", "zh"], CONFIG, cache) == []
    assert prefill_attributions(lm, records(), ["en", "zh"], CONFIG, cache, workers=2, spec=SPEC) == 0

    def computed(*args, **kwargs):  # record_attributions must now read every prompt from the cache
        raise AssertionError("a prompt was computed again")

    import memla_utils.attribution_records as records_module
    monkeypatch.setattr(records_module, "attribute_batch", computed)
    parallel = run_attributions(lm, records(), ["en", "zh"], CONFIG, cache)
    assert parallel.keys() == serial.keys()
    for key in serial:
        for a, b in zip(serial[key], parallel[key], strict=True):
            assert (a.prompt, a.language) == (b.prompt, b.language)
            assert torch.equal(a.scores, b.scores)  # bit for bit: one thread in both places


def test_sanity_rows_are_the_same_with_two_workers(lm, serial, tmp_path):
    sanity = SanityConfig(seed=3, random_draws=2)
    one = sanity_effects(lm, records(), ["en", "zh"], CONFIG, ArtifactCache(tmp_path / "a", durable=False), sanity,
                         workers=1)
    two = sanity_effects(lm, records(), ["en", "zh"], CONFIG, ArtifactCache(tmp_path / "b", durable=False), sanity,
                         workers=2, spec=SPEC)
    assert len(one) == 3 * 2 * len(sanity.factors)  # (r1 en, r1 zh, r2 en) x knowledge/random x factors
    assert one.equals(two)


def test_the_pool_is_refused_where_it_cannot_help(lm, tmp_path):
    cache = ArtifactCache(tmp_path, durable=False)
    assert prefill_attributions(lm, records(), ["en"], CONFIG, cache, workers=2) == 0  # in memory, no spec
    assert prefill_attributions(lm, records(), ["en"], CONFIG, ArtifactCache(enabled=False), workers=2,
                                spec=SPEC) == 0
    assert pool_size(4, 1, "cpu") == 1 and pool_size(4, 3, "cpu") == 3 and pool_size(4, 9, "cuda") == 1
    with pytest.raises(ValueError, match="workers"):
        prefill_attributions(lm, records(), ["en"], CONFIG, cache, workers=0)
    with pytest.raises(ValueError, match="workers"):
        pool_size(0, 3, "cpu")
    with pytest.raises(ValueError, match="workers"):
        sanity_effects(lm, records(), ["en"], CONFIG, cache, workers=0)


def test_a_passed_deadline_starts_nothing(lm, tmp_path, monkeypatch):
    cache = ArtifactCache(tmp_path, durable=False)
    monkeypatch.setenv(DEADLINE_ENV, "1")  # 1970
    with pytest.raises(DeadlineReached):
        prefill_attributions(lm, records(), ["en", "zh"], CONFIG, cache, workers=2, spec=SPEC)
    assert len(plan_prefill(lm, records(), ["en", "zh"], CONFIG, cache)) == 4


def test_a_failing_worker_is_named(lm, tmp_path):
    other = ModelSpec("tiny-llama", factory=functools.partial(tiny_model, "llama", seed=7))  # other weights
    with pytest.raises(RuntimeError, match=r"record 'r1' \[en\] prompt .*fingerprint"):
        prefill_attributions(lm, records()[:1], ["en"], CONFIG, ArtifactCache(tmp_path, durable=False), workers=2,
                             spec=other)
