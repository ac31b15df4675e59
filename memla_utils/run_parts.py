"""The parts of a multi-session run: when each ran, on which commit, for how long, and how far it got.

A run too long for one session (the medium preset, issue 16) is built in parts: each ``make paper PRESET=medium``
is one part, stopped at a deadline (``--hours``) between two units and resumed by the next part. The run folder's
``parts.json`` lists every part (:class:`Part`), so the run's manifest can say which commits and how many hours
produced it. Written atomically after every change; an unfinished part (a session that stopped mid-way) keeps
``finished_utc = None`` and is closed by the next :func:`begin_part`.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .cache import write_json_atomic
from .manifest import git_state

log = logging.getLogger(__name__)

PARTS_FILE = "parts.json"
#: Environment variable through which the batch driver hands a part's deadline (UNIX time) to the runner.
DEADLINE_ENV = "MEMLA_DEADLINE"


class DeadlineReached(RuntimeError):
    """The part's time is up: the runner stopped between two units (results so far are written). Not an error:
    the next part resumes where this one stopped."""


@dataclass
class Part:
    """One part of a run. ``units_before`` / ``units_after``: finished units at its start / end."""

    part: int
    started_utc: str
    commit: str | None
    dirty: bool | None
    machine: str
    units_before: int
    finished_utc: str | None = None
    hours: float | None = None
    units_after: int | None = None
    outcome: str | None = None  # "complete" | "deadline" | "failed" | "interrupted"


def _utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_parts(run_dir: str | Path) -> list[Part]:
    """The parts recorded in ``run_dir`` (empty list when none); raises ``ValueError`` naming an unreadable file."""
    path = Path(run_dir) / PARTS_FILE
    if not path.is_file():
        return []
    try:
        return [Part(**p) for p in json.loads(path.read_text(encoding="utf-8"))]
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: unreadable parts list ({err})") from err


def _write(run_dir: Path, parts: list[Part]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / PARTS_FILE, [asdict(p) for p in parts])


def begin_part(run_dir: str | Path, units_before: int) -> Part:
    """Record the start of a new part (an earlier part left open is marked ``interrupted``) and return it."""
    run_dir = Path(run_dir)
    parts = read_parts(run_dir)
    for p in parts:
        if p.finished_utc is None:
            p.outcome = p.outcome or "interrupted"
    git = git_state()  # the same source paths as every manifest (manifest.SOURCE_PATHS)
    part = Part(part=len(parts) + 1, started_utc=_utc(), commit=git["commit"],
                dirty=git["dirty"], machine=f"{platform.node()} {platform.machine()}",
                units_before=units_before)
    parts.append(part)
    _write(run_dir, parts)
    return part


def end_part(run_dir: str | Path, part: Part, units_after: int, outcome: str) -> Part:
    """Close ``part`` with its duration (hours), finished units and outcome, and rewrite ``parts.json``."""
    run_dir = Path(run_dir)
    parts = read_parts(run_dir)
    started = _dt.datetime.strptime(part.started_utc, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=_dt.timezone.utc).timestamp()
    part.finished_utc, part.units_after, part.outcome = _utc(), units_after, outcome
    part.hours = round((time.time() - started) / 3600, 4)
    parts = [part if p.part == part.part else p for p in parts]
    if not any(p.part == part.part for p in parts):
        parts.append(part)
    _write(run_dir, parts)
    log.info("%s: part %d %s after %.2f h (%d -> %d units)", run_dir, part.part, outcome, part.hours,
             part.units_before, units_after)
    return part


def superseded_parts(run_dir: str | Path) -> list[dict[str, Any]]:
    """The parts of earlier starts of this run (``<run_dir>/superseded-<UTC time>/parts.json``, moved aside by
    ``--restart-run``, oldest first), each with the folder it lies in. Their results do not count; their
    attributions do where the run keeps a content-addressed cache (the durable ``<run_dir>/cache``)."""
    out = []
    for folder in sorted(Path(run_dir).glob("superseded-*")):
        for p in read_parts(folder):
            out.append({"superseded": folder.name, **asdict(p)})
    return out


def summary(run_dir: str | Path) -> dict[str, Any]:
    """Parts, distinct commits and total hours (for the run manifest); ``superseded``: the parts of the run's
    earlier starts (:func:`superseded_parts`) and their hours, counted apart."""
    parts = read_parts(run_dir)
    earlier = superseded_parts(run_dir)
    return {"parts": len(parts), "hours": round(sum(p.hours or 0.0 for p in parts), 3),
            "commits": sorted({p.commit for p in parts if p.commit}), "list": [asdict(p) for p in parts],
            "superseded": {"parts": len(earlier), "hours": round(sum(p["hours"] or 0.0 for p in earlier), 3),
                           "list": earlier}}


def deadline_from_env() -> float | None:
    """The running part's deadline (UNIX time) from :data:`DEADLINE_ENV`, or ``None``; a bad value raises
    ``ValueError`` naming the variable."""
    import os

    raw = os.environ.get(DEADLINE_ENV)
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{DEADLINE_ENV} must be a UNIX time in seconds, got {raw!r}") from None


def check_deadline(where: str, deadline: float | None = None) -> None:
    """Raise :class:`DeadlineReached` naming ``where`` when the running part's deadline has passed.

    Called between two units of work whose results are already saved (the runner's units, a record's
    attributions), so the next part resumes from them. ``deadline`` defaults to :func:`deadline_from_env`
    (``None``: no part is running, never raises).
    """
    deadline = deadline_from_env() if deadline is None else deadline
    if deadline is not None and time.time() > deadline:
        raise DeadlineReached(f"{where}: the part's deadline passed (results so far are saved; run the same "
                              f"command again to continue)")


__all__ = ["DEADLINE_ENV", "DeadlineReached", "PARTS_FILE", "Part", "begin_part", "check_deadline",
           "deadline_from_env", "end_part", "read_parts", "summary", "superseded_parts"]
