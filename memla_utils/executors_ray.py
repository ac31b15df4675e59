"""The Ray executor: one task per (record, edit language, method) unit on a cluster (:func:`run_experiment_ray`).

The units, the pre-flight, the manifest, the per-unit body and the row writer are the runner's
(:func:`memla_utils.runner.plan_units`, :func:`~memla_utils.runner.run_unit`,
:func:`~memla_utils.runner.write_unit`), so a unit gives the same rows wherever it runs and the run folder is the
same resumable JSONL that ``run_experiment`` writes (either executor can resume the other's run). How it runs:

1. A probe task loads the model in a worker and returns its fingerprint; the driver writes the manifest (it never
   needs the weights itself).
2. MEMLA masks are computed once per (record, edit language): handed in by the caller (``masks=``, put in the
   object store) or, when absent, by one task per (record, edit language, mask configuration) whose result
   (an object ref) every MEMLA unit of that record and language receives. Attribution scores also land in the
   content-addressed cache, so a rerun reads them.
3. One task per unfinished unit, run by a pool of worker actors: one GPU each where the cluster has GPUs (else
   ``cpus_per_task`` CPUs each), as many as fit. An actor loads the model once and keeps its GPU for its life
   (a plain task would be pinned to a GPU per call), with its editors and unedited evaluations; every edit is
   reverted bit-exactly, so units do not depend on which worker ran them or in which order.
4. The driver writes each unit's rows and ``done`` marker as its task finishes (tqdm over completed futures):
   one writer, each unit exactly once. A task that fails (an exception outside the edit, or a worker that died
   and was restarted) is retried ``max_retries`` times on whichever worker is free; a unit that still fails is left unfinished and listed in
   :class:`RayGridError`, so running the same command again does only what is missing.

Ray is an optional dependency (``pip install .[cluster]``) and is imported only when this executor runs.
``python -m memla_utils.batch --executor ray [--address auto]`` sets ``MEMLA_EXECUTOR=ray`` (and
``MEMLA_RAY_ADDRESS``) for the notebooks, and :func:`memla_utils.executors.run_experiment` hands its arguments here.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache import PROJECT_ROOT, ArtifactCache, content_hash
from .executors_ray_pool import _Pool, _schedule
from .mkeb.record import Record
from .model_spec import ModelSpec, first_load_lock
from .models import LoadedModel
from .runner import UNEDITED, RunnerConfig, Unit, editor_kwargs, plan_units, run_unit, write_unit

log = logging.getLogger(__name__)

#: Environment variable with the address of the Ray cluster to join (``batch --address`` sets it; unset: a local
#: cluster).
ADDRESS_ENV = "MEMLA_RAY_ADDRESS"


class RayGridError(RuntimeError):
    """Some units still failed after their retries; finished units are kept, rerunning does the rest."""

    def __init__(self, failed: Sequence[tuple[Unit, str]], out: Path) -> None:
        self.failed = list(failed)
        lines = "; ".join(f"{u.as_tuple()}: {msg[:200]}" for u, msg in self.failed[:5])
        super().__init__(f"{len(self.failed)} unit(s) failed after their retries (finished units are in {out}; "
                         f"run the same command again to retry only these): {lines}")


@dataclass
class RayConfig:
    """Where and how the units run. ``address=None`` starts a local cluster, ``"auto"`` joins a running one."""

    address: str | None = None
    num_cpus: int | None = None            # local cluster only (None: all of this machine's)
    cpus_per_task: float = 1.0             # also the worker's torch threads
    gpus_per_task: float | None = None     # None: 1 when the cluster has GPUs, else 0
    max_retries: int = 2                   # re-runs of a unit whose task failed (exception or dead worker)
    progress: bool = True
    #: starts of a local cluster tried when Ray's node start-up times out (its wait is fixed at 30 s in
    #: ``ray/_private/node.py``; on 2 busy cores the raylet took longer, observed 2026-12-02)
    start_attempts: int = 3

    @classmethod
    def from_env(cls) -> RayConfig:
        return cls(address=os.environ.get(ADDRESS_ENV) or None)


# ------------------------------------------------------------------------------------------------ cluster
def _ray():
    try:
        import ray
    except ImportError as err:
        raise ImportError("the Ray executor needs ray: pip install 'memla-utils[cluster]' (or pip install ray)") \
            from err
    return ray


def init_ray(config: RayConfig | None = None, **init_kwargs: Any):
    """Connect to (``address``) or start a Ray cluster unless one is connected; workers get this checkout on
    their ``PYTHONPATH`` and the driver's ``MEMLA_CACHE`` (a cluster needs the checkout at the same path on every
    node, e.g. a shared filesystem, or the package installed there). A local cluster whose node start-up times out
    (Ray's fixed 30 s wait) is started again, up to ``config.start_attempts`` times; other errors are raised."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    config = config or RayConfig.from_env()
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)}
    if os.environ.get("MEMLA_CACHE"):
        env["MEMLA_CACHE"] = os.environ["MEMLA_CACHE"]
    kwargs: dict[str, Any] = {"include_dashboard": False, "runtime_env": {"env_vars": env},
                              "logging_level": logging.WARNING, **init_kwargs}
    if config.address:
        kwargs["address"] = config.address
    else:
        if config.num_cpus is not None:
            kwargs["num_cpus"] = config.num_cpus
        # a busy machine (CI: 2 cores shared with a test process) can take longer than Ray's defaults (30 s /
        # 60 s) to start the node's agents and workers; the raylet then aborts ("Timed out waiting for file
        # .../metrics_agent_port"), observed here. A longer wait costs nothing when the machine is idle.
        kwargs.setdefault("_system_config", {"agent_register_timeout_ms": 180_000,
                                             "worker_register_timeout_seconds": 180})
    for attempt in range(1, max(1, config.start_attempts) + 1):
        try:
            ray.init(**kwargs)
            break
        except Exception as err:  # noqa: BLE001 - Ray raises a bare Exception for this timeout
            if config.address or "timed out during startup" not in str(err) or attempt >= config.start_attempts:
                raise
            log.warning("ray: the local node timed out during start-up (attempt %d of %d); starting it again",
                        attempt, config.start_attempts)
            ray.shutdown()
    log.info("ray: %s", ray.cluster_resources())
    return ray


