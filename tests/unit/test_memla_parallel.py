"""Parallel MEMLA editing: many facts trained in one batch give the edits each fact would get alone."""
from __future__ import annotations

import pytest
import torch

from memla_utils.editors import EditError, make_editor
from memla_utils.editors.memla_parallel import PendingEdit
from memla_utils.editors.routed_lora import RoutedLoRA, Routing
from memla_utils.masks import NeuronMasks, RecordMasks
from memla_utils.mkeb.record import EditTarget, Record
from memla_utils.testing import tiny_model

FACTS = [("France", "Tokyo", "Paris"), ("Japan", "Rome", "Tokyo"), ("Italy", "Oslo", None), ("Peru", "Lima town", "Lima")]


def records() -> list[Record]:
    return [Record(f"r{i}", "capital", {"en": EditTarget("The capital of {} is", c, new, old)})
            for i, (c, new, old) in enumerate(FACTS)]


def masks(lm, recs: list[Record]) -> list[RecordMasks]:
    """Different layers, neuron counts and pair kinds per fact (r2 has no language-independent neurons)."""
    n = lm.adapter.n_neurons
    out = []
    for i, r in enumerate(recs):
        spec = {0: [1 + i, 2], 2: [5]} if i % 2 == 0 else {1: [3, i + 7]}
        ind = {} if i == 2 else {1: [4, 7 + i], 2: [9]}
        out.append(RecordMasks(r.example_id, "en", NeuronMasks.from_sets(spec, n), NeuronMasks.from_sets(ind, n)))
    return out


def state(lm) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in lm.model.state_dict().items()}


@pytest.mark.parametrize("arch,masking", [("llama", "neurons"), ("gpt2", "neurons"), ("gemma3_text", "neurons"),
                                          ("llama", "unmasked"), ("qwen2", "random")])
def test_parallel_edits_equal_single_edits(arch, masking):
    lm = tiny_model(arch)
    recs = records()
    ms = masks(lm, recs)
    editor = make_editor("memla", learning_rate=0.05, max_steps=12, masking=masking)
    before = state(lm)
    single = []
    for r, m in zip(recs, ms):
        e = editor.edit(lm, r, "en", masks=m)
        e.revert()
        single.append(e)
    parallel = editor.edit_batch(lm, recs, "en", masks=ms, mode="parallel")
    assert all(torch.equal(v, before[k]) for k, v in state(lm).items())  # nothing left applied
    for s, p in zip(single, parallel):
        assert p.touched == s.touched and p.info["records"] == s.info["records"]
        assert p.info["steps"] == s.info["steps"] and p.info["parallel_edits"] == len(recs)
        for name in s.touched:
            torch.testing.assert_close(p.edited[name], s.edited[name], rtol=1e-3, atol=2e-4)  # float reassociation only
            changed = (p.edited[name] != p.originals[name])
            assert torch.equal(changed, s.edited[name] != s.originals[name])  # the same weights move


def test_early_stopping_is_per_fact():
    lm = tiny_model("llama")
    recs = records()
    ms = masks(lm, recs)
    probe = make_editor("memla", learning_rate=0.05, max_steps=0)
    start = []
    for r, m in zip(recs, ms):
        e = probe.edit(lm, r, "en", masks=m)
        e.revert()
        start.append(e.info["p_new"][0])
    # a threshold between the facts' starting P(new): some stop at once, the others train on
    stop = sorted(start)[1] * 1.0001
    editor = make_editor("memla", learning_rate=0.05, max_steps=15, stop_prob=stop)
    single = []
    for r, m in zip(recs, ms):
        e = editor.edit(lm, r, "en", masks=m)
        e.revert()
        single.append(e.info["steps"])
    pending = editor.edit_parallel(lm, recs, "en", masks=ms)
    assert [p.info["steps"] for p in pending] == single
    assert len(set(single)) > 1, single  # the case really mixes stopped and running facts


