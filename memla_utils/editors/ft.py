"""FT and FT-L: fine-tune one layer's MLP on the edit prompt (FT-L: with an L∞ bound on the update).

The baselines of ROME's paper (Meng et al., 2022, Appendix): Adam, lr 5e-4, 25 steps on the NLL of the new
answer; FT-L additionally projects the weights back into ``|W - W₀|∞ <= 5e-4`` after every step. The layer is
the early-middle site that causal tracing points to (:func:`~memla_utils.editors.locate.default_center_layer`,
the same layer ROME edits), so FT vs ROME compares update rules rather than sites.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from ..mkeb.record import Record
from ..models import LoadedModel
from ..seeds import unit_seed
from ..text import PromptAnswerBatch
from .base import BaseEditor, Edit, EditError, recording_edit, register_editor
from .fast_forward import record_layers, replay_layers, run_until
from .locate import default_center_layer
from .objective import answer_nll, edit_batch, optimize, restore_requires_grad, trainable_copy_guard


@dataclass
class FTConfig:
    """Hyperparameters of FT (ROME's FT baseline on GPT-2 XL: lr 5e-4, 25 steps; no norm bound)."""

    layer: int | None = None
    lr: float = 5e-4
    steps: int = 25
    norm_constraint: float | None = None     # FT-L: 5e-4 (ROME's FT-L), None = unconstrained
    early_stop_nll: float = 1e-2
    #: > 0 also pushes the old answer down (-log(1 - P(old))); then the record needs target_true
    unlikelihood_weight: float = 0.0
    #: replay the layers below ``layer`` from one recorded forward instead of recomputing them every step
    #: (exact: nothing below the tuned MLP changes; :mod:`.fast_forward`); False = full forwards as in ROME's code
    fast_forward: bool = True
    seed: int = 0


@dataclass
class FTLConfig(FTConfig):
    norm_constraint: float | None = 5e-4


@torch.no_grad()
def lower_layer_outputs(lm: LoadedModel, layer: int, batch: PromptAnswerBatch) -> list[Any]:
    """The outputs of decoder layers ``0..layer-1`` on ``batch`` (for :func:`.fast_forward.replay_layers`)."""
    if layer == 0:
        return []
    b = batch.to(lm.device)
    with record_layers(lm.adapter, layer) as box:
        run_until(lm.model, lm.adapter.layers[layer - 1], input_ids=b.input_ids, attention_mask=b.attention_mask,
                  logits_to_keep=1)
    return list(box)


def batch_nll(lm: LoadedModel, batch: PromptAnswerBatch, lower: list[Any] | None) -> torch.Tensor:
    """:func:`answer_nll` ``[B]``, with the layers below the tuned one replayed from ``lower`` when given."""
    if not lower:
        return answer_nll(lm.model, batch)
    with replay_layers(lm.adapter, lower):
        return answer_nll(lm.model, batch)


def mlp_parameter_names(lm: LoadedModel, layer: int) -> list[str]:
    """Every parameter of ``layer``'s MLP block (the parent module of its down projection)."""
    prefix = lm.adapter.down_proj_name(layer).rsplit(".", 1)[0] + "."
    return [n for n, _ in lm.model.named_parameters() if n.startswith(prefix)]


class FineTuneEditor(BaseEditor):
    """Gradient steps on one MLP; FT and FT-L differ only in their config."""

    config_cls: type[FTConfig] = FTConfig

    def __init__(self, config: FTConfig | None = None, **overrides: Any) -> None:
        self.config = dataclasses.replace(config if config is not None else self.config_cls(), **overrides)
        self.needs_target_true = self.config.unlikelihood_weight > 0

    def edit(self, lm: LoadedModel, record: Record, language: str, **context: Any) -> Edit:
        self.check_record(record, language)
        cfg = self.config
        layer = default_center_layer(lm.adapter.n_layers) if cfg.layer is None else cfg.layer
        try:
            lm.adapter.check_layer(layer)
        except IndexError as err:
            raise IndexError(f"{self.name}: {err}") from None
        names = mlp_parameter_names(lm, layer)
        params = dict(lm.model.named_parameters())
        batch = edit_batch(lm.tokenizer, record, language)
        old = edit_batch(lm.tokenizer, record, language, answer=record.for_language(language).target_true) \
            if self.needs_target_true else None
        replay = cfg.fast_forward
        lower = lower_layer_outputs(lm, layer, batch) if replay else None
        lower_old = lower_layer_outputs(lm, layer, old) if replay and old is not None else None
        state = trainable_copy_guard(lm.model)
        with recording_edit(lm.model, names, self.name) as edit:
            originals = {n: params[n].detach().clone() for n in names}
            eps = cfg.norm_constraint
            bounds = {n: (originals[n] - eps, originals[n] + eps) for n in names} if eps is not None else {}

            def loss_fn():
                nll = batch_nll(lm, batch, lower).mean()
                loss = nll
                if old is not None:
                    p_old = torch.exp(-batch_nll(lm, old, lower_old)).clamp(max=1 - 1e-6)
                    loss = loss + cfg.unlikelihood_weight * (-torch.log1p(-p_old)).mean()
                return loss, nll

            def project():
                for n in names:  # the L-infinity box around the original weights (bounds computed once)
                    params[n].clamp_(*bounds[n])

            try:
                for n in names:
                    params[n].requires_grad_(True)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(unit_seed(cfg.seed, "ft", self.name, language, record.example_id))
                    history = optimize([params[n] for n in names], loss_fn, steps=cfg.steps, lr=cfg.lr,
                                       early_stop=cfg.early_stop_nll,
                                       after_step=project if cfg.norm_constraint is not None else None)
            except ValueError as err:
                raise EditError(f"{self.name}: record {record.example_id!r} ({language}): {err}") from err
            finally:
                restore_requires_grad(lm.model, state)
                for n in names:
                    params[n].grad = None
        edit.info.update({"layer": layer, "nll": history, "steps": len(history), "config": dataclasses.asdict(cfg)})
        return edit


@register_editor("ft")
class FTEditor(FineTuneEditor):
    name = "ft"
    config_cls = FTConfig


@register_editor("ft-l")
class FTLEditor(FineTuneEditor):
    name = "ft-l"
    config_cls = FTLConfig
