"""benchmarks/bench_roofline.py: its FLOP formulas against torch's FLOP counter, the rows, the projection."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `benchmarks` is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import bench_roofline as br  # noqa: E402
from benchmarks.common import bench_records, fixed_masks, fixed_step_overrides  # noqa: E402
from memla_utils.testing import tiny_model  # noqa: E402

RATE = {"wall": 50.0, "cpu": 40.0}


@pytest.fixture(scope="module")
def lm():
    # hidden 64 / 256 neurons: the products the formulas leave out (LoRA factors) stay a few per cent
    return tiny_model("gemma3_text", hidden=64, neurons=256)


@pytest.fixture(scope="module")
def record():
    return bench_records(1, ["en", "zh", "fr"])[0]


def test_dims_come_from_the_config_checked_against_the_weights(lm, monkeypatch):
    d = br.Dims.from_lm(lm)
    assert (d.layers, d.hidden, d.neurons, d.vocab) == (3, 64, 256, 512)
    # q 64x32, k and v 64x16, o 32x64 (4 heads of 8, 2 KV heads), gate/up/down 64x256
    assert d.layer_params == 2048 + 1024 + 1024 + 2048 + 3 * 64 * 256
    monkeypatch.setattr(lm.model.config, "intermediate_size", 999)
    with pytest.raises(ValueError, match="intermediate_size=999"):
        br.Dims.from_lm(lm)


def test_flops_are_linear_in_tokens_and_steps():
    d = br.Dims(layers=4, hidden=8, neurons=16, vocab=32, layer_params=1000)
    assert br.forward_flops(d, 20, 0) == 2 * br.forward_flops(d, 10, 0) == 2 * 2 * 1000 * 4 * 10
    assert br.forward_flops(d, 0, 3) == 2 * 32 * 8 * 3
    one = br.memla_edit_flops(d, [(10, 2)], steps=1, lowest_layer=0)
    assert br.memla_edit_flops(d, [(10, 2), (10, 2)], steps=1, lowest_layer=0) == 2 * one
    # steps + 1 forwards and steps backwards: each extra step adds exactly one forward and one backward
    step = br.forward_flops(d, 10, 2) + br.backward_flops(d, 10, 2, 0)
    assert br.memla_edit_flops(d, [(10, 2)], steps=5, lowest_layer=0) - one == pytest.approx(4 * step)
    # a higher lowest LoRA layer means a shorter backward
    assert br.memla_edit_flops(d, [(10, 2)], 3, lowest_layer=2) < br.memla_edit_flops(d, [(10, 2)], 3, 0)
    with pytest.raises(ValueError, match="steps"):
        br.memla_edit_flops(d, [(10, 2)], steps=-1, lowest_layer=0)


@pytest.mark.parametrize("language", ["en", "zh"])
def test_memla_and_ft_formulas_match_torchs_flop_counter(lm, record, language):
    from memla_utils.editors import make_editor
    from memla_utils.editors.ft import mlp_parameter_names
    from memla_utils.text import build_batch

    d = br.Dims.from_lm(lm)
    memla = make_editor("memla", **{**fixed_step_overrides()["memla"], "max_steps": 3})
    with FlopCounterMode(display=False) as counted:
        edit = memla.edit(lm, record, language, masks=fixed_masks(lm, record, language))
    edit.revert()
    ours = br.memla_edit_flops(d, br.memla_batches(lm, record, language), edit.info["steps"],
                               min(edit.info["layers"]))
    assert edit.info["steps"] == 3
    # only the LoRA factors' small products are left out
    assert 0.9 * counted.get_total_flops() <= ours <= counted.get_total_flops()

    ft = make_editor("ft", steps=4, early_stop_nll=float("-inf"))
    with FlopCounterMode(display=False) as counted:
        edit = ft.edit(lm, record, language)
    edit.revert()
    layer = edit.info["layer"]
    mlp = sum(p.numel() for n, p in lm.model.named_parameters()
              if n in set(mlp_parameter_names(lm, layer)) and p.dim() == 2)
    view = record.for_language(language)
    batch = br.batch_size_of(build_batch(lm.tokenizer, [view.prompt], [view.target_new], language))
    ours = br.ft_edit_flops(d, batch, layer, mlp, forwards=4, backwards=4)
    assert ours == pytest.approx(counted.get_total_flops(), rel=0.02)


def test_evaluation_positions_give_torchs_flop_count(lm, record):
    from memla_utils.evaluate import evaluate_record

    with br.PositionCounter(lm.model).active() as positions, FlopCounterMode(display=False) as counted:
        evaluate_record(lm, record, ["en", "zh", "fr"])
    assert positions.tokens > positions.logits > 0 and positions.calls > 1
    flop = br.forward_flops(br.Dims.from_lm(lm), positions.tokens, positions.logits)
    assert flop == pytest.approx(counted.get_total_flops(), rel=0.02)


def test_rows_reject_zero_or_non_finite_times_and_report_the_fraction():
    row = br.stage_row("evaluation", "r 12 languages", 8e9, wall_s=2.0, cpu_s=4.0, rate=RATE, source="measured")
    assert row["gflops_wall"] == 4.0 and row["fraction_of_matmul_wall"] == pytest.approx(4.0 / 50.0)
    assert row["gflops_cpu"] == 2.0 and row["fraction_of_matmul_cpu"] == pytest.approx(2.0 / 40.0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive finite"):
            br.stage_row("x", "u", 1e9, wall_s=bad, cpu_s=1.0, rate=RATE, source="measured")
    with pytest.raises(ValueError, match="positive finite"):
        br.stage_row("x", "u", 1e9, wall_s=1.0, cpu_s=0.0, rate=RATE, source="measured")
    with pytest.raises(ValueError, match="FLOP"):
        br.stage_row("x", "u", float("nan"), wall_s=1.0, cpu_s=1.0, rate=RATE, source="measured")
    untimed = br.stage_row("edit mend", "1 edit", None, wall_s=3.0, cpu_s=None, rate=RATE, source="json")
    assert untimed["gflops_wall"] is None and untimed["fraction_of_matmul_cpu"] is None


def test_medium_units_follow_the_preset():
    from memla_utils.config import PRESETS

    p = PRESETS["medium"]
    units = br.preset_units("medium")
    n, e = p["n_records"], len(p["edit_languages"])
    assert units["attribution"] == n * len({"en", "zh", "fr"} | set(p["edit_languages"]))  # "masks" languages
    assert {k for k in units if k.startswith("edit ")} == {f"edit {m}" for m in p["methods"]}
    assert all(units[f"edit {m}"] == n * e for m in p["methods"])
    assert units["evaluation"] == n * e * len(p["methods"]) + n
    assert units["_info"]["attribution_all_languages"] == n * len(set(p["languages"]) | set(p["edit_languages"]))
    assert units["_info"]["attribution_languages"] == ["en", "zh", "fr"]


def test_projection_is_units_times_per_unit_time_plus_one_offs():
    units = {"attribution": 10, "edit memla": 4, "evaluation": 6, "edit rome": 3, "_info": {}}
    per_unit = {"attribution": {"wall_s": 2.0, "cpu_s": 1.5, "source": "m"},
                "edit memla": {"wall_s": 0.5, "cpu_s": 0.25, "source": "m"},
                "evaluation": {"wall_s": 3.0, "cpu_s": 2.0, "source": "m"}}
    p = br.project(units, per_unit, {"once: mend": {"wall_s": 7.0, "source": "json"}})
    assert p["total_wall_s"] == 10 * 2.0 + 4 * 0.5 + 6 * 3.0 + 7.0
    assert p["total_cpu_s"] == 10 * 1.5 + 4 * 0.25 + 6 * 2.0 + 7.0
    assert p["total_wall_h"] == pytest.approx(p["total_wall_s"] / 3600)
    assert p["missing"] == ["edit rome"]  # a stage without a time is named, not counted as zero
    assert sum(r["wall_s"] or 0.0 for r in p["rows"]) == p["total_wall_s"]


def test_tiny_run_writes_finite_json(tmp_path):
    out = tmp_path / "roofline.json"
    br.main(["--init", "random", "--shape", "tiny", "--records", "1", "--repeats", "1", "--mm-rows", "8",
             "--baselines", "rome", "--out", str(out)])
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    stages = {r["stage"] for r in data["stages"]}
    assert stages == {"attribution memla4mke", "edit memla", "edit ft", "evaluation", "edit rome"}
    for r in data["stages"]:
        assert r["wall_s"] > 0 and r["gflop"] > 0 and 0 < r["fraction_of_matmul_cpu"]
        assert math.isfinite(r["gflops_cpu"])
    # random weights: no JSON rows of the pretrained model, so the methods not timed are missing, not zero
    assert data["projection"]["missing"] == ["edit memit", "edit pmet", "edit mend", "edit ike"]
    rows = {r["stage"]: r for r in data["projection"]["rows"]}
    rome = rows["edit rome"]
    assert rome["wall_s"] == pytest.approx(rome["units"] * data["per_unit"]["edit rome"]["wall_s"])
    assert "once: rome setup" in rows and "once: memit setup" not in rows
    assert data["projection"]["total_wall_h"] > 0
    assert data["dims"]["layers"] == 3 and data["threads"] == torch.get_num_threads()
