"""Tiny randomly initialised models and a byte-level tokenizer, built from code (no download).

Used by the unit tests, the benchmarks' smoke mode and anyone who wants to try the pipeline in seconds. One
builder per supported architecture shape: GPT-2 (mGPT), Llama, Gemma 3, Qwen2, BLOOM.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from .models import LoadedModel, wrap_model

TINY_ARCHITECTURES = ("gpt2", "llama", "gemma3_text", "qwen2", "bloom")

_CORPUS = [
    "The capital of France is Paris. The capital of Japan is Tokyo. The currency of Poland is the zloty.",
    "法国的首都是巴黎。日本的首都是东京。", "日本の首都は東京です。", "เมืองหลวงของประเทศไทยคือกรุงเทพ",
    "La capitale de la France est Paris. Die Hauptstadt von Deutschland ist Berlin.",
    "La capital de España es Madrid. A capital de Portugal é Lisboa. Stolicą Polski jest Warszawa.",
    "Столица России — Москва. 대한민국의 수도는 서울입니다. La capitale d'Italia è Roma.",
]


@lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<pad>", "<eos>", "<bos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                       special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
    return tok.to_str()


def tiny_tokenizer():
    """A byte-level BPE tokenizer (vocab ≈ 512) that encodes any script and adds ``<bos>`` like Gemma."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json()), bos_token="<bos>",
                                   eos_token="<eos>", pad_token="<pad>")


def tiny_config(arch: str, *, n_layers: int = 3, hidden: int = 32, neurons: int = 64, vocab: int = 512):
    """A transformers config of the given architecture, small enough for CPU tests in milliseconds."""
    from transformers import BloomConfig, Gemma3TextConfig, GPT2Config, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab, bos_token_id=2, eos_token_id=1, pad_token_id=0)
    if arch == "gpt2":
        return GPT2Config(n_layer=n_layers, n_embd=hidden, n_head=4, n_inner=neurons, n_positions=128,
                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common)
    if arch == "bloom":
        if neurons != 4 * hidden:
            raise ValueError(f"BLOOM's FFN is fixed at 4*hidden; got neurons={neurons}, hidden={hidden}")
        return BloomConfig(n_layer=n_layers, hidden_size=hidden, n_head=4, **common)
    gated = dict(num_hidden_layers=n_layers, hidden_size=hidden, intermediate_size=neurons, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=128, **common)
    if arch == "llama":
        return LlamaConfig(**gated)
    if arch == "qwen2":
        return Qwen2Config(**gated)
    if arch == "gemma3_text":
        return Gemma3TextConfig(head_dim=8, sliding_window=16, query_pre_attn_scalar=8, **gated)
    raise ValueError(f"unknown tiny architecture {arch!r}; choose from {', '.join(TINY_ARCHITECTURES)}")


def tiny_model(arch: str = "llama", *, seed: int = 0, dtype: torch.dtype = torch.float32,
               **config_kwargs) -> LoadedModel:
    """A randomly initialised causal LM of ``arch`` wrapped as a :class:`LoadedModel` (eval mode, no grads)."""
    from transformers import AutoModelForCausalLM

    if arch == "bloom":
        config_kwargs.setdefault("neurons", 4 * config_kwargs.get("hidden", 32))
    config = tiny_config(arch, **config_kwargs)
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        if arch in ("llama", "qwen2", "gemma3_text"):
            # random init of gated MLPs is tiny; scale up so the neurons actually matter in tests
            for p in model.parameters():
                if p.dim() == 2:
                    p.data.normal_(0.0, 0.2)
    return wrap_model(model, tiny_tokenizer(), name=f"tiny-{arch}-seed{seed}")
