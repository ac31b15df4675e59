"""Preparation of one attributed item for the IG pass: its tokenized sequences, their clean forward (key/value
cache, the attributed values and the hidden state entering each decoder layer at the answer positions), the
baseline, and the chunked vocabulary projection that gives ``log p(answer)`` and its gradient with respect to the
final hidden state (used here for the logits self-check and by the batched pass for every row).

Sources (memla4mke, ``AMIG/knowledge_neurons/``): the attributed value of ``"memla4mke"`` is the output of the gate
projection (gated MLPs) or of the first projection (``KnowledgeNeurons.__init__``: ``input_ff_attr``;
``patch.register_hook``/``Patch.forward`` read and replace it at the last position); that of ``"exact"`` is the
down projection's input. memla4mke's prompts go through ``KnowledgeNeurons._prepare_inputs`` (``"[MASK] ."``
dropped, stripped) and grow by the original prompt's greedy token per answer token
(``garns.get_scores_for_layer``); its baseline is the mean over copies of the prompt with each token in turn
replaced by EOS (``garns.scaled_input``). Answer ids come from this project's join
(:func:`memla_utils.text.join_prompt_answer`). The full description: :mod:`memla_utils.attribution`.
"""
from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from .attribution_config import AttributionConfig
from .head_logprob import logprob_and_grad, output_head
from .models import LoadedModel
from .text import join_prompt_answer


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
    final_hidden: torch.Tensor | None = None  # [A, hidden] clean final hidden state (the head's input)
    model_logp: torch.Tensor | None = None    # [A] float32 log p(target) from the model's own logits, or None

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
    return output_head(lm.model)


