"""Reverting several edits of one model: newest first, or a clear error naming both edits (issue 13 §4).

Before: ``e1 = edit(...)``, ``e2 = edit(...)`` on the same weights, then ``e1.revert()``, ``e2.revert()`` left the
weights changed and raised nothing (e1's snapshot undid e2, then e2's snapshot put e1's values back). Checked
for every registered editor on a tiny model.
"""
from __future__ import annotations

import pytest
import torch

from memla_utils.config import ALL_METHODS
from memla_utils.covariance import CorpusConfig, CovarianceConfig
from memla_utils.editors import EDITORS, Edit, EditError, applied_edits, load_all, make_editor, recording_edit
from memla_utils.masks import NeuronMasks, RecordMasks
from memla_utils.mkeb.record import EditTarget, Record
from memla_utils.testing import tiny_model

COV = CovarianceConfig(corpus=CorpusConfig(languages=("en", "zh"), samples_per_language=2, sample_tokens=12),
                       n_samples=4)
LOCATE = dict(covariance=COV, n_context=0, v_steps=3, v_lr=1.0, clamp_norm_factor=50.0, v_weight_decay=0.01)
OVERRIDES = {"ft": {"steps": 3}, "ft-l": {"steps": 3}, "lora": {"steps": 3}, "rome": LOCATE,
             "memit": dict(LOCATE, mom2_update_weight=10.0), "pmet": dict(LOCATE, mom2_update_weight=10.0),
             "mend": {"train_steps": 3}, "ike": {}}
MEMLA = {"max_steps": 3, "learning_rate": 0.05}


def record(i: int, subject: str, new: str, old: str) -> Record:
    return Record(f"r{i}", "capital", {"en": EditTarget("The capital of {} is", subject, new, old)},
                  paraphrase_prompts={"en": [f"{subject}'s capital is"]})


A, B = record(0, "France", "Tokyo", "Paris"), record(1, "Spain", "Rome", "Madrid")
TRAIN = [record(5, "Japan", "Berlin", "Tokyo"), record(6, "Poland", "Lisbon", "Warsaw")]


pytestmark = pytest.mark.usefixtures("module_cache")  # a fresh artifact cache for this module (conftest)


@pytest.fixture(scope="module")
def lm():
    return tiny_model("llama")


def masks(lm, rec: Record) -> RecordMasks:
    n = lm.adapter.n_neurons
    return RecordMasks(rec.example_id, "en", NeuronMasks.from_sets({0: [1, 2, 3], 2: [5]}, n),
                       NeuronMasks.from_sets({1: [4, 7], 2: [9]}, n))


def weights(lm) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in lm.model.named_parameters()}


def same(lm, ref) -> bool:
    return all(torch.equal(p, ref[n]) for n, p in lm.model.named_parameters())


def two_edits(lm, method: str) -> tuple[Edit, Edit]:
    load_all()
    if method.startswith("memla"):
        editor = make_editor(method, **MEMLA)
        return (editor.edit(lm, A, "en", masks=masks(lm, A)), editor.edit(lm, B, "en", masks=masks(lm, B)))
    editor = make_editor(method, **OVERRIDES[method]).fit(lm, TRAIN)
    return editor.edit(lm, A, "en"), editor.edit(lm, B, "en")


def test_every_registered_method_is_covered():
    load_all()
    assert set(EDITORS) == set(ALL_METHODS)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_out_of_order_revert_raises_naming_both_edits_and_lifo_restores_bit_exactly(lm, method):
    original = weights(lm)
    e1, e2 = two_edits(lm, method)
    both = weights(lm)
    if not e1.touched:  # in-context edits (IKE) change no weights: any order is fine
        assert method == "ike" and same(lm, original)
        e1.revert()
        e2.revert()
        assert same(lm, original)
        return
    assert set(e1.touched) & set(e2.touched), f"{method}: two edits of one model should share a parameter"
    with pytest.raises(EditError) as err:
        e1.revert()
    msg = str(err.value)
    assert e1.describe() in msg and e2.describe() in msg and "'r0'" in msg and "'r1'" in msg
    assert "newest first" in msg
    assert same(lm, both), f"{method}: a refused revert must not change the weights"
    assert applied_edits(lm.model)[-2:] == [e1, e2]
    e2.revert()
    e1.revert()
    assert same(lm, original), f"{method}: newest-first revert must restore the weights bit-exactly"
    assert e1 not in applied_edits(lm.model) and e2 not in applied_edits(lm.model)


def test_edits_of_disjoint_parameters_revert_in_any_order(lm):
    original = weights(lm)
    e1 = make_editor("ft", steps=2, layer=0).edit(lm, A, "en")
    e2 = make_editor("ft", steps=2, layer=2).edit(lm, B, "en")
    assert not set(e1.touched) & set(e2.touched)
    e1.revert()  # no later edit touches layer 0
    e2.revert()
    assert same(lm, original)


def test_reverting_after_an_outside_change_raises(lm):
    name = lm.adapter.down_proj_name(1) + ".weight"
    original = weights(lm)
    with recording_edit(lm.model, [name], "test") as edit:
        with torch.no_grad():
            dict(lm.model.named_parameters())[name].add_(0.5)
    param = dict(lm.model.named_parameters())[name]
    written = param.detach().clone()
    with torch.no_grad():
        param[0, 0] += 1.0  # a change no edit knows about
    with pytest.raises(EditError, match="no longer holds the value"):
        edit.revert()
    with torch.no_grad():
        param.copy_(written)
    edit.revert()
    assert same(lm, original)


def test_saved_edits_applied_again_follow_the_same_rule(lm, tmp_path):
    original = weights(lm)
    e1, e2 = two_edits(lm, "rome")
    e2.revert()
    e1.revert()
    e1.save(tmp_path / "e1")
    e2.save(tmp_path / "e2")
    l1, l2 = Edit.load(tmp_path / "e1").apply(lm.model), Edit.load(tmp_path / "e2").apply(lm.model)
    with pytest.raises(EditError, match="newest first"):
        l1.revert()
    l2.revert()
    l1.revert()
    assert same(lm, original)
