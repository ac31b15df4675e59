"""Run the experiment grid in several local processes, each unit on one CPU thread (issue 15).

On the 2-core CPU the units of notebooks 04-05 (an edit's short forwards and backwards, its evaluation) barely use
a second torch thread: a MEMLA training step took 0.62 s with 2 threads and 0.58 s with 1, an evaluation in 4
languages 4.7 s and 5.1 s, while two 1-thread processes side by side ran at 0.61-0.64 s per step each (measured on
the default model, 2026-12-01). So the grid runs in ``workers`` processes instead: the notebook's process works
on shard ``0/N`` and ``N - 1`` spawned processes on shards ``1/N .. N-1/N``, each with ``torch.set_num_threads(1)``,
each writing its own resumable JSONL file (``results-shard00kof00N.jsonl``) in the same run folder. The units
*left* (finished by no shard of any earlier call) go into one :class:`~memla_utils.unit_queue.UnitQueue` and
every process takes the next one when it is free, so no core idles at the end while the other still has a share
to finish (a fixed round-robin deal ended 50 s apart on the small preset's baselines). Units of methods that
need something fitted first (MEND's meta-training, ROME/MEMIT/PMET's second moments) enter the queue once the
notebook's process has computed it into the cache; the spawned workers load the model and run the other units
meanwhile. With ``parallel_edits > 1`` (a process batches its own following units) the units left are dealt
round robin instead (:func:`deal`): shard ``k`` takes units ``k, k + N, ...``.

Same numbers whatever the number of workers: every unit runs on one thread (a float32 sum does not depend on how
the units are split, only on the thread count), edits are seeded per unit and reverted bit-exactly, and a worker
reloads the same weights (fingerprint checked); a unit's seed derives from the run seed and its names
(:func:`memla_utils.seeds.unit_seed`), never from which shard runs it. Rerunning after an interruption does only
the units no shard has finished, with any number of workers. A worker that fails is reported with its shard after
the others have finished (:class:`ProcessGridError`); what finished is kept.

Each process is pinned to its own core while it runs the grid (worker ``k`` on core ``k`` mod the cores allowed,
:func:`memla_utils.cpu_workers.pin_to_core`; the notebook's process, worker 0, gets its earlier cores back after
the grid): left to the load balancer, both workers sat on CPU 0 at about 50% each whenever a third process ran.
The helpers for CPU workers (how many, threads, pinning) live in :mod:`memla_utils.cpu_workers`; the names that
moved there are re-exported here.

Editors fitted on training records (MEND) and the covariances of ROME/MEMIT/PMET are fitted once, in the notebook's
process, so the workers read them from the content-addressed cache instead of each computing them.
MEMLA masks given as a provider are evaluated in the notebook's process and handed to the workers as values.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from . import runner
from .cache import ArtifactCache
from .covariance import second_moments
from .cpu_workers import (  # re-exported: imported from here before cpu_workers existed
    MAX_DEFAULT_WORKERS,
    WORKERS_ENV,
    _available_memory,  # noqa: F401
    allowed_cores,
    available_cores,
    default_workers,
    pin_to_core,
    pinned_to_core,
    torch_threads,
    workers_from_env,
)
from .editors import BaseEditor, make_editor
from .mkeb.record import Record
from .model_spec import ModelSpec, first_load_lock
from .models import LoadedModel
from .run_parts import DeadlineReached
from .runner import UNEDITED, RunnerConfig, Unit
from .unit_queue import UnitQueue

log = logging.getLogger(__name__)


class ProcessGridError(RuntimeError):
    """Some worker processes failed; the units every shard finished are kept, rerunning does the rest."""


@dataclass(frozen=True)
class _Job:
    """What a spawned worker needs (picklable)."""

    spec: ModelSpec
    fingerprint: str
    records: list[Record]
    methods: list[str]
    edit_languages: list[str]
    eval_languages: list[str]
    run_dir: str
    shard: str
    units: list[Unit]
    train_records: list[Record]
    masks: dict[tuple[str, str], Any] | None
    config: RunnerConfig
    cache: tuple[str, bool, str | None] | None
    cores: list[int]  # the cores the notebook's process may use; worker k pins itself to core k mod their number
    queue: UnitQueue | None = None  # the units every process takes from (None: run ``units``, a fixed share)


#: exit code of a worker that stopped at the running part's deadline (a multi-session run): not a failure
DEADLINE_EXIT = 3


def _worker(job: _Job) -> None:
    """A spawned process: pin itself to its own core, load the model, check its weights, run its units on one
    thread. A part's deadline (:class:`memla_utils.run_parts.DeadlineReached`) ends it with :data:`DEADLINE_EXIT`."""
    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s [worker {job.shard}] %(name)s: %(message)s")
    torch.set_num_threads(1)
    pin_to_core(runner.parse_shard(job.shard)[0], job.cores)
    with first_load_lock(job.spec):
        lm = job.spec.load()
    if lm.fingerprint != job.fingerprint:
        raise RuntimeError(f"worker {job.shard} loaded {lm.name!r} with fingerprint {lm.fingerprint}, the notebook's "
                           f"model has {job.fingerprint}")
    cache = None if job.cache is None else ArtifactCache(job.cache[0], enabled=job.cache[1],
                                                        durable=job.cache[2])
    try:
        runner.run_experiment(lm, job.records, job.methods, job.edit_languages, job.eval_languages, job.run_dir,
                              job.shard, train_records=job.train_records, masks=_provider(job.masks),
                              config=replace(job.config, progress=False), cache=cache, units=job.units,
                              source=job.queue)
    except DeadlineReached as err:
        logging.getLogger(__name__).info("worker %s: %s", job.shard, err)
        sys.exit(DEADLINE_EXIT)