# ------------------------------------------------------------------------------------------------ worker side
class UnitWorker:
    """A Ray actor: holds one model (its GPU for its whole life), its editors and unedited evaluations.

    Every edit is reverted bit-exactly, so a unit's rows do not depend on which worker ran it or after what.
    """

    def __init__(self, spec: ModelSpec, threads: float = 1.0) -> None:
        import torch

        torch.set_num_threads(max(1, int(threads)))
        self.spec = spec
        with first_load_lock(spec):
            self.lm = spec.load()
        self.editors: dict[Any, Any] = {}
        self.preedit: dict[Any, Any] = {}

    def probe(self) -> tuple[str, str, str]:
        """(name, fingerprint, device) of the model as this worker loaded it."""
        return self.lm.name, self.lm.fingerprint, str(self.lm.device)

    def masks(self, record: Record, language: str, mask_config: Any, cache: tuple[str, bool] | None) -> Any:
        """MEMLA's masks of one (record, edit language); a failure is returned (not raised), so the units record
        it as their edit's error row, as run_experiment does when the editor computes masks and fails."""
        from .mask_compute import MaskConfig, compute_record_masks

        try:
            return compute_record_masks(self.lm, record, language, mask_config or MaskConfig(), _cache(cache))
        except Exception as err:  # noqa: BLE001 - becomes the units' error row
            return err

    def unit(self, unit: Unit, record: Record, eval_languages: Sequence[str], config: RunnerConfig, masks: Any,
             train_records: Sequence[Record], cache: tuple[str, bool] | None,
             editor_factory: Callable[[str, dict[str, Any]], Any] | None) -> tuple[str, list[dict[str, Any]]]:
        """One unit's rows (with this worker's model fingerprint, which the driver checks)."""
        from .evaluate_preedit import PreEditCache

        art = _cache(cache)
        pkey = (cache, content_hash(config.eval_config), config.cache_preedit)
        if pkey not in self.preedit:
            self.preedit[pkey] = PreEditCache(art if config.cache_preedit else None)
        editor = None
        if unit.method != UNEDITED:
            kwargs = editor_kwargs(unit.method, config)
            ekey = (unit.method, repr(sorted(kwargs.items())), tuple(r.content_hash() for r in train_records),
                    editor_factory is not None)
            if ekey not in self.editors:
                editor = (editor_factory or _make_editor)(unit.method, kwargs)
                if train_records:
                    editor.fit(self.lm, list(train_records))
                self.editors[ekey] = editor
            editor = self.editors[ekey]
        rows = run_unit(self.lm, unit, record, eval_languages, editor=editor, preedit=self.preedit[pkey],
                        config=config, masks=masks, cache=art)
        return self.lm.fingerprint, rows


