"""Baselines (FT, FT-L, LoRA, ROME, MEMIT, PMET, MEND, IKE) on tiny random models.

Each weight-editing method: the edit raises P(new) above P(old) on the edit prompt where the tiny model lets
it, revert is bit-exact, and only the claimed parameters change. Plus the float64 solves, the covariance
artifact and the bad-input errors.
"""
from __future__ import annotations

import pytest
import torch

from memla_utils.covariance import CorpusConfig, CovarianceConfig, CovarianceCorpusError, clear_memory, second_moments
from memla_utils.editors import EditError, make_editor
from memla_utils.editors.ft import mlp_parameter_names
from memla_utils.editors.locate import (
    Request,
    least_squares_update,
    rank_one_update,
    read_outputs,
    subject_last_position,
)
from memla_utils.editors.objective import new_vs_old
from memla_utils.mkeb.record import Record
from memla_utils.testing import tiny_model
from memla_utils.text import encode_prompt

COV = CovarianceConfig(corpus=CorpusConfig(source="model", languages=("en", "zh"), samples_per_language=2, sample_tokens=12),
                       n_samples=4)
#: tiny random models need bigger target steps than the papers' 4B-parameter defaults
LOCATE = dict(covariance=COV, n_context=0, v_steps=15, v_lr=1.0, clamp_norm_factor=50.0, v_weight_decay=0.01)
OVERRIDES = {"ft": {}, "ft-l": {}, "lora": {"steps": 15}, "rome": LOCATE,
             "memit": dict(LOCATE, mom2_update_weight=10.0), "pmet": dict(LOCATE, mom2_update_weight=10.0),
             "mend": {"train_steps": 4}}
WEIGHT_METHODS = list(OVERRIDES)


def record(i: int, en: tuple[str, str, str], zh: tuple[str, str, str]) -> Record:
    return Record.from_dict({
        "example_id": f"r{i}",
        "edit": {"en": {"prompt": "The capital of {} is", "subject": en[0], "target_new": en[1], "target_true": en[2]},
                 "zh": {"prompt": "{}的首都是", "subject": zh[0], "target_new": zh[1], "target_true": zh[2]}},
        "paraphrase_prompts": {"en": [f"{en[0]}'s capital city is"], "zh": [f"{zh[0]}的首都叫"]},
        "neighborhood_prompts": {"en": ["The capital of Italy is"], "zh": ["意大利的首都是"]},
        "neighborhood_answers": {"en": ["Rome"], "zh": ["罗马"]}})


REC = record(0, ("France", "Tokyo", "Paris"), ("法国", "东京", "巴黎"))
TRAIN = [record(1, ("Japan", "Berlin", "Tokyo"), ("日本", "柏林", "东京")),
         record(2, ("Spain", "Lisbon", "Madrid"), ("西班牙", "里斯本", "马德里")),
         record(3, ("Poland", "Rome", "Warsaw"), ("波兰", "罗马", "华沙"))]


pytestmark = pytest.mark.usefixtures("module_cache")  # a fresh artifact cache for this module (conftest)


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def gpt2():
    return tiny_model("gpt2")


def snapshot(lm):
    return {n: p.detach().clone() for n, p in lm.model.named_parameters()}


def changed(lm, before):
    return {n for n, p in lm.model.named_parameters() if not torch.equal(p, before[n])}


def assert_restored(lm, before):
    for n, p in lm.model.named_parameters():
        assert torch.equal(p, before[n]), f"{n} not restored bit-exactly"


def claimed(lm, method: str, edit) -> set[str]:
    """The parameters each method says it edits (independently of the Edit's own record)."""
    a = lm.adapter
    down = {f"{a.down_proj_name(l)}.weight" for l in range(a.n_layers)}
    if method in ("ft", "ft-l"):
        return set(mlp_parameter_names(lm, edit.info["layer"]))
    return {f"{a.down_proj_name(l)}.weight" for l in edit.info["layers"]} & down


