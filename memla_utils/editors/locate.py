"""The locate-then-edit core shared by ROME, MEMIT and PMET.

All three write a new fact into MLP down projections as a key -> value association:

* **key** ``k``: the down-projection input (the adapter's neurons) at the subject's last token, averaged over
  the bare prompt and a few short model-generated prefixes ("context templates", as in ROME);
* **target**: a vector ``δ`` added to the down-projection *output* at that token, optimised so the model
  predicts ``target_new`` (NLL over the prompts + ``kl_factor`` · KL on the bare subject + weight decay,
  with a norm clamp) — PMET also optimises a vector on the attention output of the same layer and throws it
  away (only the FFN part drives the update);
* **solve** in float64 with the second moments ``C = E[k kᵀ]`` (:mod:`memla_utils.covariance`): ROME's
  rank-one equality-constrained insert, or MEMIT's least-squares update spread over a range of layers.

``δ`` lives in the down-projection output space, which is exactly what a weight change can produce; for
GPT-2/Llama that equals the residual contribution the papers optimise, for Gemma (post-FFN norm) it is the
pre-norm MLP output. The clamp is therefore relative to the down-projection output norm (ROME's choice); MEMIT
clamps relative to the residual-stream norm, which is several times larger.

Layer choice (documented procedure, see :func:`default_center_layer`): ROME's and MEMIT's causal traces put
the decisive MLP site at the subject's last token in the early-middle layers (GPT-J: layer 5 of 28 for ROME,
3-8 for MEMIT; GPT-2 XL: 17 of 48, 13-17). The default centre is a quarter of the depth (Gemma 3 270M: layer 4
of 18); MEMIT/PMET take the five layers centred on it. Configs take explicit ``layers`` to override.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..cache import ArtifactCache, cache_key
from ..covariance import CovarianceConfig, sample_texts, second_moments
from ..mkeb.record import Record
from ..mkeb.subjects import find_subject
from ..models import LoadedModel, ModelAdapter
from ..text import build_batch, encode_prompt, pad_prompts
from .base import BaseEditor, Edit, EditError, recording_edit
from .fast_forward import SuffixRunner, gather_head, run_until, split_rows
from .objective import answer_nll, logits_at

log = logging.getLogger(__name__)

#: attribute names under which the supported decoder layers keep their attention block
_ATTENTION_ATTRS = ("self_attn", "attn", "self_attention", "attention")


@dataclass
class LocateConfig:
    """Hyperparameters of the locate-then-edit family (defaults: ROME's GPT-2 XL / MEMIT's GPT-J configs).

    ``layers=None`` uses the method's documented default (see :func:`default_center_layer`).
    """

    layers: tuple[int, ...] | None = None
    v_steps: int = 20                  # ROME gpt2-xl: v_num_grad_steps 20
    v_lr: float = 0.5                  # ROME/MEMIT: v_lr 5e-1
    v_weight_decay: float = 0.5        # ROME/MEMIT: v_weight_decay 0.5
    clamp_norm_factor: float = 4.0     # ROME: 4 x the norm of the original MLP output
    kl_factor: float = 0.0625          # ROME/MEMIT: kl_factor 0.0625
    nll_loss_factor: float = 1.0       # PMET's weight of the NLL term (1 = ROME/MEMIT)
    early_stop_nll: float = 0.05       # ROME stops once the NLL is below 5e-2
    n_context: int = 5                 # MEMIT: 5 generated prefixes (+ the bare prompt)
    context_tokens: int = 10           # of 10 tokens each
    mom2_update_weight: float = 15000.0  # MEMIT GPT-J: λ in (λC + KKᵀ)
    cov_ridge: float = 1e-3            # ridge (x mean diag of C): our corpus is far smaller than 100k texts
    optimize_attention: bool = False   # PMET: also optimise the attention output (not used in the update)
    #: exact shortcuts of :mod:`.fast_forward` (suffix-only steps from layer L on, logits only where the loss
    #: reads, keys and outputs in one early-stopped forward); False = the full forwards of ROME's released code
    fast_forward: bool = True
    covariance: CovarianceConfig = field(default_factory=CovarianceConfig)
    seed: int = 0


def default_center_layer(n_layers: int, depth: float = 0.25) -> int:
    """The layer at ``depth`` of the stack (rounded half up): the early-middle MLP site of causal tracing."""
    return min(n_layers - 1, int(depth * (n_layers - 1) + 0.5))


def layer_window(center: int, n_layers: int, width: int = 5) -> list[int]:
    """``width`` consecutive layers centred on ``center``, shifted to stay inside the model."""
    width = min(width, n_layers)
    start = max(0, min(center - width // 2, n_layers - width))
    return list(range(start, start + width))


def attention_module(adapter: ModelAdapter, layer: int) -> nn.Module:
    adapter.check_layer(layer)
    block = adapter.layers[layer]
    for attr in _ATTENTION_ATTRS:
        if hasattr(block, attr):
            return getattr(block, attr)
    raise EditError(f"{type(block).__name__} has none of the attention attributes {_ATTENTION_ATTRS}; "
                    f"PMET cannot optimise its attention output")


# ------------------------------------------------------------------------------------------ prompts and positions
@dataclass(frozen=True)
class Request:
    """One fact to write: a record in one language."""

    record: Record
    language: str

    @property
    def view(self):
        return self.record.for_language(self.language)


def subject_head(record: Record, language: str) -> str:
    """The filled prompt up to and including the subject (its slot, else its first whole-word occurrence).

    Raises ``EditError`` naming the record, language, subject and prompt when the subject is empty or does not
    occur in the prompt (:func:`memla_utils.mkeb.subjects.find_subject`: whole words in spaced scripts,
    substrings in zh/ja/th): these methods write the fact at the subject's last token, and editing at some other
    token instead would be a silent, different edit.
    """
    e = record.edit[language]
    tmpl = e.prompt
    if "{}" in tmpl and e.subject.strip():
        return tmpl[: tmpl.index("{}")] + e.subject
    i = find_subject(tmpl, e.subject, language) if e.subject.strip() else -1
    if i < 0:
        why = "has no subject" if not e.subject.strip() else "does not occur as a whole word in its prompt"
        raise EditError(f"record {record.example_id!r}, language {language!r}: subject {e.subject!r} {why} "
                        f"{tmpl!r}; ROME, MEMIT and PMET edit at the subject's last token and cannot place this "
                        f"edit (give the prompt a '{{}}' slot or a subject spelled as in the prompt)")
    return tmpl[: i + len(e.subject)]


def subject_last_position(tokenizer, request: Request, prefix: str = "") -> int:
    """Index of the subject's last token in ``encode_prompt(prefix + filled prompt)``; ``EditError`` if the
    prompt does not contain the subject (:func:`subject_head`)."""
    e = request.record.edit[request.language]
    head = subject_head(request.record, request.language)
    n_full = len(encode_prompt(tokenizer, prefix + e.filled_prompt))
    return min(len(encode_prompt(tokenizer, prefix + head)), n_full) - 1


def context_prefixes(lm: LoadedModel, n: int, tokens: int, seed: int, *,
                     cache: ArtifactCache | None = None) -> list[str]:
    """``""`` plus ``n`` short seeded samples from the model, each followed by ``". "`` (ROME's templates)."""
    if n <= 0:
        return [""]
    cache = cache or ArtifactCache()
    key = cache_key("contexts", model=lm.fingerprint, n=n, tokens=tokens, seed=seed)
    hit = cache.get_json(key)
    if hit is None:
        texts = sample_texts(lm, [""], n_per_starter=n, max_new_tokens=tokens, top_k=5, seed=seed)
        hit = [" ".join(t.split()) + ". " for t in texts]
        cache.put_json(key, hit)
    return [""] + list(hit)


@contextmanager
def _capture_output(module: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    box: dict[str, torch.Tensor] = {}

    def hook(mod: nn.Module, args: tuple, out: Any) -> None:
        box["out"] = out[0] if isinstance(out, tuple) else out

    handle = module.register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


@contextmanager
def _add_at(module: nn.Module, delta: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> Iterator[None]:
    """Add ``delta`` to ``module``'s output at (row, position) pairs during the block (differentiable)."""

    def hook(mod: nn.Module, args: tuple, out: Any) -> Any:
        hidden = out[0] if isinstance(out, tuple) else out
        add = torch.zeros_like(hidden)
        add = add.index_put((rows.to(hidden.device), positions.to(hidden.device)),
                            delta.to(hidden.dtype).expand(len(rows), -1))
        hidden = hidden + add
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def compute_keys(lm: LoadedModel, layer: int, requests: Sequence[Request], prefixes: Sequence[str]) -> torch.Tensor:
    """Keys ``[N, n_neurons]`` (float64): down-projection inputs at the subject's last token, mean over prefixes."""
    prompts = [p + r.view.prompt for r in requests for p in prefixes]
    pos = torch.tensor([subject_last_position(lm.tokenizer, r, p) for r in requests for p in prefixes])
    ids, att = pad_prompts(lm.tokenizer, prompts, side="right")
    with lm.adapter.neuron_hook(layer, capture=True) as probe:
        lm.model(input_ids=ids.to(lm.device), attention_mask=att.to(lm.device), logits_to_keep=1)
    acts = probe.activations[torch.arange(len(prompts)), pos.to(probe.activations.device)]
    return acts.to(torch.float64).cpu().reshape(len(requests), len(prefixes), -1).mean(1)


@torch.no_grad()
def read_outputs(lm: LoadedModel, module: nn.Module, requests: Sequence[Request]) -> torch.Tensor:
    """``module``'s output ``[N, hidden]`` (float64) at the subject's last token of each bare prompt."""
    prompts = [r.view.prompt for r in requests]
    pos = torch.tensor([subject_last_position(lm.tokenizer, r) for r in requests])
    ids, att = pad_prompts(lm.tokenizer, prompts, side="right")
    with _capture_output(module) as box:
        lm.model(input_ids=ids.to(lm.device), attention_mask=att.to(lm.device), logits_to_keep=1)
    out = box["out"]
    return out[torch.arange(len(prompts)), pos.to(out.device)].to(torch.float64).cpu()


# ------------------------------------------------------------------------------------------ keys and outputs, fast
@dataclass
class LayerReads:
    """What one forward reads for a key/value solve (all float64, on CPU).

    ``keys [N, n_neurons]``: mean over prefixes of the down-projection input at ``layer`` (:func:`compute_keys`);
    ``bare_keys [N, n_neurons]``: the same on the bare prompt; ``outputs [N, hidden]``: ``module``'s output at
    the bare prompt's subject token (:func:`read_outputs`).
    """

    keys: torch.Tensor
    bare_keys: torch.Tensor
    outputs: torch.Tensor


@torch.no_grad()
def layer_reads(lm: LoadedModel, layer: int, module_layer: int, module: nn.Module, requests: Sequence[Request],
                prefixes: Sequence[str]) -> LayerReads:
    """:func:`compute_keys` (with and without prefixes) and :func:`read_outputs` of ``module`` (which belongs
    to decoder layer ``module_layer``) from one forward over the prefixed prompts, stopped once both layers ran."""
    groups = list(dict.fromkeys([""] + list(prefixes)))
    bare, idx = groups.index(""), [groups.index(p) for p in prefixes]
    prompts = [p + r.view.prompt for r in requests for p in groups]
    pos = torch.tensor([subject_last_position(lm.tokenizer, r, p) for r in requests for p in groups])
    ids, att = pad_prompts(lm.tokenizer, prompts, side="right")
    stop = module if module_layer >= layer else lm.adapter.down_proj(layer)
    with lm.adapter.neuron_hook(layer, capture=True) as probe, _capture_output(module) as box:
        run_until(lm.model, stop, input_ids=ids.to(lm.device), attention_mask=att.to(lm.device), logits_to_keep=1)
    rows = torch.arange(len(prompts))
    acts = probe.activations[rows, pos.to(probe.activations.device)].to(torch.float64).cpu()
    acts = acts.reshape(len(requests), len(groups), -1)
    out = box["out"][rows, pos.to(box["out"].device)].to(torch.float64).cpu().reshape(len(requests), len(groups), -1)
    return LayerReads(keys=acts[:, idx].mean(1), bare_keys=acts[:, bare], outputs=out[:, bare])


# ------------------------------------------------------------------------------------------ target search
Objective = Any  # callable: deltas -> (nll, kl), both 0-d tensors


def _full_objective(lm: LoadedModel, layer: int, request: Request, prefixes: Sequence[str],
                    sites: Sequence[nn.Module]) -> tuple[list[torch.Tensor], Objective]:
    """The reference objective: one full forward of the prefixed prompts, one of the bare subject (KL)."""
    tok, model = lm.tokenizer, lm.model
    view = request.view
    prompts = [p + view.prompt for p in prefixes]
    batch = build_batch(tok, prompts, [view.target_new] * len(prompts), request.language).to(lm.device)
    rows = torch.arange(len(prompts))
    pos = torch.tensor([subject_last_position(tok, request, p) for p in prefixes])
    kl_ids = torch.tensor([encode_prompt(tok, view.subject or view.prompt)], device=lm.device)
    kl_pos = torch.tensor([kl_ids.shape[1] - 1])
    kl_cols = kl_pos.to(lm.device)
    with torch.no_grad():
        ref = logits_at(model, kl_ids, torch.ones_like(kl_ids), kl_cols)
        ref_logp = torch.log_softmax(ref.float(), -1)[:, -1]
        init_norms = [read_outputs(lm, m, [request])[0].norm().float() for m in sites]

    def objective(deltas: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        with ExitStack() as stack:
            for m, d in zip(sites, deltas):
                stack.enter_context(_add_at(m, d, rows, pos))
            nll = answer_nll(model, batch).mean()
        with ExitStack() as stack:
            for m, d in zip(sites, deltas):
                stack.enter_context(_add_at(m, d, torch.zeros(1, dtype=torch.long), kl_pos))
            kl_logits = logits_at(model, kl_ids, torch.ones_like(kl_ids), kl_cols)
            kl = F.kl_div(torch.log_softmax(kl_logits.float(), -1)[:, -1], ref_logp, log_target=True,
                          reduction="batchmean")
        return nll, kl

    return init_norms, objective


def _suffix_objective(lm: LoadedModel, layer: int, request: Request, prefixes: Sequence[str],
                      sites: Sequence[nn.Module]) -> tuple[list[torch.Tensor], Objective]:
    """The same objective from one suffix-only forward per step (:mod:`.fast_forward`).

    Rows: the prefixed prompts + answer, then the bare subject (KL). Each row is split at its subject token (or
    the last prompt token, if that comes first), layers below ``layer`` are replayed, and the head projects only
    the answer-predicting positions and the KL position.
    """
    tok, model = lm.tokenizer, lm.model
    view = request.view
    prompts = [p + view.prompt for p in prefixes]
    batch = build_batch(tok, prompts, [view.target_new] * len(prompts), request.language)
    lengths = batch.attention_mask.sum(1).tolist()
    rows = [batch.input_ids[b, :n].tolist() for b, n in enumerate(lengths)]
    pos = [subject_last_position(tok, request, p) for p in prefixes]
    p_lens, a_lens = batch.prompt_lengths.tolist(), batch.answer_lengths.tolist()
    split = [min(q, pl - 1) for q, pl in zip(pos, p_lens)]
    kl_row = encode_prompt(tok, view.subject or view.prompt)
    rows.append(kl_row)
    pos.append(len(kl_row) - 1)
    split.append(len(kl_row) - 1)
    n = len(prompts)
    sel_rows, sel_cols, targets, owner = [], [], [], []
    for b in range(n):
        for j in range(a_lens[b]):
            sel_rows.append(b)
            sel_cols.append(p_lens[b] - 1 + j - split[b])
            targets.append(rows[b][p_lens[b] + j])
            owner.append(b)
    sel_rows.append(n)
    sel_cols.append(0)
    dev = lm.device
    sel_r, sel_c = torch.tensor(sel_rows), torch.tensor(sel_cols)
    targets_t = torch.tensor(targets, device=dev)
    owner_t = torch.tensor(owner, device=dev)
    counts = torch.bincount(owner_t, minlength=n).float()
    all_rows = torch.arange(n + 1)
    delta_cols = torch.tensor([q - s for q, s in zip(pos, split)])
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    runner = SuffixRunner(model, lm.adapter, split_rows(rows, split, pad), first=layer)
    with ExitStack() as stack:
        boxes = [stack.enter_context(_capture_output(m)) for m in sites]
        stack.enter_context(gather_head(model, sel_r, sel_c))
        ref = runner.record().logits[0, -1]
    ref_logp = torch.log_softmax(ref.float(), -1).unsqueeze(0)
    if "" in prefixes:  # the bare prompt's row: the original outputs read_outputs would give
        b = list(prefixes).index("")
        init_norms = [box["out"][b, int(delta_cols[b])].norm().float() for box in boxes]
    else:
        init_norms = [read_outputs(lm, m, [request])[0].norm().float() for m in sites]

    def objective(deltas: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        with ExitStack() as stack:
            for m, d in zip(sites, deltas):
                stack.enter_context(_add_at(m, d, all_rows, delta_cols))
            stack.enter_context(gather_head(model, sel_r, sel_c))
            logits = runner.forward().logits[0].float()
        logp = torch.log_softmax(logits[:-1], -1)
        picked = logp.gather(-1, targets_t.unsqueeze(-1)).squeeze(-1)
        per_row = torch.zeros(n, device=picked.device).index_add(0, owner_t, picked)
        nll = (-per_row / counts.clamp(min=1.0)).mean()
        kl = F.kl_div(torch.log_softmax(logits[-1:], -1), ref_logp, log_target=True, reduction="batchmean")
        return nll, kl

    return init_norms, objective


def optimize_target(lm: LoadedModel, layer: int, request: Request, prefixes: Sequence[str],
                    cfg: LocateConfig) -> tuple[torch.Tensor, dict[str, Any]]:
    """The vector ``δ`` ``[hidden]`` to add to ``layer``'s down-projection output at the subject's last token.

    Loss per step (ROME's ``compute_v``): ``nll_loss_factor`` · mean answer NLL over the prefixed prompts +
    ``kl_factor`` · KL(next-token distribution after the bare subject, before vs after) + ``v_weight_decay`` ·
    (‖δ‖ / ‖original output‖)²; Adam, early stop at ``early_stop_nll``, norm clamp after every step.
    ``cfg.fast_forward`` picks :func:`_suffix_objective` (default) or :func:`_full_objective` (same values up to
    float rounding). Raises ``EditError`` on a non-finite loss.
    """
    adapter = lm.adapter
    sites: list[nn.Module] = [adapter.down_proj(layer)]
    if cfg.optimize_attention:
        sites.append(attention_module(adapter, layer))
    build = _suffix_objective if cfg.fast_forward else _full_objective
    init_norms, objective = build(lm, layer, request, prefixes, sites)
    deltas = [torch.zeros(adapter.hidden_size, device=lm.device, requires_grad=True) for _ in sites]
    opt = torch.optim.Adam(deltas, lr=cfg.v_lr)
    history: list[float] = []
    for _ in range(max(1, cfg.v_steps)):
        nll, kl = objective(deltas)
        decay = sum((d.norm() / n.clamp(min=1e-8)) ** 2 for d, n in zip(deltas, init_norms))
        loss = cfg.nll_loss_factor * nll + cfg.kl_factor * kl + cfg.v_weight_decay * decay
        history.append(float(nll.detach()))
        if not torch.isfinite(loss):
            raise EditError(f"record {request.record.example_id!r} ({request.language}): non-finite loss while "
                            f"searching the target vector")
        if history[-1] < cfg.early_stop_nll:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for d, n in zip(deltas, init_norms):
                limit = cfg.clamp_norm_factor * float(n)
                if float(d.norm()) > limit > 0:
                    d.mul_(limit / float(d.norm()))
    info = {"target_nll": history, "delta_norm": float(deltas[0].detach().norm()), "out_norm": float(init_norms[0])}
    if cfg.optimize_attention:
        info["attention_delta_norm"] = float(deltas[1].detach().norm())
    return deltas[0].detach().to(torch.float64).cpu(), info


# ------------------------------------------------------------------------------------------ solves (float64)
def regularized(cov: torch.Tensor, ridge: float) -> torch.Tensor:
    c = cov.to(torch.float64)
    return c + ridge * c.diagonal().mean().clamp(min=1e-12) * torch.eye(c.shape[0], dtype=torch.float64)


def rank_one_update(cov: torch.Tensor, key: torch.Tensor, key_at_prompt: torch.Tensor,
                    residual: torch.Tensor) -> torch.Tensor:
    """ROME: ``ΔW = r uᵀ / (uᵀ k)`` with ``u = C⁻¹ k̄``, so that ``ΔW k = r`` on the bare prompt's key."""
    u = torch.linalg.solve(cov, key.to(torch.float64))
    return torch.outer(residual.to(torch.float64), u) / torch.dot(u, key_at_prompt.to(torch.float64))


def least_squares_update(cov: torch.Tensor, keys: torch.Tensor, residuals: torch.Tensor, weight: float
                         ) -> torch.Tensor:
    """MEMIT: ``ΔW = R Kᵀ (λC + K Kᵀ)⁻¹`` for keys ``K [n, N]`` and residuals ``R [hidden, N]``."""
    k = keys.to(torch.float64)
    lhs = weight * cov.to(torch.float64) + k @ k.T
    return residuals.to(torch.float64) @ torch.linalg.solve(lhs, k).T


@torch.no_grad()
def add_to_down_proj(adapter: ModelAdapter, layer: int, delta: torch.Tensor) -> None:
    """``W += ΔW`` with ``ΔW`` in nn.Linear layout ``[hidden, n_neurons]`` (Conv1D handled by the view)."""
    w = adapter.down_weight_as_linear(layer)
    w.add_(delta.to(device=w.device, dtype=w.dtype))


def down_proj_param(adapter: ModelAdapter, layer: int) -> str:
    return f"{adapter.down_proj_name(layer)}.weight"


# ------------------------------------------------------------------------------------------ the editor
class LocateThenEdit(BaseEditor):
    """Shared editor: find keys and targets, then let the method's ``update`` write them into the weights."""

    config_cls: type[LocateConfig] = LocateConfig

    def __init__(self, config: LocateConfig | None = None, **overrides: Any) -> None:
        base = config if config is not None else self.config_cls()
        unknown = [k for k in overrides if k not in {f.name for f in dataclasses.fields(base)}]
        if unknown:
            raise TypeError(f"{self.name}: unknown hyperparameter(s) {unknown}; "
                            f"see {type(base).__name__}")
        if "layers" in overrides and overrides["layers"] is not None:
            overrides["layers"] = tuple(int(l) for l in overrides["layers"])
        self.config = dataclasses.replace(base, **overrides)

    def default_layers(self, n_layers: int) -> list[int]:  # pragma: no cover - overridden
        raise NotImplementedError

    def layers_for(self, lm: LoadedModel) -> list[int]:
        layers = list(self.config.layers) if self.config.layers is not None else self.default_layers(
            lm.adapter.n_layers)
        if not layers:
            raise ValueError(f"{self.name}: no layers to edit")
        return lm.adapter.check_layers(layers, self.name)

    def update(self, lm: LoadedModel, requests: Sequence[Request], layers: Sequence[int],
               prefixes: Sequence[str]) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def check_record(self, record: Record, language: str) -> None:
        """The base checks, and the subject must occur in the prompt (:func:`subject_head`)."""
        super().check_record(record, language)
        subject_head(record, language)

    def edit(self, lm: LoadedModel, record: Record, language: str, **context: Any) -> Edit:
        self.check_record(record, language)
        layers = self.layers_for(lm)
        cfg = self.config
        prefixes = context_prefixes(lm, cfg.n_context, cfg.context_tokens, cfg.seed)
        second_moments(lm, layers, cfg.covariance)  # compute/load before snapshotting (clear errors early)
        names = [down_proj_param(lm.adapter, l) for l in layers]
        with torch.random.fork_rng(devices=[]), recording_edit(lm.model, names, self.name) as edit:
            torch.manual_seed(cfg.seed)
            info = self.update(lm, [Request(record, language)], layers, prefixes)
        steps = sum(len(r["target_nll"]) for r in info.get("requests", []))
        edit.info.update({"layers": layers, "steps": steps, "config": dataclasses.asdict(cfg), **info})
        return edit


__all__ = ["LayerReads", "LocateConfig", "LocateThenEdit", "Request", "add_to_down_proj", "attention_module",
           "compute_keys", "context_prefixes", "default_center_layer", "down_proj_param", "layer_reads",
           "layer_window", "least_squares_update", "optimize_target", "rank_one_update", "read_outputs",
           "regularized", "subject_head", "subject_last_position"]
