"""CPU worker processes: how many, on how many torch threads, and pinned to which core (issue 15).

The processes executor (:mod:`memla_utils.process_executor`) runs the grid in one-thread processes. On the 2-core
machine, whenever a third process ran, Linux's load balancer kept both one-thread workers on CPU 0 at about 50%
each (``/proc/<pid>/stat`` field 39) while the third process had CPU 1; pinning them by hand to separate cores
(``taskset -a -p``) gave each about 94% at once (measured 2026-12-01). :func:`pin_to_core` does that pinning from
inside a worker: worker ``k`` of ``n`` takes core ``k mod (cores allowed)``. Pinning moves no number: a unit's
float sums depend on its torch thread count, not on which core runs it.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from .model_spec import ModelSpec
from .models import LoadedModel

log = logging.getLogger(__name__)

#: ``$MEMLA_WORKERS``: processes of the ``processes`` executor (``auto`` or unset: :func:`default_workers`)
WORKERS_ENV = "MEMLA_WORKERS"
#: at most this many workers by default (each holds a copy of the model)
MAX_DEFAULT_WORKERS = 8


def allowed_cores() -> list[int]:
    """The CPU cores this process may run on (its affinity, sorted), or ``[]`` where the platform cannot say
    (no ``os.sched_getaffinity``: not Linux)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return []


def available_cores() -> int:
    """How many CPU cores this process may run on (its affinity, else ``os.cpu_count()``)."""
    return len(allowed_cores()) or os.cpu_count() or 1


def _available_memory() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes, or ``None`` where there is none (not Linux)."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        return None
    return None  # pragma: no cover


def default_workers(lm: LoadedModel) -> int:
    """Workers for ``lm`` when ``$MEMLA_WORKERS`` is unset or ``auto``: 1 for a model on a GPU (one process per
    GPU) or one built in memory (workers reload by name); else the available cores, at most
    :data:`MAX_DEFAULT_WORKERS`, and at most as many model copies as fit in half the available memory."""
    if lm.device.type != "cpu":
        return 1
    try:
        ModelSpec.from_loaded(lm)
    except ValueError:
        return 1
    n = min(available_cores(), MAX_DEFAULT_WORKERS)
    mem = _available_memory()
    size = sum(p.numel() * p.element_size() for p in lm.model.parameters())
    if mem is not None and size:
        n = min(n, max(1, int(mem * 0.5 // (2 * size))))
    return max(1, n)


def workers_from_env(lm: LoadedModel) -> int:
    """``$MEMLA_WORKERS`` as a positive integer, or :func:`default_workers` when unset / ``auto``; anything else
    is a ``ValueError`` naming the variable."""
    raw = os.environ.get(WORKERS_ENV, "auto").strip().lower() or "auto"
    if raw == "auto":
        return default_workers(lm)
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"{WORKERS_ENV}={raw!r}: give a positive number of worker processes or 'auto'") from None
    if n < 1:
        raise ValueError(f"{WORKERS_ENV}={raw!r}: give a positive number of worker processes or 'auto'")
    return n


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """``torch.set_num_threads(n)`` inside the block, the previous count after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)



def single_thread_on_cpu(device: torch.device | str) -> contextlib.AbstractContextManager[None]:
    """``torch_threads(1)`` for work on a CPU, nothing elsewhere: work that a pool of one-thread processes
    (:mod:`memla_utils.model_workers`) may also do runs on one thread in the notebook's process too, so its bits
    are the same whichever process computed it (a float sum's order depends on the thread count)."""
    return torch_threads(1) if torch.device(device).type == "cpu" else contextlib.nullcontext()


def core_for(index: int, cores: Sequence[int]) -> int:
    """The core of worker ``index``: ``sorted(cores)[index % len(cores)]`` (workers ``0 .. len(cores) - 1`` get
    distinct cores; more workers than cores wrap around). ``ValueError`` naming ``index`` when it is not a
    non-negative integer, naming ``cores`` when it is empty."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"index (the worker's number) must be a non-negative integer, got {index!r}")
    if not cores:
        raise ValueError("cores: no CPU core to pin to (empty set)")
    ordered = sorted(cores)
    return ordered[index % len(ordered)]


def _threads() -> list[int]:
    """Thread ids of this process (``/proc/self/task``), or ``[0]`` (the calling thread) where unreadable."""
    try:
        return [int(t.name) for t in Path("/proc/self/task").iterdir()]
    except (OSError, ValueError):  # pragma: no cover - not Linux
        return [0]


def _set_affinity(cores: set[int]) -> None:
    """Every thread of this process (as ``taskset -a``) to ``cores``; threads started later inherit it."""
    for tid in _threads():
        try:
            os.sched_setaffinity(tid, cores)
        except ProcessLookupError:  # the thread ended meanwhile
            continue


def pin_to_core(index: int, cores: Sequence[int] | None = None) -> int | None:
    """Pin this process (all its threads) to the ``index``-th core of ``cores`` (default: the cores it may run on
    now, :func:`allowed_cores`), modulo their number (:func:`core_for`); returns the core, or ``None`` when there
    is nothing to do: no ``os.sched_setaffinity`` on this platform, or one core only (both logged at debug level).

    ``index`` that is not a non-negative integer is a ``ValueError`` naming it, checked before anything else.
    Pass ``cores`` to a spawned worker from its parent: a process that pinned itself hands its children one core.
    """
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"index (the worker's number) must be a non-negative integer, got {index!r}")
    if not hasattr(os, "sched_setaffinity"):
        log.debug("pin_to_core(%d): os.sched_setaffinity is not available on this platform; not pinned", index)
        return None
    allowed = sorted(set(cores)) if cores is not None else allowed_cores()
    if len(allowed) <= 1:
        log.debug("pin_to_core(%d): %s core(s) allowed (%s); nothing to pin", index, len(allowed), allowed)
        return None
    core = core_for(index, allowed)
    try:
        _set_affinity({core})
    except OSError as err:  # e.g. a core outside this container's cpuset: run unpinned rather than fail
        log.warning("pin_to_core(%d): could not pin to core %d (%s); running unpinned", index, core, err)
        return None
    log.debug("pin_to_core(%d): pinned to core %d of %s", index, core, allowed)
    return core


@contextmanager
def pinned_to_core(index: int, cores: Sequence[int] | None = None) -> Iterator[int | None]:
    """:func:`pin_to_core` inside the block (yields its core or ``None``), this process's earlier cores after it
    (every thread then gets the main thread's earlier set). For the notebook's process, worker 0 of the grid."""
    before = allowed_cores()
    core = pin_to_core(index, cores)
    try:
        yield core
    finally:
        if core is not None and before:
            _set_affinity(set(before))


__all__ = ["MAX_DEFAULT_WORKERS", "WORKERS_ENV", "allowed_cores", "available_cores", "core_for", "default_workers",
           "pin_to_core", "pinned_to_core", "single_thread_on_cpu", "torch_threads",
           "workers_from_env"]