# ------------------------------------------------------------------------------------------- per method
@pytest.mark.parametrize("method", WEIGHT_METHODS)
def test_edit_flips_new_over_old_reverts_exactly_and_touches_only_its_parameters(llama, method):
    editor = make_editor(method, **OVERRIDES[method]).fit(llama, TRAIN)
    before = snapshot(llama)
    pre = new_vs_old(llama.model, llama.tokenizer, REC, "zh")
    assert pre["logp_new"] < pre["logp_old"]  # the tiny model prefers the old answer before editing
    edit = editor.edit(llama, REC, "zh")
    post = new_vs_old(llama.model, llama.tokenizer, REC, "zh")
    touched = changed(llama, before)
    assert touched, f"{method} changed nothing"
    assert touched <= set(edit.touched) <= claimed(llama, method, edit)
    if method == "ft-l":  # the L-inf bound keeps FT-L from flipping the answer, but it moves toward it
        assert post["logp_new"] > pre["logp_new"]
        for n in touched:
            assert float((edit.edited[n] - edit.originals[n]).abs().max()) <= 5e-4 + 1e-7
    else:
        assert post["logp_new"] > post["logp_old"], (method, pre, post)
    edit.revert()
    assert_restored(llama, before)
    edit.apply()  # the saved edited values go back in exactly
    assert changed(llama, before) == touched
    edit.revert()
    assert_restored(llama, before)


@pytest.mark.parametrize("method", ["rome", "memit", "lora"])
def test_conv1d_down_projection_edits_revert_exactly(gpt2, method):
    """GPT-2 keeps neurons on axis 0 of its Conv1D: the same editors must handle the transposed layout."""
    kw = dict(OVERRIDES[method])
    if "v_steps" in kw:
        kw["v_steps"] = 3
    if method in ("ft", "lora"):
        kw["steps"] = 3
    before = snapshot(gpt2)
    edit = make_editor(method, **kw).fit(gpt2, TRAIN).edit(gpt2, REC, "en")
    assert changed(gpt2, before) <= claimed(gpt2, method, edit)
    assert not any("lora_" in n for n, _ in gpt2.model.named_modules())
    edit.revert()
    assert_restored(gpt2, before)


def test_rome_writes_the_optimised_value_at_the_subject_key(gpt2):
    """After ROME, the down projection's output at the subject's last token moved by exactly δ."""
    editor = make_editor("rome", **dict(LOCATE, v_steps=3))
    layer = editor.layers_for(gpt2)[0]
    req = Request(REC, "en")
    out_before = read_outputs(gpt2, gpt2.adapter.down_proj(layer), [req])[0]
    edit = editor.edit(gpt2, REC, "en")
    out_after = read_outputs(gpt2, gpt2.adapter.down_proj(layer), [req])[0]
    moved = float((out_after - out_before).norm())
    assert moved > 0
    assert moved == pytest.approx(edit.info["requests"][0]["delta_norm"], rel=1e-3)
    edit.revert()


def test_locate_editors_are_deterministic(llama):
    a = make_editor("rome", **dict(LOCATE, v_steps=2)).edit(llama, REC, "en")
    a.revert()
    b = make_editor("rome", **dict(LOCATE, v_steps=2)).edit(llama, REC, "en")
    b.revert()
    assert a.touched == b.touched and all(torch.equal(a.edited[n], b.edited[n]) for n in a.touched)


def test_pmet_optimises_attention_but_edits_only_ffn(llama):
    edit = make_editor("pmet", **dict(OVERRIDES["pmet"], v_steps=3)).edit(llama, REC, "zh")
    edit.revert()
    assert edit.info["requests"][0]["attention_delta_norm"] > 0
    assert all(".mlp." in n for n in edit.touched)


def test_ike_prefix_has_demonstrations_from_training_split_and_the_new_fact(llama):
    editor = make_editor("ike").fit(llama, TRAIN)
    before = snapshot(llama)
    edit = editor.edit(llama, REC, "en")
    assert_restored(llama, before)  # no weights change
    assert not edit.touched
    zh = edit.wrap_prompt("法国的首都是", "zh")
    assert zh.endswith("New Fact: The capital of France is Tokyo\nPrompt: 法国的首都是")
    demos = edit.prompt_prefix["zh"][: -len("New Fact: The capital of France is Tokyo\nPrompt: ")]
    assert "France" not in demos and "法国" not in demos  # the evaluated record never serves as a demonstration
    assert demos.count("New Fact:") == 8 and any(s in demos for s in ("日本", "西班牙", "波兰"))
    assert "的首都是 " not in demos  # zh answers are joined without a space


def test_mend_training_is_cached_and_reports_its_cost(llama):
    a = make_editor("mend", train_steps=3).fit(llama, TRAIN)
    b = make_editor("mend", train_steps=3).fit(llama, TRAIN)
    assert a.fit_info["cached"] is False and b.fit_info["cached"] is True
    assert b.fit_info["fit_seconds"] == a.fit_info["fit_seconds"] > 0
    for l in a.nets:
        for (k, v), (_, w) in zip(a.nets[l].state_dict().items(), b.nets[l].state_dict().items()):
            assert torch.equal(v, w), k


