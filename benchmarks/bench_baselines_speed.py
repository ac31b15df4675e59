"""ROME, MEMIT, PMET and FT-L side by side with the speed issue's reference commit: seconds per edit and weights.

One run, same machine, same inputs: :func:`benchmarks.reference.interleave` alternates subprocess workers that
import the reference package (``git archive`` of :data:`benchmarks.reference.REFERENCE_COMMIT`) and the working
tree's. Each worker loads the model, prepares what is cached across edits (context templates, second moments:
not per-edit work, as in ``bench_baselines``), makes one untimed edit of another record (one-off work of either
side, e.g. cached factors, is then done), times ``editor.edit`` on the same records with the same
hyperparameters (``--budget``), and saves the first edit's weight change. The parent reports per method: seconds
per edit on both sides and their ratio, max |ΔW_current - ΔW_reference| (absolute and relative to max |ΔW|),
the FLOPs of one current edit (``torch.utils.flop_counter``: matmuls and attention, forward and backward; an
extra untimed edit after the timed ones),
the achieved GFLOP/s and the time that FLOP count would take at the machine's measured head-matmul rate; and
the roofline floor of the same edit (:mod:`benchmarks.roofline`: each matrix product's FLOPs and bytes, against
the measured ``torch.mm`` rate and memory bandwidth; a second untimed edit), with today's time over it; and the
seconds that edit spent inside its matrix products where they ran (``in mm s``), so that ``elsewhere s`` (the
timed edit's seconds minus those) is what small operations, Python and autograd cost.

Usage (from the repository root; PMET on the reference side takes minutes per edit on 2 cores):
    python -m benchmarks.bench_baselines_speed                          # default model, 1 record, 1 repeat
    python -m benchmarks.bench_baselines_speed --methods rome,ft-l --edits 2 --repeats 2
-> prints a table, writes benchmarks/results/baselines_speed_<device>.json (or --out)
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    PROJECT_ROOT,
    RESULTS,
    add_model_args,
    add_worker_args,
    bench_records,
    environment,
    load_lm,
    setup_logging,
    write_json,
)
from benchmarks.reference import interleave, provenance, worker_package_root
from benchmarks.roofline import Products, matmul_rate, memory_bandwidth, record_products

log = logging.getLogger("bench_baselines_speed")
METHODS = ("rome", "memit", "pmet", "ft-l")


# ------------------------------------------------------------------------------------------ worker (either side)
def head_gflops(lm, rows: int = 16, repeats: int = 3) -> float:
    """Measured GFLOP/s of the output head's matmul ``[rows, hidden] @ [hidden, vocab]`` (the machine's rate)."""
    w = lm.model.get_output_embeddings().weight.detach()
    x = torch.randn(rows, w.shape[1], dtype=w.dtype, device=w.device)
    x @ w.T  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        x @ w.T
    return 2 * rows * w.shape[0] * w.shape[1] * repeats / (time.perf_counter() - t) / 1e9


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Time ``--edits`` edits per method; save the first edit's weight change under ``--deltas``."""
    from memla_utils.baselines import baseline_overrides
    from memla_utils.editors import make_editor

    languages = args.languages.split(",")
    lm = load_lm(args)
    warmup, *records = bench_records(1 + args.edits, languages)
    overrides = baseline_overrides(args.budget, languages)
    out: dict[str, Any] = {"package_root": worker_package_root(), "methods": {}, "head_gflops": head_gflops(lm),
                           "matmul_gflops": matmul_rate(), "memory_gbytes_s": memory_bandwidth()}
    for method in args.methods.split(","):
        editor = make_editor(method, **overrides.get(method, {}))
        if hasattr(editor, "layers_for"):  # one-off work shared by all edits (cached), as in bench_baselines
            from memla_utils.covariance import second_moments
            from memla_utils.editors.locate import context_prefixes

            cfg = editor.config
            context_prefixes(lm, cfg.n_context, cfg.context_tokens, cfg.seed)
            second_moments(lm, editor.layers_for(lm), cfg.covariance)
        # one untimed edit of another record: whatever else an implementation computes once and keeps for every
        # later edit (since session 35: the factors of the second moments) is not per-edit work either, and the
        # timed edits do not depend on which method ran before in this worker
        editor.edit(lm, warmup, args.edit_language).revert()
        seconds, steps, delta_path = [], [], None
        for i, rec in enumerate(records):
            t = time.perf_counter()
            edit = editor.edit(lm, rec, args.edit_language)
            seconds.append(time.perf_counter() - t)
            steps.append(edit.info.get("steps"))
            if i == 0:
                delta_path = str(Path(args.deltas) / f"{method}-{uuid.uuid4().hex}.pt")
                torch.save({n: edit.edited[n] - edit.originals[n] for n in edit.edited}, delta_path)
            edit.revert()
        res = {"seconds": seconds, "steps": steps, "delta": delta_path}
        if args.count_flops == "all" or (args.count_flops == "current" and out["package_root"] == str(PROJECT_ROOT)):
            def one_edit() -> None:
                editor.edit(lm, records[0], args.edit_language).revert()
            res["flops"] = count_flops(one_edit)
            # the same edit's matrix products, FLOPs and bytes each: the roofline floor (benchmarks/roofline.py)
            products = record_products(one_edit)
            res["products"] = {"flops": products.flops, "bytes": products.bytes, "seconds": products.seconds}
        out["methods"][method] = res
        log.info("%s: %s s", method, [round(s, 1) for s in seconds])
    return out


