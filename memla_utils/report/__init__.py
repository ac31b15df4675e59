"""The paper's tables, figures and claims, from the runner's tidy results, each number with its 95% interval.

Input: the tidy rows ``{record, method, edit_lang, eval_lang, metric, value, n}`` the runner writes (and the
general-ability rows of :mod:`memla_utils.general`). The unit of resampling is the *record* (one edited fact):
inside a cell, values are first averaged per record, then a percentile bootstrap over records gives the
interval, and ``n`` is the number of records. Missing methods or metrics stay visible as "missing" cells, and a
claim whose inputs are absent reads "not measured (reason)", never an error.

Outputs: tables as CSV (numeric long form: mean, ci_low, ci_high, n), Markdown and LaTeX (formatted wide form),
figures as PNG + PDF written without timestamps so the same numbers give the same files.

One module per job: :mod:`.names` (metric and method vocabulary), :mod:`.stats` (bootstrap, aggregation),
:mod:`.tables` (wide tables, formatting, writing), :mod:`.figures`, :mod:`.claims`, :mod:`.ranking` (the
baselines ranked by the cross-lingual score), :mod:`.inputs` (reading a run) and :mod:`.build` (:func:`write_report`). Everything is re-exported here, so ``report.X`` keeps working.
"""
from __future__ import annotations

from .build import ReportOutputs, table_digest, write_report
from .claims import (
    MIN_N_FOR_VERDICT,
    PAPER_FIGURES,
    ClaimConfig,
    claims_breakdown,
    claims_table,
    format_breakdown,
    format_claims,
    probe_language_groups,
    suppression_effect,
    verdict,
)
from .figures import ablation_figure, heatmap_figure, method_bars, neuron_figure, save_figure, sequential_figure
from .inputs import find_table, load_general_table, load_mask_stats, load_results_table, neuron_layer_frame
from .names import ABLATION_METHODS, MISSING, SCORE_METRICS, TOKEN_ACC_METRICS, baseline_methods, method_order
from .names import PERCENT_METRICS as PERCENT_METRICS  # public, not in __all__ (as before)
from .names import REFERENCE_METHODS as REFERENCE_METHODS
from .ranking import RANKING_COLUMNS, baseline_ranking, strongest_baselines
from .stats import (
    BootstrapConfig,
    CellStat,
    ablation_stats,
    bootstrap_ci,
    cell_stats,
    general_stats,
    main_stats,
    multihop_stats,
    needs_token_accuracy,
    paired_difference,
    per_language_stats,
    scores,
    tidy,
)
from .stats import per_record as per_record
from .tables import (
    edit_costs_table,
    edit_seconds_note,
    failed_edits,
    format_cell,
    language_matrices,
    language_matrix,
    summarize,
    to_latex,
    to_markdown,
    wide,
    write_table,
)

__all__ = ["ABLATION_METHODS", "MIN_N_FOR_VERDICT", "BootstrapConfig", "CellStat", "ClaimConfig", "MISSING", "PAPER_FIGURES",
           "ReportOutputs", "SCORE_METRICS", "TOKEN_ACC_METRICS", "ablation_figure", "ablation_stats", "baseline_methods", "bootstrap_ci",
           "cell_stats", "claims_breakdown", "edit_costs_table", "edit_seconds_note", "failed_edits", "language_matrices", "language_matrix", "summarize", "claims_table", "format_breakdown", "probe_language_groups", "find_table", "format_cell", "format_claims", "general_stats",
           "heatmap_figure", "load_general_table", "load_mask_stats", "load_results_table", "main_stats",
           "method_bars", "method_order", "multihop_stats", "needs_token_accuracy", "neuron_figure", "neuron_layer_frame", "paired_difference",
           "per_language_stats", "RANKING_COLUMNS", "baseline_ranking", "strongest_baselines", "save_figure", "scores", "sequential_figure", "suppression_effect", "table_digest",
           "tidy", "to_latex", "to_markdown", "verdict", "wide", "write_report", "write_table"]
