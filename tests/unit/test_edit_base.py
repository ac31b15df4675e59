"""The reversible Edit: bit-exact revert, save/load/apply, and failed edits leave the model unchanged."""
from __future__ import annotations

import pytest
import torch

from memla_utils.editors.base import Edit, EditError, make_editor, recording_edit
from memla_utils.testing import tiny_model


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_recorded_edit_reverts_and_reapplies_bit_exact(tmp_path):
    lm = tiny_model("qwen2")
    name = lm.adapter.down_proj_name(1) + ".weight"
    before = _state(lm.model)
    with recording_edit(lm.model, [name], "test") as edit:
        with torch.no_grad():
            dict(lm.model.named_parameters())[name].add_(0.1234567)
    after = _state(lm.model)
    assert not torch.equal(before[name], after[name])
    edit.revert()
    assert all(torch.equal(before[k], v) for k, v in _state(lm.model).items())
    edit.save(tmp_path / "e")
    loaded = Edit.load(tmp_path / "e")
    fresh = tiny_model("qwen2")
    loaded.apply(fresh.model)
    assert all(torch.equal(after[k], v) for k, v in _state(fresh.model).items())
    loaded.revert()
    assert all(torch.equal(before[k], v) for k, v in _state(fresh.model).items())


def test_failed_or_nan_edit_leaves_model_unchanged():
    lm = tiny_model("llama")
    name = lm.adapter.down_proj_name(0) + ".weight"
    before = _state(lm.model)
    with pytest.raises(EditError, match="non-finite"):
        with recording_edit(lm.model, [name], "test"):
            with torch.no_grad():
                dict(lm.model.named_parameters())[name].fill_(float("nan"))
    with pytest.raises(RuntimeError, match="boom"):
        with recording_edit(lm.model, [name], "test"):
            with torch.no_grad():
                dict(lm.model.named_parameters())[name].mul_(3)
            raise RuntimeError("boom")
    assert all(torch.equal(before[k], v) for k, v in _state(lm.model).items())


def test_prompt_prefix_edit_and_unknown_method():
    e = Edit(method="ike", prompt_prefix={"en": "New fact: X. "})
    assert e.wrap_prompt("Q?", "en") == "New fact: X. Q?" and e.wrap_prompt("Q?", "zh") == "Q?"
    with pytest.raises(ValueError, match="unknown editing method 'magic'; available"):
        make_editor("magic")