# ------------------------------------------------------------------------------------------ parent
def weight_difference(ref_path: str, cur_path: str) -> dict[str, float]:
    """Max |ΔW_cur - ΔW_ref| over the edited tensors, absolute and relative to max |ΔW_ref|; relative L2."""
    ref, cur = torch.load(ref_path), torch.load(cur_path)
    if ref.keys() != cur.keys():
        raise RuntimeError(f"the two sides edited different tensors: {sorted(ref)} vs {sorted(cur)}")
    diff = max(float((cur[n].double() - ref[n].double()).abs().max()) for n in ref)
    scale = max(float(ref[n].double().abs().max()) for n in ref)
    l2 = sum(float((cur[n].double() - ref[n].double()).norm() ** 2) for n in ref) ** 0.5
    norm = sum(float(ref[n].double().norm() ** 2) for n in ref) ** 0.5
    return {"max_abs_diff": diff, "max_abs_delta": scale, "max_rel_diff": diff / scale if scale else float("nan"),
            "rel_l2_diff": l2 / norm if norm else float("nan")}


def summarize(runs: dict[str, list[dict[str, Any]]], methods: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rate = statistics.median(r["head_gflops"] for side in runs.values() for r in side)
    every = [r for side in runs.values() for r in side]
    mm_rate = statistics.median(r.get("matmul_gflops", rate) for r in every)
    bandwidth = statistics.median(r.get("memory_gbytes_s", float("nan")) for r in every)
    for m in methods:
        ref_s = [s for r in runs["reference"] for s in r["methods"][m]["seconds"]]
        cur_s = [s for r in runs["current"] for s in r["methods"][m]["seconds"]]
        row: dict[str, Any] = {"reference_s": ref_s, "current_s": cur_s,
                               "reference_s_per_edit": statistics.mean(ref_s),
                               "current_s_per_edit": statistics.mean(cur_s),
                               "steps": [r["methods"][m]["steps"] for r in runs["current"]]}
        row["speedup"] = row["reference_s_per_edit"] / row["current_s_per_edit"]
        row.update(weight_difference(runs["reference"][0]["methods"][m]["delta"],
                                     runs["current"][0]["methods"][m]["delta"]))
        flops = [r["methods"][m].get("flops") for r in runs["current"] if r["methods"][m].get("flops")]
        if flops:
            row["gflop_per_edit"] = flops[0] / 1e9
            row["achieved_gflops"] = row["gflop_per_edit"] / row["current_s_per_edit"]
            row["flop_floor_s"] = row["gflop_per_edit"] / rate
        products = [r["methods"][m].get("products") for r in runs["current"] if r["methods"][m].get("products")]
        if products:
            p = Products(products[0]["flops"], products[0]["bytes"], products[0].get("seconds", []))
            row["roofline"] = p.summary(mm_rate, bandwidth)
            row["roofline"]["current_over_roofline_floor"] = (row["current_s_per_edit"]
                                                              / row["roofline"]["roofline_floor_s"])
            if "in_products_s" in row["roofline"]:  # the rest of an edit: small operations, Python, autograd
                row["roofline"]["elsewhere_s"] = row["current_s_per_edit"] - row["roofline"]["in_products_s"]
        out[m] = row
    return {"methods": out, "head_gflops": rate, "matmul_gflops": mm_rate, "memory_gbytes_s": bandwidth}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--edits", type=int, default=1, help="timed edits per method and worker")
    ap.add_argument("--repeats", type=int, default=1, help="reference/current worker pairs")
    ap.add_argument("--budget", default="cpu-small", help="hyperparameter budget (memla_utils.baselines)")
    ap.add_argument("--languages", default="en,zh,fr,es")
    ap.add_argument("--edit-language", default="en")
    ap.add_argument("--count-flops", choices=("current", "all", "none"), default="current",
                    help="count one extra, untimed edit's FLOPs per method in these workers")
    add_worker_args(ap)
    ap.add_argument("--deltas", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    setup_logging()
    if args.worker:
        Path(args.worker_out).write_text(json.dumps(worker(args)))
        return
    common = ["--model", args.model, "--device", args.device, "--dtype", args.dtype, "--seed", str(args.seed),
              "--threads", str(args.threads), "--init", args.init, "--shape", args.shape, "--methods", args.methods,
              "--edits", str(args.edits), "--budget", args.budget, "--languages", args.languages,
              "--edit-language", args.edit_language]
    methods = args.methods.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        worker_args = common + ["--deltas", tmp, "--count-flops", args.count_flops]
        runs = interleave(Path(__file__).resolve(), worker_args, repeats=args.repeats)
        result = summarize(runs, methods)
    result.update(benchmark="baselines_speed", **provenance(), budget=args.budget, edit_language=args.edit_language,
                  edits_per_worker=args.edits, repeats=args.repeats, environment=environment(torch.device(args.device)),
                  model=args.model)
    path = write_json(args.out or RESULTS / f"baselines_speed_{torch.device(args.device).type}.json", result)
    print(f"{'method':7} {'ref s':>8} {'new s':>8} {'ratio':>6} {'max|dW| diff':>13} {'rel':>9} "
          f"{'GFLOP':>7} {'GFLOP/s':>8} {'floor s':>8} {'GB moved':>9} {'roofline s':>11} {'new/roofline':>13} "
          f"{'in mm s':>8} {'elsewhere s':>12}")
    for m, r in result["methods"].items():
        roof = r.get("roofline", {})
        print(f"{m:7} {r['reference_s_per_edit']:8.1f} {r['current_s_per_edit']:8.1f} {r['speedup']:6.2f} "
              f"{r['max_abs_diff']:13.3g} {r['max_rel_diff']:9.2g} {r.get('gflop_per_edit', float('nan')):7.1f} "
              f"{r.get('achieved_gflops', float('nan')):8.2f} {r.get('flop_floor_s', float('nan')):8.1f} "
              f"{roof.get('gbytes', float('nan')):9.1f} {roof.get('roofline_floor_s', float('nan')):11.2f} "
              f"{roof.get('current_over_roofline_floor', float('nan')):13.2f} "
              f"{roof.get('in_products_s', float('nan')):8.2f} {roof.get('elsewhere_s', float('nan')):12.2f}")
    print(f"machine: {result['matmul_gflops']:.1f} GFLOP/s torch.mm, {result['memory_gbytes_s']:.1f} GB/s read")
    print(f"reference {result['reference_commit'][:12]}, current {result['current_commit'][:12]}"
          f"{' (+uncommitted changes)' if result['current_dirty'] else ''} -> {path}")


if __name__ == "__main__":
    main()
