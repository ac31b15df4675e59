"""CPU worker helpers (issue 15): worker k pinned to core k mod the cores allowed, the one-core and no-affinity
cases left alone, bad worker numbers refused by name, and the notebook's process given its cores back."""
from __future__ import annotations

import logging
import os

import pytest

from memla_utils import cpu_workers as cw


def test_workers_get_distinct_cores_in_order_and_wrap_around():
    assert [cw.core_for(k, [0, 1]) for k in range(4)] == [0, 1, 0, 1]
    assert [cw.core_for(k, [7, 3, 5]) for k in range(3)] == [3, 5, 7]  # the k-th of the sorted set


def test_a_bad_worker_number_is_refused_by_name():
    for bad in (-1, 1.5, "1", True, None):
        with pytest.raises(ValueError, match="index"):
            cw.pin_to_core(bad, [0, 1])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="index"):
            cw.core_for(bad, [0, 1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cores"):
        cw.core_for(0, [])


def test_one_core_or_no_affinity_call_leaves_the_process_alone(monkeypatch, caplog):
    calls: list[tuple] = []
    monkeypatch.setattr(os, "sched_setaffinity", lambda *a: calls.append(a), raising=False)
    with caplog.at_level(logging.DEBUG, logger=cw.__name__):
        assert cw.pin_to_core(3, [5]) is None
    assert calls == [] and "nothing to pin" in caplog.text
    with pytest.raises(ValueError, match="index"):  # the number is still checked
        cw.pin_to_core(-2, [5])
    monkeypatch.delattr(os, "sched_setaffinity")
    with caplog.at_level(logging.DEBUG, logger=cw.__name__):
        assert cw.pin_to_core(1, [0, 1]) is None
    assert "not available" in caplog.text


def test_pinning_covers_every_thread_and_a_failure_runs_unpinned(monkeypatch, caplog):
    calls: list[tuple] = []
    monkeypatch.setattr(cw, "_threads", lambda: [11, 12])
    monkeypatch.setattr(os, "sched_setaffinity", lambda tid, cores: calls.append((tid, cores)), raising=False)
    assert cw.pin_to_core(3, [4, 6]) == 6
    assert calls == [(11, {6}), (12, {6})]

    def refuse(tid, cores):
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "sched_setaffinity", refuse)
    with caplog.at_level(logging.WARNING, logger=cw.__name__):
        assert cw.pin_to_core(0, [4, 6]) is None
    assert "running unpinned" in caplog.text


@pytest.mark.skipif(len(cw.allowed_cores()) < 2, reason="needs a process allowed on 2 cores or more")
def test_pinned_to_core_gives_the_process_its_cores_back():
    before = cw.allowed_cores()
    with cw.pinned_to_core(1) as core:
        assert core == before[1]
        assert cw.allowed_cores() == [before[1]]
        assert all(os.sched_getaffinity(int(t)) == {before[1]} for t in os.listdir("/proc/self/task"))
    assert cw.allowed_cores() == before
    with pytest.raises(RuntimeError), cw.pinned_to_core(0):
        raise RuntimeError("a failed grid")
    assert cw.allowed_cores() == before
