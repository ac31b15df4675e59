"""General ability before/after edits on a tiny model with hand-built records and simple reversible editors."""
from __future__ import annotations

import math

import pytest
import torch

from memla_utils.editors import BaseEditor, EditError, recording_edit
from memla_utils.finite import NonFiniteError
from memla_utils.general import (
    GeneralConfig,
    build_probe_set,
    measure,
    sentence_nll,
    sequential_general,
    single_edit_general,
)
from memla_utils.mkeb.record import EditTarget, Record
from memla_utils.testing import tiny_model
from memla_utils.text import encode_answer, encode_prompt

FACTS = {
    "en": [("The capital of {} is", "France", "Paris", "Rome"), ("The capital of {} is", "Japan", "Tokyo", "Seoul"),
           ("The capital of {} is", "Poland", "Warsaw", "Oslo"), ("The capital of {} is", "Spain", "Madrid", "Lima"),
           ("The capital of {} is", "Italy", "Rome", "Paris"), ("The capital of {} is", "Korea", "Seoul", "Tokyo")],
    "zh": [("{}的首都是", "法国", "巴黎", "罗马"), ("{}的首都是", "日本", "东京", "首尔"), ("{}的首都是", "波兰", "华沙", "奥斯陆"),
           ("{}的首都是", "西班牙", "马德里", "利马"), ("{}的首都是", "意大利", "罗马", "巴黎"), ("{}的首都是", "韩国", "首尔", "东京")],
}


RELATIONS = ("capital", "capital (second relation)")  # two relations: unrelated facts come from the other one


def records() -> list[Record]:
    out = []
    for i in range(6):
        edit = {lang: EditTarget(FACTS[lang][i][0], FACTS[lang][i][1], FACTS[lang][i][3], FACTS[lang][i][2])
                for lang in FACTS}
        out.append(Record(example_id=f"r{i}", relation_description=RELATIONS[i % 2], edit=edit,
                          neighborhood_prompts={"en": ["The capital of Germany is"]},
                          neighborhood_answers={"en": ["Berlin"]}))
    return out


class Perturb(BaseEditor):
    """Adds ``scale`` × a fixed random matrix to layer 0's down projection (reversible through recording_edit)."""

    def __init__(self, scale: float, name: str = "perturb") -> None:
        self.scale, self.name, self.calls = scale, name, 0

    def edit(self, lm, record, language, **context):
        self.check_record(record, language)
        self.calls += 1
        pname = lm.adapter.down_proj_name(0) + ".weight"
        with recording_edit(lm.model, [pname], self.name) as e:
            w = dict(lm.model.named_parameters())[pname]
            g = torch.Generator().manual_seed(self.calls)
            w.data.add_(self.scale * torch.randn(w.shape, generator=g))
        return e


class Failing(BaseEditor):
    name = "failing"

    def edit(self, lm, record, language, **context):
        raise EditError(f"record {record.example_id!r}: cannot edit")


@pytest.fixture(scope="module")
def lm():
    return tiny_model("llama", seed=0)


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_probe_set_excludes_edited_records_and_uses_true_answers():
    recs = records()
    probe = build_probe_set(recs, ["en", "zh", "fr"], exclude=["r0", "r1"])
    assert "r0" not in probe.record_ids and len(probe.record_ids) == 4
    assert ("The capital of Spain is", "Madrid") in probe.facts["en"]
    assert ("The capital of Germany is", "Berlin") not in probe.facts["en"]
    wider = build_probe_set(recs, ["en"], exclude=["r0", "r1"], neighborhood=True)
    assert ("The capital of Germany is", "Berlin") in wider.facts["en"]  # neighborhood facts are true facts too
    assert probe.facts["fr"] == [] and probe.languages == ["en", "zh", "fr"]  # fr: prose only
    assert probe.relations["en"] == [RELATIONS[i % 2] for i in range(2, 6)]
    with pytest.raises(ValueError, match="nothing to probe"):
        build_probe_set(recs, ["fr"], text=None)
    assert build_probe_set(recs, ["fr"]).text["fr"]  # prose is available in every MKEB language


