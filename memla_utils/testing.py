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


# ----------------------------------------------------------------------------------------- tokenizer families
#: A small multilingual corpus: a few sentences in each MKEB language (the facts the tests use, plus filler),
#: enough for multi-byte tokens and tokens that span a prompt/answer boundary ("是巴黎", "はパリ") to be learnt.
MULTILINGUAL_CORPUS: dict[str, list[str]] = {
    "en": ["The capital of France is Paris.", "The capital of Japan is Tokyo.", "The currency of Poland is the zloty.",
           "The Eiffel Tower is in Paris, the capital of France.", "Berlin is the capital of Germany.",
           "The mother tongue of Marie Curie is Polish."],
    "zh": ["法国的首都是巴黎。", "日本的首都是东京。", "德国的首都是柏林。", "波兰的货币是兹罗提。",
           "埃菲尔铁塔位于法国的首都巴黎。", "巴黎是法国的首都，东京是日本的首都。"],
    "fr": ["La capitale de la France est Paris.", "La capitale du Japon est Tokyo.", "La monnaie de la Pologne est le zloty.",
           "La tour Eiffel se trouve à Paris, capitale de la France.", "Berlin est la capitale de l'Allemagne."],
    "de": ["Die Hauptstadt von Frankreich ist Paris.", "Die Hauptstadt von Japan ist Tokio.",
           "Die Währung von Polen ist der Złoty.", "Der Eiffelturm steht in Paris, der Hauptstadt Frankreichs.",
           "Berlin ist die Hauptstadt von Deutschland."],
    "it": ["La capitale della Francia è Parigi.", "La capitale del Giappone è Tokyo.",
           "La valuta della Polonia è lo złoty.", "La torre Eiffel si trova a Parigi.", "Berlino è la capitale della Germania."],
    "es": ["La capital de Francia es París.", "La capital de Japón es Tokio.", "La moneda de Polonia es el esloti.",
           "La torre Eiffel está en París, la capital de Francia.", "Berlín es la capital de Alemania."],
    "pt": ["A capital da França é Paris.", "A capital do Japão é Tóquio.", "A moeda da Polônia é o zlóti.",
           "A torre Eiffel fica em Paris, a capital da França.", "Berlim é a capital da Alemanha."],
    "pl": ["Stolicą Francji jest Paryż.", "Stolicą Japonii jest Tokio.", "Walutą Polski jest złoty.",
           "Wieża Eiffla znajduje się w Paryżu, stolicy Francji.", "Berlin jest stolicą Niemiec."],
    "ru": ["Столица Франции — Париж.", "Столица Японии — Токио.", "Валюта Польши — злотый.",
           "Эйфелева башня находится в Париже, столице Франции.", "Берлин — столица Германии."],
    "ja": ["フランスの首都はパリです。", "日本の首都は東京です。", "ポーランドの通貨はズウォティです。",
           "エッフェル塔はフランスの首都パリにあります。", "ドイツの首都はベルリンです。", "首都はパリ、首都は東京。"],
    "ko": ["프랑스의 수도는 파리입니다.", "일본의 수도는 도쿄입니다.", "폴란드의 통화는 즐로티입니다.",
           "에펠탑은 프랑스의 수도 파리에 있습니다.", "독일의 수도는 베를린입니다."],
    "th": ["เมืองหลวงของฝรั่งเศสคือปารีส", "เมืองหลวงของญี่ปุ่นคือโตเกียว", "สกุลเงินของโปแลนด์คือซวอตี",
           "หอไอเฟลตั้งอยู่ที่ปารีสเมืองหลวงของฝรั่งเศส", "เบอร์ลินคือเมืองหลวงของเยอรมนี", "คือปารีส คือโตเกียว"],
}

#: Tokenizer families built offline by :func:`family_tokenizer`, named after the models whose pipelines they copy.
TOKENIZER_FAMILIES: tuple[str, ...] = ("gpt2", "qwen2", "bloom", "llama_legacy", "llama", "gemma", "unigram_eos")

