"""Notebook 06's general-ability parameters resolved for a run: which methods, how many single edits, which
sequential checkpoints (``auto`` chooses by the run's size).

Small (CPU) runs measure MEMLA on 2 single edits and 1,3,5 sequential edits (this companion's choice); full-scale
runs every method on 100 single edits and the paper-scale checkpoints 10,50,100
(:data:`memla_utils.general_probe.FULL_SEQUENTIAL_STEPS`). Part of the general-ability study of MEMLA §5's claim
(not released with memla4mke); the study these plans parameterise is :func:`memla_utils.general_edits.general_study`.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from .general_probe import FULL_SEQUENTIAL_STEPS, TRAIN_RECORDS, GeneralConfig

log = logging.getLogger(__name__)


#: Below this many records a run counts as a small (CPU) run for the ``auto`` general-ability settings.
FULL_SCALE_RECORDS = 100


def parse_methods(value: str | Sequence[str], run_methods: Sequence[str], n_records: int = 0) -> list[str]:
    """``"memla,ft"`` or ``["memla", "ft"]`` (kept in run order, only methods of the run); ``"all"``: every method
    of the run; ``"auto"``: MEMLA alone on small runs (each edit costs seconds on CPU), every method at full
    scale."""
    from .config import coerce_parameter

    value = coerce_parameter("general_methods", value)
    if value == "auto":
        value = "all" if n_records >= FULL_SCALE_RECORDS else ["memla"]
    if value == "all":
        return list(run_methods)
    wanted = list(value)
    dropped = [m for m in wanted if m not in run_methods]
    if dropped:
        log.warning("general_methods %s are not methods of this run (%s): skipped", dropped, ",".join(run_methods))
    return [m for m in wanted if m in run_methods]


@dataclass
class StudyPlan:
    """What notebook 06's general-ability parameters resolve to for a run of ``n_records`` records."""

    methods: list[str]
    n_single: int             # records edited one at a time (edit, measure, revert)
    steps: tuple[int, ...]    # sequential-editing checkpoints

    @property
    def n_edit(self) -> int:
        """Records the study edits (the probe records come after them in file order)."""
        return max(self.n_single, max(self.steps) if self.steps else 0)

    def records_needed(self, probe_records: int, n_train: int = TRAIN_RECORDS) -> int:
        """Records the study reads in file order: the edited ones, the unedited probe records, then the training
        split (:data:`~memla_utils.general_probe.TRAIN_RECORDS`)."""
        return self.n_edit + int(probe_records) + int(n_train)


def plan_study(general_methods: str, general_records: str | int, sequential_steps: str | int | Sequence[int],
               run_methods: Sequence[str], n_records: int) -> StudyPlan:
    """Resolve the ``auto`` values: small runs measure MEMLA on 2 single edits and 1,3,5 sequential edits (kept
    to the run's records, already located), full-scale runs every method on 100 and 10,50,100."""
    if str(general_records).strip() == "auto":
        n_single = min(2, n_records) if n_records < FULL_SCALE_RECORDS else 100
    else:
        try:
            n_single = int(general_records)
        except ValueError:
            raise ValueError(f"general_records must be an integer or 'auto', got {general_records!r}") from None
    return StudyPlan(parse_methods(general_methods, run_methods, n_records), n_single,
                     parse_steps(sequential_steps, n_records))


def parse_steps(value: str | int | Sequence[int], n_records: int = 0) -> tuple[int, ...]:
    """``"1,3,5"`` -> (1, 3, 5); ``"full"`` -> (10, 50, 100); ``"auto"`` -> full when ``n_records`` >= 100, else
    the CPU default (1, 3, 5) kept to at most ``n_records`` edits, so the sequence edits the records notebooks
    02-05 already located (a further record costs a new attribution, minutes on CPU); ``""`` -> none."""
    if isinstance(value, int) and not isinstance(value, bool):  # papermill passes "-p sequential_steps 5" as an int
        return (value,) if value > 0 else ()
    if isinstance(value, str):
        if value.strip() == "auto":
            if n_records >= FULL_SCALE_RECORDS:
                value = "full"
            else:
                small = [s for s in GeneralConfig.sequential_steps if s <= max(1, n_records)]
                value = ",".join(map(str, small))
        if value.strip() == "full":
            return FULL_SEQUENTIAL_STEPS
        try:
            return tuple(int(v) for v in value.split(",") if v.strip())
        except ValueError:
            raise ValueError(f"sequential_steps must be comma-separated integers or 'full', got {value!r}") from None
    return tuple(int(v) for v in value)


__all__ = ["FULL_SCALE_RECORDS", "StudyPlan", "parse_methods", "parse_steps", "plan_study"]
