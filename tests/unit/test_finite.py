"""Nothing non-finite becomes a metric, and float16 is refused where the architecture overflows (issue 13 §6).

Before: ``load_model("default", dtype="float16")`` loaded Gemma 3, whose residual stream passes float16's 65504
(every logit NaN), and ES/PS silently came out 0 (``NaN > NaN`` is False); NaN values flowed into runner rows,
general-ability rows, the suppression check and the report's statistics.
"""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

import memla_utils.general as general
import memla_utils.general_edits as general_edits
import memla_utils.runner as runner
from memla_utils.evaluate import LanguageEvaluation, MetricValue, evaluate_language
from memla_utils.finite import NonFiniteError
from memla_utils.general import GeneralConfig, build_probe_set, single_edit_general
from memla_utils.masks import NeuronMasks
from memla_utils.mkeb.record import EditTarget, Record
from memla_utils.models import UnsafeDtypeError, load_model, wrap_model
from memla_utils.report import bootstrap_ci, general_stats, tidy
from memla_utils.runner import RunnerConfig, load_results, run_experiment
from memla_utils.suppression import suppression_effect
from memla_utils.testing import tiny_model, tiny_tokenizer


def rec(i: int = 0) -> Record:
    subj = ["France", "Japan", "Spain", "Italy"][i]
    return Record(f"r{i}", "capital", {"en": EditTarget("The capital of {} is", subj, "Tokyo", "Paris")},
                  paraphrase_prompts={"en": [f"{subj}'s capital is"]},
                  neighborhood_prompts={"en": ["The capital of Peru is"]}, neighborhood_answers={"en": ["Lima"]})


def nan_logits(lm):
    """Make every logit NaN, as float16 overflow does (returns the hook handle)."""
    head = lm.model.get_output_embeddings()
    return head.register_forward_hook(lambda m, a, out: out * float("nan"))


# ------------------------------------------------------------------------------------------- float16
@pytest.mark.parametrize("dtype", ["float16", "fp16", torch.float16])
def test_float16_is_refused_for_gemma_before_loading_weights(tmp_path, dtype):
    tiny = tiny_model("gemma3_text")
    tiny.model.save_pretrained(tmp_path / "gemma")
    tiny.tokenizer.save_pretrained(tmp_path / "gemma")
    with pytest.raises(UnsafeDtypeError) as err:
        load_model(str(tmp_path / "gemma"), device="cpu", dtype=dtype)
    msg = str(err.value)
    assert str(tmp_path / "gemma") in msg and "gemma3_text" in msg and "float16" in msg and "bfloat16" in msg
    ok = load_model(str(tmp_path / "gemma"), device="cpu", dtype="bfloat16")  # the suggested dtype works
    assert ok.dtype == torch.bfloat16


def test_float16_stays_allowed_where_the_architecture_does_not_overflow(tmp_path):
    tiny = tiny_model("llama")
    tiny.model.save_pretrained(tmp_path / "llama")
    tiny.tokenizer.save_pretrained(tmp_path / "llama")
    assert load_model(str(tmp_path / "llama"), device="cpu", dtype="float16").dtype == torch.float16


def test_wrapping_a_float16_gemma_is_refused():
    from transformers import AutoModelForCausalLM

    from memla_utils.testing import tiny_config

    model = AutoModelForCausalLM.from_config(tiny_config("gemma3_text"), dtype=torch.float16)
    with pytest.raises(UnsafeDtypeError, match="float16"):
        wrap_model(model, tiny_tokenizer(), name="tiny-gemma")


# ------------------------------------------------------------------------------------------- metrics
def test_nan_logits_raise_in_evaluation_instead_of_es_zero():
    lm = tiny_model("qwen2")
    handle = nan_logits(lm)
    try:
        with pytest.raises(NonFiniteError, match=r"record 'r0', language 'en'"):
            evaluate_language(lm, rec(), "en")
    finally:
        handle.remove()
    assert evaluate_language(lm, rec(), "en").metrics["ES"].value in (0.0, 1.0)  # fine again without the hook


def test_nan_logits_in_generation_alone_are_caught():
    """NS/QS come from greedy decoding, where NaN logits would just pick token 0: the logits are checked."""
    lm = tiny_model("qwen2")
    calls = {"n": 0}

    def hook(module, args, out):  # NaN only where next tokens are projected after the prefill: the decoding steps
        # (a forward that sees one new position, or the rows of a step projected apart: head_projection)
        step = out.dim() == 2 or out.shape[1] == 1
        calls["n"] += step
        return out * float("nan") if step and calls["n"] > 1 else out

    r = Record("r5", "capital", {"en": EditTarget("The capital of {} is", "France", "Tokyo", None)},
               neighborhood_prompts={"en": ["The capital of Peru is"]}, neighborhood_answers={"en": ["Lima city"]})
    handle = lm.model.get_output_embeddings().register_forward_hook(hook)
    try:
        with pytest.raises(NonFiniteError, match="r5"):
            evaluate_language(lm, r, "en")
    finally:
        handle.remove()


