"""ROME (Meng et al., 2022): a rank-one update of one MLP down projection from a key/value solve."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
    optimize_target,
    rank_one_update,
    read_outputs,
)


@dataclass
class RomeConfig(LocateConfig):
    """ROME's GPT-2 XL hyperparameters (v_steps 20, v_lr 0.5, weight decay 0.5, clamp 4, KL 0.0625).

    ROME averages keys over 20 generated prefixes; 5 (MEMIT's number) keep a CPU edit to seconds.
    """


@register_editor("rome")
class RomeEditor(LocateThenEdit):
    """Insert ``k -> W k + δ`` exactly at one layer, minimally disturbing other keys (weighted by ``C⁻¹``)."""

    name = "rome"
    config_cls = RomeConfig

    def default_layers(self, n_layers: int) -> list[int]:
        return [default_center_layer(n_layers)]

    def update(self, lm: LoadedModel, requests: Sequence[Request], layers: Sequence[int],
               prefixes: Sequence[str]) -> dict[str, Any]:
        cfg, adapter = self.config, lm.adapter
        if len(layers) != 1:
            raise ValueError(f"rome edits exactly one layer, got layers={list(layers)} (use memit for several)")
        layer = layers[0]
        cov = second_moments(lm, [layer], cfg.covariance)[layer]
        info: dict[str, Any] = {"requests": []}
        for req in requests:  # several facts = sequential rank-one inserts
            delta, search = optimize_target(lm, layer, req, prefixes, cfg)
            if cfg.fast_forward:
                reads = layer_reads(lm, layer, layer, adapter.down_proj(layer), [req], prefixes)
                key, key_at_prompt, current = reads.keys[0], reads.bare_keys[0], reads.outputs[0]
            else:
                key = compute_keys(lm, layer, [req], prefixes)[0]
                key_at_prompt = compute_keys(lm, layer, [req], [""])[0]
                current = read_outputs(lm, adapter.down_proj(layer), [req])[0]
            target = current + delta
            add_to_down_proj(adapter, layer, rank_one_update(cov, cfg.cov_ridge, key, key_at_prompt,
                                                             target - current))
            info["requests"].append(search)
        return info