def test_sentence_nll_matches_a_manual_forward(lm):
    prompt, answer = "The capital of Spain is", "Madrid"
    ids = encode_prompt(lm.tokenizer, prompt) + encode_answer(lm.tokenizer, answer, "en", prompt)
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    manual = -sum(float(logp[t - 1, ids[t]]) for t in range(1, len(ids)))
    nll, n = sentence_nll(lm, [(prompt, answer), ("Die Hauptstadt ist", "Berlin")], "en", batch_size=1)
    nll_one, n_one = sentence_nll(lm, [(prompt, answer)], "en")
    assert n_one == len(ids) - 1 and nll_one == pytest.approx(manual, rel=1e-5)
    assert n > n_one and nll > nll_one
    # a context prefix is conditioned on but not scored
    nll_ctx, n_ctx = sentence_nll(lm, [(prompt, answer)], "en", prefix="New fact: Paris. ")
    assert n_ctx >= n_one - 1 and nll_ctx != pytest.approx(nll_one)


def test_fact_accuracy_agrees_with_the_shared_scorer(lm):
    from memla_utils.general import score_sentences
    from memla_utils.scoring import score_answers

    pairs = [("The capital of Spain is", "Madrid"), ("The capital of", "France"), ("Paris is the", "capital")]
    mine = score_sentences(lm, pairs, "en", batch_size=2)
    ref = score_answers(lm.model, lm.tokenizer, [p for p, _ in pairs], [a for _, a in pairs], "en")
    assert mine.exact_match == ref["exact_match"].tolist()
    assert mine.token_accuracy == pytest.approx(ref["token_accuracy"].tolist())


def test_measure_is_deterministic_and_in_range(lm):
    probe = build_probe_set(records(), ["en", "zh"])
    a, b = measure(lm, probe), measure(lm, probe)
    assert a == b
    for lang in ("en", "zh"):
        ppl, n_tok = a[(lang, "perplexity")]   # on the prose, not on the facts
        assert n_tok > 10 * len(probe.text[lang])
        assert ppl > 1.0 and math.isfinite(ppl) and n_tok > 0
        assert 0.0 <= a[(lang, "fact_accuracy")][0] <= 1.0
        assert a[(lang, "fact_accuracy")][1] == len(probe.facts[lang])


