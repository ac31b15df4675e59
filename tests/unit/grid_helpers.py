"""What the executor tests share (Ray, processes): a tiny grid's runner settings, the tiny model's spec for worker
processes, and a run folder's rows without what differs between two runs of the same configuration."""
from __future__ import annotations

import functools
from pathlib import Path

from memla_utils.model_spec import ModelSpec
from memla_utils.runner import RUN_SPECIFIC_METRICS, RunnerConfig, load_results
from memla_utils.testing import tiny_model

METHODS = ["memla", "ft"]
EDIT, EVAL = ["en"], ["en", "zh"]
CONFIG = RunnerConfig(editor_overrides={"memla": {"max_steps": 2}, "ft": {"steps": 2}}, progress=False)
SPEC = ModelSpec("tiny-llama", factory=functools.partial(tiny_model, "llama"))


def comparable(run_dir: Path) -> list[tuple]:
    """Sorted rows of every shard, run-specific metrics (wall clock, memory) left out; NaN = not available."""
    df = load_results(run_dir)
    df = df[~df["metric"].isin(RUN_SPECIFIC_METRICS)]
    return sorted((r.record, r.method, r.edit_lang, str(r.eval_lang), r.metric, r.kind,
                   None if r.value != r.value else r.value, r.n) for r in df.itertuples())
