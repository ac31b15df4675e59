"""Notebook 01's MKEB stage for a run: build (or check) MKEB, its counts, quality check and examples, saved as the
paper companion's tables and figure; or, for a MzsRE / Bi-ZsRE run, one line saying why there is no MKEB build.

Every step here is a call of :mod:`memla_utils.mkeb` (build, summary, quality) and :mod:`memla_utils.artifacts`;
this module only wires them to a run's :class:`~memla_utils.config.RunConfig`, so the notebook holds no logic.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..artifacts import save_figure, save_table
from ..languages import MKEB_LANGUAGES
from .builder import BuildResult, build_mkeb
from .quality import quality_problems
from .summary import build_stats_frame, counts_by_relation, counts_figure, examples_table


@dataclass
class RunBuild:
    """What :func:`build_for_run` did: the build (``None`` for MzsRE / Bi-ZsRE runs) and where tables go."""

    built: BuildResult | None
    note: str
    tables_dir: Path
    figures_dir: Path

    def summary(self) -> Any:
        """The build's report and per-relation statistics (a DataFrame), or the note saying why there is none."""
        return self.note if self.built is None else build_stats_frame(self.built.stats)

    def counts(self) -> Any:
        """Records per relation and language, saved as ``mkeb_counts`` (table and heatmap); or the note."""
        if self.built is None:
            return self.note
        counts = counts_by_relation(self.built.records)
        save_table(counts.reset_index(), self.tables_dir / "mkeb_counts")
        save_figure(counts_figure(counts), self.figures_dir / "mkeb_counts")
        return counts

    def check_quality(self) -> str:
        """Every record in the 12 languages through :func:`~memla_utils.mkeb.quality.quality_problems`; raises
        ``ValueError`` listing the first five problems when there is any; else one line (or the note)."""
        if self.built is None:
            return self.note
        records = self.built.records
        problems = [p for r in records for p in quality_problems(r, MKEB_LANGUAGES)]
        if problems:
            raise ValueError(f"{len(problems)} problems in {len(records)} MKEB records, e.g. {problems[:5]}")
        return f"0 problems in {len(records)} records x {len(MKEB_LANGUAGES)} languages"

    def examples(self) -> Any:
        """One capital record shown in each language, saved as ``mkeb_examples``; or the note."""
        if self.built is None:
            return self.note
        table = examples_table(self.built.records, MKEB_LANGUAGES, per_language=1, relation="capital")
        save_table(table, self.tables_dir / "mkeb_examples")
        return table


def build_for_run(cfg: Any, *, rebuild: bool = False) -> RunBuild:
    """Build MKEB (:func:`~memla_utils.mkeb.builder.build_mkeb` with the run's seed into ``cfg.mkeb_path``; the
    canonical file is kept unless ``rebuild``) when the run's dataset is MKEB; log what the build did. A MzsRE /
    Bi-ZsRE run builds nothing and every step says so. ``cfg``: a :class:`~memla_utils.config.RunConfig`."""
    import logging

    tables_dir, figures_dir = Path(cfg.figures_dir) / "tables", Path(cfg.figures_dir)
    if cfg.dataset != "mkeb":
        note = (f"dataset={cfg.dataset!r}: this run's records come from {cfg.source_path()}; the MKEB build, its "
                "counts, checks and examples are left out (below: the run's records and the imported benchmarks)")
        return RunBuild(None, note, tables_dir, figures_dir)
    built = build_mkeb(seed=cfg.seed, out_dir=cfg.mkeb_path.parent, records_name=cfg.mkeb_path.name, rebuild=rebuild)
    note = f"{built.report()}\nthis build: {sum(built.stats.records.values())} records in {built.stats.seconds:.1f} s"
    logging.getLogger(__name__).info("%s", note)
    return RunBuild(built, note, tables_dir, figures_dir)


def imported_coverage(shared_dir: Path, tables_dir: Path) -> Any:
    """Import every public benchmark found in ``shared_dir`` (:func:`~memla_utils.mkeb.importers.import_all`: read
    in place, never copied), log what was found, and return its coverage per dataset and language, saved as
    ``imported_coverage`` when anything was found."""
    import logging

    from .importers import import_all
    from .summary import coverage_by_dataset

    imported = import_all(shared_dir)
    logging.getLogger(__name__).info("looked in %s: found %s", shared_dir, ", ".join(imported) or "nothing")
    coverage = coverage_by_dataset(imported)
    if len(coverage):
        save_table(coverage, tables_dir / "imported_coverage")
    return coverage


__all__ = ["RunBuild", "build_for_run", "imported_coverage"]
