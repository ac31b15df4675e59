"""The Ray executor's scheduler: jobs on a pool of Ray actors, one call in flight per actor, each failed call
retried on whichever actor is free, and an actor that died and is restarting given work again only once it answers
a health check (:func:`_schedule`). Used by :mod:`memla_utils.executors_ray` for its mask and unit stages.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .runner import Unit

log = logging.getLogger(__name__)


@dataclass
class _Pool:
    """The actors and the bookkeeping of the scheduler (one call in flight per actor)."""

    actors: list[Any]
    max_restarts: int
    alive: list[bool] = field(default_factory=list)
    deaths: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.alive = [True] * len(self.actors)
        self.deaths = [0] * len(self.actors)


_PING = object()  # an in-flight health check of an actor that is restarting


def _schedule(ray, pool: _Pool, jobs: Sequence[Any], call: Callable[[Any, Any], Any],
              on_result: Callable[[Any, Any], None], *, retries: int, desc: str, progress: bool
              ) -> list[tuple[Any, str]]:
    """Run ``call(actor, job)`` for every job, one in flight per live actor; a failed call is retried up to
    ``retries`` times (on whichever actor is free); returns the jobs that still failed, with the error.

    A worker that died is restarted by Ray (up to ``pool.max_restarts`` times); it gets new work only once a
    health check (``probe``) answers, so a restart in progress does not use up another job's retries.
    """
    from collections import deque

    from .progress import tqdm

    errors = ray.exceptions
    queue = deque((job, 0) for job in jobs)
    in_flight: dict[Any, tuple[Any, int, int]] = {}
    busy = [False] * len(pool.actors)
    failed: list[tuple[Any, str]] = []

    def fill() -> None:
        for i, actor in enumerate(pool.actors):
            if queue and pool.alive[i] and not busy[i]:
                job, attempt = queue.popleft()
                in_flight[call(actor, job)] = (job, attempt, i)
                busy[i] = True

    def check(i: int, pings: int) -> None:
        in_flight[pool.actors[i].probe.remote()] = (_PING, pings, i)

    def actor_failed(i: int, err: Exception) -> None:
        if isinstance(err, errors.ActorDiedError):
            pool.alive[i] = False
        elif isinstance(err, errors.RayActorError):
            pool.deaths[i] += 1
            pool.alive[i] = pool.deaths[i] <= pool.max_restarts
            if pool.alive[i]:
                busy[i] = True
                check(i, 0)

    with tqdm(total=len(queue), desc=desc, disable=not progress) as bar:
        fill()
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            job, attempt, i = in_flight.pop(ready[0])
            busy[i] = False
            try:
                value = ray.get(ready[0])
            except Exception as err:  # noqa: BLE001 - retried, then reported; the other jobs go on
                if job is _PING:  # still restarting: ask again shortly (about two minutes at most)
                    if isinstance(err, errors.ActorUnavailableError) and attempt < 240:
                        busy[i] = True
                        time.sleep(0.5)
                        check(i, attempt + 1)
                    else:
                        pool.alive[i] = False
                else:
                    text = str(err).strip()
                    msg = f"{type(err).__name__}: {text.splitlines()[-1][:300] if text else ''}"
                    if attempt < retries:
                        log.warning("%s %s failed (attempt %d of %d), retrying: %s", desc, _label(job),
                                    attempt + 1, retries + 1, msg)
                        queue.appendleft((job, attempt + 1))
                    else:
                        log.warning("%s %s failed after %d attempt(s): %s", desc, _label(job), attempt + 1, msg)
                        failed.append((job, msg))
                        bar.update(1)
                    actor_failed(i, err)
            else:
                if job is not _PING:
                    on_result(job, value)
                    bar.update(1)
            if not any(pool.alive):
                failed += [(job, "every worker died") for job, _ in queue]
                bar.update(len(queue))
                queue.clear()
            fill()
    return failed


def _label(job: Any) -> str:
    return str(job.as_tuple()) if isinstance(job, Unit) else str(job[:2])
