"""MEMIT (Meng et al., 2023): the target written at the last of several layers, spread over all of them."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..covariance import second_moments
from ..models import LoadedModel
from .base import register_editor
from .locate import (
    LocateConfig,
    LocateThenEdit,
    Request,
    add_to_down_proj,
    compute_keys,
    default_center_layer,
    layer_reads,
    layer_window,
    least_squares_update,
    optimize_target,
    read_outputs,
)


@dataclass
class MemitConfig(LocateConfig):
    """MEMIT's GPT-J hyperparameters: 25 target steps, v_lr 0.5, decay 0.5, KL 0.0625, λ = 15000.

    The clamp stays at ROME's 4 x the MLP-output norm (MEMIT's 0.75 is relative to the residual stream, which
    this implementation does not perturb; see :mod:`memla_utils.editors.locate`).
    """

    v_steps: int = 25
    mom2_update_weight: float = 15000.0


@register_editor("memit")
class MemitEditor(LocateThenEdit):
    """Least-squares update of every layer in a window, each taking its share of the remaining residual."""

    name = "memit"
    config_cls = MemitConfig

    def default_layers(self, n_layers: int) -> list[int]:
        return layer_window(default_center_layer(n_layers), n_layers, width=5)

    def update(self, lm: LoadedModel, requests: Sequence[Request], layers: Sequence[int],
               prefixes: Sequence[str]) -> dict[str, Any]:
        cfg, adapter = self.config, lm.adapter
        last = layers[-1]
        covs = second_moments(lm, layers, cfg.covariance)
        searches, deltas = [], []
        for req in requests:
            delta, search = optimize_target(lm, last, req, prefixes, cfg)
            deltas.append(delta)
            searches.append(search)
        targets = None
        spread = []
        lower: list = []  # outputs of the layers below the last updated one, from the previous read (replayed)
        for i, layer in enumerate(layers):
            if cfg.fast_forward:  # keys at `layer` and outputs at `last` from one forward, stopped after `last`;
                # the update below changes `layer` and nothing under it, so the next read replays layers < `layer`
                reads = layer_reads(lm, layer, last, adapter.down_proj(last), requests, prefixes,
                                    replay=lower[:min(layer, last)], record_below=layer if i + 1 < len(layers) else 0)
                keys, current, lower = reads.keys, reads.outputs, reads.lower  # [N, n], [N, hidden]
            else:
                keys = compute_keys(lm, layer, requests, prefixes)
                current = read_outputs(lm, adapter.down_proj(last), requests)
            if targets is None:  # nothing written yet: today's outputs + the searched vectors
                targets = current + torch.stack(deltas)
            residual = (targets - current) / (len(layers) - i)
            upd = least_squares_update(covs[layer], cfg.cov_ridge, keys.T, residual.T, cfg.mom2_update_weight)
            add_to_down_proj(adapter, layer, upd)
            spread.append({"layer": layer, "residual_norm": float(residual.norm()), "update_norm": float(upd.norm())})
        return {"requests": searches, "spread": spread}
