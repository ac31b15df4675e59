"""One queue of units for several processes (memla_utils.unit_queue, issue 15): every unit goes to exactly one
process, units put after the consumers started still reach them, iteration ends in every process after
``close``, and the executor's early / late split keeps the units that need MEND's meta-training or second
moments until those are computed."""
from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

from memla_utils.process_executor import split_by_prefit
from memla_utils.runner import RunnerConfig, Unit
from memla_utils.unit_queue import UnitQueue


def _consume(queue: UnitQueue, path: str, ready, delay: float) -> None:
    """A spawned consumer: say it is ready, then note every unit it takes (slowly, so that both take some)."""
    ready.set()
    taken = []
    for unit in queue:
        taken.append(unit.as_tuple())
        time.sleep(delay)
    Path(path).write_text(json.dumps(taken), encoding="utf-8")


def test_each_unit_goes_to_exactly_one_process_and_late_units_still_arrive(tmp_path):
    ctx = mp.get_context("spawn")
    units = [Unit(f"r{i}", "en", m) for i in range(12) for m in ("ft", "rome")]
    queue = UnitQueue(ctx, len(units))
    queue.put(units[:4])  # before the consumers start
    readies = [ctx.Event() for _ in range(2)]
    procs = [ctx.Process(target=_consume, args=(queue, str(tmp_path / f"w{k}.json"), readies[k], 0.1))
             for k in range(2)]
    for p in procs:
        p.start()
    for ev in readies:
        assert ev.wait(120)
    queue.put(units[4:])  # after they started (they block on the empty queue meanwhile)
    queue.close()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    per_process = [json.loads((tmp_path / f"w{k}.json").read_text(encoding="utf-8")) for k in range(2)]
    taken = [tuple(u) for share in per_process for u in share]
    assert sorted(taken) == sorted(u.as_tuple() for u in units)  # disjoint and covering
    assert all(per_process)  # both took units (each sleeps after taking one, the other takes the next)
    assert queue.taken() == len(units) and queue.total == len(units)
    assert list(queue) == []  # closed and empty: a later iteration (here, a third process) ends at once


def test_units_that_need_a_fit_or_second_moments_wait_for_them():
    todo = [Unit("r0", "en", m) for m in ("unedited", "ft", "mend", "rome", "memla", "ike", "memit", "pmet")]
    early, late = split_by_prefit(todo, train_records=[object()], config=RunnerConfig())
    assert [u.method for u in early] == ["unedited", "ft", "memla"]
    assert [u.method for u in late] == ["mend", "rome", "ike", "memit", "pmet"]
    early, late = split_by_prefit(todo, train_records=[], config=RunnerConfig())  # nothing to fit on
    assert [u.method for u in late] == ["rome", "memit", "pmet"]
