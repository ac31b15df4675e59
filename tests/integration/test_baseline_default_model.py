"""ROME and IKE on the real default model (Gemma 3 270M): the edit lands, revert is exact."""
from __future__ import annotations

import pytest
import torch

from memla_utils.covariance import CorpusConfig, CovarianceConfig
from memla_utils.editors import make_editor
from memla_utils.editors.objective import new_vs_old
from memla_utils.mkeb.record import Record

pytestmark = pytest.mark.integration

REC = Record.from_dict({"example_id": "it-france", "edit": {
    "en": {"prompt": "The capital of {} is", "subject": "France", "target_new": "Tokyo", "target_true": "Paris"}}})


def test_rome_makes_the_new_answer_win_and_reverts_exactly(default_lm):
    cov = CovarianceConfig(corpus=CorpusConfig(source="model", languages=("en", "zh"), samples_per_language=2, sample_tokens=24),
                           n_samples=4)
    editor = make_editor("rome", covariance=cov, n_context=0, v_steps=10)
    pre = new_vs_old(default_lm.model, default_lm.tokenizer, REC, "en")
    assert pre["logp_old"] > pre["logp_new"]
    edit = editor.edit(default_lm, REC, "en")
    name = edit.touched[0]
    post = new_vs_old(default_lm.model, default_lm.tokenizer, REC, "en")
    assert post["logp_new"] > post["logp_old"], (pre, post)
    edit.revert()
    assert torch.equal(dict(default_lm.model.named_parameters())[name], edit.originals[name])
