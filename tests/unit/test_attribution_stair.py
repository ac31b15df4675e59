"""The staircase pass (all scaled layers of a chunk in one forward) equals one forward per layer group, for both
methods, with chunks that split a layer's rows and several prompts; bloom (alibi) falls back to the groups."""
from __future__ import annotations

import logging

import pytest
import torch

import memla_utils.attribution_ig as attribution_ig
from memla_utils.attribution import AttributionConfig, attribute_batch
from memla_utils.attribution_stair import StaircaseUnsupported, _cut
from memla_utils.testing import tiny_model

ITEMS = [("The capital of Japan is", "Tokyo", "en"), ("Paris is the capital of", "France", "en")]


def _grouped(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise StaircaseUnsupported("forced by the test")

    monkeypatch.setattr(attribution_ig, "_forward_staircase", refuse)


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "gpt2"])
@pytest.mark.parametrize("method", ["memla4mke", "exact"])
@pytest.mark.parametrize("max_rows", [None, 7])
def test_staircase_equals_layer_groups(arch, method, max_rows, monkeypatch):
    lm = tiny_model(arch)
    cfg = AttributionConfig(method=method, steps=4, max_rows=max_rows)
    fast = attribute_batch(lm, ITEMS, cfg)
    _grouped(monkeypatch)
    slow = attribute_batch(lm, ITEMS, cfg)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a.scores, b.scores, rtol=1e-5, atol=1e-6 * float(b.scores.abs().max()))
        torch.testing.assert_close(a.deltas, b.deltas, rtol=1e-5, atol=1e-7)


def test_alibi_falls_back_to_layer_groups(caplog):
    lm = tiny_model("bloom")
    with caplog.at_level(logging.DEBUG, logger="memla_utils.attribution"):
        attribute_batch(lm, ITEMS[:1], AttributionConfig(steps=3))
    assert "staircase pass not supported" in caplog.text


def test_cut_keeps_broadcast_tensors_and_refuses_other_batch_shapes():
    t = torch.zeros(6, 3)
    assert _cut({"a": (t, torch.zeros(1, 3)), "b": 2}, 6, 4)["a"][0].shape == (4, 3)
    assert _cut([torch.zeros(1, 5)], 6, 4)[0].shape == (1, 5)
    with pytest.raises(StaircaseUnsupported):
        _cut(torch.zeros(12, 3), 6, 4)
