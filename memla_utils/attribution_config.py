"""How knowledge neurons are attributed: :class:`AttributionConfig` and the values each of its fields may take.

Its one job is the choice of computation: method (``"memla4mke"``, the paper's released locator, or ``"exact"``
IG), IG steps, baseline, target, threshold, answer, paraphrases, and the chunking and precision of the pass.
The defaults follow memla4mke (``identify_kn/locate_kn.py`` -> ``AMIG/knowledge_neurons/garns.py``, class
``garns``): 20 steps, the EOS-mean baseline of ``garns.scaled_input``, the answer probability as target, 0.3 x the
maximum score (``garns.get_coarse_neurons``), union over the edit prompt and its paraphrases
(``garns.get_refined_neurons``). What each method computes: :mod:`memla_utils.attribution`.
:data:`SCORES_VERSION` is part of every cached score's key (:meth:`AttributionConfig.score_params`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

METHODS = ("memla4mke", "exact")
BASELINES = ("eos_mean", "zero")
TARGETS = ("prob", "logprob")
ANSWERS = ("true", "new")
HEAD_PRECISIONS = ("auto", "float32", "bfloat16")
#: Part of every cached score's key: bump it in the change that alters any score's bits (summation order, row
#: layout), so that caches written by earlier code are not mixed with new scores. 2: the staircase of
#: ``attribution_stair`` (issue 15) and one prompt per batch in
#: :func:`~memla_utils.attribution_records.record_attributions` (scores equal to version 1 within ~1e-6 relative,
#: not bit for bit).
SCORES_VERSION = 2


@dataclass
class AttributionConfig:
    """How knowledge neurons are attributed. Defaults follow memla4mke (the paper's code).

    - ``method="memla4mke"``: the released locator's computation (:mod:`memla_utils.attribution`:
      gate/first-projection output, points ``k/steps``, multiplier = actual value, greedy-extended prompts summed
      over answer tokens); ``"exact"``: exact IG of the down projection's inputs with teacher forcing. The paper presets
      and the notebooks use ``"memla4mke"``. The method is part of the cache key (:meth:`score_params`).
    - ``steps=20``: IG Riemann steps (knowledge-neurons / memla4mke default).
    - ``baseline="eos_mean"``: memla4mke's baseline, the mean activation over copies of the prompt in which one
      token is replaced by EOS (memla4mke: every token in turn, ``garns.scaled_input``; exact: every
      non-special token of the prefix); ``"zero"`` is the original knowledge-neurons baseline (for
      ``memla4mke``: points ``k/steps * a``; ``garns`` itself always uses the EOS mean).
    - ``threshold=0.3``: keep neurons scoring above 0.3 x the prompt's maximum score (memla4mke).
    - ``target="prob"``: the gradient is of the answer token's probability, as in knowledge-neurons/memla4mke;
      ``"logprob"`` is available (less dominated by facts the model already knows well).
    - ``use_paraphrases=True``: union of the neuron sets of the edit prompt and its paraphrases (memla4mke).
    - ``answer="true"``: attribute the true answer (the fact the model holds, where its neurons are); records
      without ``target_true`` (zsRE-derived sets) fall back to ``target_new`` with a logged warning. ``"new"``
      attributes the new target.
    - ``max_rows=None``: rows (layer x step x answer token) per pass, chosen from free memory when ``None``.
    - ``vocab_chunk=8192``: vocabulary rows per chunk of the output projection (memory and speed, not results:
      chunks of 32768 rows leave 100 MB buffers per pass that spill the CPU caches, 1.4x slower on the head).
    - ``head_precision="auto"``: precision of the two matrix products of the vocabulary projection (softmax,
      sums and IG accumulation are float32 always). ``"float32"`` is exact; ``"bfloat16"`` rounds the inputs
      of those products to bfloat16 (float32 accumulation): ~4x faster on CPUs with AVX512-BF16/AMX and on
      GPUs, scores rank-identical in practice (``benchmarks/bench_attribution.py`` reports the Spearman
      correlation). ``"auto"`` = bfloat16 for bfloat16/float16 models (their weights already are), else float32.
    """

    method: str = "memla4mke"
    steps: int = 20
    baseline: str = "eos_mean"
    threshold: float = 0.3
    target: str = "prob"
    use_paraphrases: bool = True
    answer: str = "true"
    max_rows: int | None = None
    vocab_chunk: int = 8192
    head_precision: str = "auto"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"AttributionConfig.method must be one of {METHODS}, got {self.method!r}")
        if not isinstance(self.steps, int) or self.steps < 2:
            raise ValueError(f"AttributionConfig.steps must be an integer >= 2 (the path needs both ends), "
                             f"got {self.steps!r}")
        if self.baseline not in BASELINES:
            raise ValueError(f"AttributionConfig.baseline must be one of {BASELINES}, got {self.baseline!r}")
        if self.target not in TARGETS:
            raise ValueError(f"AttributionConfig.target must be one of {TARGETS}, got {self.target!r}")
        if self.answer not in ANSWERS:
            raise ValueError(f"AttributionConfig.answer must be one of {ANSWERS}, got {self.answer!r}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"AttributionConfig.threshold must be in [0, 1] (a share of the maximum score), "
                             f"got {self.threshold!r}")
        if self.max_rows is not None and (not isinstance(self.max_rows, int) or self.max_rows < 1):
            raise ValueError(f"AttributionConfig.max_rows must be a positive integer or None, got {self.max_rows!r}")
        if self.head_precision not in HEAD_PRECISIONS:
            raise ValueError(f"AttributionConfig.head_precision must be one of {HEAD_PRECISIONS}, "
                             f"got {self.head_precision!r}")
        if not isinstance(self.vocab_chunk, int) or self.vocab_chunk < 1:
            raise ValueError(f"AttributionConfig.vocab_chunk must be a positive integer, got {self.vocab_chunk!r}")

    def score_params(self) -> dict[str, Any]:
        """The parameters that determine a prompt's scores (cache key; threshold and chunking excluded)."""
        return {"method": self.method, "steps": self.steps, "baseline": self.baseline, "target": self.target,
                "head_precision": self.head_precision, "version": SCORES_VERSION}

    def head_dtype(self, model_dtype: torch.dtype) -> torch.dtype:
        if self.head_precision == "auto":
            return torch.bfloat16 if model_dtype in (torch.bfloat16, torch.float16) else torch.float32
        return torch.bfloat16 if self.head_precision == "bfloat16" else torch.float32
