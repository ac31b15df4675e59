"""benchmarks/bench_kernels.py: every variant computes the editors' head pass (log p(target) and its gradient)
within float32 rounding of float64, on a vocabulary that no chunk size divides; every decoder-product variant
gives F.linear's values; the tables and JSON are complete."""
from __future__ import annotations

import json

import pytest
import torch

from benchmarks import bench_kernels as bk


@pytest.fixture
def head():
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(1031, 24, generator=gen) * 0.3  # 1031: prime, so every chunking has a short last piece
    h = torch.randn(5, 24, generator=gen)
    targets = torch.tensor([0, 1030, 17, 17, 512])
    return weight, h, targets


def test_reference64_is_log_softmax_and_its_autograd_gradient(head):
    weight, h, targets = head
    x = h.double().requires_grad_(True)
    logp = torch.log_softmax(x @ weight.double().T, -1).gather(1, targets[:, None])[:, 0]
    (grad,) = torch.autograd.grad(logp.sum(), x)
    ref = bk.reference64(h, targets, weight)
    torch.testing.assert_close(ref[0], logp.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(ref[1], grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["now", "logits", "bmm-grouped", "mkl-packed"])
def test_each_variant_gives_the_float64_values_within_float32_rounding(head, name):
    weight, h, targets = head
    run = {"now": bk.now_pass, "logits": bk.logits_pass, "bmm-grouped": bk.grouped_pass(3, 100),
           "mkl-packed": bk.mkl_packed_pass(weight, h.shape[0])}[name]
    if run is None:
        pytest.skip("torch.ops.mkl._mkl_reorder_linear_weight is not in this torch build")
    err = bk.errors(run(h, targets, weight), bk.reference64(h, targets, weight))
    assert err["logp_abs"] < 1e-5 and err["grad_rel"] < 1e-5, err


def test_a_wrong_sum_is_caught_by_the_error_measure(head):
    """The check above can fail: a pass that drops the last vocabulary row is off by more than the tolerance."""
    weight, h, targets = head
    ref = bk.reference64(h, targets, weight)
    off = bk.grouped_pass(3, 100)(h, targets % 1030, weight[:1030])  # a vocabulary one row short
    err = bk.errors(off, bk.reference64(h, targets % 1030, weight))
    assert err["logp_abs"] > 1e-5 or err["grad_rel"] > 1e-5
    assert bk.errors(ref, ref) == {"logp_abs": 0.0, "grad_rel": 0.0}


def test_numba_variant_is_skipped_or_exact(head):
    weight, h, targets = head
    run = bk.numba_pass()
    if run is None:  # numba is not a dependency of the project: the table then says so
        rows = bk.head_pass_rows(weight, [2], repeats=1, seed=0, group=2, group_chunk=64)
        assert [r.get("skipped") for r in rows if r["variant"] == "numba-fused"] == ["not available here"]
        return
    err = bk.errors(run(h, targets, weight), bk.reference64(h, targets, weight))
    assert err["logp_abs"] < 1e-5 and err["grad_rel"] < 1e-5, err


def test_main_writes_both_tables(tmp_path, capsys):
    out = tmp_path / "hk.json"
    result = bk.main(["--vocab", "517", "--hidden", "16", "--rows", "2,5", "--repeats", "1", "--pad-rows", "3",
                       "--pad-to", "4", "--group", "2", "--group-chunk", "64", "--layers", "2", "--ffn", "24",
                       "--q-dim", "8", "--kv-dim", "4", "--decoder-rows", "3", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["passes"] == json.loads(json.dumps(result["passes"]))
    assert {(p["variant"], p["rows"]) for p in saved["passes"]} == {
        (v, r) for v in ("now", "logits", "bmm-grouped", "mkl-packed", "numba-fused") for r in (2, 5)}
    for p in saved["passes"]:
        assert "skipped" in p or (p["ms"] > 0 and p["logp_abs"] < 1e-5 and p["grad_rel"] < 1e-5), p
    assert [p["rows"] for p in saved["padding"]] == [1, 2, 3]
    assert all(p["ms"] > 0 and p["padded_ms"] > 0 for p in saved["padding"])
    assert {p["variant"] for p in saved["decoder"]} == {"F.linear", "mkldnn_linear", "onednn-packed", "mkl-packed"}
    assert all(p["rows"] == 3 for p in saved["decoder"])
    printed = capsys.readouterr().out
    assert "head pass, values and gradient (517 x 16" in printed and "padded to 4" in printed
    assert "2 decoder layers' seven linear products (16 hidden, 24 neurons)" in printed


def test_decoder_variants_give_f_linear_s_values():
    weights = bk.decoder_weights(hidden=16, ffn=24, q_dim=8, kv_dim=4, layers=2, seed=0)
    assert [tuple(w.shape) for w in weights[:7]] == [(8, 16), (4, 16), (4, 16), (16, 8), (24, 16), (24, 16), (16, 24)]
    assert len(weights) == 14 and not torch.equal(weights[0], weights[7])  # each layer its own weights
    rows = bk.decoder_rows(weights, [5], repeats=1, seed=0)
    assert [r["variant"] for r in rows] == ["F.linear", "mkldnn_linear", "onednn-packed", "mkl-packed"]
    assert rows[0]["max_abs_diff"] == 0.0
    for r in rows:
        assert "skipped" in r or (r["ms"] > 0 and r["max_abs_diff"] < 1e-5), r


@pytest.mark.parametrize("argv,message", [(["--rows", "2,x"], "--rows must be comma-separated integers"),
                                          (["--rows", "0"], "--rows must be >= 1"),
                                          (["--group", "0"], "--group must be >= 1"),
                                          (["--decoder-rows", "4,-1"], "--decoder-rows must be >= 1"),
                                          (["--kv-dim", "0"], "--kv-dim must be >= 1")])
def test_bad_options_name_the_option(argv, message, capsys):
    with pytest.raises(SystemExit):
        bk.main(argv)
    assert message in capsys.readouterr().err