# ------------------------------------------------------------------------------------------- core
def test_rank_one_update_inserts_the_value_exactly():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g, dtype=torch.float64)
    cov = x.T @ x / 200
    k, r = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    upd = rank_one_update(cov, 0.0, k, k, r)
    assert torch.allclose(upd @ k, r)
    assert torch.linalg.matrix_rank(upd) == 1


def test_cached_factors_give_the_direct_solves_bits_and_follow_in_place_changes():
    """ROME's update from the cached LU factors is bit for bit the direct solve it replaced (which factors the
    same matrix on every call), at the default model's size; an in-place change of the covariance refactors."""
    from memla_utils.editors.locate import factored, regularized

    g = torch.Generator().manual_seed(2)
    n = 2048
    x = torch.randn(n + 64, n, generator=g, dtype=torch.float64)
    cov = x.T @ x / (n + 64)
    key, bare, r = (torch.randn(n, generator=g, dtype=torch.float64) for _ in range(3))
    u = torch.linalg.solve(regularized(cov, 0.01), key)
    direct = torch.outer(r, u) / torch.dot(u, bare)
    assert torch.equal(rank_one_update(cov, 0.01, key, bare, r), direct)
    assert torch.equal(rank_one_update(cov, 0.01, key, bare, r), direct)  # second call: the cached factors
    lu_before = factored(cov, 0.01)[0]
    assert factored(cov, 0.01)[0] is lu_before
    memit_factors = factored(cov, 0.01, 15000.0)[0]                    # another weight on the same layer: kept beside
    assert factored(cov, 0.01)[0] is lu_before and factored(cov, 0.01, 15000.0)[0] is memit_factors
    cov.mul_(2.0)
    assert factored(cov, 0.01)[0] is not lu_before
    assert torch.allclose(rank_one_update(cov, 0.01, key, bare, r), direct, rtol=1e-9, atol=0)  # C scaled: same u


def test_least_squares_update_solves_memits_normal_equations():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(100, 6, generator=g, dtype=torch.float64)
    cov = x.T @ x / 100
    keys, res = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    upd = least_squares_update(cov, 0.0, keys, res, 2.0)
    # gradient of |ΔW K - R|² + λ tr(ΔW C ΔWᵀ) vanishes
    assert torch.allclose((upd @ keys - res) @ keys.T + 2.0 * upd @ cov, torch.zeros(4, 6, dtype=torch.float64), atol=1e-10)


@pytest.mark.parametrize("n_keys", [1, 3])
def test_least_squares_update_through_woodbury_equals_the_direct_solve(n_keys):
    """MEMIT's update from the cached factors of λC (Woodbury) equals the direct solve of (λC + KKᵀ) it replaced
    up to float64 rounding, for an ill-conditioned covariance like real MLP keys' second moments: closer than the
    float32 resolution the weights are stored in, and it satisfies MEMIT's normal equations at least as well."""
    from memla_utils.editors.locate import regularized

    g = torch.Generator().manual_seed(3)
    n = 512
    scales = torch.logspace(0, -6, n, dtype=torch.float64)                   # condition number ~1e12
    x = torch.randn(4 * n, n, generator=g, dtype=torch.float64) * scales
    cov = x.T @ x / (4 * n)
    keys = torch.randn(n, n_keys, generator=g, dtype=torch.float64)
    res = torch.randn(64, n_keys, generator=g, dtype=torch.float64)
    c = regularized(cov, 1e-3)
    for weight in (1.0, 15000.0):  # condition number of λC + KKᵀ: ~1.5e7 and ~3e4
        direct = res @ torch.linalg.solve(weight * c + keys @ keys.T, keys).T
        got = least_squares_update(cov, 1e-3, keys, res, weight)
        assert float((got - direct).abs().max() / direct.abs().max()) < 6e-8, weight  # float32 resolution

        def normal_equations(u, weight=weight):  # MEMIT's optimality condition; 0 for the exact update
            return float(((u @ keys - res) @ keys.T + weight * u @ c).abs().max())
        assert normal_equations(got) <= 2 * normal_equations(direct), weight


