"""The adapter's uniform neuron view, device/dtype resolution and clear errors for bad models."""
from __future__ import annotations

import pytest
import torch

from memla_utils.models import ModelAdapter, UnsupportedModelError, load_model, resolve_device, resolve_dtype
from memla_utils.testing import tiny_model


def _logits(lm, text="The capital of France is Paris"):
    ids = lm.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return lm.model(**ids).logits


def test_zeroing_captured_neurons_equals_zeroing_down_proj_columns(any_tiny):
    lm = any_tiny
    ad = lm.adapter
    layer = ad.n_layers // 2
    idx = torch.tensor([0, 3, 5, ad.n_neurons - 1])

    def zero(acts):
        acts = acts.clone()
        acts[..., idx] = 0
        return acts

    with ad.neuron_hook(layer, zero):
        via_hook = _logits(lm)
    base = _logits(lm)
    assert not torch.allclose(via_hook, base), "zeroing neurons must change the output"
    w = ad.down_proj(layer).weight
    saved = w.detach().clone()
    with torch.no_grad():
        ad.down_weight_as_linear(layer)[:, idx] = 0
    try:
        via_weights = _logits(lm)
    finally:
        with torch.no_grad():
            w.copy_(saved)
    torch.testing.assert_close(via_hook, via_weights, rtol=1e-5, atol=1e-5)
    assert torch.equal(_logits(lm), base)


def test_captured_activations_have_neuron_width(any_tiny):
    ad = any_tiny.adapter
    with ad.neuron_hook(0, capture=True) as probe:
        _logits(any_tiny, "abc")
    assert probe.activations is not None
    assert probe.activations.shape[-1] == ad.n_neurons
    assert ad.down_weight_as_linear(0).shape == (ad.hidden_size, ad.n_neurons)


def test_scale_neurons_by_one_is_identity_and_zero_is_not(any_tiny):
    base = _logits(any_tiny)
    with any_tiny.adapter.scale_neurons({0: [1, 2, 3]}, 1.0):
        same = _logits(any_tiny)
    with any_tiny.adapter.scale_neurons({0: list(range(any_tiny.adapter.n_neurons))}, 0.0):
        other = _logits(any_tiny)
    torch.testing.assert_close(same, base)
    assert not torch.allclose(other, base)


def test_down_proj_name_resolves_to_the_module(any_tiny):
    ad = any_tiny.adapter
    modules = dict(any_tiny.model.named_modules())
    assert modules[ad.down_proj_name(1)] is ad.down_proj(1)


def test_bad_layer_is_a_clear_error():
    lm = tiny_model("llama")
    with pytest.raises(IndexError, match="layer 7 does not exist"):
        lm.adapter.down_proj(7)


def test_unsupported_architecture_names_the_class():
    class Weird(torch.nn.Module):
        class config:  # noqa: N801 - mimics a HF config attribute
            model_type = "weirdformer"

    with pytest.raises(UnsupportedModelError, match="Weird.*weirdformer"):
        ModelAdapter(Weird())


def test_unknown_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_model(str(tmp_path / "no-such-model"), device="cpu")


def test_cuda_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="'cuda' requested but CUDA is not available"):
        resolve_device("cuda")


def test_dtype_resolution():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        resolve_dtype("float8")


def test_fingerprint_changes_with_weights_and_is_stable():
    a, b = tiny_model("gpt2", seed=0), tiny_model("gpt2", seed=0)
    c = tiny_model("gpt2", seed=1)
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint


def test_local_checkpoint_loads_like_a_hub_model(tmp_path):
    """A local folder (what a user with mGPT/BLOOM/Llama weights has) goes through the same loader."""
    src = tiny_model("gpt2", seed=3)
    src.model.save_pretrained(tmp_path / "ckpt")
    src.tokenizer.save_pretrained(tmp_path / "ckpt")
    lm = load_model(str(tmp_path / "ckpt"), device="cpu", dtype="float32")
    assert lm.adapter.model_type == "gpt2" and lm.adapter.n_neurons == src.adapter.n_neurons
    assert lm.fingerprint == src.fingerprint
    assert not any(p.requires_grad for p in lm.model.parameters())


def test_local_checkpoint_with_device_map_keeps_the_neuron_view(tmp_path):
    """accelerate's device_map path (used to spread large models over GPUs) still exposes hooks and weights."""
    src = tiny_model("llama", seed=4)
    src.model.save_pretrained(tmp_path / "ckpt")
    src.tokenizer.save_pretrained(tmp_path / "ckpt")
    lm = load_model(str(tmp_path / "ckpt"), device="cpu", dtype="float32", device_map={"": "cpu"})
    base = _logits(lm)
    with lm.adapter.scale_neurons({1: list(range(lm.adapter.n_neurons))}, 0.0):
        assert not torch.allclose(_logits(lm), base)
    torch.testing.assert_close(base, _logits(src))


def test_one_gguf_parse_shares_the_reader_inside_the_block_only(tmp_path):
    """The first load of the default model parses its GGUF once, not once each for config, weights and tokenizer."""
    import gguf
    import numpy as np

    from memla_utils.models import _one_gguf_parse

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("test.value", 7)
    writer.add_tensor("w", np.arange(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    original = gguf.GGUFReader
    with _one_gguf_parse():
        a, b = gguf.GGUFReader(path), gguf.GGUFReader(str(path))
        assert a is b and int(a.fields["test.value"].parts[-1][0]) == 7
        assert np.array_equal(np.asarray(a.tensors[0].data), np.arange(8, dtype=np.float32))
    assert gguf.GGUFReader is original
    assert gguf.GGUFReader(path) is not gguf.GGUFReader(path)
