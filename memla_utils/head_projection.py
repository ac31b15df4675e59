"""The vocabulary projection taken out of the model's forward, so that the rows of many forwards share one pass
over the output matrix (issue 15).

On a CPU the output head of Gemma 3 270M (262,144 x 640 float32: 671 MB) is read from memory once per call,
however few rows it projects. Evaluating one record in 12 languages called it 28 times for 363 rows (1 to 94 rows
a call), 56% of the evaluation's time (2-core CPU, 1 thread). Evaluation therefore runs its forwards with the head
*deferred* (:func:`deferred_head`: the head receives no rows, and the final hidden states it would have projected
are kept) and projects all of them at once with :func:`project`, in blocks of :data:`HEAD_BLOCK_ROWS`.

Same function: ``project(model, h)`` is what the model computes from ``h`` (its output embedding, then Gemma 2/3's
final-logit soft-capping, elementwise), only for more rows per matrix product. On this machine's BLAS a row's
float32 logits are the same bits for any number of rows >= 16, not for 1 or 2 (measured, 1 and 2 threads: up to
1.4e-6 apart), so blocks are padded to :data:`MIN_BLOCK_ROWS` rows: a row's logits then do not depend on how many
other rows share its block. Only architectures whose logits are exactly ``softcap(head(h))`` are deferred
(:data:`DEFERRABLE`, each checked on a tiny model in ``tests/unit/test_head_projection.py``); any other model is
run as before (:func:`can_defer` is False).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .models import ARCHITECTURES

#: Rows per projection: 256 x 262,144 float32 logits = 268 MB at a time (the CPU projection's rate no longer
#: grows beyond ~256 rows: benchmarks/results/roofline_cpu.json, "head 256x640x262144").
HEAD_BLOCK_ROWS = 256
#: Smallest block: fewer rows are padded with zeros (see the module docstring).
MIN_BLOCK_ROWS = 16
#: model types whose logits are ``softcap(output_embedding(final hidden state))``: the project's architectures.
DEFERRABLE: frozenset[str] = frozenset(ARCHITECTURES)


def can_defer(model: nn.Module) -> bool:
    """Whether ``model``'s head can be deferred: a known architecture with a linear output embedding."""
    config = getattr(model, "config", None)
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return getattr(config, "model_type", None) in DEFERRABLE and isinstance(head, nn.Linear)


@contextmanager
def deferred_head(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Inside the block, ``model``'s forwards skip the vocabulary projection: its output head receives an empty
    slice of its input (the logits come back with 0 positions) and the input it would have projected, the final
    hidden states ``[..., positions kept, hidden]``, is appended to the yielded list, one tensor per forward."""
    head = model.get_output_embeddings()
    got: list[torch.Tensor] = []

    def pre_hook(mod: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        hidden = args[0]
        got.append(hidden)
        return (hidden[..., :0, :], *args[1:])

    handle = head.register_forward_pre_hook(pre_hook)
    try:
        yield got
    finally:
        handle.remove()


def project(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """``[N, V]`` logits of ``hidden`` ``[N, H]`` as ``model`` computes them (output embedding, then the
    final-logit soft-capping of Gemma 2/3 where configured), for one block of rows (see :func:`project_blocks`)."""
    head = model.get_output_embeddings()
    n = hidden.shape[0]
    if n < MIN_BLOCK_ROWS:
        hidden = torch.cat([hidden, hidden.new_zeros(MIN_BLOCK_ROWS - n, hidden.shape[1])])
    logits = head(hidden)[:n]
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def project_blocks(model: nn.Module, hidden: torch.Tensor,
                   block: int = HEAD_BLOCK_ROWS) -> Iterator[tuple[int, torch.Tensor]]:
    """``(first row, logits [rows, V])`` for consecutive blocks of at most ``block`` rows of ``hidden [N, H]``."""
    for start in range(0, hidden.shape[0], block):
        yield start, project(model, hidden[start:start + block])


__all__ = ["DEFERRABLE", "HEAD_BLOCK_ROWS", "MIN_BLOCK_ROWS", "can_defer", "deferred_head", "project",
           "project_blocks"]