def test_runner_raises_naming_record_and_method(tmp_path, monkeypatch):
    lm = tiny_model("llama")
    handle = nan_logits(lm)
    try:
        with pytest.raises(NonFiniteError, match=r"method 'unedited'.*record 'r0'"):
            run_experiment(lm, [rec()], ["ft"], ["en"], ["en"], tmp_path / "a",
                           config=RunnerConfig(editor_overrides={"ft": {"steps": 1}}, progress=False))
    finally:
        handle.remove()
    real = runner.evaluate_record

    def nan_after_edit(lm_, record, languages, *, wrap=None, config=None, references=None):
        out = real(lm_, record, languages, wrap=wrap, config=config, references=references)
        if references is not None:  # an edited model's evaluation
            for res in out.values():
                res.metrics["ES"] = MetricValue(float("nan"), 1)
        return out

    monkeypatch.setattr(runner, "evaluate_record", nan_after_edit)
    with pytest.raises(NonFiniteError, match=r"method 'ft'.*record 'r0', method 'ft'.*metric ES"):
        run_experiment(lm, [rec()], ["ft"], ["en"], ["en"], tmp_path / "b",
                       config=RunnerConfig(editor_overrides={"ft": {"steps": 1}}, progress=False))
    assert all(torch.isfinite(p).all() for p in lm.model.parameters())  # the edit was reverted


def test_load_results_refuses_a_non_finite_row(tmp_path):
    row = {"record": "r0", "method": "ft", "edit_lang": "en", "eval_lang": "en", "metric": "ES", "value": float("nan"),
           "n": 1, "kind": "metric", "attempt": "a"}
    done = {"record": "r0", "method": "ft", "edit_lang": "en", "kind": "done", "attempt": "a"}
    (tmp_path / "results-shard000of001.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(done) + "\n")
    with pytest.raises(NonFiniteError, match=r"record 'r0', method 'ft'.*metric 'ES'"):
        load_results(tmp_path)


def test_general_ability_raises_naming_record_and_method(monkeypatch):
    lm = tiny_model("llama")
    probe = build_probe_set([rec(2), rec(3)], ["en"])
    handle = nan_logits(lm)
    try:
        with pytest.raises(NonFiniteError, match="'unedited'.*perplexity"):
            single_edit_general(lm, [rec(0)], probe, ["ft"], "en", config=GeneralConfig())
    finally:
        handle.remove()
    real = general.score_probe

    def nan_after_edit(lm_, probe_, *, edit=None, batch_size=16):
        scores = real(lm_, probe_, edit=edit, batch_size=batch_size)
        if edit is not None:  # the edited model's prose NLL comes out NaN
            for sc in scores.values():
                if sc.text is not None:
                    sc.text.nll = float("nan")
        return scores

    monkeypatch.setattr(general_edits, "score_probe", nan_after_edit)  # what single_edit_general calls
    from memla_utils.editors import make_editor

    with pytest.raises(NonFiniteError, match=r"record 'r0', method 'ft'.*after editing"):
        single_edit_general(lm, [rec(0)], probe, ["ft"], "en", editors={"ft": make_editor("ft", steps=1)})
    assert all(torch.isfinite(p).all() for p in lm.model.parameters())


def test_suppression_check_raises_on_nan():
    lm = tiny_model("llama")
    neurons = NeuronMasks.from_sets({0: [1, 2]}, lm.adapter.n_neurons)
    assert math.isfinite(suppression_effect(lm, rec(), "en", neurons, 0.0))
    handle = nan_logits(lm)
    try:
        with pytest.raises(NonFiniteError, match=r"record 'r0', language 'en'"):
            suppression_effect(lm, rec(), "en", neurons, 0.0)
    finally:
        handle.remove()


# ------------------------------------------------------------------------------------------- report
def frame(value, n=1):
    return pd.DataFrame([{"record": "r0", "method": "memla", "edit_lang": "en", "eval_lang": "zh", "metric": "ES",
                          "value": value, "n": n}])


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), "NaN"])
def test_report_refuses_non_finite_scores(value):
    with pytest.raises(NonFiniteError, match=r"record 'r0', method 'memla'"):
        tidy(frame(value))


def test_report_keeps_not_available_as_missing():
    assert tidy(frame(None, n=0)).empty  # "not available" (n = 0) is dropped, not an error


def test_report_general_and_bootstrap_refuse_non_finite():
    g = pd.DataFrame([{"setting": "single", "method": "memla", "n_edits": 1, "record": "r0", "edit_lang": "en",
                       "eval_lang": "en", "metric": "perplexity", "before": 10.0, "after": float("nan"),
                       "delta": float("nan"), "n": 5}])
    with pytest.raises(NonFiniteError, match="'after'"):
        general_stats(g)
    with pytest.raises(NonFiniteError, match="infinite"):
        bootstrap_ci([0.5, float("inf")])
    assert bootstrap_ci([0.5, None, float("nan")]).n == 1  # missing values are still "not available"
    assert isinstance(LanguageEvaluation({}, {}), LanguageEvaluation)
