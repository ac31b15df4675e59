"""Knowledge-neuron attribution: integrated gradients (IG) over the FFN neurons, batched, in two variants.

A *neuron* is one input unit of an MLP down projection (the adapter's neuron view); masks always select the
down projection's input columns. For one prompt and its answer, each neuron of each layer gets a score: an
integrated-gradients style sum of the gradient of the target (probability of the answer token, see
:class:`AttributionConfig`) along a straight path from a baseline ``b`` to the actual value ``a`` at the last
prompt position, with *only layer l* moved along the path (every other layer untouched). Two variants
(``AttributionConfig.method``):

``"memla4mke"`` (default: what the paper's released locator computes; ``identify_kn/locate_kn.py`` ->
``AMIG/knowledge_neurons/garns.py``, class ``garns``, with ``knowledge_neurons.py`` and ``patch.py``)::

    score[l, n] = a_0[l, n] * sum_i 1/steps * sum_{k=0}^{steps-1} dF_i/dx[l, n] (b_i + k/steps (a_i - b_i))

1. the path runs over the *output of the gate projection* (before the activation) of gated MLPs, or of the
   first projection (``c_fc``/``dense_h_to_4h``) otherwise (``KnowledgeNeurons.__init__``: ``input_ff_attr``;
   ``patch.register_hook``/``Patch.forward`` read and replace that module's output at the last position);
2. the points are ``k/steps`` for ``k = 0 .. steps-1`` (``garns.scaled_input``: ``baseline + step * i`` for
   ``i in range(steps)``, ``step = (original - baseline) / steps``): the actual value is never on the path;
3. the summed gradient is multiplied by the *actual* value ``a_0`` divided by ``steps``, not by ``a - b``
   (``garns.get_scores_for_layer``: ``integrated_grads_this_step *= baseline_activations.squeeze(0) / steps``,
   where ``baseline_activations`` is the unmodified forward's value, see ``get_baseline_with_activations``);
   ``b_i`` (``baseline="eos_mean"``) is the mean over copies of the prompt with *each* token in turn (BOS and
   the last token included) replaced by EOS (``garns.scaled_input``);
4. multi-token answers: memla4mke's answer ids are ``tokenizer.encode(answer)`` (special tokens included, no
   leading space: ``KnowledgeNeurons._prepare_inputs``); here they come from this project's join (the answer
   part of ``prompt + separator + answer`` tokenized as one string, no BOS: how text becomes tokens is this
   project's rule, not memla4mke's); token ``i`` is attributed at the last position of the prompt
   text extended by ``i`` copies of the *greedy* next token of the original prompt (its ``baseline_outputs``
   are computed once, before the loop, so ``next_token_str`` never changes), re-tokenized; ``a_i`` and ``b_i``
   come from that extended prompt, but the multiplier ``a_0`` is the original prompt's value; the per-token
   scores are *summed* (``D_accumulator += ...``; ``A_i = D_accumulator / k_path`` with ``k_path = 1``). The
   knowledge-neurons base class (``KnowledgeNeurons.get_scores_for_layer``) averages over tokens instead; the
   ``garns`` subclass that ``locate_kn.py`` instantiates overrides it and sums.

``"exact"`` (the companion's exact IG of the neurons themselves)::

    score[l, n] = (a[l, n] - b[l, n]) * mean_k dF/dx[l, n] (b + alpha_k (a - b)),  alpha_k = linspace(0, 1, steps)

at the down projection's input (both endpoints included, divided by ``steps``), with ``b`` the EOS mean over the
ordinary (non-special) tokens of the prefix. A multi-token answer is attributed token by token with teacher
forcing: for answer token ``i`` the prompt is ``prompt ⧺ answer[:i]`` and its last position is the one scaled;
the scores are summed over tokens. Its completeness (sum of scores = F(a) - F(b), up to Riemann error) holds.

In both variants a prompt's neurons are those above ``threshold`` x its maximum score over all layers, and a
record's set is the union over its prompts (``garns.get_coarse_neurons``, ``garns.get_refined_neurons``).

Why it is fast (same numbers as the loop, see ``benchmarks/bench_attribution.py``): changing layer ``l``'s
neurons at position ``p`` changes nothing at positions ``< p`` and nothing below layer ``l``, so every (layer,
step) *row* is a one-token continuation of the clean prompt's key/value cache: all rows of all layers, steps,
answer tokens and prompts of a batch go through the model together as single tokens, chunked to fit memory
(``max_rows``), in one *staircase* forward per chunk (:mod:`memla_utils.attribution_stair`: layer ``j`` runs the
rows scaling layers ``<= j``, so the matrix products see hundreds of rows; bloom's alibi falls back to one forward
per scaled layer). Only that one position reaches the vocabulary projection, which is computed in vocabulary
chunks with an online softmax that yields the gradient of ``log p(answer)`` with respect to the final hidden
state in the same pass, in float32. Autograd then carries it back to the injected neurons. Two self-checks
guard the shortcut: the projection must reproduce the model's own logits, and the ``alpha = 1`` rows must
reproduce the clean forward (``memla4mke`` adds ``alpha = 1`` rows at the first and last layer for this
check; they do not enter the scores, and ``F(actual)`` for the completeness log is the clean value). The completeness of IG (sum over a layer of ``(a - b)`` x
the mean gradient vs ``F(a) - F(b)``) is logged.
"""
from __future__ import annotations

import inspect
import logging
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from .attribution_stair import StaircaseUnsupported, inject, staircase
from .cache import ArtifactCache, cache_key
from .mkeb.record import Record, RecordError
from .models import LoadedModel
from .attribution_scores import COMPACT_FLOOR, PromptAttribution, neurons_from_attributions, threshold_scores
from .neuron_masks import NeuronMasks
from .run_parts import check_deadline
from .text import JOIN_VERSION, join_prompt_answer


log = logging.getLogger(__name__)

METHODS = ("memla4mke", "exact")
BASELINES = ("eos_mean", "zero")
TARGETS = ("prob", "logprob")
ANSWERS = ("true", "new")
HEAD_PRECISIONS = ("auto", "float32", "bfloat16")
#: Part of every cached score's key: bump it in the change that alters any score's bits (summation order, row
#: layout), so that caches written by earlier code are not mixed with new scores. 2: the staircase of
#: ``attribution_stair`` (issue 15) and one prompt per batch in :func:`record_attributions` (scores equal to
#: version 1 within ~1e-6 relative, not bit for bit).
SCORES_VERSION = 2


