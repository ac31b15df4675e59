"""What MEMLA's training loop works on and returns, shared by the single-edit path (:mod:`.memla`) and the
parallel path (:mod:`.memla_parallel`), so that neither imports the other's module to get them."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Fact:
    """One fact to write, already in the edit language."""

    example_id: str
    prompt: str
    target_new: str
    target_true: str | None
    language: str


@dataclass
class TrainResult:
    """Steps run, final loss and per-fact P(target_new) / P(target_true) at the stop (memla4mke editor.fit_on)."""

    steps: int
    loss: float
    p_new: list[float] = field(default_factory=list)
    p_true: list[float | None] = field(default_factory=list)
    stopped_early: bool = False


__all__ = ["Fact", "TrainResult"]
