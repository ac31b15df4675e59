"""MEMLA: neuron-masked LoRA with a language-specific (LSE) and a language-independent (LIE) editor.

One editor class; the registry names are configurations of it (no branching on names):

- ``memla``           LSE + LIE (the paper's method)
- ``memla-lse``       LSE only (edit language's specific neurons)
- ``memla-lie``       LIE only (neurons shared by the independence languages)
- ``memla-unmasked``  plain LoRA of the same rank on the same layers, no mask (ablation)
- ``memla-random``    masks of random neurons with the same per-layer counts (control)
- ``memla-zero-hidden`` the LoRA factors the other way round: zero on the hidden side (ablation; the
  companion's own parameterisation before it was checked against memla4mke, see :mod:`.masked_lora`)

Every edit draws its LoRA initialisation (and ``memla-random`` its random neurons) from a seed derived from
``MemlaConfig.seed`` (the run seed) and the unit: method, edit language, record(s)
(:func:`memla_utils.seeds.unit_seed`), so results do not depend on the order of edits, resuming, sharding or
``parallel_edits``.

Masks come from ``context['masks']`` (a :class:`~memla_utils.masks.RecordMasks`) or, when absent, from
``memla_utils.mask_compute.compute_record_masks`` (imported lazily, cached there).
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

import torch

from ..mkeb.record import Record, RecordError
from ..models import LoadedModel
from ..neuron_masks import NeuronMasks, RecordMasks
from ..scoring import answer_logprob
from ..seeds import unit_seed
from ..text import PromptAnswerBatch, build_batch
from .base import BaseEditor, Edit, EditError, recording_edit, register_editor
from .masked_lora import ZERO_FACTORS, MaskedLoRA, attach_all, make_pair
from .memla_parallel import edit_parallel
from .memla_types import Fact, TrainResult

log = logging.getLogger(__name__)

MASKINGS = ("neurons", "unmasked", "random")


@dataclass
class MemlaConfig:
    """MEMLA hyper-parameters. Defaults: memla4mke (memla/editor.py, configs/memla.yaml) unless noted."""

    use_specific: bool = True        # LSE pair on layers with edit-language-specific neurons (paper)
    use_independent: bool = True     # LIE pair on layers with language-independent neurons (paper)
    masking: str = "neurons"         # "neurons" (paper) | "unmasked" / "random" (ablations, this companion)
    rank_multiplier: int = 4         # rank = 4 x neurons in the layer (memla4mke ``n_rank``, configs/memla_llama.yaml)
    fixed_rank: int | None = None    # a fixed rank per pair instead (this companion's option)
    zero_factor: str = "neuron"      # factor that starts at zero: "neuron" side (memla4mke editor.py: B = zeros(
    #                                  n_neurons, r), A = randn(r, hidden)) | "hidden" (ablation memla-zero-hidden)
    init_std: float = 1.0            # the other factor ~ N(0, init_std^2) (memla4mke: torch.randn, std 1)
    learning_rate: float = 1e-3      # Adam lr (configs/memla.yaml)
    max_steps: int = 60              # editor.num_steps (configs/memla.yaml)
    nll_weight: float = 2.5          # loss = 2.5 * NLL(target_new) ...  (editor.fit_on)
    true_prob_weight: float = 2.0    # ... + 2 * P(target_true)           (editor.fit_on)
    stop_loss: float = 0.01          # early stop when loss < 1e-2 ...     (editor.fit_on)
    stop_prob: float = 0.96          # ... or P(target_new) > 0.96          (editor.fit_on)
    merge_scale: float = 0.5         # learned update scaled by 0.5 before merging (editor.fit_on)
    seed: int = 0                    # run seed; each edit's init seed is derived from it and the unit (memla4mke
    #                                  seeds once per run: configs/memla_llama.yaml seed 42, memla.yaml seed 0)
    mask_config: Any = None          # mask_compute.MaskConfig used when masks are not passed (None: its defaults)

    def __post_init__(self) -> None:
        if self.masking not in MASKINGS:
            raise ValueError(f"MemlaConfig.masking must be one of {MASKINGS}, got {self.masking!r}")
        if not (self.use_specific or self.use_independent):
            raise ValueError("MemlaConfig: at least one of use_specific / use_independent must be true")
        if self.max_steps < 0:
            raise ValueError(f"MemlaConfig.max_steps must be >= 0, got {self.max_steps}")
        if self.zero_factor not in ZERO_FACTORS:
            raise ValueError(f"MemlaConfig.zero_factor must be one of {ZERO_FACTORS}, got {self.zero_factor!r}")
        if self.fixed_rank is not None and self.fixed_rank < 1:
            raise ValueError(f"MemlaConfig.fixed_rank must be >= 1 or None, got {self.fixed_rank}")


@dataclass
class _Batches:
    """The teacher-forced rows of a training step, in ONE batch: ``target_new`` of every fact (rows ``0..n_new-1``),
    then ``target_true`` of the facts in ``with_true`` (rows ``n_new..``; none when the loss has no P(true) term).

    memla4mke (``memla/editor.py``, ``fit_on``) runs two forwards per step, one for each answer; both rows share
    the prompt, and one forward of the two rows gives the same per-row log-probabilities (right padding; within
    float rounding, ``tests/unit/test_memla.py``) while reading the weights once: on a CPU a step's short forwards
    are bound by memory traffic (the 262k-row head alone is 671 MB), so this halves a step's time.
    """

    joint: PromptAnswerBatch
    n_new: int
    with_true: list[int]


class MemlaEditor(BaseEditor):
    """Neuron-masked LoRA editing (LSE + LIE) on the FFN down projections; see the module docstring."""

    needs_target_true = False  # the P(target_true) term is dropped when a record has no old answer

    def __init__(self, config: MemlaConfig | None = None, *, name: str = "memla", **overrides: Any) -> None:
        self.config = replace(config or MemlaConfig(), **overrides)
        self.name = name

    # ------------------------------------------------------------------ masks
    def _record_masks(self, lm: LoadedModel, record: Record, language: str, context: dict[str, Any]) -> RecordMasks:
        masks = context.get("masks")
        if masks is None:
            from ..mask_compute import MaskConfig, compute_record_masks  # lazy: attribution is heavy

            cfg = self.config.mask_config if self.config.mask_config is not None else MaskConfig()
            masks = compute_record_masks(lm, record, language, cfg, cache=context.get("cache"))
        if not isinstance(masks, RecordMasks):
            raise EditError(f"record {record.example_id!r}: masks must be a RecordMasks, got {type(masks).__name__}")
        if masks.specific.n_neurons != lm.adapter.n_neurons or masks.independent.n_neurons != lm.adapter.n_neurons:
            raise EditError(f"record {record.example_id!r}: masks are for {masks.specific.n_neurons} neurons per "
                            f"layer but the model has {lm.adapter.n_neurons}")
        return masks

    def unit_seed(self, purpose: str, record_ids: Sequence[str], language: str) -> int:
        """The seed of one edit's ``purpose`` ("lora-init", "random-neurons"): run seed + method + language +
        record(s), see :func:`memla_utils.seeds.unit_seed`."""
        return unit_seed(self.config.seed, purpose, self.name, language, *record_ids)

    def _neuron_sets(self, masks: Sequence[RecordMasks], language: str) -> dict[str, NeuronMasks]:
        """The masks of the pairs this configuration trains (union over the facts of a batch edit)."""
        n = masks[0].specific.n_neurons
        spec, ind = NeuronMasks(n), NeuronMasks(n)
        for m in masks:
            spec, ind = spec | m.specific, ind | m.independent
        spec = spec - ind  # memla4mke removes the cross-lingual neurons from the specific ones
        chosen: dict[str, NeuronMasks] = {}
        if self.config.use_specific and spec.total:
            chosen["specific"] = spec
        if self.config.use_independent and ind.total:
            chosen["independent"] = ind
        if self.config.masking == "random":
            from ..neuron_masks import random_masks_like

            ids = [m.example_id for m in masks]
            chosen = {k: random_masks_like(v, seed=self.unit_seed(f"random-neurons:{k}", ids, language))
                      for k, v in chosen.items()}
        return chosen

    def build_loras(self, lm: LoadedModel, masks: Sequence[RecordMasks], language: str) -> list[MaskedLoRA]:
        """One :class:`MaskedLoRA` per layer holding selected neurons (one factor zero: the model is unchanged).

        The random factors are drawn, layer by layer, from one generator seeded for this edit
        (:meth:`unit_seed` of the records in ``masks`` and ``language``).
        """
        cfg, ad = self.config, lm.adapter
        sets = self._neuron_sets(masks, language)
        gen = torch.Generator().manual_seed(self.unit_seed("lora-init", [m.example_id for m in masks], language))
        layers = sorted({l for m in sets.values() for l in m.layers})
        loras = []
        for layer in layers:
            pairs = []
            for name, nm in sets.items():
                if layer not in nm.layers:
                    continue
                idx = torch.nonzero(nm.masks[layer]).flatten()
                rank = cfg.fixed_rank or cfg.rank_multiplier * int(idx.numel())
                if cfg.masking == "unmasked":
                    idx = None
                pairs.append(make_pair(name, idx, n_neurons=ad.n_neurons, hidden=ad.hidden_size, rank=rank,
                                       init_std=cfg.init_std, generator=gen, device=lm.device,
                                       zero_factor=cfg.zero_factor))
            if cfg.masking == "unmasked":  # one plain LoRA per layer with the summed rank
                rank = sum(p.rank for p in pairs)
                pairs = [make_pair("unmasked", None, n_neurons=ad.n_neurons, hidden=ad.hidden_size, rank=rank,
                                   init_std=cfg.init_std, generator=gen, device=lm.device,
                                   zero_factor=cfg.zero_factor)]
            loras.append(MaskedLoRA(ad, layer, pairs))
        return loras

    # ------------------------------------------------------------------ training
    def _facts(self, records: Sequence[Record], language: str) -> list[Fact]:
        facts = []
        for r in records:
            try:
                view = r.for_language(language)
            except RecordError as err:
                raise EditError(f"{self.name}: {err}") from err
            self.check_record(r, language)
            tt = view.target_true if (view.target_true or "").strip() else None
            facts.append(Fact(r.example_id, view.prompt, view.target_new, tt, language))
        return facts

    def _batches(self, lm: LoadedModel, facts: Sequence[Fact]) -> _Batches:
        ids = ", ".join(repr(f.example_id) for f in facts)
        with_true = [i for i, f in enumerate(facts) if f.target_true is not None] \
            if self.config.true_prob_weight else []
        rows = [(f.prompt, f.target_new, f.language) for f in facts] + \
               [(facts[i].prompt, facts[i].target_true, facts[i].language) for i in with_true]
        try:
            joint = build_batch(lm.tokenizer, [r[0] for r in rows], [r[1] for r in rows],  # type: ignore[misc]
                                [r[2] for r in rows])
        except ValueError as err:
            raise EditError(f"{self.name}: record(s) {ids}: {err}") from err
        return _Batches(joint, len(facts), with_true)

    def _losses(self, lm: LoadedModel, batches: _Batches, n_facts: int,
                route: Callable[[list[int]], None] | None = None) -> tuple[torch.Tensor, torch.Tensor,
                                                                           list[float | None]]:
        """Per-fact loss ``2.5 NLL(new) + 2 P(true)`` (memla4mke), P(new) and P(true) of every fact.

        ``route(facts_of_rows)`` is told which fact each row of the next forward belongs to (parallel editing).
        """
        cfg = self.config
        if route is not None:
            route(list(range(n_facts)) + batches.with_true)
        lp = answer_logprob(lm.model, batches.joint)
        lp_new = lp[:n_facts]
        loss_f = -cfg.nll_weight * lp_new
        p_true_rows: list[float | None] = [None] * n_facts
        if batches.with_true:
            p_true = lp[n_facts:].exp()
            loss_f = loss_f.index_add(0, torch.tensor(batches.with_true, device=loss_f.device),
                                      cfg.true_prob_weight * p_true)
            for j, i in enumerate(batches.with_true):
                p_true_rows[i] = float(p_true[j].detach())
        return loss_f, lp_new.detach().exp(), p_true_rows

    def _train(self, lm: LoadedModel, loras: Sequence[MaskedLoRA], facts: Sequence[Fact]) -> TrainResult:
        cfg = self.config
        ids = ", ".join(repr(f.example_id) for f in facts)
        batches = self._batches(lm, facts)
        params = [p for lora in loras for p in lora.parameters()]
        opt = torch.optim.Adam(params, lr=cfg.learning_rate) if params else None
        res = TrainResult(steps=0, loss=float("nan"))
        with attach_all(loras), torch.enable_grad():
            for step in range(cfg.max_steps + 1):
                loss_f, p_new, p_true_rows = self._losses(lm, batches, len(facts))
                loss = loss_f.mean()
                res.loss, res.p_new, res.p_true = float(loss.detach()), p_new.tolist(), p_true_rows
                if not math.isfinite(res.loss):
                    raise EditError(f"{self.name}: non-finite loss ({res.loss}) at step {step} for record(s) {ids}")
                if res.loss < cfg.stop_loss or bool((p_new > cfg.stop_prob).all()):
                    res.stopped_early = True
                    break
                if step == cfg.max_steps or opt is None:
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                res.steps += 1
        return res

    # ------------------------------------------------------------------ public API
    def edit(self, lm: LoadedModel, record: Record, language: str, **context: Any) -> Edit:
        """Write one fact (``context['masks']``: its RecordMasks; else computed by attribution)."""
        masks = context.pop("masks", None)
        return self._edit(lm, [record], language, [masks] if masks is not None else None, context)

    def edit_batch(self, lm: LoadedModel, records: Sequence[Record], language: str, *, mode: str = "batch",
                   **context: Any) -> list[Edit]:
        """``mode="batch"``: all facts in ONE joint update (one Edit; masks united as in memla4mke).
        ``mode="sequential"``: one edit after another, each on top of the previous (edits accumulate)."""
        masks = context.pop("masks", None)
        if masks is not None and len(masks) != len(records):
            raise EditError(f"{self.name}: {len(records)} records but {len(masks)} masks")
        if mode == "batch":
            return [self._edit(lm, list(records), language, masks, context)] if records else []
        if mode == "sequential":
            return [self._edit(lm, [r], language, [masks[i]] if masks is not None else None, context)
                    for i, r in enumerate(records)]
        if mode == "parallel":
            edits = []
            for pending in self.edit_parallel(lm, records, language, masks=masks, **context):
                if isinstance(pending, Exception):
                    raise pending
                edit = pending.apply(lm)
                edit.revert()
                edits.append(edit)
            return edits
        raise ValueError(f"edit_batch mode must be 'batch', 'sequential' or 'parallel', got {mode!r}")

    def edit_parallel(self, lm: LoadedModel, records: Sequence[Record], language: str, *,
                      masks: Sequence[RecordMasks] | None = None, **context: Any) -> list[Any]:
        """One *independent* edit per record, trained in one batch: see :mod:`.memla_parallel`."""
        return edit_parallel(self, lm, records, language, masks=masks, context=context)

    def _require_loras(self, loras: Sequence[MaskedLoRA], ids: list[str], language: str) -> None:
        if not loras:
            raise EditError(f"{self.name}: record(s) {ids} ({language}): no selected neurons in any layer "
                            f"for this configuration (use_specific={self.config.use_specific}, "
                            f"use_independent={self.config.use_independent}); nothing to edit")

    def _info(self, records: Sequence[Record], language: str, result: TrainResult, loras: Sequence[MaskedLoRA],
              n_neurons: int) -> dict[str, Any]:
        return {"records": [r.example_id for r in records], "language": language, "steps": result.steps,
                "loss": result.loss, "p_new": result.p_new, "p_true": result.p_true,
                "stopped_early": result.stopped_early, "layers": [lora.layer for lora in loras],
                "ranks": [lora.rank for lora in loras], "neurons": _neuron_counts(loras, n_neurons),
                "config": {k: v for k, v in asdict(self.config).items() if k != "mask_config"}}

    def _edit(self, lm: LoadedModel, records: list[Record], language: str, masks: Sequence[RecordMasks] | None,
              context: dict[str, Any]) -> Edit:
        start = time.perf_counter()
        facts = self._facts(records, language)
        if masks is None:
            masks = [self._record_masks(lm, r, language, context) for r in records]
        else:
            masks = [self._record_masks(lm, r, language, {"masks": m}) for r, m in zip(records, masks)]
        loras = self.build_loras(lm, masks, language)
        ids = [r.example_id for r in records]
        self._require_loras(loras, ids, language)
        names = [lora.param_name() for lora in loras]
        with recording_edit(lm.model, names, self.name) as edit:
            result = self._train(lm, loras, facts)
            for lora in loras:
                lora.merge(self.config.merge_scale)
        edit.info.update(self._info(records, language, result, loras, lm.adapter.n_neurons),
                         seconds=time.perf_counter() - start)
        log.debug("%s edited %s in %s: %d steps, loss %.4f", self.name, ids, language, result.steps, result.loss)
        return edit


def _neuron_counts(loras: Sequence[MaskedLoRA], n_neurons: int) -> dict[str, int]:
    """Neurons each pair kind may change, summed over layers (unmasked: every neuron of the layer)."""
    counts: dict[str, int] = {}
    for lora in loras:
        for p in lora.pairs:
            counts[p.name] = counts.get(p.name, 0) + (n_neurons if p.index is None else int(p.index.numel()))
    return counts


#: registry name -> the configuration that defines it
VARIANTS: dict[str, dict[str, Any]] = {
    "memla": {},
    "memla-lse": {"use_independent": False},
    "memla-lie": {"use_specific": False},
    "memla-unmasked": {"masking": "unmasked"},
    "memla-random": {"masking": "random"},
    "memla-zero-hidden": {"zero_factor": "hidden"},
}


def mask_overrides(mask_config: Any) -> dict[str, dict[str, Any]]:
    """``editor_overrides`` giving every MEMLA variant the same MaskConfig (for masks it computes itself)."""
    return {name: {"mask_config": mask_config} for name in VARIANTS}


def _factory(name: str, variant: dict[str, Any], config: MemlaConfig | None = None, **overrides: Any) -> MemlaEditor:
    return MemlaEditor(config, name=name, **{**variant, **overrides})


for _name, _variant in VARIANTS.items():
    register_editor(_name)(partial(_factory, _name, _variant))

__all__ = ["MemlaConfig", "MemlaEditor", "TrainResult", "VARIANTS", "mask_overrides"]
