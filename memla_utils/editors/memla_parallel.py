"""Many independent MEMLA edits trained in one batch (``RunnerConfig.parallel_edits``, ``edit_parallel``).

Each fact keeps the masks, ranks, initialisation, loss and early-stopping rule a single edit would give it; its
pairs live in per-layer packed tensors (:mod:`.routed_lora`) and see only its own batch rows. A fact that stops
is frozen (its merged updates copied out) and leaves the batch. Nothing is applied: each :class:`PendingEdit`
is applied, evaluated and reverted on its own, which is the paper's protocol.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..mkeb.record import Record
from ..models import LoadedModel
from ..neuron_masks import RecordMasks
from .base import BaseEditor, Edit, EditError, recording_edit
from .masked_lora import ColumnUpdate, MaskedLoRA, apply_column_updates, attach_all
from .memla_types import Fact, TrainResult
from .routed_lora import RoutedLoRA, Routing, updates_from_snapshot


@dataclass
class PendingEdit:
    """A trained MEMLA edit not yet applied, kept compact (its merged column updates)."""

    method: str
    updates: list[ColumnUpdate]
    info: dict[str, Any]

    def apply(self, lm: LoadedModel) -> Edit:
        """Write the updates into ``lm`` and return the (revertible, bit-exact) :class:`Edit`."""
        names = [f"{lm.adapter.down_proj_name(layer)}.weight" for layer in sorted({u.layer for u in self.updates})]
        with recording_edit(lm.model, names, self.method) as edit:
            apply_column_updates(lm.adapter, self.updates)
        edit.info.update(self.info)
        return edit


def edit_parallel(editor: BaseEditor, lm: LoadedModel, records: Sequence[Record], language: str, *,
                  masks: Sequence[RecordMasks] | None = None,
                  context: dict[str, Any] | None = None) -> list[PendingEdit | EditError]:
    """One independent edit per record, trained together; a record that cannot be edited gets its EditError."""
    if masks is not None and len(masks) != len(records):
        raise EditError(f"{editor.name}: {len(records)} records but {len(masks)} masks")
    start = time.perf_counter()
    out: list[PendingEdit | EditError | None] = [None] * len(records)
    ready: list[tuple[int, Fact, list[MaskedLoRA]]] = []
    for i, r in enumerate(records):
        try:
            fact = editor._facts([r], language)[0]
            m = editor._record_masks(lm, r, language, {"masks": masks[i]} if masks is not None else dict(context or {}))
            loras = editor.build_loras(lm, [m], language)
            editor._require_loras(loras, [r.example_id], language)
            ready.append((i, fact, loras))
        except EditError as err:
            out[i] = err
    if ready:
        routing = Routing()
        layers = sorted({lora.layer for _, _, loras in ready for lora in loras})
        routed = [RoutedLoRA(lm.adapter, layer,
                             [next((lo for lo in loras if lo.layer == layer), None) for _, _, loras in ready],
                             routing) for layer in layers]
        trained = _train(editor, lm, routed, routing, [fact for _, fact, _ in ready])
        seconds = (time.perf_counter() - start) / len(ready)
        for (i, _, loras), result in zip(ready, trained):
            if isinstance(result, EditError):
                out[i] = result
                continue
            res, updates = result
            info = editor._info([records[i]], language, res, loras, lm.adapter.n_neurons)
            info.update(seconds=seconds, parallel_edits=len(ready))
            out[i] = PendingEdit(editor.name, updates, info)
    return [o for o in out if o is not None]


def _train(editor: BaseEditor, lm: LoadedModel, routed: Sequence[RoutedLoRA], routing: Routing,
           facts: Sequence[Fact]) -> list[tuple[TrainResult, list[ColumnUpdate]] | EditError]:
    """The single-edit loop of :meth:`MemlaEditor._train`, per fact, over one batch of all active facts."""
    cfg = editor.config
    out: list[tuple[TrainResult, list[ColumnUpdate]] | EditError | None] = [None] * len(facts)
    results = [TrainResult(steps=0, loss=float("nan")) for _ in facts]
    active = list(range(len(facts)))
    batches = editor._batches(lm, facts)
    opt = torch.optim.Adam([p for r in routed for p in r.parameters()], lr=cfg.learning_rate)

    def route(rows: list[int]) -> None:
        routing.row_fact = torch.tensor([active[r] for r in rows], device=lm.device)

    def freeze(f: int, early: bool) -> None:
        results[f].stopped_early = early
        out[f] = (results[f], [u for r in routed for u in updates_from_snapshot(r.layer, r.snapshot(f),
                                                                                cfg.merge_scale)])

    with attach_all(routed), torch.enable_grad():
        for step in range(cfg.max_steps + 1):
            loss_f, p_new, p_true = editor._losses(lm, batches, len(active), route)
            keep, kept_rows = [], []
            for j, f in enumerate(active):
                res = results[f]
                res.loss, res.p_new, res.p_true = float(loss_f[j].detach()), [float(p_new[j])], [p_true[j]]
                if not math.isfinite(res.loss):
                    out[f] = EditError(f"{editor.name}: non-finite loss ({res.loss}) at step {step} for record "
                                       f"{facts[f].example_id!r}")
                elif res.loss < cfg.stop_loss or res.p_new[0] > cfg.stop_prob:
                    freeze(f, early=True)
                elif step == cfg.max_steps:
                    freeze(f, early=False)
                else:
                    keep.append(f)
                    kept_rows.append(j)
            if not keep:
                break
            opt.zero_grad(set_to_none=True)
            loss_f[torch.tensor(kept_rows, device=loss_f.device)].sum().backward()
            opt.step()
            for f in keep:
                results[f].steps += 1
            if len(keep) < len(active):  # re-tokenize only when facts leave the batch
                batches = editor._batches(lm, [facts[f] for f in keep])
            active[:] = keep
    assert all(o is not None for o in out), "every fact is frozen or failed by the last step"
    return out  # type: ignore[return-value]


__all__ = ["PendingEdit", "edit_parallel"]
