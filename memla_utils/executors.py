"""Where the experiment grid runs: :func:`run_experiment` on the executor named by ``$MEMLA_EXECUTOR`` (``auto``,
``local``, ``processes`` or ``ray``).

``local`` is :func:`memla_utils.runner.run_experiment`, ``processes`` :mod:`memla_utils.process_executor` and
``ray`` :mod:`memla_utils.executors_ray` (one Ray task per unit on a cluster); this module re-exports the Ray
executor's names (``run_experiment_ray``, ``RayConfig``, ``init_ray``, ...).
``python -m memla_utils.batch --executor NAME`` sets ``MEMLA_EXECUTOR`` for the notebooks.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import runner
from .executors_ray import (  # noqa: F401 (UnitWorker: re-exported, old import path)
    ADDRESS_ENV,
    RayConfig,
    RayGridError,
    RayRunReport,
    UnitWorker,
    init_ray,
    run_experiment_ray,
)
from .mkeb.record import Record
from .model_spec import ModelSpec
from .process_executor import run_experiment_processes

log = logging.getLogger(__name__)

EXECUTOR_ENV = "MEMLA_EXECUTOR"
EXECUTORS = ("auto", "local", "processes", "ray")


def selected_executor() -> str:
    """``$MEMLA_EXECUTOR`` (``auto`` when unset); anything else than :data:`EXECUTORS` is a clear error."""
    value = os.environ.get(EXECUTOR_ENV, "auto").strip().lower() or "auto"
    if value not in EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={value!r}: choose one of {', '.join(EXECUTORS)}")
    return value


def run_experiment(lm: Any, records: Sequence[Record], methods: Sequence[str], edit_languages: Sequence[str],
                   eval_languages: Sequence[str], run_dir: str | Path, shard: str = "0/1", **kwargs: Any) -> Path:
    """:func:`memla_utils.runner.run_experiment` on the executor named by ``$MEMLA_EXECUTOR`` (what the notebooks
    call; ``batch --executor`` sets it). Same arguments and result (the JSONL file this process wrote).

    - ``auto`` (default): on a CPU, the ``processes`` executor; on a GPU, or for ``shard`` other than ``0/1``
      (a launcher already splits the grid), ``local``.
    - ``processes``: :func:`memla_utils.process_executor.run_experiment_processes`, the units in
      ``$MEMLA_WORKERS`` local processes (default: the available cores), one CPU thread each.
    - ``local``: every unit in this process with its torch thread count (as before issue 15).
    - ``ray``: :func:`run_experiment_ray`, Ray tasks (loads the model by ``lm.name`` in every worker).

    An unknown name is a ``ValueError``, never a silent local run.
    """
    executor = selected_executor()
    if executor == "ray":
        return run_experiment_ray(lm, records, methods, edit_languages, eval_languages, run_dir, shard, **kwargs)
    on_cpu = getattr(getattr(lm, "device", None), "type", "cpu") == "cpu"
    if executor == "processes" or (executor == "auto" and on_cpu and shard == "0/1"):
        return run_experiment_processes(lm, records, methods, edit_languages, eval_languages, run_dir, shard,
                                        **kwargs)
    return runner.run_experiment(lm, records, methods, edit_languages, eval_languages, run_dir, shard, **kwargs)


__all__ = ["ADDRESS_ENV", "EXECUTOR_ENV", "ModelSpec", "RayConfig", "RayGridError", "RayRunReport", "init_ray",
           "run_experiment", "run_experiment_ray", "selected_executor"]
