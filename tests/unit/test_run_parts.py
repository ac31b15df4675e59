"""Parts of a multi-session run (parts.json) and the deadline hand-over."""
from __future__ import annotations

import json

import pytest

from memla_utils import run_parts


def test_parts_are_recorded_closed_and_summed(tmp_path):
    p1 = run_parts.begin_part(tmp_path, units_before=0)
    assert p1.part == 1 and p1.finished_utc is None
    run_parts.end_part(tmp_path, p1, units_after=10, outcome="deadline")
    p2 = run_parts.begin_part(tmp_path, units_before=10)
    parts = run_parts.read_parts(tmp_path)
    assert [p.part for p in parts] == [1, 2]
    assert parts[0].units_after == 10 and parts[0].outcome == "deadline" and parts[0].hours >= 0
    # a part left open (the session stopped) is marked interrupted by the next one
    run_parts.begin_part(tmp_path, units_before=12)
    parts = run_parts.read_parts(tmp_path)
    assert parts[1].part == p2.part and parts[1].outcome == "interrupted" and len(parts) == 3
    s = run_parts.summary(tmp_path)
    assert s["parts"] == 3 and s["hours"] >= 0 and len(s["list"]) == 3
    assert s["superseded"] == {"parts": 0, "hours": 0.0, "list": []}


def test_summary_counts_the_parts_of_earlier_starts_apart(tmp_path):
    for stamp, hours in (("20261201T080348Z", 0.5), ("20261201T102613Z", 1.25)):
        folder = tmp_path / f"superseded-{stamp}"
        part = run_parts.begin_part(folder, units_before=0)
        run_parts.end_part(folder, part, units_after=0, outcome="deadline")
        parts = run_parts.read_parts(folder)
        parts[0].hours = hours
        run_parts._write(folder, parts)
    now = run_parts.begin_part(tmp_path, units_before=0)
    run_parts.end_part(tmp_path, now, units_after=4, outcome="complete")
    s = run_parts.summary(tmp_path)
    assert s["parts"] == 1 and s["list"][0]["units_after"] == 4
    assert s["superseded"]["parts"] == 2 and s["superseded"]["hours"] == 1.75
    assert [p["superseded"] for p in s["superseded"]["list"]] == ["superseded-20261201T080348Z",
                                                                   "superseded-20261201T102613Z"]


def test_unreadable_parts_file_names_it(tmp_path):
    (tmp_path / run_parts.PARTS_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="parts.json"):
        run_parts.read_parts(tmp_path)
    (tmp_path / run_parts.PARTS_FILE).write_text(json.dumps([{"part": 1}]))
    with pytest.raises(ValueError, match="unreadable parts list"):
        run_parts.read_parts(tmp_path)


def test_deadline_from_env(monkeypatch):
    monkeypatch.delenv(run_parts.DEADLINE_ENV, raising=False)
    assert run_parts.deadline_from_env() is None
    monkeypatch.setenv(run_parts.DEADLINE_ENV, "1700000000.5")
    assert run_parts.deadline_from_env() == 1700000000.5
    monkeypatch.setenv(run_parts.DEADLINE_ENV, "soon")
    with pytest.raises(ValueError, match="MEMLA_DEADLINE"):
        run_parts.deadline_from_env()


def test_check_deadline_raises_only_after_the_deadline(monkeypatch):
    import time

    monkeypatch.delenv(run_parts.DEADLINE_ENV, raising=False)
    run_parts.check_deadline("nothing running")  # no part: never raises
    run_parts.check_deadline("future", time.time() + 60)
    with pytest.raises(run_parts.DeadlineReached, match="unit 7"):
        run_parts.check_deadline("unit 7", time.time() - 1)
    monkeypatch.setenv(run_parts.DEADLINE_ENV, str(time.time() - 1))
    with pytest.raises(run_parts.DeadlineReached, match="from the environment"):
        run_parts.check_deadline("from the environment")