_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
#: Qwen2's pre-tokenization pattern (tokenizer.json of Qwen/Qwen2-0.5B).
_QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
#: BLOOM's pre-tokenization pattern (tokenizer.json of bigscience/bloom-560m).
_BLOOM_PATTERN = " ?[^(\\s|[.,!?…。，、।۔،])]+"


def _corpus_lines() -> list[str]:
    return [s for lines in MULTILINGUAL_CORPUS.values() for s in lines] * 3


def _byte_level(name: str):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    if name == "gpt2":       # GPT-2 / mGPT: the byte-level regex splits words; offsets trimmed of spaces
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        post = processors.ByteLevel(trim_offsets=True)
    elif name == "qwen2":    # Qwen2: NFC, its own split regex, then bytes
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_QWEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        post = processors.ByteLevel(trim_offsets=False)
    else:                    # BLOOM: splits only at whitespace/punctuation, so CJK runs stay one pre-token
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_BLOOM_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        post = processors.ByteLevel(add_prefix_space=True, trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=_SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus_lines(), trainer)
    tok.post_processor = post
    return tok


def _sentencepiece_bpe(name: str):
    """BPE with byte fallback over '▁'-marked words, trained like SentencePiece, wired like Llama / Gemma."""
    import json

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    trainer_tok.train_from_iterator(_corpus_lines(), trainers.BpeTrainer(
        vocab_size=700, special_tokens=_SPECIALS, show_progress=False))
    state = json.loads(trainer_tok.to_str())["model"]
    vocab = dict(state["vocab"])
    for b in range(256):  # byte-fallback pieces <0x00>..<0xFF>, as in Llama's and Gemma's vocabularies
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.add_special_tokens(_SPECIALS)
    spaces = decoders.Replace("▁", " ")
    if name == "llama_legacy":   # Llama-2 / Mistral (legacy=True): a dummy prefix '▁' on every text
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence([spaces, decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    elif name == "llama":        # Llama with legacy=False: Metaspace, dummy prefix only before the first word
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        tok.decoder = decoders.Sequence([spaces, decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    else:                        # Gemma: spaces become '▁', no dummy prefix
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.decoder = decoders.Sequence([spaces, decoders.ByteFallback(), decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B",
                                                       special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
    return tok


def _unigram_eos():
    """A SentencePiece Unigram (T5 / XGLM style) whose post-processor adds BOS and *appends EOS* to every text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.train_from_iterator(_corpus_lines(), trainers.UnigramTrainer(
        vocab_size=900, special_tokens=_SPECIALS, unk_token="<unk>", show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", pair="<bos> $A <eos> $B <eos>",
        special_tokens=[("<bos>", tok.token_to_id("<bos>")), ("<eos>", tok.token_to_id("<eos>"))])
    return tok


@lru_cache(maxsize=16)
def _family_json(name: str) -> str:
    if name in ("gpt2", "qwen2", "bloom"):
        return _byte_level(name).to_str()
    if name in ("llama_legacy", "llama", "gemma"):
        return _sentencepiece_bpe(name).to_str()
    if name == "unigram_eos":
        return _unigram_eos().to_str()
    raise ValueError(f"unknown tokenizer family {name!r}; choose from {', '.join(TOKENIZER_FAMILIES)}")


def family_tokenizer(name: str):
    """A fast tokenizer of one family in :data:`TOKENIZER_FAMILIES`, trained offline on :data:`MULTILINGUAL_CORPUS`.

    ``gpt2`` / ``qwen2`` / ``bloom``: byte-level BPE with each model's pre-tokenization, no BOS (as those models);
    ``llama_legacy``: SentencePiece-style BPE with a dummy prefix on every text (Llama-2, Mistral);
    ``llama``: the same with ``legacy=False`` (Metaspace, prefix only at the start); ``gemma``: no dummy prefix;
    ``unigram_eos``: a Unigram model whose post-processor adds ``<bos>`` and appends ``<eos>``. All but the
    byte-level ones add ``<bos>``. Special tokens: ``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_family_json(name)), bos_token="<bos>",
                                   eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
