"""Plain LoRA (peft) on the MLP down projections: MEMLA without its neuron masks.

The adapters are trained on the NLL of the new answer, merged into the weights (``merge_and_unload``) and the
module tree is restored, so the result is an ordinary :class:`Edit` of the down-projection weights that
reverts bit-exactly. Defaults follow EasyEdit's LoRA baseline (rank 8, alpha 32, lr 5e-3, no dropout) with
30 steps instead of 70 to keep a CPU edit to seconds; all layers' down projections by default (MEMLA's
masks select neurons inside exactly these matrices).
"""
from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from ..mkeb.record import Record
from ..models import LoadedModel
from ..seeds import unit_seed
from .base import BaseEditor, Edit, EditError, recording_edit, register_editor
from .objective import answer_nll, edit_batch, optimize

log = logging.getLogger(__name__)


@dataclass
class LoraEditConfig:
    """Hyperparameters of the plain LoRA baseline (EasyEdit's LoRA defaults, fewer steps)."""

    layers: tuple[int, ...] | None = None   # None = every layer's down projection
    rank: int = 8
    alpha: float = 32.0
    lr: float = 5e-3
    steps: int = 30
    early_stop_nll: float = 1e-2
    seed: int = 0


@register_editor("lora")
class LoraEditor(BaseEditor):
    name = "lora"

    def __init__(self, config: LoraEditConfig | None = None, **overrides: Any) -> None:
        if "layers" in overrides and overrides["layers"] is not None:
            overrides["layers"] = tuple(int(l) for l in overrides["layers"])
        self.config = dataclasses.replace(config if config is not None else LoraEditConfig(), **overrides)
        if self.config.rank < 1:
            raise ValueError(f"lora: rank must be >= 1, got {self.config.rank}")

    def layers_for(self, lm: LoadedModel) -> list[int]:
        layers = list(range(lm.adapter.n_layers)) if self.config.layers is None else list(self.config.layers)
        return lm.adapter.check_layers(layers, self.name)

    def edit(self, lm: LoadedModel, record: Record, language: str, **context: Any) -> Edit:
        from peft import LoraConfig, get_peft_model

        self.check_record(record, language)
        cfg, adapter = self.config, lm.adapter
        layers = self.layers_for(lm)
        modules = [adapter.down_proj_name(l) for l in layers]
        batch = edit_batch(lm.tokenizer, record, language)
        peft_cfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0, bias="none",
                              target_modules=modules, fan_in_fan_out=adapter.neuron_axis == 0)
        with recording_edit(lm.model, [m + ".weight" for m in modules], self.name) as edit:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(unit_seed(cfg.seed, "lora-init", self.name, language, record.example_id))
                with warnings.catch_warnings():  # peft reads transformers' deprecated alias (FutureWarning)
                    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.* is deprecated",
                                            category=FutureWarning)
                    wrapped = get_peft_model(lm.model, peft_cfg)
                merged = False
                try:
                    params = [p for n, p in wrapped.named_parameters() if "lora_" in n]

                    def loss_fn():
                        nll = answer_nll(lm.model, batch).mean()
                        return nll, nll

                    history = optimize(params, loss_fn, steps=cfg.steps, lr=cfg.lr, early_stop=cfg.early_stop_nll)
                    wrapped.merge_and_unload()
                    merged = True
                except ValueError as err:
                    raise EditError(f"lora: record {record.example_id!r} ({language}): {err}") from err
                finally:
                    if not merged:
                        wrapped.unload()
                    for attr in ("peft_config", "_hf_peft_config_loaded"):
                        if attr in vars(lm.model):
                            delattr(lm.model, attr)
        edit.info.update({"layers": layers, "nll": history, "steps": len(history), "config": dataclasses.asdict(cfg)})
        return edit
