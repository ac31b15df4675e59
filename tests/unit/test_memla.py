"""MEMLA editor on tiny random models: the edit works, stays inside its masks, reverts exactly, fails cleanly."""
from __future__ import annotations

import pytest
import torch

from memla_utils.editors import EditError, make_editor
from memla_utils.editors.base import Edit
from memla_utils.editors.memla import VARIANTS, MemlaConfig, MemlaEditor
from memla_utils.masks import NeuronMasks, RecordMasks
from memla_utils.mkeb.record import EditTarget, Record
from memla_utils.scoring import score_answers
from memla_utils.testing import tiny_model

PROMPT = "The capital of France is"
SPEC = {0: [1, 2, 3], 2: [5]}
IND = {1: [4, 7], 2: [9]}


def record(example_id: str = "r1", target_true: str | None = "Paris", target_new: str = "Tokyo") -> Record:
    return Record(example_id, "capital", {
        "en": EditTarget("The capital of {} is", "France", target_new, target_true),
        "zh": EditTarget("{}的首都是", "法国", "东京", "巴黎")})


def masks_for(lm, example_id: str = "r1", spec=SPEC, ind=IND) -> RecordMasks:
    n = lm.adapter.n_neurons
    return RecordMasks(example_id, "en", NeuronMasks.from_sets(spec, n), NeuronMasks.from_sets(ind, n))


def state(lm) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in lm.model.state_dict().items()}


def quick(name: str = "memla", **kw) -> MemlaEditor:
    return make_editor(name, **{"max_steps": 3, **kw})



@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_edit_raises_new_over_old(arch):
    lm = tiny_model(arch)
    before = score_answers(lm.model, lm.tokenizer, [PROMPT] * 2, ["Tokyo", "Paris"], "en")["logprob"]
    assert before[0] < before[1]  # the random model prefers the old answer: the edit has work to do
    edit = make_editor("memla", learning_rate=0.05, max_steps=30).edit(lm, record(), "en", masks=masks_for(lm))
    after = score_answers(lm.model, lm.tokenizer, [PROMPT] * 2, ["Tokyo", "Paris"], "en")["logprob"]
    assert after[0] > after[1], (before, after)
    assert after[0] > before[0]
    assert 0 < edit.info["steps"] <= 30
    edit.revert()


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma3_text", "qwen2", "bloom"])
def test_only_masked_weights_change_and_revert_is_exact(arch):
    lm = tiny_model(arch)
    before = state(lm)
    edit = quick(learning_rate=0.05).edit(lm, record(), "en", masks=masks_for(lm))
    after = state(lm)
    axis = lm.adapter.neuron_axis
    touched = {f"{lm.adapter.down_proj_name(l)}.weight": l for l in (0, 1, 2)}
    assert sorted(edit.touched) == sorted(touched)
    for name, w in after.items():
        if name not in touched:
            assert torch.equal(w, before[name]), name
            continue
        allowed = set(SPEC.get(touched[name], [])) | set(IND.get(touched[name], []))
        changed = (w != before[name]).any(dim=1 - axis)  # per neuron
        assert set(torch.nonzero(changed).flatten().tolist()) <= allowed, name
        assert changed.any(), f"{name}: no weight of the selected neurons moved"
    edit.revert()
    assert all(torch.equal(v, before[k]) for k, v in state(lm).items())


def test_save_load_apply_again(llama, tmp_path):
    before = state(llama)
    edit = quick(learning_rate=0.05).edit(llama, record(), "en", masks=masks_for(llama))
    edited = state(llama)
    edit.save(tmp_path / "e")
    edit.revert()
    loaded = Edit.load(tmp_path / "e").apply(llama.model)
    assert all(torch.equal(v, edited[k]) for k, v in state(llama).items())
    loaded.revert()
    assert all(torch.equal(v, before[k]) for k, v in state(llama).items())


def test_same_config_same_numbers(llama):
    a = quick().edit(llama, record(), "en", masks=masks_for(llama))
    da = {k: a.delta(k) for k in a.touched}
    a.revert()
    b = quick().edit(llama, record(), "en", masks=masks_for(llama))
    assert all(torch.equal(da[k], b.delta(k)) for k in b.touched)
    b.revert()


@pytest.mark.parametrize("name,layers,neurons", [
    ("memla-lse", [0, 2], {"specific": 4}),
    ("memla-lie", [1, 2], {"independent": 3}),
    ("memla-unmasked", [0, 1, 2], {"unmasked": 3 * 64}),
])
def test_ablations_are_configurations(llama, name, layers, neurons):
    editor = quick(name)
    assert type(editor) is MemlaEditor and editor.name == name
    edit = editor.edit(llama, record(), "en", masks=masks_for(llama))
    assert edit.info["layers"] == layers
    assert edit.info["neurons"] == neurons
    if name == "memla-unmasked":  # equal rank: 4 x (specific + independent) neurons per layer
        assert edit.info["ranks"] == [12, 8, 8]
        w = llama.adapter.down_weight_as_linear(0)
        changed = (edit.edited["model.layers.0.mlp.down_proj.weight"] != edit.originals[
            "model.layers.0.mlp.down_proj.weight"]).any(0)
        assert changed.sum() > 10 and w.shape[1] == 64
    edit.revert()


