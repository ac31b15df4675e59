"""The embedded default model: loads from the PyPI package, is cached, and knows some facts."""
from __future__ import annotations

import pytest

from memla_utils.models import default_model_dir, load_model
from memla_utils.probe import knowledge_probe

pytestmark = pytest.mark.integration


def test_default_model_shape_and_cache(default_lm):
    info = default_lm.info
    assert info["model_type"] == "gemma3_text"
    assert info["n_layers"] == 18 and info["n_neurons_per_layer"] == 2048 and info["hidden_size"] == 640
    assert (default_model_dir() / "model.safetensors").exists()
    again = load_model("default", device="cpu", dtype="float32")
    assert again.fingerprint == default_lm.fingerprint
    assert again.load_seconds < 30, "the cached (dequantized) model must load in seconds"


def test_default_model_knows_english_capitals(default_lm):
    df = knowledge_probe(default_lm, ["en", "zh"])
    share = df.groupby("language")["known"].mean()
    assert share["en"] >= 0.5, share