def test_subject_position_points_at_the_subject(llama):
    tok = llama.tokenizer
    req = Request(REC, "en")
    pos = subject_last_position(tok, req)
    ids = encode_prompt(tok, "The capital of France is")
    assert tok.decode(ids[: pos + 1]).endswith("France")


def test_covariance_matches_a_direct_computation_and_is_cached(llama, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The capital of France is Paris.\n法国的首都是巴黎。\n\nLa capitale est Paris.\n", encoding="utf-8")
    cfg = CovarianceConfig(corpus=CorpusConfig(source=str(corpus)), n_samples=3)
    c = second_moments(llama, [1], cfg)[1]
    acts = []
    for text in corpus.read_text(encoding="utf-8").split("\n"):
        if text:
            ids = torch.tensor([encode_prompt(llama.tokenizer, text)])
            with llama.adapter.neuron_hook(1, capture=True) as probe, torch.no_grad():
                llama.model(input_ids=ids)
            acts.append(probe.activations[0, 1:].double())
    k = torch.cat(acts)
    assert c.dtype == torch.float64 and c.shape == (64, 64)
    assert torch.allclose(c, k.T @ k / len(k), rtol=1e-5, atol=1e-6)
    clear_memory()
    assert torch.equal(second_moments(llama, [1], cfg)[1], c)  # from disk
    smaller = second_moments(llama, [1], CovarianceConfig(corpus=cfg.corpus, n_samples=1))[1]
    assert not torch.allclose(smaller, c)


# ------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("method", ["ft", "lora", "rome", "memit", "pmet", "mend"])
def test_a_layer_the_model_does_not_have_is_a_clear_error(llama, method):
    kw = {"layer": 7} if method in ("ft", "ft-l") else {"layers": (1, 7)}
    before = snapshot(llama)
    with pytest.raises(IndexError, match=r"layer 7 does not exist.*0\.\.2"):
        editor = make_editor(method, **kw)
        editor.fit(llama, TRAIN) if method == "mend" else editor.edit(llama, REC, "en")
    assert_restored(llama, before)


def test_missing_covariance_corpus_is_a_clear_error(llama, tmp_path):
    missing = tmp_path / "nope.txt"
    editor = make_editor("rome", covariance=CovarianceConfig(corpus=CorpusConfig(source=str(missing))))
    with pytest.raises(CovarianceCorpusError, match="nope.txt.*does not exist"):
        editor.edit(llama, REC, "en")


def test_record_without_target_true_for_a_method_that_needs_it(llama):
    data = REC.to_dict()
    data["edit"]["en"]["target_true"] = None
    rec = Record.from_dict(data)
    editor = make_editor("ft", unlikelihood_weight=1.0)
    assert editor.needs_target_true
    with pytest.raises(EditError, match=r"'r0' \(en\): ft needs target_true"):
        editor.edit(llama, rec, "en")


def test_methods_with_a_training_split_refuse_to_edit_without_one(llama):
    with pytest.raises(EditError, match="fit"):
        make_editor("mend").edit(llama, REC, "en")
    with pytest.raises(EditError, match="fit"):
        make_editor("ike").edit(llama, REC, "en")
    with pytest.raises(TypeError, match="v_stepz"):
        make_editor("rome", v_stepz=3)


# ------------------------------------------------------------------------------------------- group helpers
def test_budgets_and_cost_table():
    import pandas as pd

    from memla_utils.baselines import BASELINES, baseline_overrides, edit_costs

    with pytest.raises(ValueError, match="budget 'fast'"):
        baseline_overrides("fast")
    small = baseline_overrides("cpu-small", ["en", "zh"])
    assert small["rome"]["covariance"].corpus.languages == ("en", "zh")
    for m in BASELINES:  # every override is a real hyperparameter of its method
        make_editor(m, **small.get(m, {}))
    rows = [{"record": r, "method": m, "edit_lang": "en", "eval_lang": None, "metric": k, "value": v, "n": 1,
             "kind": "edit"} for r, m, k, v in [("a", "rome", "seconds", 2.0), ("b", "rome", "seconds", 4.0),
                                                ("a", "rome", "eval_seconds", 1.0), ("b", "rome", "eval_seconds", 3.0),
                                                ("a", "ft", "seconds", 1.0), ("a", "ft", "eval_seconds", 1.0)]]
    costs = edit_costs(pd.DataFrame(rows))
    assert costs["method"].tolist() == ["ft", "rome"]
    assert costs.set_index("method").loc["rome", "seconds_per_edit"] == 3.0
    assert costs.set_index("method").loc["rome", "edits"] == 2