def test_random_masks_keep_per_layer_counts(llama):
    edit = quick("memla-random").edit(llama, record(), "en", masks=masks_for(llama))
    assert edit.info["layers"] == [0, 1, 2]
    assert edit.info["neurons"] == {"specific": 4, "independent": 3}
    name = "model.layers.0.mlp.down_proj.weight"
    changed = set(torch.nonzero((edit.edited[name] != edit.originals[name]).any(0)).flatten().tolist())
    assert len(changed) == 3 and changed != set(SPEC[0])  # same count, other neurons
    edit.revert()


def test_registry_lists_every_variant():
    for name in VARIANTS:
        assert make_editor(name).name == name


def test_batch_mode_is_one_joint_edit_and_sequential_accumulates(llama):
    before = state(llama)
    r2 = record("r2", target_true="Berlin", target_new="Rome")
    m1, m2 = masks_for(llama), masks_for(llama, "r2", spec={0: [10]}, ind={1: [11]})
    editor = quick()
    batch = editor.edit_batch(llama, [record(), r2], "en", masks=[m1, m2], mode="batch")
    assert len(batch) == 1 and batch[0].info["records"] == ["r1", "r2"]
    assert batch[0].info["neurons"] == {"specific": 5, "independent": 4}  # masks united
    batch[0].revert()
    seq = editor.edit_batch(llama, [record(), r2], "en", masks=[m1, m2], mode="sequential")
    assert len(seq) == 2
    name = "model.layers.0.mlp.down_proj.weight"
    assert torch.equal(seq[1].originals[name], seq[0].edited[name])  # the second edit builds on the first
    for e in reversed(seq):
        e.revert()
    assert all(torch.equal(v, before[k]) for k, v in state(llama).items())
    with pytest.raises(ValueError, match="mode"):
        editor.edit_batch(llama, [record()], "en", masks=[m1], mode="nope")


def test_without_target_true_the_old_answer_term_is_dropped(llama):
    edit = quick().edit(llama, record(target_true=None), "en", masks=masks_for(llama))
    assert edit.info["p_true"] == [None]
    edit.revert()


@pytest.mark.parametrize("make_bad,match", [
    (lambda lm: (record(), "de", {}), "r1.*'de'"),
    (lambda lm: (record(target_new="  "), "en", {}), "r1.*empty target_new"),
    (lambda lm: (record(), "en", {"init_std": float("nan")}), "non-finite loss.*r1"),
    (lambda lm: (record(), "en", {"use_independent": False, "masking": "neurons", "_spec": {}}), "no selected neurons"),
])
def test_bad_input_is_a_clear_error_and_model_is_unchanged(llama, make_bad, match):
    rec, lang, kw = make_bad(llama)
    spec = kw.pop("_spec", SPEC)
    before = state(llama)
    with pytest.raises(EditError, match=match):
        quick(**kw).edit(llama, rec, lang, masks=masks_for(llama, spec=spec))
    assert all(torch.equal(v, before[k]) for k, v in state(llama).items())


def test_config_validation():
    with pytest.raises(ValueError, match="masking"):
        MemlaConfig(masking="nope")
    with pytest.raises(ValueError, match="use_specific"):
        MemlaConfig(use_specific=False, use_independent=False)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma3_text", "qwen2", "bloom"])
def test_one_forward_of_both_answers_gives_memla4mke_two_forward_loss_and_gradient(arch):
    """memla4mke's ``fit_on`` runs one forward for target_new and one for target_true; the editor runs both rows in
    one batch: the same loss ``2.5 NLL(new) + 2 P(true)`` and the same LoRA gradient, within float rounding."""
    from memla_utils.editors.memla import attach_all
    from memla_utils.scoring import answer_logprob
    from memla_utils.text import build_batch

    lm = tiny_model(arch, seed=5)
    editor = make_editor("memla", init_std=0.05)  # a nonzero LoRA so the gradient reaches both factors
    facts = editor._facts([record(target_true="Paris", target_new="Tokyo Station")], "en")
    loras = editor.build_loras(lm, [masks_for(lm)], "en")
    params = [p for lora in loras for p in lora.parameters()]
    with attach_all(loras), torch.enable_grad():
        batches = editor._batches(lm, facts)
        assert batches.joint.input_ids.shape[0] == 2 and batches.with_true == [0]
        loss_f, p_new, p_true = editor._losses(lm, batches, 1)
        joint_grads = torch.autograd.grad(loss_f.sum(), params)
        # memla4mke: two forwards
        lp_new = answer_logprob(lm.model, build_batch(lm.tokenizer, [PROMPT], ["Tokyo Station"], ["en"]))
        lp_true = answer_logprob(lm.model, build_batch(lm.tokenizer, [PROMPT], ["Paris"], ["en"]))
        ref = -2.5 * lp_new + 2 * lp_true.exp()
        ref_grads = torch.autograd.grad(ref.sum(), params)
    assert float(loss_f.detach()[0]) == pytest.approx(float(ref.detach()[0]), rel=1e-5, abs=1e-6)
    assert float(p_new[0]) == pytest.approx(float(lp_new.detach().exp()[0]), rel=1e-5)
    assert p_true[0] == pytest.approx(float(lp_true.detach().exp()[0]), rel=1e-5)
    assert any(float(g.abs().max()) > 0 for g in ref_grads)
    for g, r in zip(joint_grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