# --------------------------------------------------------------------------------------------- config
@dataclass
class AttributionConfig:
    """How knowledge neurons are attributed. Defaults follow memla4mke (the paper's code).

    - ``method="memla4mke"``: the released locator's computation (module docstring: gate/first-projection
      output, points ``k/steps``, multiplier = actual value, greedy-extended prompts summed over answer
      tokens); ``"exact"``: exact IG of the down projection's inputs with teacher forcing. The paper presets
      and the notebooks use ``"memla4mke"``. The method is part of the cache key (:meth:`score_params`).
    - ``steps=20``: IG Riemann steps (knowledge-neurons / memla4mke default).
    - ``baseline="eos_mean"``: memla4mke's baseline, the mean activation over copies of the prompt in which one
      token is replaced by EOS (memla4mke: every token in turn, ``garns.scaled_input``; exact: every
      non-special token of the prefix); ``"zero"`` is the original knowledge-neurons baseline (for
      ``memla4mke``: points ``k/steps * a``; ``garns`` itself always uses the EOS mean).
    - ``threshold=0.3``: keep neurons scoring above 0.3 x the prompt's maximum score (memla4mke).
    - ``target="prob"``: the gradient is of the answer token's probability, as in knowledge-neurons/memla4mke;
      ``"logprob"`` is available (less dominated by facts the model already knows well).
    - ``use_paraphrases=True``: union of the neuron sets of the edit prompt and its paraphrases (memla4mke).
    - ``answer="true"``: attribute the true answer (the fact the model holds, where its neurons are); records
      without ``target_true`` (zsRE-derived sets) fall back to ``target_new`` with a logged warning. ``"new"``
      attributes the new target.
    - ``max_rows=None``: rows (layer x step x answer token) per pass, chosen from free memory when ``None``.
    - ``vocab_chunk=8192``: vocabulary rows per chunk of the output projection (memory and speed, not results:
      chunks of 32768 rows leave 100 MB buffers per pass that spill the CPU caches, 1.4x slower on the head).
    - ``head_precision="auto"``: precision of the two matrix products of the vocabulary projection (softmax,
      sums and IG accumulation are float32 always). ``"float32"`` is exact; ``"bfloat16"`` rounds the inputs
      of those products to bfloat16 (float32 accumulation): ~4x faster on CPUs with AVX512-BF16/AMX and on
      GPUs, scores rank-identical in practice (``benchmarks/bench_attribution.py`` reports the Spearman
      correlation). ``"auto"`` = bfloat16 for bfloat16/float16 models (their weights already are), else float32.
    """

    method: str = "memla4mke"
    steps: int = 20
    baseline: str = "eos_mean"
    threshold: float = 0.3
    target: str = "prob"
    use_paraphrases: bool = True
    answer: str = "true"
    max_rows: int | None = None
    vocab_chunk: int = 8192
    head_precision: str = "auto"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"AttributionConfig.method must be one of {METHODS}, got {self.method!r}")
        if not isinstance(self.steps, int) or self.steps < 2:
            raise ValueError(f"AttributionConfig.steps must be an integer >= 2 (the path needs both ends), "
                             f"got {self.steps!r}")
        if self.baseline not in BASELINES:
            raise ValueError(f"AttributionConfig.baseline must be one of {BASELINES}, got {self.baseline!r}")
        if self.target not in TARGETS:
            raise ValueError(f"AttributionConfig.target must be one of {TARGETS}, got {self.target!r}")
        if self.answer not in ANSWERS:
            raise ValueError(f"AttributionConfig.answer must be one of {ANSWERS}, got {self.answer!r}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"AttributionConfig.threshold must be in [0, 1] (a share of the maximum score), "
                             f"got {self.threshold!r}")
        if self.max_rows is not None and (not isinstance(self.max_rows, int) or self.max_rows < 1):
            raise ValueError(f"AttributionConfig.max_rows must be a positive integer or None, got {self.max_rows!r}")
        if self.head_precision not in HEAD_PRECISIONS:
            raise ValueError(f"AttributionConfig.head_precision must be one of {HEAD_PRECISIONS}, "
                             f"got {self.head_precision!r}")
        if not isinstance(self.vocab_chunk, int) or self.vocab_chunk < 1:
            raise ValueError(f"AttributionConfig.vocab_chunk must be a positive integer, got {self.vocab_chunk!r}")

    def score_params(self) -> dict[str, Any]:
        """The parameters that determine a prompt's scores (cache key; threshold and chunking excluded)."""
        return {"method": self.method, "steps": self.steps, "baseline": self.baseline, "target": self.target,
                "head_precision": self.head_precision, "version": SCORES_VERSION}

    def head_dtype(self, model_dtype: torch.dtype) -> torch.dtype:
        if self.head_precision == "auto":
            return torch.bfloat16 if model_dtype in (torch.bfloat16, torch.float16) else torch.float32
        return torch.bfloat16 if self.head_precision == "bfloat16" else torch.float32


# --------------------------------------------------------------------------------------------- preparation
@dataclass
class _Prepared:
    """One prompt, tokenized, with its clean run: caches and activations at the positions that matter."""

    prompt: str
    answer: str
    language: str
    ids: list[int]             # exact: prompt ⧺ answer[:-1] (every position that predicts an answer token);
    n_prompt: int              # memla4mke: the (extended) prompt only, one target
    targets: list[int]         # answer ids; token i is predicted at position n_prompt - 1 + i
    method: str = "exact"      # where values are read and injected: down-projection input or pre-activation
    keys: list[torch.Tensor] = field(default_factory=list)    # per layer [kv_heads, T, head_dim] (clean)
    values: list[torch.Tensor] = field(default_factory=list)
    acts: torch.Tensor | None = None      # [A, n_layers, n_neurons] clean activations at the answer positions
    base: torch.Tensor | None = None      # [A, n_layers, n_neurons] baseline at the same positions
    clean_value: torch.Tensor | None = None  # [A] float64 target F per answer token
    hidden_in: torch.Tensor | None = None    # [A, n_layers, hidden] clean input of each decoder layer (model dtype)
    layer_out: int = 0                       # decoder layers return a tensor (0) or a tuple of this length
    next_token: int = -1                     # greedy prediction after the prompt (clean logits at n_prompt - 1)

    @property
    def positions(self) -> list[int]:
        return [self.n_prompt - 1 + i for i in range(len(self.targets))]


