"""General ability before and after editing, offline: perplexity on unrelated prose, accuracy on unrelated facts.

The paper claims editing barely affects what the model otherwise knows (MEMLA §5; its general-ability
evaluation is not released with memla4mke). This module is the public entry point (notebook 06 uses
``general.general_study``, ``general.plan_study``, ...); the work is done, one job a module, in

* :mod:`memla_utils.general_scoring`: teacher-forced scoring of sentences and prose (NLL, answer hits);
* :mod:`memla_utils.general_probe`: what is measured (:class:`GeneralConfig`), the probe set (prose chunks,
  unrelated facts, relation spill-over), its raw scores and their summary;
* :mod:`memla_utils.general_edits`: single and sequential edit studies, the records they edit, their rows;
* :mod:`memla_utils.general_plan`: notebook 06's parameters (``auto``, ``full``) resolved for a run.

Rows are tidy dicts ``{setting, method, n_edits, record, edit_lang, eval_lang, metric, before, after, delta, n}``
that :func:`memla_utils.report.general_stats` aggregates.
"""
from __future__ import annotations

from .general_edits import (
    MasksProvider,
    available_methods,
    general_study,
    save_rows,
    saved_masks,
    sequential_general,
    single_edit_general,
    split_records,
    usable_records,
)
from .general_plan import FULL_SCALE_RECORDS, StudyPlan, parse_methods, parse_steps, plan_study
from .general_probe import (
    FULL_SEQUENTIAL_STEPS,
    TRAIN_RECORDS,
    GeneralConfig,
    LanguageScores,
    ProbeScores,
    ProbeSet,
    build_probe_set,
    measure,
    record_relation,
    score_probe,
    summarize,
)
from .general_scoring import SentenceScores, score_sentences, score_text, sentence_nll

__all__ = ["FULL_SCALE_RECORDS", "FULL_SEQUENTIAL_STEPS", "GeneralConfig", "LanguageScores", "MasksProvider",
           "ProbeScores", "ProbeSet", "SentenceScores", "StudyPlan", "TRAIN_RECORDS", "available_methods", "build_probe_set",
           "general_study", "measure", "parse_methods", "parse_steps", "plan_study", "record_relation", "save_rows",
           "saved_masks", "score_probe", "score_sentences", "score_text", "sentence_nll", "sequential_general",
           "single_edit_general", "split_records", "summarize", "usable_records"]
