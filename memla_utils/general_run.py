"""Notebook 06's general-ability stage in one call: the editors' settings of notebooks 04-05, the study's plan from
the notebook's parameters, the records it reads, the study and its rows file.

The measurements themselves are :func:`memla_utils.general_edits.general_study`'s; this module only wires the
run's configuration (:class:`~memla_utils.config.RunConfig`) to it, so that the notebook holds no logic.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import RunConfig
from .general_edits import MasksProvider, general_study, save_rows
from .general_plan import StudyPlan, plan_study
from .general_probe import GeneralConfig
from .mask_compute import MaskConfig
from .models import LoadedModel


def edit_overrides(cfg: RunConfig, budget: str, mask_config: MaskConfig) -> dict[str, dict[str, Any]]:
    """``make_editor`` overrides per method as notebooks 04 and 05 use them: the baselines' ``budget``
    (:func:`memla_utils.baselines.resolve_budget`: ``auto`` is ``cpu-small`` on a CPU) over the run's prose
    languages, and MEMLA's mask settings (:func:`memla_utils.editors.memla.mask_overrides`). Raises
    ``ValueError`` naming ``budget`` for an unknown one."""
    from .baselines import baseline_overrides, resolve_budget
    from .editors.memla import mask_overrides

    overrides = baseline_overrides(resolve_budget(budget, cfg.device), cfg.prose_languages())
    overrides.update(mask_overrides(mask_config))
    return overrides


@dataclass
class GeneralRun:
    """What :func:`run_general_study` measured: the tidy rows, the methods without an editor, the plan, the file."""

    rows: list[dict[str, Any]]
    missing: list[str]
    plan: StudyPlan
    path: Path

    def __str__(self) -> str:
        return (f"{len(self.rows)} rows -> {self.path}; methods without an editor: {self.missing or 'none'}; "
                f"{self.plan}")

    def frame(self) -> Any:
        """The rows as a pandas DataFrame, or ``None`` when the study measured nothing (claims then say so)."""
        import pandas as pd

        return pd.DataFrame(self.rows) if self.rows else None

    def single_edit_table(self) -> Any:
        """Change after one edit vs the unedited model, per method (rows, in the plan's order) and metric x
        language (columns), with 95% bootstrap intervals over edited records (:func:`memla_utils.report.general_stats`;
        perplexity: relative, %; accuracy: points). Empty when there are no single-edit rows."""
        from . import report

        stats = report.general_stats(self.frame()) if self.rows else None
        if stats is None or stats.empty:
            import pandas as pd

            return pd.DataFrame()
        return report.wide(stats[stats["setting"] == "single"], ["method"], ["metric", "eval_lang"],
                           rows=self.plan.methods)

    def sequential_figure(self) -> Any:
        """The sequential-editing curves (:func:`memla_utils.report.sequential_figure`, closed so a notebook shows
        it once), or a line saying there are none (no usable checkpoint or no method)."""
        from . import report

        frame = self.frame()
        if frame is None or not (frame["setting"] == "sequential").any():
            return "no sequential-editing results (no usable checkpoint or no method)"
        import matplotlib.pyplot as plt

        fig = report.sequential_figure(frame)
        plt.close(fig)
        return fig


def run_general_study(lm: LoadedModel, cfg: RunConfig, *, probe_records: int, overrides: dict[str, dict[str, Any]],
                      masks: MasksProvider, edit_context: dict[str, Any] | None = None) -> GeneralRun:
    """Plan (``general_methods``, ``general_records``, ``sequential_steps`` in ``cfg.extra``:
    :func:`~memla_utils.general_plan.plan_study`), read the records the plan needs from the run's source in file
    order, measure (:func:`~memla_utils.general_edits.general_study`, edits in the first edit language, perplexity
    in the prose languages: MzsRE's cs, nl, tr and vi have no general-ability text) and write
    ``<run_dir>/general/general.jsonl``. ``probe_records``: unedited records per language whose facts are probed.
    Errors: those of the plan's parameters and of the source (each names its parameter or file)."""
    plan = plan_study(cfg.extra["general_methods"], cfg.extra["general_records"], cfg.extra["sequential_steps"],
                      cfg.methods, cfg.n_records)
    records = cfg.source_records(n=plan.records_needed(int(probe_records)))
    rows, missing = general_study(lm, records, plan.methods, cfg.prose_languages(), cfg.edit_languages[0],
                                  n_single=plan.n_single, steps=plan.steps,
                                  config=GeneralConfig(max_probe_records=int(probe_records), seed=cfg.seed),
                                  editor_overrides=overrides, masks=masks, edit_context=edit_context)
    return GeneralRun(rows, missing, plan, save_rows(rows, cfg.run_dir))


__all__ = ["GeneralRun", "edit_overrides", "run_general_study"]