def test_pending_edit_applies_and_reverts_exactly():
    lm = tiny_model("llama")
    recs = records()
    before = state(lm)
    pending = make_editor("memla", max_steps=3).edit_parallel(lm, recs, "en", masks=masks(lm, recs))
    assert all(isinstance(p, PendingEdit) for p in pending)
    for p in pending:
        edit = p.apply(lm)
        assert any(not torch.equal(v, before[k]) for k, v in state(lm).items())
        edit.revert()
        assert all(torch.equal(v, before[k]) for k, v in state(lm).items())


def test_a_bad_record_fails_alone():
    lm = tiny_model("llama")
    recs = records()
    ms = masks(lm, recs)
    recs[1] = Record("r1", "capital", {"en": EditTarget("The capital of {} is", "Japan", "  ", "Tokyo")})
    out = make_editor("memla", max_steps=2).edit_parallel(lm, recs, "en", masks=ms)
    assert isinstance(out[1], EditError) and "r1" in str(out[1]) and "empty target_new" in str(out[1])
    assert all(isinstance(o, PendingEdit) for i, o in enumerate(out) if i != 1)
    with pytest.raises(EditError, match="4 records but 3 masks"):
        make_editor("memla").edit_parallel(lm, records(), "en", masks=ms[:3])


def test_rows_only_see_their_own_fact():
    lm = tiny_model("llama")
    editor = make_editor("memla")
    recs = records()
    ms = masks(lm, recs)
    per_fact = [editor.build_loras(lm, [m], "en") for m in ms[:2]]
    layer = 1  # both facts have pairs here
    routing = Routing()
    routed = RoutedLoRA(lm.adapter, layer, [next(lo for lo in ls if lo.layer == layer) for ls in per_fact], routing)
    with torch.no_grad():
        routed.a.normal_()  # make every adapter non-zero (one factor starts at zero)
        routed.b.normal_()
    x = torch.randn(2, 3, lm.adapter.n_neurons)
    out = torch.zeros(2, 3, lm.adapter.hidden_size)
    routing.row_fact = torch.tensor([0, 1])
    both = routed._hook(None, (x,), out)
    with torch.no_grad():
        routed.b[[i for i, s in enumerate(routed.slots) if s.fact == 1]] = 0  # silence fact 1
    routing.row_fact = torch.tensor([0, 1])
    alone = routed._hook(None, (x,), out)
    assert torch.equal(both[0], alone[0])          # row of fact 0: unaffected by fact 1's adapters
    assert not torch.allclose(both[1], alone[1])   # row of fact 1: used them
    routing.row_fact = torch.tensor([0])
    with pytest.raises(RuntimeError, match="1 routed rows but the batch has 2"):
        routed._hook(None, (x,), out)


def test_parallel_edits_in_bfloat16_move_the_answer():
    """The dtype path a GPU run takes: bfloat16 weights, float32 adapters; every fact's edit raises P(new)."""
    from memla_utils.scoring import score_answers

    lm = tiny_model("llama", dtype=torch.bfloat16)
    recs = records()
    before = state(lm)
    pending = make_editor("memla", learning_rate=0.05, max_steps=20).edit_parallel(lm, recs, "en", masks=masks(lm, recs))
    for rec, p in zip(recs, pending):
        view = rec.for_language("en")
        lp0 = float(score_answers(lm.model, lm.tokenizer, [view.prompt], [view.target_new], "en")["logprob"][0])
        edit = p.apply(lm)
        assert all(edit.edited[n].dtype == torch.bfloat16 for n in edit.touched)
        lp1 = float(score_answers(lm.model, lm.tokenizer, [view.prompt], [view.target_new], "en")["logprob"][0])
        edit.revert()
        assert lp1 > lp0, (rec.example_id, lp0, lp1)
    assert all(torch.equal(v, before[k]) for k, v in state(lm).items())
