"""Units handed out one at a time to several local processes (the ``processes`` executor, issue 15).

A fixed deal (shard ``k`` takes units ``k, k + n, ...``) leaves one process idle at the end whenever the units'
costs differ: on the small preset the baselines' two shares took 121 and 171 s of unit time (an IKE evaluation is
three times a ROME one), the MEMLA variants' 193 and 221 s. Here every process takes the next unit when it is
free, so the grid ends when the last unit does, whatever the costs.

Which process runs a unit never changes its numbers: every unit runs on one thread, is seeded from the run seed
and its own names (:func:`memla_utils.seeds.unit_seed`), and its edit is reverted bit-exactly before the next;
:func:`memla_utils.results_files.load_results` returns rows in one order whatever file they were written to.

Built on :mod:`multiprocessing` (a queue of unit tuples and a shared counter), so it travels to spawned processes
as an argument of :class:`multiprocessing.Process`.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .runner import Unit


class UnitQueue:
    """A queue of :class:`~memla_utils.runner.Unit` that several processes iterate over; each unit goes to one.

    ``put`` adds units (the feeding process may add more after the consumers started, e.g. the units that need
    MEND's meta-training once it is cached); ``close`` marks the end: iteration then stops in every process once
    the queue is empty (one end marker, put back by each process that reads it). ``taken()`` is how many units
    all processes have taken so far (for a progress bar over the whole grid).
    """

    def __init__(self, context: Any, total: int) -> None:
        """``context``: a :mod:`multiprocessing` context (``get_context("spawn")``); ``total``: the number of
        units that will be put (for progress bars only)."""
        self._queue = context.Queue()
        self._taken = context.Value("i", 0)
        self.total = int(total)

    def put(self, units: Iterable[Unit]) -> None:
        """Add ``units`` in this order."""
        for u in units:
            self._queue.put(u.as_tuple())

    def close(self) -> None:
        """No more units: every iteration ends once the units put so far are taken."""
        self._queue.put(None)

    def taken(self) -> int:
        """Units taken by every process so far."""
        return int(self._taken.value)

    def __iter__(self) -> Iterator[Unit]:
        """The next unit no process has taken, blocking while the queue is empty and not closed."""
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.put(None)  # for the next process that reaches the end
                return
            with self._taken.get_lock():
                self._taken.value += 1
            yield Unit(*item)


__all__ = ["UnitQueue"]
