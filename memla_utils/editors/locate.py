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

This module holds the configuration, the layer choice, the solves and the shared editor; the requests and what is
read at the subject's token are :mod:`.locate_reads`', the target search :mod:`.locate_values`' (both
re-exported here).
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.weak import WeakIdKeyDictionary

from ..covariance import CovarianceConfig, second_moments
from ..mkeb.record import Record
from ..models import LoadedModel, ModelAdapter
from .base import BaseEditor, Edit, recording_edit
from .locate_reads import (
    LayerReads,
    Request,
    compute_keys,
    context_prefixes,
    layer_reads,
    read_outputs,
    subject_head,
    subject_last_position,
)
from .locate_values import Objective, attention_module, optimize_target  # noqa: F401 (Objective: re-exported)

log = logging.getLogger(__name__)


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


# ------------------------------------------------------------------------------------------ solves (float64)
def regularized(cov: torch.Tensor, ridge: float) -> torch.Tensor:
    c = cov.to(torch.float64)
    return c + ridge * c.diagonal().mean().clamp(min=1e-12) * torch.eye(c.shape[0], dtype=torch.float64)


#: LU factors of ``weight · regularized(C, ridge)`` per second-moment tensor ``C``, held as long as ``C`` is (the
#: in-process copies of :func:`memla_utils.covariance.second_moments`, which returns the same tensor for the same
#: content key): every edit after the first solves with the factors instead of factoring ``C`` again (a 2048 x 2048
#: float64 factorisation is ~70 ms on 2 cores; the solve ~1.4 ms). An in-place change of ``C`` refactors.
_FACTORS: WeakIdKeyDictionary = WeakIdKeyDictionary()


def factored(cov: torch.Tensor, ridge: float, weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.lu_factor(weight · regularized(cov, ridge))``, computed once per ``cov`` tensor, ``ridge``,
    ``weight`` and in-place version of ``cov`` (ROME's ``weight = 1`` and MEMIT's ``λ`` on a shared layer are kept
    side by side, so alternating methods do not refactor)."""
    memo = _FACTORS.get(cov)
    if memo is None or memo[0] != cov._version:  # new tensor, or changed in place: forget its factors
        memo = (cov._version, {})
        _FACTORS[cov] = memo
    key = (float(ridge), float(weight))
    if key not in memo[1]:
        memo[1][key] = torch.linalg.lu_factor(weight * regularized(cov, ridge))
    return memo[1][key]


def rank_one_update(cov: torch.Tensor, ridge: float, key: torch.Tensor, key_at_prompt: torch.Tensor,
                    residual: torch.Tensor) -> torch.Tensor:
    """ROME: ``ΔW = r uᵀ / (uᵀ k)`` with ``u = C⁻¹ k̄``, so that ``ΔW k = r`` on the bare prompt's key; ``C`` is
    ``regularized(cov, ridge)``. ``u`` comes from the cached LU factors (:func:`factored`): the same bits as
    ``torch.linalg.solve(C, k̄)``, which factors ``C`` the same way on every call (``tests/unit/test_baselines.py``)."""
    lu, pivots = factored(cov, ridge)
    u = torch.linalg.lu_solve(lu, pivots, key.to(torch.float64)[:, None])[:, 0]
    return torch.outer(residual.to(torch.float64), u) / torch.dot(u, key_at_prompt.to(torch.float64))


def least_squares_update(cov: torch.Tensor, ridge: float, keys: torch.Tensor, residuals: torch.Tensor,
                         weight: float) -> torch.Tensor:
    """MEMIT: ``ΔW = R Kᵀ (λC + K Kᵀ)⁻¹`` for keys ``K [n, N]`` and residuals ``R [hidden, N]``, ``C`` =
    ``regularized(cov, ridge)``, ``λ`` = ``weight``.

    Solved through the Woodbury identity with the cached factors of ``A = λC`` (:func:`factored`): with
    ``X = A⁻¹K`` and ``S = I + KᵀX`` (``N x N``), ``(A + KKᵀ)⁻¹K = X S⁻¹``, so an edit costs triangular solves and
    an ``N x N`` solve instead of factoring ``n x n``. Float64 throughout; equal to the direct solve up to float64
    rounding (``tests/unit/test_baselines.py``).
    """
    k = keys.to(torch.float64)
    lu, pivots = factored(cov, ridge, weight)
    x = torch.linalg.lu_solve(lu, pivots, k)                                   # A⁻¹K  [n, N]
    s = torch.eye(k.shape[1], dtype=torch.float64, device=k.device) + k.T @ x  # I + KᵀA⁻¹K  [N, N]
    return residuals.to(torch.float64) @ torch.linalg.solve(s.T, x.T)        # R (X S⁻¹)ᵀ


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
           "compute_keys", "context_prefixes", "default_center_layer", "down_proj_param", "factored", "layer_reads",
           "layer_window", "least_squares_update", "optimize_target", "rank_one_update", "read_outputs",
           "regularized", "subject_head", "subject_last_position"]
