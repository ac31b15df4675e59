"""The comparison and summary logic of the side-by-side speed benchmarks (issue 15), on made-up measurements."""
from __future__ import annotations

import copy

from benchmarks.bench_general_speed import compare
from benchmarks.bench_unit_threads import summarize, summarize_attribution


def _run(ppl: float = 20.0, nll: float = 3.0, em: float = 1.0) -> dict:
    return {"summary": {"en/perplexity": [ppl, 100], "en/fact_accuracy": [0.5, 4]},
            "rows": {"en": {"facts_nll": [nll, 1.0], "text_nll": [10.0], "facts_em": [em, 0.0]}}}


def test_general_speed_comparison_allows_rounding_only_where_it_may():
    ref = _run()
    assert compare(ref, copy.deepcopy(ref), 1e-5)["equal_within_rtol"]
    close = compare(ref, _run(ppl=20.0 * (1 + 1e-7)), 1e-5)
    assert close["equal_within_rtol"] and 0 < close["max_relative_difference"] < 1e-6
    assert not compare(ref, _run(ppl=20.1), 1e-5)["equal_within_rtol"]          # perplexity beyond rtol
    assert not compare(ref, _run(nll=3.001), 1e-5)["equal_within_rtol"]         # one sentence's NLL
    assert not compare(ref, _run(em=0.0), 1e-5)["equal_within_rtol"]            # accuracies must be identical
    other = _run()
    other["summary"]["en/fact_accuracy"] = [0.5, 5]                              # a different n
    assert not compare(ref, other, 1e-5)["equal_within_rtol"]


def test_unit_threads_summary_counts_throughput_per_process():
    configs = {"1x2": [{"threads": 2, "seconds_per_step": [0.6, 0.6], "eval_seconds": [5.0]}],
               "2x1": [{"threads": 1, "seconds_per_step": [0.6], "eval_seconds": [6.0]},
                       {"threads": 1, "seconds_per_step": [0.6], "eval_seconds": [6.0]}]}
    table = summarize(configs)
    assert table["1x2"]["steps_per_second"] == round(1 / 0.6, 3)
    assert table["2x1"]["steps_per_second"] == round(2 / 0.6, 3)      # two processes at the same step time: 2x
    assert table["2x1"]["evals_per_minute"] == 20.0 and table["1x2"]["evals_per_minute"] == 12.0
    assert table["2x1"]["processes"] == 2 and table["2x1"]["threads"] == 1


def test_unit_threads_attribution_summary_counts_every_process():
    configs = {"1x2": [{"threads": 2, "attribution_seconds": [18.0, 18.0]}],
               "2x1": [{"threads": 1, "attribution_seconds": [27.0]}, {"threads": 1, "attribution_seconds": [27.0]}]}
    table = summarize_attribution(configs)
    assert table["1x2"]["seconds"] == 18.0 and table["1x2"]["per_minute"] == round(60 / 18, 3)
    assert table["2x1"]["per_minute"] == round(2 * 60 / 27, 3)  # two processes side by side: 4.444 vs 3.333
    assert table["2x1"]["processes"] == 2 and table["2x1"]["threads"] == 1


def test_roofline_counts_every_product_with_its_bytes_and_takes_the_slower_bound():
    import pytest
    import torch

    from benchmarks.roofline import Products, record_products

    w = torch.randn(64, 32, requires_grad=True)
    x = torch.randn(5, 32, requires_grad=True)
    p = record_products(lambda: torch.nn.functional.linear(x, w).sum().backward())
    # forward x @ w.T, then the gradients of x and of w: three products of 2 x 5 x 32 x 64 FLOPs each
    assert p.flops == [2 * 5 * 32 * 64] * 3
    assert p.bytes[0] == 4 * (5 * 32 + 64 * 32 + 5 * 64)  # operands and result, float32, each moved once
    few = Products([1000], [10_000])                       # 0.1 FLOP per byte: bound by memory
    assert few.floor_s(gflops=1.0, gbytes_s=1.0) == pytest.approx(1e-5)
    assert few.flop_floor_s(1.0) == pytest.approx(1e-6)
    many = Products([10_000], [1000])                      # 10 FLOP per byte: bound by the matmul rate
    assert many.floor_s(gflops=1.0, gbytes_s=1.0) == pytest.approx(1e-5)
    assert Products([1000, 10_000], [10_000, 1000]).summary(1.0, 1.0)["roofline_floor_s"] == pytest.approx(2e-5)
    assert "in_products_s" not in few.summary(1.0, 1.0)  # nothing timed, nothing claimed


def test_roofline_times_each_product_where_it_runs():
    """The seconds recorded per product are the products' own: a slow product dominates their sum, and work
    outside the products (here a sleep between them) is not counted."""
    import time

    import torch

    from benchmarks.roofline import Products, record_products

    small, big = torch.randn(8, 8), torch.randn(400, 400)

    def work():
        small @ small
        time.sleep(0.2)
        big @ big

    p = record_products(work)
    assert len(p.seconds) == 2 and all(s > 0 for s in p.seconds)
    assert p.seconds[1] > p.seconds[0]
    assert p.summary(1.0, 1.0)["in_products_s"] == sum(p.seconds) < 0.2
    partly = Products([1, 1], [1, 1], [0.5])  # one product not timed (not on CPU): no sum is claimed
    assert "in_products_s" not in partly.summary(1.0, 1.0)
