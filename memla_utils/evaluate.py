"""The paper's metrics (ES, PS, NS, QS) for one (possibly edited) model, plus clearly labelled variants.

This module is the public entry point (the runner's, notebooks' and benchmarks' ``evaluate.X``); semantics follow
memla4mke ``utils/evaluator.py``, and the work is done, one job a module, in

* :mod:`memla_utils.evaluate_metrics`: ES / PS / NS / QS and the labelled variants of a record in one language
  (:func:`evaluate_language`) or all its languages at once (:func:`evaluate_record`), with their definitions;
* :mod:`memla_utils.evaluate_f1`: the F1 scores NS / QS use (sets of token ids; words for the variants);
* :mod:`memla_utils.evaluate_greedy`: greedy continuations, batched, each stopped at the model's first EOS
  (a deliberate difference to memla4mke, explained there);
* :mod:`memla_utils.evaluate_preedit`: the unedited model's evaluations, computed once and cached.

A metric whose fields a record lacks is ``None`` ("not available"), never 0.
"""
from __future__ import annotations

from .evaluate_f1 import set_f1, text_f1, text_tokens
from .evaluate_greedy import cut_at_eos, eos_token_ids, greedy_continuations
from .evaluate_metrics import (
    PAPER_METRICS,
    VARIANT_METRICS,
    EvalConfig,
    LanguageEvaluation,
    MetricValue,
    Wrap,
    evaluate_language,
    evaluate_record,
)
from .evaluate_preedit import PreEditCache

__all__ = ["EvalConfig", "LanguageEvaluation", "MetricValue", "PAPER_METRICS", "PreEditCache", "VARIANT_METRICS",
           "Wrap", "cut_at_eos", "eos_token_ids", "evaluate_language", "evaluate_record", "greedy_continuations",
           "set_f1", "text_f1", "text_tokens"]
