"""The batched integrated-gradients pass: every (prompt, answer token, layer, step) row of a batch of items in
chunks of one-token continuations, and the scores it sums them into (:func:`attribute_batch`).

Sources: the path points and the multiplier follow memla4mke (``garns.scaled_input``: points ``k/steps``,
``k < steps``; ``garns.get_scores_for_layer``: summed gradient x the original prompt's value / ``steps``, summed
over answer tokens) or exact IG (``linspace(0, 1, steps)``, ``(a - b)`` x the mean gradient); both are described
in :mod:`memla_utils.attribution`. The items are prepared by :mod:`memla_utils.attribution_prep`.

Why it is fast (same numbers as the loop of :mod:`memla_utils.attribution_reference`, see
``benchmarks/bench_attribution.py``): changing layer ``l``'s neurons at position ``p`` changes nothing at positions
``< p`` and nothing below layer ``l``, so every (layer, step) *row* is a one-token continuation of the clean
prompt's key/value cache: all rows of all layers, steps, answer tokens and prompts of a batch go through the model
together as single tokens, chunked to fit memory (``max_rows``), in one *staircase* forward per chunk
(:mod:`memla_utils.attribution_stair`: layer ``j`` runs the rows scaling layers ``<= j``, so the matrix products see
hundreds of rows; bloom's alibi falls back to one forward per scaled layer). Only that one position reaches the
vocabulary projection, which is computed in vocabulary chunks with an online softmax that yields the gradient of
``log p(answer)`` with respect to the final hidden state in the same pass, in float32. Autograd then carries it back
to the injected neurons. Two self-checks guard the shortcut: the projection must reproduce the model's own logits,
and the ``alpha = 1`` rows must reproduce the clean forward (``memla4mke`` adds ``alpha = 1`` rows at the first and
last layer for this check; they do not enter the scores, and ``F(actual)`` for the completeness log is the clean
value). The completeness of IG (sum over a layer of ``(a - b)`` x the mean gradient vs ``F(a) - F(b)``) is logged.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from .attribution_config import AttributionConfig
from .attribution_prep import (
    _cache_kw,
    _clean_values,
    _forward_kwargs,
    _head,
    _make_cache,
    _point_hook,
    _prepare,
    _Prepared,
    _value,
)
from .attribution_scores import PromptAttribution
from .attribution_stair import StaircaseUnsupported, inject, staircase
from .head_logprob import logprob_and_grad
from .models import LoadedModel
from .progress import tqdm

#: the public entry point's logger, so that log lines and their filters keep the name they had before the split
log = logging.getLogger("memla_utils.attribution")


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
    logp, g = logprob_and_grad(h_all, tgt, weight, bias, softcap, config.vocab_chunk, config.head_dtype(lm.dtype))
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
        sub = _prepare(lm, p, a, lang, config, finish=False)
        groups.append(list(range(len(preps), len(preps) + len(sub))))
        preps.extend(sub)
    _clean_values(lm, preps, config)  # one pass of the vocabulary projection for every item's clean value
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
    """Scores ``[n_layers, n_neurons]`` float32 of one prompt (semantics: :mod:`memla_utils.attribution`)."""
    return attribute_batch(lm, [(prompt, answer, language)], config or AttributionConfig())[0].scores