def _cache(spec: tuple[str, bool] | None) -> ArtifactCache | None:
    return None if spec is None else ArtifactCache(spec[0], enabled=spec[1])


def _make_editor(method: str, kwargs: dict[str, Any]):
    from .editors import make_editor

    return make_editor(method, **kwargs)


# ------------------------------------------------------------------------------------------------ driver side
@dataclass
class _Model:
    """What the manifest needs of the model (the driver does not load the weights)."""

    name: str
    fingerprint: str


def _memla_mask_configs(methods: Sequence[str], config: RunnerConfig) -> dict[str, Any]:
    """method -> the MaskConfig its editor would use when no masks are passed (MEMLA variants only)."""
    from .editors import make_editor
    from .editors.memla import MemlaEditor

    out = {}
    for m in dict.fromkeys(methods):
        if m == UNEDITED:
            continue
        editor = make_editor(m, **editor_kwargs(m, config))
        if isinstance(editor, MemlaEditor):
            out[m] = editor.config.mask_config
    return out


def run_experiment_ray(model: LoadedModel | ModelSpec, records: Sequence[Record], methods: Sequence[str],
                       edit_languages: Sequence[str], eval_languages: Sequence[str], run_dir: str | Path,
                       shard: str = "0/1", *, train_records: Sequence[Record] = (),
                       masks: Mapping[tuple[str, str], Any] | Callable[[Record, str], Any] | None = None,
                       config: RunnerConfig | None = None, cache: ArtifactCache | None = None,
                       ray_config: RayConfig | None = None,
                       editor_factory: Callable[[str, dict[str, Any]], Any] | None = None) -> Path:
    """``run_experiment`` with every unit a Ray task; returns the JSONL file it appended to.

    ``model``: a :class:`ModelSpec`, or a loaded model that workers reload by name (its fingerprint must match
    theirs). ``masks``: ``(record, edit_lang) -> RecordMasks`` (a mapping or run_experiment's provider), else
    computed by one task per (record, edit language). ``cache`` as in run_experiment (its root must be visible
    to the workers). ``editor_factory(method, kwargs)`` replaces ``make_editor`` (tests, custom editors).
    ``config.parallel_edits`` is not used: units run one edit each (the same numbers, see RunnerConfig).
    Raises :class:`RayGridError` after writing everything that finished if some units still failed.
    """
    start = time.perf_counter()
    config = config or RunnerConfig()
    rc = ray_config or RayConfig.from_env()
    if config.parallel_edits > 1:
        log.warning("ray executor: parallel_edits=%d ignored, every unit is one edit (same results)",
                    config.parallel_edits)
    spec = model if isinstance(model, ModelSpec) else ModelSpec.from_loaded(model)
    ray = init_ray(rc)
    resources = ray.cluster_resources()
    gpus = rc.gpus_per_task if rc.gpus_per_task is not None else (1.0 if resources.get("GPU", 0) >= 1 else 0.0)
    slots = int(resources.get("GPU", 0) // gpus) if gpus else int(resources.get("CPU", 1) // rc.cpus_per_task)
    Worker = ray.remote(num_cpus=rc.cpus_per_task, num_gpus=gpus, max_restarts=max(1, rc.max_retries))(UnitWorker)

    first = Worker.remote(spec, rc.cpus_per_task)
    name, fingerprint, device = ray.get(first.probe.remote())
    if isinstance(model, LoadedModel) and fingerprint != model.fingerprint:
        raise ValueError(f"workers loaded {name!r} with fingerprint {fingerprint}, the driver's model has "
                         f"{model.fingerprint}: the nodes must have the same weights")
    todo, kept, out = plan_units(records, methods, edit_languages, eval_languages, run_dir, shard,
                                 model=_Model(name, fingerprint), train_records=train_records, config=config)
    if not todo:
        return out
    n_workers = max(1, min(max(1, slots), len(todo)))
    pool = _Pool([first] + [Worker.remote(spec, rc.cpus_per_task) for _ in range(n_workers - 1)],
                 max_restarts=max(1, rc.max_retries))
    log.info("ray executor: %d units, %d worker(s) on %s (%s CPU, %s GPU each; model on %s)", len(todo),
             n_workers, rc.address or "a local cluster", rc.cpus_per_task, gpus, device)
    by_id = {r.example_id: r for r in kept}
    cache_spec = None if cache is None else (str(cache.root), cache.enabled)
    mask_refs = _mask_refs(ray, pool, todo, by_id, masks, config, cache_spec, rc)
    train_ref, cfg_ref = ray.put(list(train_records)), ray.put(config)
    report = RayRunReport(out, len(todo))

    def write(unit: Unit, value: tuple[str, list[dict[str, Any]]]) -> None:
        worker_fp, rows = value
        if worker_fp != fingerprint:
            raise ValueError(f"a worker loaded other weights (fingerprint {worker_fp}, expected {fingerprint})")
        write_unit(out, unit, rows)
        report.completed += 1

    report.failed = _schedule(
        ray, pool, todo,
        lambda actor, u: actor.unit.remote(u, by_id[u.record], list(eval_languages), cfg_ref,
                                           mask_refs.get((u.record, u.edit_lang, u.method)), train_ref, cache_spec,
                                           editor_factory),
        write, retries=rc.max_retries, desc="ray units", progress=rc.progress)
    report.seconds = time.perf_counter() - start
    log.info("ray executor: %d of %d units finished in %.1f s, %d failed", report.completed, report.units,
             report.seconds, len(report.failed))
    for actor in pool.actors:
        ray.kill(actor)
    if report.failed:
        raise RayGridError(report.failed, out)
    return out


@dataclass
class RayRunReport:
    out: Path
    units: int
    completed: int = 0
    failed: list[tuple[Unit, str]] = field(default_factory=list)
    seconds: float = 0.0


def _mask_refs(ray, pool: _Pool, todo: Sequence[Unit], by_id: dict[str, Record], masks: Any,
               config: RunnerConfig, cache_spec: tuple[str, bool] | None, rc: RayConfig
               ) -> dict[tuple[str, str, str], Any]:
    """(record, edit_lang, method) -> object ref of its masks: given ones put once, else computed in a first
    stage, one task per (record, edit language, mask configuration), shared by every MEMLA unit needing it."""
    edited = [u for u in todo if u.method != UNEDITED]
    out: dict[tuple[str, str, str], Any] = {}
    if masks is not None:
        get = masks.get if isinstance(masks, Mapping) else None
        stored: dict[tuple[str, str], Any] = {}
        for u in edited:
            key = (u.record, u.edit_lang)
            if key not in stored:
                value = get(key) if get is not None else masks(by_id[u.record], u.edit_lang)
                stored[key] = None if value is None else ray.put(value)
            if stored[key] is not None:
                out[(u.record, u.edit_lang, u.method)] = stored[key]
        return out
    configs = _memla_mask_configs([u.method for u in edited], config)
    jobs: dict[tuple[str, str, str], Any] = {}
    for u in edited:
        if u.method in configs:
            jobs.setdefault((u.record, u.edit_lang, content_hash(repr(configs[u.method]))), configs[u.method])
    if not jobs:
        return out
    computed: dict[tuple[str, str, str], Any] = {}
    failed = _schedule(ray, pool, [(*k, v) for k, v in jobs.items()],
                       lambda actor, j: actor.masks.remote(by_id[j[0]], j[1], j[3], cache_spec),
                       lambda j, value: computed.__setitem__(j[:3], ray.put(value)),
                       retries=rc.max_retries, desc="ray masks", progress=rc.progress)
    for job, msg in failed:  # the units of this record and language get the failure as their error row
        computed[job[:3]] = ray.put(RuntimeError(f"masks of record {job[0]!r} ({job[1]}) failed: {msg}"))
    for u in edited:
        if u.method in configs:
            out[(u.record, u.edit_lang, u.method)] = computed[(u.record, u.edit_lang,
                                                               content_hash(repr(configs[u.method])))]
    return out


__all__ = ["ADDRESS_ENV", "ModelSpec", "RayConfig", "RayGridError", "RayRunReport", "init_ray", "run_experiment_ray"]
