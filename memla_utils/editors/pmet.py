"""PMET (Li et al., 2024): MEMIT-style, but the target search optimises attention *and* FFN outputs together.

Only the FFN part of the optimised state drives the weight update (PMET's "precise" FFN target): the
attention vector absorbs what attention would otherwise have to carry, so the FFN target is smaller and more
specific. Everything else (keys, covariance, spreading over layers) is MEMIT's code path.
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import register_editor
from .memit import MemitConfig, MemitEditor


@dataclass
class PmetConfig(MemitConfig):
    """MEMIT's GPT-J values (which PMET's released configs start from) plus the joint attention search."""

    optimize_attention: bool = True
    nll_loss_factor: float = 1.0


@register_editor("pmet")
class PmetEditor(MemitEditor):
    name = "pmet"
    config_cls = PmetConfig
