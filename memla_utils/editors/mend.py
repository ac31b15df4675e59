"""MEND (Mitchell et al., 2022): a small hypernetwork turns the fine-tuning gradient into the edit.

For a down projection ``W`` the gradient of the edit loss is a sum of rank-one terms ``δ_t u_tᵀ`` (``u_t`` = the
layer's neurons at token ``t``, ``δ_t`` = the gradient at its output). MEND feeds the normalised pair
``[u_t; δ_t]`` through a per-layer low-rank residual MLP (identity at initialisation) and applies
``ΔW = -α_l Σ_t δ̃_t ũ_tᵀ`` with a learned step ``α_l`` per layer. The network is trained (meta-learned) on a
*training split* of records that never overlaps the evaluated ones: loss = ``c_edit`` · NLL of the new answer
on the edit prompt and a paraphrase after the edit + KL on an unrelated fact (MEND: c_edit = 0.1).

Simplifications against the paper, to keep training to a minute or two on CPU with the default model: one
editor net per layer with a rank-``rank`` hidden layer (MEND: 1920 hidden units, shared across layers of
equal shape), normalisation statistics estimated once from the training split (MEND: running), ``train_steps``
outer steps (MEND: until convergence on 160k zsRE edits). The trained network is cached (safetensors) under
the model fingerprint, the training records' hashes and the config; its training time is reported in
``info["fit_seconds"]`` and in every edit's ``info``.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..cache import ArtifactCache, cache_key
from ..mkeb.record import Record
from ..models import LoadedModel
from ..progress import tqdm
from ..text import JOIN_VERSION, PromptAnswerBatch, build_batch
from .base import BaseEditor, Edit, EditError, recording_edit, register_editor
from .locate import add_to_down_proj, down_proj_param
from .objective import answer_nll, edit_batch, logits_at

log = logging.getLogger(__name__)


@dataclass
class MendConfig:
    """MEND hyperparameters: last 3 layers (as MEND edits the last 3 blocks), c_edit 0.1, Adam meta-training."""

    layers: tuple[int, ...] | None = None   # None = the last 3 layers
    rank: int = 16
    train_steps: int = 60
    meta_lr: float = 1e-3
    c_edit: float = 0.1
    init_step: float = 0.05     # α_l at start: the first edit changes W by this share of its Frobenius norm
    train_languages: tuple[str, ...] | None = None  # None = every language of each training record
    seed: int = 0


class GradientTransform(nn.Module):
    """``[u; δ] -> [u; δ] + B relu(A [u; δ] + a)`` with ``B = 0`` at start (MEND's identity initialisation)."""

    def __init__(self, n_in: int, n_out: int, rank: int) -> None:
        super().__init__()
        self.split = n_in
        self.a = nn.Linear(n_in + n_out, rank)
        self.b = nn.Linear(rank, n_in + n_out)
        nn.init.zeros_(self.b.weight)
        nn.init.zeros_(self.b.bias)
        self.register_buffer("mean", torch.zeros(n_in + n_out))
        self.register_buffer("std", torch.ones(n_in + n_out))
        self.log_step = nn.Parameter(torch.zeros(()))

    def forward(self, u: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """``ΔW`` ``[n_out, n_in]`` (nn.Linear layout) from token inputs ``u [T, n_in]`` and grads ``δ [T, n_out]``."""
        x = (torch.cat([u, delta], -1) - self.mean) / self.std
        x = x + self.b(torch.relu(self.a(x)))
        u_t, d_t = x[:, : self.split], x[:, self.split:]
        return -torch.exp(self.log_step) * (d_t.T @ u_t)


@contextmanager
def _gradient_probes(lm: LoadedModel, layers: Sequence[int]) -> Iterator[dict[int, dict[str, torch.Tensor]]]:
    """Capture each layer's down-projection input ``u`` and a zero tensor added to its output (grad = ``δ``)."""
    box: dict[int, dict[str, torch.Tensor]] = {l: {} for l in layers}
    handles = []
    for l in layers:
        def hook(mod: nn.Module, args: tuple, out: torch.Tensor, l: int = l) -> torch.Tensor:
            probe = torch.zeros_like(out, requires_grad=True)
            box[l]["u"], box[l]["probe"] = args[0].detach(), probe
            return out + probe
        handles.append(lm.adapter.down_proj(l).register_forward_hook(hook))
    try:
        yield box
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _weight_deltas(lm: LoadedModel, deltas: dict[int, torch.Tensor]) -> Iterator[None]:
    """Run forwards as if ``W_l += ΔW_l`` (differentiable in ``ΔW``): the output gains ``x ΔWᵀ``."""
    with ExitStack() as stack:
        for l, dw in deltas.items():
            def hook(mod: nn.Module, args: tuple, out: torch.Tensor, dw: torch.Tensor = dw) -> torch.Tensor:
                return out + (args[0].to(dw.dtype) @ dw.T).to(out.dtype)
            h = lm.adapter.down_proj(l).register_forward_hook(hook)
            stack.callback(h.remove)
        yield


def token_gradients(lm: LoadedModel, layers: Sequence[int], batch: PromptAnswerBatch
                    ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """``(u, δ)`` per layer over the real tokens of ``batch`` for the NLL of its answers."""
    batch = batch.to(lm.device)
    with torch.enable_grad(), _gradient_probes(lm, layers) as box:
        loss = answer_nll(lm.model, batch).sum()
        grads = torch.autograd.grad(loss, [box[l]["probe"] for l in layers])
    real = batch.attention_mask.bool()
    return {l: (box[l]["u"][real].float(), g[real].float()) for l, g in zip(layers, grads)}


@register_editor("mend")
class MendEditor(BaseEditor):
    name = "mend"

    def __init__(self, config: MendConfig | None = None, *, cache: ArtifactCache | None = None,
                 **overrides: Any) -> None:
        if "layers" in overrides and overrides["layers"] is not None:
            overrides["layers"] = tuple(int(l) for l in overrides["layers"])
        self.config = dataclasses.replace(config if config is not None else MendConfig(), **overrides)
        self.cache = cache
        self.nets: dict[int, GradientTransform] = {}
        self.fit_info: dict[str, Any] = {}
        self._fingerprint: str | None = None

    def layers_for(self, lm: LoadedModel) -> list[int]:
        n = lm.adapter.n_layers
        layers = list(range(max(0, n - 3), n)) if self.config.layers is None else list(self.config.layers)
        return lm.adapter.check_layers(layers, self.name)

    # ------------------------------------------------------------------ training
    def _examples(self, records: Sequence[Record]) -> list[tuple[Record, str]]:
        langs = self.config.train_languages
        out = [(r, l) for r in records for l in r.languages if langs is None or l in langs]
        out = [(r, l) for r, l in out if r.for_language(l).target_new.strip()]
        if not out:
            raise EditError("mend: the training split has no usable (record, language) pair; pass training records "
                            "disjoint from the evaluated ones to fit()")
        return out

    def _build_nets(self, lm: LoadedModel, layers: Sequence[int]) -> None:
        a = lm.adapter
        self.nets = {l: GradientTransform(a.n_neurons, a.hidden_size, self.config.rank).to(lm.device) for l in layers}

    def fit(self, lm: LoadedModel, train_records: Sequence[Record] = ()) -> MendEditor:
        """Meta-train the gradient transforms on ``train_records`` (or load them from the cache)."""
        cfg = self.config
        if not train_records:
            raise EditError("mend: fit() needs training records (a split disjoint from the evaluated records)")
        layers = self.layers_for(lm)
        cache = self.cache or ArtifactCache()
        key = cache_key("mend", model=lm.fingerprint, records=[r.content_hash() for r in train_records],
                        config=cfg, layers=layers, join=JOIN_VERSION)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self._build_nets(lm, layers)
        hit = cache.get_tensors(key)
        meta = cache.get_json(key)
        if hit is not None and meta is not None:
            for l, net in self.nets.items():
                net.load_state_dict({k.split(".", 1)[1]: v for k, v in hit.items() if k.startswith(f"{l}.")})
            self.fit_info = {**meta, "cached": True}
            self._fingerprint = lm.fingerprint
            return self
        start = time.perf_counter()
        history = self._train(lm, layers, self._examples(train_records))
        seconds = time.perf_counter() - start
        self.fit_info = {"fit_seconds": seconds, "train_steps": cfg.train_steps, "loss": history,
                         "n_train_records": len(train_records), "layers": layers, "cached": False}
        tensors = {f"{l}.{k}": v.detach().cpu() for l, net in self.nets.items() for k, v in net.state_dict().items()}
        cache.put_tensors(key, tensors)
        cache.put_json(key, {k: v for k, v in self.fit_info.items() if k != "cached"})
        self._fingerprint = lm.fingerprint
        log.info("mend: trained %d steps in %.1f s", cfg.train_steps, seconds)
        return self

    def _train(self, lm: LoadedModel, layers: Sequence[int], examples: list[tuple[Record, str]]) -> list[float]:
        cfg, tok = self.config, lm.tokenizer
        rng = random.Random(cfg.seed)
        # normalisation statistics and the initial step size, from a few training examples
        sample = [token_gradients(lm, layers, edit_batch(tok, r, l)) for r, l in rng.sample(examples, min(8, len(examples)))]
        for l, net in self.nets.items():
            x = torch.cat([torch.cat([s[l][0], s[l][1]], -1) for s in sample])
            net.mean.copy_(x.mean(0))
            net.std.copy_(x.std(0).clamp(min=1e-6) if x.shape[0] > 1 else torch.ones_like(x[0]))
            with torch.no_grad():
                dw = net(*sample[0][l]).norm()
                w = lm.adapter.down_weight_as_linear(l).float().norm()
                net.log_step.fill_(math.log(max(cfg.init_step * float(w) / max(float(dw), 1e-12), 1e-12)))
        params = [p for net in self.nets.values() for p in net.parameters()]
        opt = torch.optim.Adam(params, lr=cfg.meta_lr)
        history: list[float] = []
        for _ in tqdm(range(cfg.train_steps), desc="MEND meta-training", leave=False, disable=cfg.train_steps < 20):
            rec, lang = rng.choice(examples)
            view = rec.for_language(lang)
            grads = token_gradients(lm, layers, edit_batch(tok, rec, lang))
            prompts = [view.prompt] + view.paraphrase_prompts[:1]
            after = build_batch(tok, prompts, [view.target_new] * len(prompts), lang)
            other, olang = rng.choice([e for e in examples if e[0].example_id != rec.example_id] or examples)
            loc = edit_batch(tok, other, olang).to(lm.device)
            cols = torch.nonzero(loc.answer_mask.any(0)).flatten()
            with torch.no_grad():
                ref = torch.log_softmax(logits_at(lm.model, loc.input_ids, loc.attention_mask, cols).float(), -1)
            deltas = {l: self.nets[l](*grads[l]) for l in layers}
            with _weight_deltas(lm, deltas):
                l_edit = answer_nll(lm.model, after).mean()
                new = torch.log_softmax(logits_at(lm.model, loc.input_ids, loc.attention_mask, cols).float(), -1)
            mask = loc.answer_mask[:, cols].float()
            kl = (F.kl_div(new, ref, log_target=True, reduction="none").sum(-1) * mask).sum() / mask.sum()
            loss = cfg.c_edit * l_edit + kl
            if not torch.isfinite(loss):
                raise EditError("mend: non-finite meta-training loss; lower meta_lr or init_step")
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
        return history

    # ------------------------------------------------------------------ editing
    def edit(self, lm: LoadedModel, record: Record, language: str, **context: Any) -> Edit:
        self.check_record(record, language)
        if not self.nets:
            raise EditError("mend: the hypernetwork is not trained; call fit(lm, train_records) first")
        if self._fingerprint is not None and self._fingerprint != lm.fingerprint:
            raise EditError("mend: the hypernetwork was trained on another model; call fit() on this one")
        layers = sorted(self.nets)
        grads = token_gradients(lm, layers, edit_batch(lm.tokenizer, record, language))
        with recording_edit(lm.model, [down_proj_param(lm.adapter, l) for l in layers], self.name) as edit:
            with torch.no_grad():
                for l in layers:
                    add_to_down_proj(lm.adapter, l, self.nets[l](*grads[l]).to(torch.float64))
        edit.info.update({"layers": layers, "fit_seconds": self.fit_info.get("fit_seconds"),
                          "fit_cached": self.fit_info.get("cached")})
        return edit