def test_single_edits_measure_a_change_and_restore_the_model(lm):
    recs = records()
    probe = build_probe_set(recs, ["en", "zh"], exclude=["r0", "r1"])
    before = state(lm.model)
    rows = single_edit_general(lm, recs[:2], probe, ["big", "none"], "en",
                               editors={"big": Perturb(0.5, "big"), "none": Perturb(0.0, "none")})
    after = state(lm.model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # every edit reverted bit-exactly
    ppl = [r for r in rows if r["metric"] == "perplexity"]
    assert {r["record"] for r in ppl} == {"r0", "r1"} and {r["eval_lang"] for r in ppl} == {"en", "zh"}
    assert all(r["delta"] == 0.0 for r in ppl if r["method"] == "none")
    assert any(abs(r["delta"]) > 1e-3 for r in ppl if r["method"] == "big")
    assert all(r["setting"] == "single" and r["n_edits"] == 1 for r in rows)


def test_single_edit_rejects_a_probe_that_contains_edited_records(lm):
    recs = records()
    probe = build_probe_set(recs, ["en"])
    with pytest.raises(ValueError, match="r0"):
        single_edit_general(lm, recs[:1], probe, ["p"], "en", editors={"p": Perturb(0.1)})


def test_failed_edits_are_skipped_not_fatal(lm, caplog):
    recs = records()
    probe = build_probe_set(recs, ["en"], exclude=["r0"])
    rows = single_edit_general(lm, recs[:1], probe, ["failing"], "en", editors={"failing": Failing()})
    assert rows == [] and "cannot edit" in caplog.text


def test_sequential_editing_accumulates_then_reverts(lm):
    recs = records()
    probe = build_probe_set(recs, ["en"], exclude=[r.example_id for r in recs[:4]])
    before = state(lm.model)
    editor = Perturb(0.3, "seq")
    rows = sequential_general(lm, recs[:4], probe, ["seq"], "en", steps=(1, 3, 9), editors={"seq": editor},
                              config=GeneralConfig(sequential_steps=(1, 3)))
    after = state(lm.model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert editor.calls == 3  # stops at the last usable checkpoint (9 > 4 records is dropped)
    assert sorted({r["n_edits"] for r in rows}) == [1, 3]
    ppl = {r["n_edits"]: r for r in rows if r["metric"] == "perplexity"}
    assert ppl[1]["before"] == ppl[3]["before"]  # one unedited reference
    assert ppl[1]["after"] != ppl[3]["after"]  # edits accumulate (not reverted between checkpoints)
    retention = [r for r in rows if r["metric"] == "edit_retention"]
    assert [r["n"] for r in retention] == [1, 3] and all(r["delta"] is None for r in retention)


def test_sequential_rejects_bad_steps(lm):
    recs = records()
    probe = build_probe_set(recs, ["en"], exclude=["r0"])
    with pytest.raises(ValueError, match="steps"):
        sequential_general(lm, recs[:1], probe, ["p"], "en", steps=(0,), editors={"p": Perturb(0.1)})


def test_general_study_runs_single_and_sequential_and_reports_missing_methods(lm, monkeypatch):
    from memla_utils.editors import base
    from memla_utils.general import GeneralConfig, general_study, parse_steps, split_records

    # registered for this test only: the registry is shared by every test in the worker process
    monkeypatch.setitem(base.EDITORS, "test-perturb", lambda **kw: Perturb(0.2, "test-perturb"))
    recs = records()
    rows, missing = general_study(lm, recs, ["test-perturb", "no-such-method"], ["en", "zh"], "en", n_single=2,
                                  steps=(1, 2), config=GeneralConfig(max_probe_records=3), n_train=1)
    assert missing == ["no-such-method"]
    assert {(r["setting"], r["n_edits"]) for r in rows} == {("single", 1), ("sequential", 1), ("sequential", 2)}
    assert {r["record"] for r in rows if r["setting"] == "single"} == {"r0", "r1"}
    with pytest.raises(ValueError, match="only 6 were loaded"):
        split_records(recs, n_edit=5, n_probe=3)
    assert parse_steps("1,3,5") == (1, 3, 5) and parse_steps("full") == (10, 50, 100) and parse_steps("") == ()
    assert parse_steps(4) == (4,) and parse_steps("auto", 5) == (1, 3, 5) and parse_steps("auto", 3) == (1, 3) and parse_steps("auto", 1000) == (10, 50, 100)
    with pytest.raises(ValueError, match="sequential_steps"):
        parse_steps("1,x")
    from memla_utils.general import parse_methods

    run = ["memla", "memla-lse", "ft"]
    assert parse_methods("auto", run, 3) == ["memla"] and parse_methods("auto", run, 1000) == run
    assert parse_methods("ft,rome", run) == ["ft"] and parse_methods("all", run) == run


def test_saved_masks_reach_the_editor(lm, tmp_path):
    from memla_utils.general import saved_masks
    from memla_utils.masks import NeuronMasks, RecordMasks, save_record_masks

    recs = records()
    save_record_masks(RecordMasks("r0", "en", NeuronMasks.from_sets({0: [1]}, 64), NeuronMasks.from_sets({1: [2]}, 64)),
                      tmp_path)
    seen = {}

    class Spy(Perturb):
        def edit(self, lm, record, language, **context):
            seen[record.example_id] = (context.get("masks"), context.get("flag"))
            return super().edit(lm, record, language)

    probe = build_probe_set(recs, ["en"], exclude=["r0", "r1"])
    single_edit_general(lm, recs[:2], probe, ["spy"], "en", editors={"spy": Spy(0.0, "spy")},
                        masks=saved_masks(tmp_path), edit_context={"flag": 1})
    assert seen["r0"][0].independent.to_sets() == {1: {2}} and seen["r0"][1] == 1
    assert seen["r1"] == (None, 1)  # no mask file: the editor computes its own


def test_random_editors_give_the_same_numbers_twice(lm):
    """Edits are seeded per (method, record): a randomised editor reproduces its general-ability rows exactly."""

    class Noisy(BaseEditor):
        name = "noisy"

        def edit(self, lm, record, language, **context):
            pname = lm.adapter.down_proj_name(1) + ".weight"
            with recording_edit(lm.model, [pname], self.name) as e:
                w = dict(lm.model.named_parameters())[pname]
                w.data.add_(0.3 * torch.randn(w.shape))  # global RNG: seeded by the study
            return e

    recs = records()
    probe = build_probe_set(recs, ["en"], exclude=["r0", "r1"])
    torch.manual_seed(123)
    a = single_edit_general(lm, recs[:2], probe, ["noisy"], "en", editors={"noisy": Noisy()})
    torch.manual_seed(456)
    b = single_edit_general(lm, recs[:2], probe, ["noisy"], "en", editors={"noisy": Noisy()})
    assert a == b and any(r["delta"] != 0 for r in a)


def test_plan_study_resolves_auto_for_small_and_full_runs():
    from memla_utils.general import plan_study

    small = plan_study("auto", "auto", "auto", ["memla", "ft"], 3)
    assert small.methods == ["memla"] and small.n_single == 2 and small.steps == (1, 3) and small.n_edit == 3
    full = plan_study("auto", "auto", "auto", ["memla", "ft"], 1000)
    assert full.methods == ["memla", "ft"] and full.n_single == 100 and full.n_edit == 100
    explicit = plan_study("ft", 4, "", ["memla", "ft"], 3)
    assert explicit.methods == ["ft"] and explicit.n_single == 4 and explicit.steps == () and explicit.n_edit == 4
    with pytest.raises(ValueError, match="general_records"):
        plan_study("auto", "many", "auto", ["memla"], 3)


def test_perplexity_is_on_unrelated_prose_and_facts_exclude_the_edited_relation(lm):
    """General ability is measured on text the edit never saw; same-relation facts are relation spill-over."""
    from memla_utils.corpus import general_text
    from memla_utils.general import score_text

    recs = records()
    probe = build_probe_set(recs, ["en"], exclude=["r0", "r1"])
    assert probe.text["en"] == general_text("en")
    assert not any("capital" in t.lower() and "Madrid" in t for t in probe.text["en"])
    ref = score_text(lm, probe.text["en"])
    m = measure(lm, probe, edited_relations={RELATIONS[0]})
    assert m[("en", "perplexity")] == (pytest.approx(math.exp(ref.nll / ref.n_tokens)), ref.n_tokens)
    other = [i for i, r in enumerate(probe.relations["en"]) if r != RELATIONS[0]]
    assert m[("en", "fact_accuracy")][1] == len(other) == 2
    assert m[("en", "relation_spillover_accuracy")][1] == 2
    assert ("en", "relation_spillover_perplexity") in m
    # with no relation edited there is no spill-over metric, and every fact counts as unrelated
    none = measure(lm, probe)
    assert ("en", "relation_spillover_perplexity") not in none and none[("en", "fact_accuracy")][1] == 4
    # rows of a single edit: r0's relation is RELATIONS[0]
    rows = single_edit_general(lm, recs[:1], build_probe_set(recs, ["en"], exclude=["r0"]), ["p"], "en",
                               editors={"p": Perturb(0.2)})
    acc = [r for r in rows if r["metric"] == "fact_accuracy"]
    assert acc and acc[0]["n"] == 3  # r1, r3, r5: the other relation
    assert [r["n"] for r in rows if r["metric"] == "relation_spillover_accuracy"] == [2]  # r2, r4: r0's relation
    spill = [r for r in rows if r["metric"] == "relation_spillover_perplexity"]
    assert spill and spill[0]["after"] != spill[0]["before"]


def test_non_finite_general_ability_is_an_error_naming_method_and_record(lm):
    class OverflowEdit(Perturb):
        def edit(self, lm, record, language, **context):
            pname = lm.adapter.down_proj_name(0) + ".weight"
            with recording_edit(lm.model, [pname], self.name) as e:
                dict(lm.model.named_parameters())[pname].data.fill_(3e38)  # finite weights, overflowing activations
            return e

    recs = records()
    before = state(lm.model)
    with pytest.raises(NonFiniteError, match=r"record .r0., method .nan-edit.*non-finite"):
        single_edit_general(lm, recs[:1], build_probe_set(recs, ["en"], exclude=["r0"]), ["nan-edit"], "en",
                            editors={"nan-edit": OverflowEdit(0.0, "nan-edit")})
    after = state(lm.model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # reverted although the metric failed


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma3_text", "qwen2", "bloom"])
def test_teacher_forced_scores_equal_the_full_logits_path_in_input_order(arch, monkeypatch):
    """The deferred head (only scored positions projected) and length-sorted batches give the values of scoring
    each row alone with the model's full logits, per row and in input order (issue 15)."""
    import memla_utils.general as general
    import memla_utils.general_scoring as general_scoring
    from memla_utils.corpus import general_text

    lm = tiny_model(arch, seed=3)
    texts = [t[: 20 + 9 * i] for i, t in enumerate(general_text("en")[:7])]  # within the tiny position range
    pairs = [("The capital of Spain is", "Madrid"), ("Paris is the", "capital of France"), ("The", "capital")]
    fast_text = general.score_text(lm, texts, batch_size=3)
    fast_pairs = general.score_sentences(lm, pairs, "en", prefix="New fact: Rome. ", batch_size=2)
    monkeypatch.setattr(general_scoring, "can_defer", lambda model: False)  # where _scored_positions reads it
    for fast, slow in ((fast_text, general.score_text(lm, texts, batch_size=1)),
                       (fast_pairs, general.score_sentences(lm, pairs, "en", prefix="New fact: Rome. ",
                                                            batch_size=1))):
        assert fast.row_tokens == slow.row_tokens and fast.n_tokens == slow.n_tokens
        assert fast.row_nll == pytest.approx(slow.row_nll, rel=1e-5, abs=1e-5)
        assert fast.nll == pytest.approx(slow.nll, rel=1e-6)
        assert fast.exact_match == slow.exact_match
        assert fast.token_accuracy == slow.token_accuracy
    # per-row values follow the input, not the length order
    lengths = [t for t in fast_text.row_tokens]
    assert lengths != sorted(lengths, reverse=True) or len(set(lengths)) == 1


def test_length_batches_group_similar_lengths_and_cover_every_row_once():
    from memla_utils.general_scoring import _length_batches

    rows = [[0] * n for n in (5, 40, 7, 39, 6, 41, 8)]
    batches = _length_batches(rows, 3)
    assert sorted(i for b in batches for i in b) == list(range(len(rows)))
    assert batches[0] == [5, 1, 3] and batches[1] == [6, 2, 4] and batches[2] == [0]


def test_the_study_reads_its_edited_probe_and_training_records_in_file_order():
    from memla_utils.general import TRAIN_RECORDS, plan_study, split_records

    plan = plan_study("auto", "auto", "auto", ["memla", "ft"], 3)  # small: 2 single edits, steps 1,3
    assert plan.n_edit == 3 and plan.records_needed(8) == 3 + 8 + TRAIN_RECORDS
    recs = [type("R", (), {"example_id": f"r{i}"})() for i in range(plan.records_needed(8))]
    edit, probe, train = split_records(recs, n_edit=plan.n_edit, n_probe=8, n_train=TRAIN_RECORDS)
    assert (len(edit), len(probe), len(train)) == (3, 8, TRAIN_RECORDS)  # exactly enough, nothing left over