def _provider(masks: Mapping[tuple[str, str], Any] | None) -> Callable[[Record, str], Any] | None:
    if masks is None:
        return None
    return lambda record, lang: masks.get((record.example_id, lang))


def _mask_values(masks: Callable[[Record, str], Any] | None, todo: Sequence[Unit], records: Sequence[Record]
                 ) -> dict[tuple[str, str], Any] | None:
    """The provider's masks of every (record, edit language) an edited unit needs, as values."""
    if masks is None:
        return None
    by_id = {r.example_id: r for r in records}
    out: dict[tuple[str, str], Any] = {}
    for u in todo:
        key = (u.record, u.edit_lang)
        if u.method != UNEDITED and key not in out:
            out[key] = masks(by_id[u.record], u.edit_lang)
    return out


def deal(units: Sequence[Unit], n: int) -> list[list[Unit]]:
    """``units`` dealt round robin to ``n`` shares (share ``k``: units ``k, k + n, ...``): disjoint, covering, sizes
    differing by at most one. ``n`` must be a positive integer (else ``ValueError`` naming it)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (the number of shares) must be a positive integer, got {n!r}")
    return [list(units[k::n]) for k in range(n)]


def _share_masks(values: dict[tuple[str, str], Any] | None, share: Sequence[Unit]
                 ) -> dict[tuple[str, str], Any] | None:
    """The masks of ``values`` that the units of ``share`` need (what one worker is sent)."""
    if values is None:
        return None
    keys = {(u.record, u.edit_lang) for u in share}
    return {k: v for k, v in values.items() if k in keys}


def _cache_spec(cache: ArtifactCache | None) -> tuple[str, bool, str | None] | None:
    if cache is None:
        return None
    return (str(cache.root), cache.enabled, None if cache.durable_root is None else str(cache.durable_root))


def _prefit_work(method: str, train_records: Sequence[Record], config: RunnerConfig) -> tuple[Any, Any]:
    """``(editor, covariance config)`` of ``method`` when its units need something computed first (a ``fit`` on
    the training records, second moments of its layers), else ``(None, None)``."""
    if method == UNEDITED:
        return None, None
    editor = make_editor(method, **runner.editor_kwargs(method, config))
    fits = bool(train_records) and type(editor).fit is not BaseEditor.fit
    covariance = getattr(getattr(editor, "config", None), "covariance", None)
    covariance = covariance if covariance is not None and hasattr(editor, "layers_for") else None
    return (editor, covariance) if fits or covariance is not None else (None, None)


def split_by_prefit(todo: Sequence[Unit], train_records: Sequence[Record], config: RunnerConfig
                    ) -> tuple[list[Unit], list[Unit]]:
    """``(units that need nothing computed first, units of methods that do)``, each in the order of ``todo``:
    the second group waits for :func:`_prefit` (MEND's meta-training, ROME/MEMIT/PMET's second moments; IKE,
    whose ``fit`` keeps its demonstrations, waits too), the first runs meanwhile."""
    late = {m for m in dict.fromkeys(u.method for u in todo) if _prefit_work(m, train_records, config)[0] is not None}
    return [u for u in todo if u.method not in late], [u for u in todo if u.method in late]


def _prefit(lm: LoadedModel, todo: Sequence[Unit], train_records: Sequence[Record], config: RunnerConfig) -> None:
    """What every worker would otherwise compute for itself, once, into the shared cache: editors fitted on the
    training records (MEND's meta-training) and the second moments of the locate-then-edit layers."""
    for method in dict.fromkeys(u.method for u in todo):
        editor, covariance = _prefit_work(method, train_records, config)
        if editor is None:
            continue
        if train_records:  # MEND's meta-training is a cached artifact; IKE only picks its demonstrations
            editor.fit(lm, list(train_records))
        if covariance is not None:
            second_moments(lm, editor.layers_for(lm), covariance)


def run_experiment_processes(lm: LoadedModel, records: Sequence[Record], methods: Sequence[str],
                             edit_languages: Sequence[str], eval_languages: Sequence[str], run_dir: str | Path,
                             shard: str = "0/1", *, workers: int | None = None, train_records: Sequence[Record] = (),
                             masks: Callable[[Record, str], Any] | None = None, config: RunnerConfig | None = None,
                             cache: ArtifactCache | None = None, spec: ModelSpec | None = None) -> Path:
    """:func:`memla_utils.runner.run_experiment` in ``workers`` processes (``None``: ``$MEMLA_WORKERS``, else
    :func:`default_workers`), each unit on one thread; returns the notebook process's JSONL file.

    ``spec``: how workers get the model (default: reload ``lm`` by name; tests pass a factory). ``shard`` must be
    ``"0/1"``: the executor splits the grid itself, the ``workers`` processes taking the units no shard has
    finished from one queue (module docstring). With one worker, or fewer than two units to run, the units run
    here, still on one thread each. Raises :class:`ProcessGridError` naming the failed shards (after
    every worker has stopped; finished units are kept).
    """
    if shard != "0/1":
        raise ValueError(f"the processes executor splits the whole grid itself; got shard={shard!r} (run the "
                         f"'local' executor per shard instead)")
    config = config or RunnerConfig()
    n = workers if workers is not None else workers_from_env(lm)
    if n < 1:
        raise ValueError(f"workers must be >= 1, got {n}")
    todo, kept, _ = runner.plan_units(records, methods, edit_languages, eval_languages, run_dir, model=lm,
                                      train_records=train_records, config=config)
    n = min(n, len(todo))
    if n <= 1:
        with torch_threads(1):
            return runner.run_experiment(lm, records, methods, edit_languages, eval_languages, run_dir, shard,
                                         train_records=train_records, masks=masks, config=config, cache=cache)
    spec = spec or ModelSpec.from_loaded(lm)
    start = time.perf_counter()
    cores = allowed_cores()  # before this process pins itself (its children would inherit one core)
    ctx = mp.get_context("spawn")
    # one queue (parallel edits batch a process's own following units, so they keep the fixed deal)
    queue = UnitQueue(ctx, len(todo)) if config.parallel_edits == 1 else None
    with torch_threads(1):
        values = _mask_values(masks, todo, kept)
        if queue is None:
            shares = deal(todo, n)
            _prefit(lm, todo, train_records, config)
        else:
            shares = [todo] * n  # any process may take any unit
            early, late = split_by_prefit(todo, train_records, config)
            queue.put(early)
        jobs = [_Job(spec, lm.fingerprint, list(records), list(methods), list(edit_languages), list(eval_languages),
                     str(run_dir), f"{k}/{n}", shares[k], list(train_records), _share_masks(values, shares[k]),
                     config, _cache_spec(cache), cores, queue)
                for k in range(1, n)]
        procs = [ctx.Process(target=_worker, args=(job,), name=f"memla-worker-{job.shard}") for job in jobs]
        for p in procs:
            p.start()
        if queue is None:
            log.info("processes executor: %d units left, dealt to %d processes (this one and %d spawned: %s units), "
                     "1 thread each", len(todo), n, n - 1, "/".join(str(len(s)) for s in shares))
        else:
            log.info("processes executor: %d units left, taken one at a time by %d processes (this one and %d "
                     "spawned), 1 thread each; %d wait for what this process fits first", len(todo), n, n - 1,
                     len(late))
        try:
            if queue is not None:  # the workers load the model and take the early units meanwhile
                _prefit(lm, late, train_records, config)
                queue.put(late)
                queue.close()
            with pinned_to_core(0, cores):  # this process is worker 0; its earlier cores come back after the grid
                out = runner.run_experiment(lm, records, methods, edit_languages, eval_languages, run_dir,
                                            f"0/{n}", train_records=train_records, masks=_provider(values),
                                            config=config, cache=cache, units=shares[0], source=queue)
        except BaseException:  # this shard failed or was interrupted: stop the others (finished units stay)
            for p in procs:
                p.terminate()
            for p in procs:
                p.join()
            raise
    failed, stopped = [], []
    for p, job in zip(procs, jobs, strict=True):
        p.join()
        if p.exitcode == DEADLINE_EXIT:
            stopped.append(job.shard)
        elif p.exitcode != 0:
            failed.append(f"shard {job.shard} (exit code {p.exitcode}; its log went to this process's stderr)")
    if failed:
        raise ProcessGridError(f"{len(failed)} worker process(es) failed: {'; '.join(failed)}. Finished units are "
                               f"in {run_dir}; run the same command again to do the rest")
    if stopped:
        raise DeadlineReached(f"{run_dir}: worker shard(s) {', '.join(stopped)} stopped at the part's deadline")
    log.info("processes executor: %d units in %.1f s", len(todo), time.perf_counter() - start)
    return out


__all__ = ["DEADLINE_EXIT", "MAX_DEFAULT_WORKERS", "WORKERS_ENV", "ProcessGridError", "allowed_cores",
           "available_cores", "deal", "default_workers", "pin_to_core", "pinned_to_core", "run_experiment_processes",
           "split_by_prefit", "torch_threads", "workers_from_env"]
