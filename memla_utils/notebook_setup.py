"""The first step every notebook takes: logging, the run's configuration from its parameters cell, threads, seeds.

The notebooks' ``parameters`` cell (papermill injects its values after it) defines plain variables; the set-up
cell passes its own namespace here::

    cfg = start_notebook(globals(), "independent_languages", threads="torch_threads")

Only the names of :class:`~memla_utils.config.RunConfig`'s fields and the notebook-specific names listed in the
call are read, so a parameter the notebook does not declare cannot slip into the configuration.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from .config import RunConfig

#: The parameters every notebook declares: the fields of :class:`RunConfig` (``extra`` holds the others).
RUN_PARAMETERS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name != "extra")

#: One line per log record, as every notebook printed it before this module existed.
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"

T = TypeVar("T")


def start_notebook(namespace: Mapping[str, Any], *extra: str, threads: str | None = None,
                   seed: bool = True) -> RunConfig:
    """Configure logging, build the run's :class:`RunConfig` from the parameters cell, set threads, seed.

    ``namespace``: the notebook's ``globals()``; the values of :data:`RUN_PARAMETERS` and of the names in
    ``extra`` (notebook-specific parameters, converted and kept in ``cfg.extra``) are read from it, absent ones
    left at their defaults. ``threads``: the name of the parameter that holds torch's intra-op thread count
    (0 or absent: torch's default). ``seed``: seed python, numpy and torch with the run seed
    (:meth:`RunConfig.seed_everything`), as notebooks 00 and 02-07 do. Errors of a value name the parameter
    (:func:`memla_utils.config.coerce_parameter`).
    """
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    unknown = [name for name in extra if name not in namespace]
    if unknown:
        raise NameError(f"start_notebook: the parameters cell defines no {', '.join(map(repr, unknown))}")
    params = {name: namespace[name] for name in (*RUN_PARAMETERS, *extra) if name in namespace}
    cfg = RunConfig.from_params(**params)
    n_threads = int(namespace.get(threads, 0) or 0) if threads else 0
    if n_threads:
        import torch

        torch.set_num_threads(n_threads)
    if seed:
        cfg.seed_everything()
    return cfg


def first(items: Sequence[T], limit: int | str) -> list[T]:
    """The first ``limit`` items (all of them when ``limit`` is 0 or negative): the notebooks' ``max_records``."""
    n = int(limit)
    return list(items[:n]) if n > 0 else list(items)


__all__ = ["LOG_FORMAT", "RUN_PARAMETERS", "first", "start_notebook"]