def _forward_kwargs(module: torch.nn.Module) -> set[str]:
    return set(inspect.signature(module.forward).parameters)


def _cache_kw(module: torch.nn.Module) -> str:
    """transformers 5 calls the argument ``cache`` (``past_key_values`` before)."""
    return "cache" if "cache" in _forward_kwargs(module) else "past_key_values"


def _output_cache(out: Any) -> Any:
    c = getattr(out, "cache", None)
    return c if c is not None else getattr(out, "past_key_values", None)


def _cache_kv(cache: Any, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(cache, "layers"):
        return cache.layers[layer].keys, cache.layers[layer].values
    return cache[layer][0], cache[layer][1]  # legacy tuple caches


def _make_cache(kv: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    from transformers import DynamicCache

    return DynamicCache(kv)


def _point_hook(lm: LoadedModel, method: str, layer: int, fn: Any = None, *, capture: bool = False) -> Any:
    """Read/replace the attributed values of ``layer``: the neurons (``exact``) or their pre-activation
    (``memla4mke``: output of the gate / first projection, same index per neuron)."""
    if method == "memla4mke":
        return lm.adapter.pre_activation_hook(layer, fn, capture=capture)
    return lm.adapter.neuron_hook(layer, fn, capture=capture)


@contextmanager
def _capture_all(lm: LoadedModel, method: str = "exact") -> Iterator[list[Any]]:
    with ExitStack() as stack:
        yield [stack.enter_context(_point_hook(lm, method, l, capture=True)) for l in range(lm.adapter.n_layers)]


def _head(lm: LoadedModel) -> tuple[torch.Tensor, torch.Tensor | None, float | None]:
    head = lm.model.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        raise ValueError(f"{lm.name}: the model has no output embedding (lm_head) to score answers with")
    cap = getattr(lm.model.config, "final_logit_softcapping", None)
    return head.weight, getattr(head, "bias", None), (float(cap) if cap else None)


@torch.no_grad()
def _logprob_and_grad(h: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      softcap: float | None, chunk: int, mm_dtype: torch.dtype = torch.float32,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``log p(target)`` and its gradient w.r.t. the final hidden state ``h`` ``[R, H]``, both float32.

    Vocabulary chunks with an online (rescaled) softmax: memory O(R x chunk), two matrix products per chunk
    (logits, and softmax-weighted rows of the projection = the gradient of log Z), as autograd would do.
    The products run in ``mm_dtype`` (accumulating in float32); everything else is float32.
    """
    hf = h.float()
    hm = h.to(mm_dtype)
    R, H = hf.shape
    m = torch.full((R,), -math.inf, device=h.device)
    s = torch.zeros(R, device=h.device)
    u = torch.zeros(R, H, device=h.device)
    for c0 in range(0, weight.shape[0], chunk):
        w = weight[c0:c0 + chunk].to(mm_dtype)
        z = (hm @ w.T).float()
        if bias is not None:
            z = z + bias[c0:c0 + chunk].float()
        dz = None
        if softcap is not None:
            t = torch.tanh(z / softcap)
            z, dz = softcap * t, 1.0 - t * t
        new_m = torch.maximum(m, z.max(-1).values)
        scale = torch.exp(m - new_m)
        e = z.sub_(new_m[:, None]).exp_()  # in place: these chunks are the largest buffers of the pass
        s = s * scale + e.sum(-1)
        u = u * scale[:, None] + ((e.mul_(dz) if dz is not None else e).to(mm_dtype) @ w).float()
        m = new_m
    wt = weight[targets].float()
    zt = (hf * wt).sum(-1)
    if bias is not None:
        zt = zt + bias[targets].float()
    dzt = torch.ones_like(zt)
    if softcap is not None:
        t = torch.tanh(zt / softcap)
        zt, dzt = softcap * t, 1.0 - t * t
    logp = zt - (m + torch.log(s))
    grad = dzt[:, None] * wt - u / s[:, None]
    return logp, grad


def _value(logp: torch.Tensor, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """F and dF/dlogp for the configured target."""
    if target == "prob":
        p = logp.exp()
        return p, p
    return logp, torch.ones_like(logp)


def _prepare(lm: LoadedModel, prompt: str, answer: str, language: str, config: AttributionConfig,
             ) -> list[_Prepared]:
    """The prepared sequences of one item: one for ``exact`` (teacher forcing shares the prefix), one per answer
    token for ``memla4mke`` (each answer token has its own greedy-extended prompt)."""
    if config.method == "memla4mke":
        return _prepare_memla4mke(lm, prompt, answer, language, config)
    tok = lm.tokenizer
    joined = join_prompt_answer(tok, prompt, answer, language)
    p_ids, a_ids = joined.prompt_ids, joined.answer_ids
    if not p_ids:
        raise ValueError(f"prompt {prompt!r} tokenizes to nothing")
    prep = _Prepared(prompt, answer, language, p_ids + a_ids[:-1], len(p_ids), a_ids)
    return [_run_clean(lm, prep, config)]


def _kn_prompt(text: str) -> str:
    """``KnowledgeNeurons._prepare_inputs`` for decoder models: drop ``"[MASK] ."`` and strip whitespace."""
    return text.replace("[MASK] .", "").strip()


def _prepare_memla4mke(lm: LoadedModel, prompt: str, answer: str, language: str, config: AttributionConfig,
                       ) -> list[_Prepared]:
    """memla4mke's multi-token handling (``garns.get_scores_for_layer``), one prepared sequence per answer token.

    Answer ids: this project's join (:func:`memla_utils.text.join_prompt_answer`: the answer part of
    ``prompt + separator + answer`` tokenized as one string), not memla4mke's ``tokenizer.encode(answer)``
    (which puts BOS in front of the answer and drops the word-initial space): memla4mke decides the algorithm,
    this project how text becomes tokens. Token ``i``'s prompt is ``prompt + g * i`` (``prompt +=
    next_token_str`` per token), with ``g = tokenizer.decode(argmax)`` of the *original* prompt's clean logits,
    passed through ``_prepare_inputs`` again (strip) and re-tokenized with the tokenizer's special tokens.
    """
    tok = lm.tokenizer
    targets = list(join_prompt_answer(tok, prompt, answer, language).answer_ids) if answer and answer.strip() else []
    if not answer or not answer.strip() or not targets:
        raise ValueError(f"answer {answer!r} of prompt {prompt!r} is empty or tokenizes to nothing")
    preps: list[_Prepared] = []
    greedy = ""
    for i, target in enumerate(targets):
        text = _kn_prompt(prompt + greedy * i)
        ids = list(tok(text)["input_ids"])
        if not ids:
            raise ValueError(f"prompt {prompt!r} tokenizes to nothing")
        prep = _run_clean(lm, _Prepared(text, answer, language, ids, len(ids), [target], method="memla4mke"), config)
        if i == 0 and len(targets) > 1:
            greedy = tok.decode(prep.next_token)
        preps.append(prep)
    return preps


def _run_clean(lm: LoadedModel, prep: _Prepared, config: AttributionConfig) -> _Prepared:
    """Run the clean forward (cache + activations + logits check) of a tokenized sequence and its baseline."""
    prompt = prep.prompt
    window = getattr(lm.model.config, "sliding_window", None)
    if window and len(prep.ids) >= int(window):
        raise ValueError(f"prompt {prompt!r} is {len(prep.ids)} tokens, longer than the sliding window ({window}) "
                         f"the cached continuation supports")
    model, dev = lm.model, lm.device
    ids = torch.tensor([prep.ids], device=dev)
    pos = torch.tensor(prep.positions, device=dev)
    head = model.get_output_embeddings()
    captured: dict[str, torch.Tensor] = {}

    def head_hook(module: torch.nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
        captured["h"], captured["logits"] = args[0], out

    layer_in: list[torch.Tensor] = []
    layer_out: list[int] = []

    def in_hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        layer_in.append((args[0] if args else kwargs["hidden_states"])[0, pos])

    def out_hook(module: torch.nn.Module, args: tuple[Any, ...], out: Any) -> None:
        layer_out.append(len(out) if isinstance(out, tuple) else 0)

    handles = [head.register_forward_hook(head_hook)]
    for layer in lm.adapter.layers:
        handles.append(layer.register_forward_pre_hook(in_hook, with_kwargs=True))
        handles.append(layer.register_forward_hook(out_hook))
    try:
        with torch.no_grad(), _capture_all(lm, prep.method) as probes:
            out = model(input_ids=ids, use_cache=True)
    finally:
        for handle in handles:
            handle.remove()
    prep.hidden_in = torch.stack(layer_in, dim=1)
    prep.layer_out = layer_out[0]
    cache = _output_cache(out)
    for l in range(lm.adapter.n_layers):
        k, v = _cache_kv(cache, l)
        if k.shape[-2] != len(prep.ids):
            raise RuntimeError(f"{lm.name}: layer {l}'s key cache holds {k.shape[-2]} positions, expected "
                               f"{len(prep.ids)}; this cache layout is not supported for attribution")
        prep.keys.append(k[0])
        prep.values.append(v[0])
    prep.acts = torch.stack([p.activations[0, pos].float() for p in probes], dim=1)  # [A, L, N]
    tgt = torch.tensor(prep.targets, device=dev)
    weight, bias, softcap = _head(lm)
    h = captured["h"][0, pos]
    logp, _ = _logprob_and_grad(h, tgt, weight, bias, softcap, config.vocab_chunk, config.head_dtype(lm.dtype))
    ref = torch.log_softmax(out.logits[0, pos].float(), -1).gather(-1, tgt[:, None])[:, 0]
    # a structural mismatch (logit scaling, soft-capping) is off by whole nats; bfloat16 rounding by ~0.1
    tol = 1e-3 if lm.dtype == torch.float32 and config.head_dtype(lm.dtype) == torch.float32 else 0.3
    if not torch.allclose(logp, ref, atol=tol, rtol=tol):
        raise RuntimeError(f"{lm.name}: the model's logits are not lm_head(final hidden state) "
                           f"(max |diff| of log p = {float((logp - ref).abs().max()):.3g}); logit scaling of this "
                           f"architecture is not supported by the chunked projection")
    prep.clean_value = _value(logp.double(), config.target)[0]
    prep.next_token = int(out.logits[0, prep.n_prompt - 1].argmax())
    prep.base = _baseline(lm, prep, config)
    return prep


@torch.no_grad()
def _baseline(lm: LoadedModel, prep: _Prepared, config: AttributionConfig) -> torch.Tensor:
    """``[A, L, N]`` baseline activations at each answer position (zero, or memla4mke's EOS-replacement mean)."""
    assert prep.acts is not None
    if config.baseline == "zero":
        return torch.zeros_like(prep.acts)
    eos = lm.tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"{lm.name}: baseline 'eos_mean' needs an EOS token; use baseline='zero'")
    if prep.method == "memla4mke":
        # garns.scaled_input: every position idx in range(len(ids)) in turn (BOS and the last token included)
        # replaced by EOS; the mean of the copies' values at the last position (the path is linear in it)
        n = len(prep.ids)
        ids = torch.tensor([prep.ids] * n, device=lm.device)
        ids[torch.arange(n), torch.arange(n)] = eos
        with _capture_all(lm, prep.method) as probes:
            lm.model.base_model(input_ids=ids, use_cache=False)
        return torch.stack([p.activations[:, -1].float() for p in probes], dim=1).mean(0, keepdim=True)  # [1, L, N]
    special = set(lm.tokenizer.all_special_ids)
    slots = [j for j, t in enumerate(prep.ids) if t not in special]
    if not slots:
        raise ValueError(f"prompt {prep.prompt!r} has no ordinary token to replace by EOS for the baseline")
    ids = torch.tensor([prep.ids] * len(slots), device=lm.device)
    ids[torch.arange(len(slots)), torch.tensor(slots)] = eos
    pos = torch.tensor(prep.positions, device=lm.device)
    with _capture_all(lm, prep.method) as probes:
        lm.model.base_model(input_ids=ids, use_cache=False)
    acts = torch.stack([p.activations[:, pos].float() for p in probes], dim=2)  # [C, A, L, N]
    # answer token i's prompt is ids[:p_i + 1]: only the copies that replaced a token of that prefix count
    use = torch.tensor([[j <= p for p in prep.positions] for j in slots], device=acts.device, dtype=acts.dtype)
    if bool((use.sum(0) == 0).any()):
        raise ValueError(f"prompt {prep.prompt!r}: no ordinary token before the answer position to replace by EOS")
    return torch.einsum("ca,caln->aln", use, acts) / use.sum(0)[:, None, None]


# --------------------------------------------------------------------------------------------- the batched pass
@dataclass
class _Rows:
    """Index arrays of a chunk of rows: prompt, answer token, layer and step of each row."""

    prompt: torch.Tensor
    token: torch.Tensor
    layer: torch.Tensor
    step: torch.Tensor


def _auto_max_rows(lm: LoadedModel, context: int) -> int:
    """Rows per pass from free memory: KV cache copies + per-layer activations + one vocabulary chunk per row."""
    cfg = lm.model.config
    n_heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", None) or 1
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    head_dim = getattr(cfg, "head_dim", None) or lm.adapter.hidden_size // n_heads
    kv = 2 * int(n_kv) * int(head_dim) * (context + 1) * 3  # cache, its concatenated copy, saved for backward
    per_layer = kv + 16 * lm.adapter.hidden_size + 6 * lm.adapter.n_neurons
    head_bytes = 4 * (3 * 32768 + 8 * lm.adapter.hidden_size)  # one float32 vocabulary chunk + head buffers
    per_row = (torch.finfo(lm.dtype).bits // 8) * lm.adapter.n_layers * per_layer + head_bytes
    if lm.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(lm.device)
        budget = 0.5 * free
    else:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 8 << 30
        budget = min(1.5 * (1 << 30), 0.25 * avail)
    return max(1, int(budget // per_row))


def _unit_caches(lm: LoadedModel, preps: Sequence[_Prepared], units: Sequence[tuple[int, int]], ctx: int,
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the clean K/V of each unit's prefix (positions < its answer position), left padded to ``ctx``."""
    out = []
    for l in range(lm.adapter.n_layers):
        ks, vs = [], []
        for p, t in units:
            n = preps[p].positions[t]
            k, v = preps[p].keys[l][:, :n], preps[p].values[l][:, :n]
            ks.append(torch.cat([k.new_zeros(k.shape[0], ctx - n, k.shape[-1]), k], 1))
            vs.append(torch.cat([v.new_zeros(v.shape[0], ctx - n, v.shape[-1]), v], 1))
        out.append((torch.stack(ks), torch.stack(vs)))
    return out


def _forward_group(lm: LoadedModel, preps: Sequence[_Prepared], rows: _Rows, layer: int, alphas: torch.Tensor,
                   unit_kv: Sequence[tuple[torch.Tensor, torch.Tensor]], unit_of: dict[tuple[int, int], int],
                   ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows that all scale ``layer``: one-token continuations of their clean caches; returns (x, final hidden).

    The graph starts at the injected neurons, so the backward pass only runs through layers >= ``layer``.
    """
    dev, dt = lm.device, lm.dtype
    pt = list(zip(rows.prompt.tolist(), rows.token.tolist()))
    R = len(pt)
    pos = torch.tensor([preps[p].positions[t] for p, t in pt], device=dev)
    idx = torch.tensor([unit_of[u] for u in pt], device=dev)
    single = bool((idx == idx[0]).all())
    kv = [(k[idx[:1]].expand(R, *k.shape[1:]), v[idx[:1]].expand(R, *v.shape[1:])) if single else (k[idx], v[idx])
          for k, v in unit_kv]
    att = (torch.arange(ctx + 1, device=dev)[None, :] >= (ctx - pos)[:, None]).long()
    ids = torch.tensor([preps[p].ids[preps[p].positions[t]] for p, t in pt], device=dev)
    a = torch.stack([preps[p].acts[t, layer] for p, t in pt]).to(dev)
    b = torch.stack([preps[p].base[t, layer] for p, t in pt]).to(dev)
    x = (b + alphas[rows.step].to(dev)[:, None] * (a - b)).to(dt).requires_grad_(True)
    base = lm.model.base_model
    kwargs: dict[str, Any] = {"input_ids": ids[:, None], "attention_mask": att, "use_cache": True,
                              _cache_kw(base): _make_cache(kv)}
    if "position_ids" in _forward_kwargs(base):
        kwargs["position_ids"] = pos[:, None]
    hidden = torch.stack([preps[p].hidden_in[t, layer] for p, t in pt])[:, None, :]
    with _start_at(lm, layer, hidden, preps[0].layer_out), \
            _point_hook(lm, preps[0].method, layer, lambda acts: x[:, None, :].expand_as(acts)), \
            torch.enable_grad():
        h = base(**kwargs).last_hidden_state[:, -1]
    return x, h


@contextmanager
def _start_at(lm: LoadedModel, layer: int, hidden: torch.Tensor, out_len: int) -> Iterator[None]:
    """Skip decoder layers below ``layer`` and feed ``layer`` the clean hidden state instead.

    Valid because a one-token row equals the clean forward below the layer it scales; the layers' attention
    caches below ``layer`` are simply not extended (nothing reads them afterwards).
    """
    if layer == 0:
        yield
        return
    layers = lm.adapter.layers

    def passthrough(*args: Any, **kwargs: Any) -> Any:
        hs = args[0] if args else kwargs["hidden_states"]
        return (hs, *([None] * (out_len - 1))) if out_len else hs

    def feed(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    for j in range(layer):
        layers[j].forward = passthrough
    handle = layers[layer].register_forward_pre_hook(feed, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
        for j in range(layer):
            del layers[j].forward


def _forward_staircase(lm: LoadedModel, preps: Sequence[_Prepared], rows: _Rows, alphas: torch.Tensor,
                       unit_kv: Sequence[tuple[torch.Tensor, torch.Tensor]], unit_of: dict[tuple[int, int], int],
                       ctx: int) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Rows scaling any layers in one forward (:mod:`memla_utils.attribution_stair`).

    Returns ``order`` (the rows sorted by layer: row ``order[i]`` of ``rows`` is row ``i`` of the pass), the
    injected values of each scaled layer (leaves, in that order) and the final hidden state ``[R, hidden]``.
    Raises :class:`~memla_utils.attribution_stair.StaircaseUnsupported` for layers it cannot cut to a prefix.
    """
    dev, dt, n_layers = lm.device, lm.dtype, lm.adapter.n_layers
    order = torch.argsort(rows.layer, stable=True)
    prompt, token, layer, step = rows.prompt[order], rows.token[order], rows.layer[order], rows.step[order]
    pt = list(zip(prompt.tolist(), token.tolist()))
    lay = layer.tolist()
    R = len(pt)
    starts = [0] + torch.cumsum(torch.bincount(layer, minlength=n_layers), 0).tolist()
    pos = torch.tensor([preps[p].positions[t] for p, t in pt], device=dev)
    idx = torch.tensor([unit_of[u] for u in pt], device=dev)
    single = bool((idx == idx[0]).all())
    kv = []
    for j, (k, v) in enumerate(unit_kv):
        n = max(starts[j + 1], 1)
        kv.append((k[idx[:1]].expand(n, *k.shape[1:]), v[idx[:1]].expand(n, *v.shape[1:])) if single
                  else (k[idx[:n]], v[idx[:n]]))
    att = (torch.arange(ctx + 1, device=dev)[None, :] >= (ctx - pos)[:, None]).long()
    ids = torch.tensor([preps[p].ids[preps[p].positions[t]] for p, t in pt], device=dev)
    a = torch.stack([preps[p].acts[t, l] for (p, t), l in zip(pt, lay)]).to(dev)  # type: ignore[index]
    b = torch.stack([preps[p].base[t, l] for (p, t), l in zip(pt, lay)]).to(dev)  # type: ignore[index]
    x_all = (b + alphas[step].to(dev)[:, None] * (a - b)).to(dt)
    clean_in = torch.stack([preps[p].hidden_in[t, l] for (p, t), l in zip(pt, lay)])[:, None, :]  # type: ignore[index]
    base = lm.model.base_model
    kwargs: dict[str, Any] = {"input_ids": ids[:, None], "attention_mask": att, "use_cache": True,
                              _cache_kw(base): _make_cache(kv)}
    if "position_ids" in _forward_kwargs(base):
        kwargs["position_ids"] = pos[:, None]
    xs: list[torch.Tensor] = []
    with staircase(lm.adapter.layers, starts, clean_in, preps[0].layer_out), ExitStack() as stack, \
            torch.enable_grad():
        for j in range(n_layers):
            if starts[j + 1] > starts[j]:
                xs.append(x_all[starts[j]:starts[j + 1]].detach().requires_grad_(True))
                stack.enter_context(_point_hook(lm, preps[0].method, j, inject(xs[-1], starts[j])))
        h = base(**kwargs).last_hidden_state[:, -1]
    if h.shape[0] != R:
        raise StaircaseUnsupported(f"the staircase pass returned {h.shape[0]} rows, expected {R}")
    return order, xs, h


def _run_rows(lm: LoadedModel, preps: Sequence[_Prepared], rows: _Rows, alphas: torch.Tensor,
              config: AttributionConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk of rows: returns dF/dx ``[R, N]`` (float32) and F ``[R]`` (float64), on the model's device.

    All rows go through the model in one staircase pass (:func:`_forward_staircase`); architectures whose layers
    cannot be cut to a prefix of the batch fall back to one forward per scaled layer (each group's graph starts
    at its layer). The vocabulary projection runs once for the whole chunk, then one backward call covers it.
    """
    pt = list(zip(rows.prompt.tolist(), rows.token.tolist()))
    units = sorted(set(pt))
    unit_of = {u: i for i, u in enumerate(units)}
    ctx = max(preps[p].positions[t] for p, t in units)
    unit_kv = _unit_caches(lm, preps, units, ctx)
    try:
        order, xs, h = _forward_staircase(lm, preps, rows, alphas, unit_kv, unit_of, ctx)
        hs = [h]
    except StaircaseUnsupported as err:
        log.debug("%s: staircase pass not supported (%s); one forward per layer", lm.name, err)
        sels, xs, hs = [], [], []
        for l in sorted(set(rows.layer.tolist())):
            sel = torch.nonzero(rows.layer == l).flatten()
            sub = _Rows(rows.prompt[sel], rows.token[sel], rows.layer[sel], rows.step[sel])
            x, hg = _forward_group(lm, preps, sub, l, alphas, unit_kv, unit_of, ctx)
            sels.append(sel)
            xs.append(x)
            hs.append(hg)
        order = torch.cat(sels)
    h_all = torch.cat([h.detach() for h in hs])
    dev_order = order.to(lm.device)
    tgt = torch.tensor([preps[p].targets[t] for p, t in pt], device=lm.device)[dev_order]
    weight, bias, softcap = _head(lm)
    logp, g = _logprob_and_grad(h_all, tgt, weight, bias, softcap, config.vocab_chunk, config.head_dtype(lm.dtype))
    _, dvalue = _value(logp, config.target)
    outs = (dvalue[:, None] * g).to(lm.dtype).split([len(h) for h in hs])
    grads = torch.autograd.grad(hs, xs, grad_outputs=list(outs))
    gx = torch.empty(len(pt), lm.adapter.n_neurons, dtype=torch.float32, device=lm.device)
    val = torch.empty(len(pt), dtype=torch.float64, device=lm.device)
    gx[dev_order] = torch.cat(grads).float()
    val[dev_order] = _value(logp.double(), config.target)[0]
    return gx, val


def _alphas(config: AttributionConfig) -> tuple[torch.Tensor, int]:
    """Path points and how many of them enter the gradient sum (the rest only serve the self-checks).

    exact: ``linspace(0, 1, steps)``, all of them. memla4mke: ``k/steps`` for ``k < steps`` (``garns.scaled_input``)
    plus ``alpha = 1``, which is only evaluated (clean-forward self-check, ``F(actual)`` for completeness).
    """
    if config.method == "memla4mke":
        return torch.cat([torch.arange(config.steps, dtype=torch.float32) / config.steps, torch.ones(1)]), config.steps
    return torch.linspace(0.0, 1.0, config.steps, dtype=torch.float32), config.steps


def attribute_batch(lm: LoadedModel, items: Sequence[tuple[str, str, str]], config: AttributionConfig,
                    *, progress: bool = False) -> list[PromptAttribution]:
    """Scores of several ``(prompt, answer, language)`` items (``config.method``), all rows batched across items.

    Returns one :class:`PromptAttribution` per item, scores ``[n_layers, n_neurons]`` float32.
    Raises ``ValueError`` for prompts/answers that tokenize to nothing or exceed a sliding window, and
    ``RuntimeError`` when an architecture breaks the cached-continuation shortcut (self-checks).
    """
    if not items:
        return []
    groups: list[list[int]] = []   # item -> indices of its prepared sequences
    preps: list[_Prepared] = []
    for p, a, lang in items:
        sub = _prepare(lm, p, a, lang, config)
        groups.append(list(range(len(preps), len(preps) + len(sub))))
        preps.extend(sub)
    n_layers, n_neurons, steps = lm.adapter.n_layers, lm.adapter.n_neurons, config.steps
    alphas, n_grad = _alphas(config)
    n_alpha = len(alphas)
    # rows beyond the gradient points (memla4mke's alpha = 1) only serve the self-check: the first and the last
    # layer suffice (the first one's row runs through every layer's cached continuation, the last one's is fed
    # the captured clean input of the top layer); every layer's F(actual) is the clean value
    checked = sorted({0, n_layers - 1})
    grid = [(p, t, l, k) for p, pr in enumerate(preps) for t in range(len(pr.targets))
            for l in range(n_layers) for k in range(n_alpha) if k < n_grad or l in checked]
    context = max(max(pr.positions) for pr in preps)
    max_rows = config.max_rows or _auto_max_rows(lm, context)
    grad_sum = [torch.zeros(len(pr.targets), n_layers, n_neurons, dtype=torch.float32) for pr in preps]
    values = [torch.zeros(len(pr.targets), n_layers, n_alpha, dtype=torch.float64) for pr in preps]
    for pr, val in zip(preps, values):
        assert pr.clean_value is not None
        val[:, :, -1] = pr.clean_value.cpu()[:, None]  # overwritten where an alpha = 1 row is evaluated
    bar = tqdm(total=len(grid), desc="IG rows", unit="row", disable=not progress, leave=False)
    for s in range(0, len(grid), max_rows):
        chunk = torch.tensor(grid[s:s + max_rows], dtype=torch.long)
        rows = _Rows(chunk[:, 0], chunk[:, 1], chunk[:, 2], chunk[:, 3])
        gx, val = _run_rows(lm, preps, rows, alphas, config)
        gx, val = gx.cpu(), val.cpu()
        for p in rows.prompt.unique().tolist():
            sel = rows.prompt == p
            values[p][rows.token[sel], rows.layer[sel], rows.step[sel]] = val[sel]
            sel &= rows.step < n_grad
            grad_sum[p].index_put_((rows.token[sel], rows.layer[sel]), gx[sel], accumulate=True)
        bar.update(len(chunk))
    bar.close()
    exact_dtype = lm.dtype == torch.float32 and config.head_dtype(lm.dtype) == torch.float32
    for pr, val in zip(preps, values):  # self-check: alpha = 1 rows are the clean forward, whatever layer they scale
        assert pr.clean_value is not None
        got = val[:, :, -1] if n_grad == n_alpha else val[:, checked, -1]
        clean = pr.clean_value.cpu()[:, None].expand_as(got)
        tol = (1e-3 if exact_dtype else 0.1) * max(1.0, float(clean.abs().max()))
        if not torch.allclose(got, clean, atol=tol, rtol=1e-3):
            raise RuntimeError(f"{lm.name}: the cached one-token continuation does not reproduce the clean forward "
                               f"(max |diff| = {float((got - clean).abs().max()):.3g}); this architecture's "
                               f"attention cache is not supported by attribute_batch")
    out = []
    for (prompt, answer, language), idx in zip(items, groups):
        path_ig = torch.zeros(n_layers, n_neurons, dtype=torch.float32)  # (a - b) x mean gradient, summed
        deltas = torch.zeros(n_layers, dtype=torch.float64)
        target_value = 0.0
        for j in idx:
            pr = preps[j]
            assert pr.acts is not None and pr.base is not None and pr.clean_value is not None
            path_ig += ((pr.acts - pr.base).cpu() * grad_sum[j] / steps).sum(0)
            deltas += (values[j][:, :, -1] - values[j][:, :, 0]).sum(0)
            target_value += float(pr.clean_value.sum())
        if config.method == "memla4mke":
            # garns.get_scores_for_layer: every token's summed gradient times the ORIGINAL prompt's value / steps
            a0 = preps[idx[0]].acts[0].cpu()  # type: ignore[index]
            scores = sum((a0 * grad_sum[j][0] / steps for j in idx), torch.zeros(n_layers, n_neurons))
        else:
            scores = path_ig
        att = PromptAttribution(prompt, answer, language, scores.float(), path_ig.sum(-1).float(), deltas.float(),
                                target_value)
        log.debug("IG completeness %r [%s]: max |path IG - delta| / max |delta| = %.3g (steps=%d)",
                  prompt, language, att.completeness_error, steps)
        out.append(att)
    log.info("IG completeness over %d prompt(s) (%s): worst relative error %.3g (Riemann error at steps=%d)",
             len(out), config.method, max(a.completeness_error for a in out), steps)
    return out


def attribute_prompt(lm: LoadedModel, prompt: str, answer: str, language: str,
                     config: AttributionConfig | None = None) -> torch.Tensor:
    """Scores ``[n_layers, n_neurons]`` float32 of one prompt (see the module docstring for the semantics)."""
    return attribute_batch(lm, [(prompt, answer, language)], config or AttributionConfig())[0].scores


# --------------------------------------------------------------------------------------------- the slow reference
def attribute_prompt_loop(lm: LoadedModel, prompt: str, answer: str, language: str,
                          config: AttributionConfig | None = None, *, batch_size: int = 4) -> torch.Tensor:
    """The knowledge-neurons style computation the batched pass replaces (benchmark reference, same scores).

    One layer at a time, path points in batches of ``batch_size``, a full forward (all positions, full logits)
    and backward per batch, per answer token (for ``memla4mke``: per greedy-extended prompt, as
    ``garns.get_scores_for_layer``).
    """
    config = config or AttributionConfig()
    preps = _prepare(lm, prompt, answer, language, config)
    alphas, n_grad = _alphas(config)
    alphas = alphas[:n_grad]
    scores = torch.zeros(lm.adapter.n_layers, lm.adapter.n_neurons, dtype=torch.float32)
    for prep in preps:
        assert prep.acts is not None and prep.base is not None
        for t, (pos, target) in enumerate(zip(prep.positions, prep.targets)):
            ids = torch.tensor([prep.ids[: pos + 1]], device=lm.device)
            for l in range(lm.adapter.n_layers):
                a, b = prep.acts[t, l], prep.base[t, l]
                grad = torch.zeros(lm.adapter.n_neurons, dtype=torch.float32, device=lm.device)
                for chunk in alphas.split(batch_size):
                    x = (b + chunk.to(lm.device)[:, None] * (a - b)).to(lm.dtype).requires_grad_(True)

                    def patch(acts: torch.Tensor, x: torch.Tensor = x, pos: int = pos) -> torch.Tensor:
                        acts = acts.expand(x.shape[0], *acts.shape[1:]).clone()
                        acts[:, pos] = x
                        return acts

                    with _point_hook(lm, prep.method, l, patch), torch.enable_grad():
                        logits = lm.model(input_ids=ids.expand(len(chunk), -1)).logits[:, pos].float()
                        logp = torch.log_softmax(logits, -1)[:, target]
                        value = logp.exp() if config.target == "prob" else logp
                        (g,) = torch.autograd.grad(value.sum(), x)
                    grad += g.float().sum(0)
                mult = preps[0].acts[0, l] if config.method == "memla4mke" else a - b  # type: ignore[index]
                scores[l] += (mult * grad / config.steps).cpu()
    return scores


# --------------------------------------------------------------------------------------------- records, cache
def record_items(record: Record, language: str, config: AttributionConfig) -> list[tuple[str, str, str]]:
    """The ``(prompt, answer, language)`` items attributed for one record and language."""
    view = record.for_language(language)
    answer = view.target_true if config.answer == "true" else view.target_new
    if answer is None or not answer.strip():
        if config.answer == "true":
            log.warning("record %r [%s] has no target_true: attributing target_new instead", record.example_id,
                        language)
            answer = view.target_new
        if answer is None or not answer.strip():
            raise RecordError(f"record {record.example_id!r}: field 'edit.{language}.target_"
                              f"{'new' if config.answer == 'new' else 'true'}' is empty; nothing to attribute")
    prompts = [view.prompt] + (view.paraphrase_prompts if config.use_paraphrases else [])
    seen: list[str] = []
    for p in prompts:
        if p and p.strip() and p not in seen:
            seen.append(p)
    return [(p, answer, language) for p in seen]


def _item_key(lm: LoadedModel, record: Record, item: tuple[str, str, str], config: AttributionConfig) -> str:
    prompt, answer, language = item
    return cache_key("attribution", model=lm.fingerprint, dtype=str(lm.dtype), record=record.content_hash(),
                     language=language, prompt=prompt, answer=answer, params=config.score_params(), join=JOIN_VERSION)


def record_attributions(lm: LoadedModel, record: Record, languages: str | Sequence[str],
                        config: AttributionConfig | None = None, cache: ArtifactCache | None = None,
                        *, progress: bool = False, dense: bool = False) -> dict[str, list[PromptAttribution]]:
    """Scores of every prompt of ``record`` in each language; cached items are read, the rest computed.

    ``cache=None`` uses the project cache (:class:`ArtifactCache` default root); pass
    ``ArtifactCache(enabled=False)`` to disable caching. Each prompt is attributed on its own (one
    :func:`attribute_batch` call) and written as soon as it finishes, so an interrupted run resumes where it
    stopped and a prompt's scores do not depend on which other prompts were cached. Raises
    :class:`~memla_utils.run_parts.DeadlineReached` before computing anything when a part of a multi-session run
    (``batch --hours``) has passed its deadline.

    With a durable cache (``cache.durable_root``: a multi-session run's tracked ``<run_dir>/cache``) every prompt's
    compact form (:meth:`PromptAttribution.compact`) is written there too, read when the local cache lacks the
    prompt (a part on a fresh machine), and returned whatever its source, so that a run's numbers never depend
    on which machine computed what. ``dense=True`` returns the dense scores (computed again where only the compact
    form is stored): for rank statistics over all scores.
    """
    config = config or AttributionConfig()
    cache = cache if cache is not None else ArtifactCache()
    compact = cache.durable_root is not None and cache.enabled and not dense
    langs = [languages] if isinstance(languages, str) else list(languages)
    items = {lang: record_items(record, lang, config) for lang in langs}
    found: dict[tuple[str, str, str], PromptAttribution] = {}
    missing: list[tuple[str, str, str]] = []
    for lang in langs:
        for item in items[lang]:
            key = _item_key(lm, record, item, config)
            t = cache.get_tensors(key)
            if t is not None:
                found[item] = PromptAttribution.from_tensors(t, *item)
                if compact and cache.get_durable_tensors(key) is None:
                    cache.put_durable_tensors(key, found[item].compact_tensors(), metadata=_metadata(record, item))
            elif compact and (c := cache.get_durable_tensors(key)) is not None:
                found[item] = PromptAttribution.from_compact_tensors(c, *item)
            elif item not in missing:
                missing.append(item)
    if missing:
        # a part of a multi-session run (batch --hours) stops here, before new work; what is cached stays
        check_deadline(f"attribution of record {record.example_id!r} ({len(missing)} prompt(s) not cached)")
        log.info("attributing %d prompt(s) of record %r (%d cached)", len(missing), record.example_id, len(found))
        # one prompt per batch: its rows, padding and chunking then depend on the prompt alone, so its scores are
        # the same bits whatever else is cached, in whichever order or run they were computed (attribute_batch
        # over several prompts pads them to the longest and mixes their rows: equal only to ~1e-6)
        for item in missing:
            att = attribute_batch(lm, [item], config, progress=progress)[0]
            key = _item_key(lm, record, item, config)
            cache.put_tensors(key, att.to_tensors(), metadata=_metadata(record, item))
            if cache.durable_root is not None and cache.enabled:
                cache.put_durable_tensors(key, att.compact_tensors(), metadata=_metadata(record, item))
            found[item] = att
    if compact:
        found = {item: att.compact() for item, att in found.items()}
    return {lang: [found[item] for item in items[lang]] for lang in langs}


def _metadata(record: Record, item: tuple[str, str, str]) -> dict[str, str]:
    return {"prompt": item[0], "answer": item[1], "language": item[2], "example_id": str(record.example_id)}


def knowledge_neurons(lm: LoadedModel, record: Record, language: str, config: AttributionConfig | None = None,
                      cache: ArtifactCache | None = None) -> NeuronMasks:
    """The knowledge neurons of ``record`` in ``language``: union over its prompts after thresholding (cached)."""
    config = config or AttributionConfig()
    atts = record_attributions(lm, record, language, config, cache)[language]
    return neurons_from_attributions(atts, config.threshold, lm.adapter.n_neurons)


__all__ = ["COMPACT_FLOOR", "AttributionConfig", "PromptAttribution", "attribute_batch", "attribute_prompt", "attribute_prompt_loop",
           "knowledge_neurons", "neurons_from_attributions", "record_attributions", "record_items",
           "threshold_scores"]