def _value(logp: torch.Tensor, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """F and dF/dlogp for the configured target."""
    if target == "prob":
        p = logp.exp()
        return p, p
    return logp, torch.ones_like(logp)


def _prepare(lm: LoadedModel, prompt: str, answer: str, language: str, config: AttributionConfig,
             *, finish: bool = True) -> list[_Prepared]:
    """The prepared sequences of one item: one for ``exact`` (teacher forcing shares the prefix), one per answer
    token for ``memla4mke`` (each answer token has its own greedy-extended prompt).

    ``finish=False`` leaves ``clean_value`` unset: the caller passes the sequences of several items to
    :func:`_clean_values` at once (one pass over the vocabulary projection for all of them).
    """
    if config.method == "memla4mke":
        preps = _prepare_memla4mke(lm, prompt, answer, language, config)
    else:
        tok = lm.tokenizer
        joined = join_prompt_answer(tok, prompt, answer, language)
        p_ids, a_ids = joined.prompt_ids, joined.answer_ids
        if not p_ids:
            raise ValueError(f"prompt {prompt!r} tokenizes to nothing")
        preps = [_run_clean(lm, _Prepared(prompt, answer, language, p_ids + a_ids[:-1], len(p_ids), a_ids), config)]
    if finish:
        _clean_values(lm, preps, config)
    return preps


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
        # the model's own logits are needed for the greedy token and the projection check: the first prompt only
        prep = _run_clean(lm, _Prepared(text, answer, language, ids, len(ids), [target], method="memla4mke"), config,
                          logits=i == 0)
        if i == 0 and len(targets) > 1:
            greedy = tok.decode(prep.next_token)
        preps.append(prep)
    return preps


def _run_clean(lm: LoadedModel, prep: _Prepared, config: AttributionConfig, *, logits: bool = True) -> _Prepared:
    """Run the clean forward (cache, activations, final hidden state) of a tokenized sequence and its baseline.

    With ``logits``, the model's own forward also yields its logits at the answer positions (``logits_to_keep``
    where the architecture takes it: the answer positions are the last ``A``): ``next_token`` and ``model_logp``,
    the reference of the projection check in :func:`_clean_values`. Without, only the decoder runs (``base_model``):
    nothing reads the vocabulary projection here.
    """
    prompt = prep.prompt
    window = getattr(lm.model.config, "sliding_window", None)
    if window and len(prep.ids) >= int(window):
        raise ValueError(f"prompt {prompt!r} is {len(prep.ids)} tokens, longer than the sliding window ({window}) "
                         f"the cached continuation supports")
    model, dev = lm.model, lm.device
    ids = torch.tensor([prep.ids], device=dev)
    pos = torch.tensor(prep.positions, device=dev)
    if prep.positions[-1] != len(prep.ids) - 1:
        raise AssertionError(f"answer positions {prep.positions} are not the last of {len(prep.ids)} tokens")
    captured: dict[str, torch.Tensor] = {}

    def head_hook(module: torch.nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
        captured["head_in"] = args[0]

    def body_hook(module: torch.nn.Module, args: tuple[Any, ...], out: Any) -> None:
        captured["h"] = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    layer_in: list[torch.Tensor] = []
    layer_out: list[int] = []

    def in_hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        layer_in.append((args[0] if args else kwargs["hidden_states"])[0, pos])

    def out_hook(module: torch.nn.Module, args: tuple[Any, ...], out: Any) -> None:
        layer_out.append(len(out) if isinstance(out, tuple) else 0)

    handles = [model.base_model.register_forward_hook(body_hook)]
    if logits:
        handles.append(model.get_output_embeddings().register_forward_hook(head_hook))
    for layer in lm.adapter.layers:
        handles.append(layer.register_forward_pre_hook(in_hook, with_kwargs=True))
        handles.append(layer.register_forward_hook(out_hook))
    try:
        with torch.no_grad(), _capture_all(lm, prep.method) as probes:
            if logits:
                keep = {"logits_to_keep": len(pos)} if "logits_to_keep" in _forward_kwargs(model) else {}
                out = model(input_ids=ids, use_cache=True, **keep)
            else:
                out = model.base_model(input_ids=ids, use_cache=True)
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
    prep.final_hidden = captured["h"][0, pos]
    if logits:
        # the head's input must be the decoder's output, which is all the batched pass computes for its rows
        head_in = captured["head_in"][0, -len(pos):]
        if not torch.equal(head_in, prep.final_hidden):
            raise RuntimeError(f"{lm.name}: the output head's input is not the decoder's final hidden state; this "
                               f"architecture is not supported by the chunked projection")
        kept = out.logits[0, -len(pos):].float()  # [A, V]: positions n_prompt - 1 ... (the last A)
        tgt = torch.tensor(prep.targets, device=dev)
        prep.model_logp = torch.log_softmax(kept, -1).gather(-1, tgt[:, None])[:, 0]
        prep.next_token = int(kept[0].argmax())
    prep.base = _baseline(lm, prep, config)
    return prep


def _clean_values(lm: LoadedModel, preps: Sequence[_Prepared], config: AttributionConfig) -> None:
    """``clean_value`` of every prepared sequence, from one pass of the chunked projection over all of them.

    Checks the projection against the model's own logits where the clean forward computed them (``model_logp``).
    Raises ``RuntimeError`` when they differ (logit scaling or soft-capping the projection does not reproduce).
    """
    if not preps:
        return
    weight, bias, softcap = _head(lm)
    h = torch.cat([p.final_hidden for p in preps])  # type: ignore[misc]
    tgt = torch.tensor([t for p in preps for t in p.targets], device=h.device)
    logp, _ = logprob_and_grad(h, tgt, weight, bias, softcap, config.vocab_chunk, config.head_dtype(lm.dtype))
    # a structural mismatch (logit scaling, soft-capping) is off by whole nats; bfloat16 rounding by ~0.1
    tol = 1e-3 if lm.dtype == torch.float32 and config.head_dtype(lm.dtype) == torch.float32 else 0.3
    for prep, value in zip(preps, logp.split([len(p.targets) for p in preps])):
        ref = prep.model_logp
        if ref is not None and not torch.allclose(value, ref, atol=tol, rtol=tol):
            raise RuntimeError(f"{lm.name}: the model's logits are not lm_head(final hidden state) "
                               f"(max |diff| of log p = {float((value - ref).abs().max()):.3g}); logit scaling of "
                               f"this architecture is not supported by the chunked projection")
        prep.clean_value = _value(value.double(), config.target)[0]


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
