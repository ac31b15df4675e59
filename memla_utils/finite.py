"""Nothing non-finite becomes a number: checks that raise instead of letting NaN or ±inf through as a metric.

A model run in a precision it overflows in (Gemma 3 in float16: the residual stream passes 65504 by layer 7 and
every logit is NaN) does not fail by itself: ``NaN > NaN`` is False, so ES and PS quietly come out 0, and greedy
decoding of NaN logits picks token 0, so NS and QS come out as some F1. Every place that turns model outputs into
a score or a loss checks with these helpers and raises :class:`NonFiniteError` naming the record, language and
method, so a broken run stops with a reason instead of producing a table.

``None`` is never an error here: it means "not available" (a metric whose fields the record lacks).
"""
from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # torch is imported where a tensor is checked: the report reads numbers without it
    import torch
    from torch import nn

F = TypeVar("F", bound=Callable[..., Any])


class NonFiniteError(FloatingPointError):
    """A score, loss or logit that is NaN or infinite; the message says where (record, language, method)."""


_HINT = ("the model's outputs overflowed or the weights are broken; in float16 use bfloat16 or float32 "
         "(load_model(..., dtype='bfloat16'))")


def is_finite_number(value: Any) -> bool:
    """True for a finite int/float (bool counts as a number); False for NaN, ±inf and non-numbers."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def require_finite(value: Any, where: str) -> Any:
    """``value`` if it is ``None`` or a finite number, else :class:`NonFiniteError` naming ``where``."""
    if value is None or is_finite_number(value):
        return value
    raise NonFiniteError(f"{where}: non-finite value {value!r} ({_HINT})")


def require_finite_tensor(tensor: torch.Tensor, where: str) -> torch.Tensor:
    """``tensor`` if every entry is finite, else :class:`NonFiniteError` naming ``where`` and how many are not."""
    import torch

    if tensor.numel() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise NonFiniteError(f"{where}: {bad} of {tensor.numel()} values are NaN or infinite ({_HINT})")
    return tensor


def require_finite_metrics(metrics: Mapping[str, Any], where: str) -> None:
    """Every metric (a number, ``None``, or an object with ``.value``) is finite or ``None``."""
    for name, m in metrics.items():
        require_finite(getattr(m, "value", m), f"{where}, metric {name}")


@contextmanager
def finite_logits(model: nn.Module, where: str) -> Iterator[None]:
    """Raise :class:`NonFiniteError` from any forward of ``model`` in the block whose last-position logits are
    not finite (the position generation reads and every scored batch ends with; checking only it keeps left
    padding, which some attention kernels turn into NaN rows, from causing false alarms), and from any 2-D output
    of its output head (rows projected on their own, :mod:`memla_utils.head_projection`: all real positions)."""
    import torch

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        logits = getattr(output, "logits", None)
        if logits is None and isinstance(output, tuple) and output and torch.is_tensor(output[0]):
            logits = output[0]
        if torch.is_tensor(logits) and logits.dim() == 3 and logits.shape[1]:
            require_finite_tensor(logits[:, -1].detach(), f"{where}: logits")

    def head_hook(module: nn.Module, args: tuple, output: Any) -> None:
        # rows the head projects on their own (memla_utils.head_projection.project, a boolean logits_to_keep):
        # every one is a real position
        if torch.is_tensor(output) and output.dim() == 2 and output.shape[0]:
            require_finite_tensor(output.detach(), f"{where}: logits")

    handles = [model.register_forward_hook(hook)]
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if isinstance(head, torch.nn.Module):
        handles.append(head.register_forward_hook(head_hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def finite_evaluation(fn: F) -> F:
    """Decorator for ``fn(lm, record, language, ...)`` returning an object with ``.metrics``: every forward in
    it must give finite logits and every metric it returns must be finite or ``None``."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = sig.bind_partial(*args, **kwargs)
        lm, record, language = (bound.arguments.get(k) for k in ("lm", "record", "language"))
        where = f"record {getattr(record, 'example_id', record)!r}, language {language!r}"
        try:
            with finite_logits(lm.model, where):
                out = fn(*args, **kwargs)
        except NonFiniteError as err:
            if where in str(err):
                raise
            raise NonFiniteError(f"{where}: {err}") from err
        require_finite_metrics(getattr(out, "metrics", {}), where)
        return out

    return wrapper  # type: ignore[return-value]


@contextmanager
def naming(context: str) -> Iterator[None]:
    """Prefix ``context`` (e.g. ``"method 'rome'"``) to a :class:`NonFiniteError` raised in the block."""
    try:
        yield
    except NonFiniteError as err:
        raise NonFiniteError(f"{context}: {err}") from err


__all__ = ["NonFiniteError", "naming", "finite_evaluation", "finite_logits", "is_finite_number", "require_finite",
           "require_finite_metrics", "require_finite_tensor"]
