"""A pool of spawned one-thread processes that each hold the run's model (issue 15: attribution and the
suppression check on a CPU's cores).

The edit grid has its own executors (:mod:`memla_utils.process_executor`, :mod:`memla_utils.executors`): a unit
there is an edit plus its evaluation, with result files per shard. Attribution and the suppression check are
smaller pieces whose results go to the content-addressed cache, so they use this simpler pool: the standard
library's :class:`concurrent.futures.ProcessPoolExecutor` (spawn), whose initializer loads the model once per
process (:class:`~memla_utils.model_spec.ModelSpec`, fingerprint checked against the notebook's), sets one torch
thread and pins the process to its own core (:func:`memla_utils.cpu_workers.pin_to_core`). A task is a module-level
function called as ``fn(lm, *args)`` in a worker.

Measured side by side (``python -m benchmarks.bench_unit_threads --records 2 --steps 2``, 2-core machine): one
(record, language) attribution takes 17.6 s on 2 threads, 24.3 s on 1, and 27.3 s in each of two one-thread
processes running at once, so the pool of two gives 1.28x over one process on two threads.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any

import torch

from .cpu_workers import allowed_cores, pin_to_core
from .model_spec import ModelSpec, first_load_lock
from .models import LoadedModel
from .progress import tqdm
from .run_parts import DeadlineReached, check_deadline

log = logging.getLogger(__name__)

#: the model of this worker process (set by :func:`_init`), or the error that kept it from loading
_MODEL: LoadedModel | None = None
_INIT_ERROR: str | None = None


def pool_size(workers: int, tasks: int, device: torch.device | str) -> int:
    """How many worker processes ``tasks`` pieces of work on ``device`` get: ``min(workers, tasks)`` on a CPU,
    1 elsewhere (a GPU serves one process best). Raises ``ValueError`` naming ``workers`` when it is below 1."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if torch.device(device).type != "cpu":
        return 1
    return max(1, min(workers, tasks))


def _init(spec: ModelSpec, fingerprint: str, indices: Any, cores: list[int]) -> None:
    """Worker start-up: one torch thread, its own core, the model loaded and its fingerprint checked. An error is
    kept and raised by every task (:func:`_call`), so the caller sees it with the piece it was given."""
    global _MODEL, _INIT_ERROR
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s [model worker] %(name)s: %(message)s")
    torch.set_num_threads(1)
    pin_to_core(indices.get(), cores or None)
    try:
        with first_load_lock(spec):
            lm = spec.load()
        if lm.fingerprint != fingerprint:
            raise RuntimeError(f"the worker loaded {lm.name!r} with fingerprint {lm.fingerprint}, the notebook's "
                               f"model has {fingerprint}")
        _MODEL = lm
    except Exception as err:  # noqa: BLE001 - reported with every task
        _INIT_ERROR = f"{type(err).__name__}: {err}"


def _call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    if _MODEL is None:
        raise RuntimeError(f"model worker could not start: {_INIT_ERROR}")
    return fn(_MODEL, *args)


class ModelWorkers:
    """``workers`` spawned processes, each holding the model of ``spec`` on one thread, pinned to its own core.

    Use as a context manager; :meth:`submit` returns a :class:`~concurrent.futures.Future`. Leaving the block
    (normally, on an error or a deadline) cancels the pieces not started and waits for the running ones.
    Raises ``ValueError`` naming ``workers`` when it is below 1.
    """

    def __init__(self, spec: ModelSpec, fingerprint: str, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        ctx = mp.get_context("spawn")
        indices = ctx.SimpleQueue()  # worker k takes core k (mod the cores allowed)
        for k in range(workers):
            indices.put(k)
        self.workers = workers
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init,
                                         initargs=(spec, fingerprint, indices, allowed_cores()))

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run ``fn(lm, *args)`` in a worker (``fn`` and ``args`` must be picklable: ``fn`` at module level)."""
        return self._pool.submit(_call, fn, args)

    def __enter__(self) -> ModelWorkers:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def run_in_workers(spec: ModelSpec, fingerprint: str, workers: int, fn: Callable[..., Any],
                   pieces: Sequence[tuple[Any, ...]], store: Callable[[int, Any], None], name: Callable[[int], str],
                   *, desc: str = "pieces", progress: bool = False) -> int:
    """Run ``fn(lm, *pieces[i])`` for every ``i`` in ``workers`` processes (:class:`ModelWorkers`) and call
    ``store(i, result)`` in this process as each arrives; returns how many were stored.

    Every result that arrives is stored before anything is raised: a part's deadline
    (:class:`~memla_utils.run_parts.DeadlineReached`, checked after each result) and a failed piece (a
    ``RuntimeError`` naming it with ``name(i)``) cancel the pieces not started, the running ones finish and are
    stored, then the error is raised. So a rerun computes only what is missing.
    """
    done, failure, deadline = 0, None, None
    with ModelWorkers(spec, fingerprint, workers) as pool:
        futures = {pool.submit(fn, *args): i for i, args in enumerate(pieces)}

        def cancel() -> None:
            for f in futures:
                f.cancel()

        bar = tqdm(total=len(futures), desc=f"{desc} ({workers} processes)", disable=not progress)
        for fut in as_completed(futures):
            if fut.cancelled():
                continue
            i = futures[fut]
            bar.update(1)
            try:
                result = fut.result()
            except Exception as err:  # noqa: BLE001 - raised below, after the pieces in flight are stored
                if failure is None:
                    failure = RuntimeError(f"{name(i)} failed in a worker process: {err}")
                    failure.__cause__ = err
                cancel()
                continue
            store(i, result)
            done += 1
            if deadline is None:
                try:
                    check_deadline(f"{desc} in worker processes ({done} of {len(futures)} stored)")
                except DeadlineReached as err:
                    deadline = err
                    cancel()
        bar.close()
    if failure is not None:
        raise failure
    if deadline is not None:
        raise deadline
    return done


__all__ = ["ModelWorkers", "pool_size", "run_in_workers"]
