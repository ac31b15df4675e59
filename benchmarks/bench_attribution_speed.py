"""Attribution from an empty cache, side by side with the reference commit (issue #15 items 1 and 6).

Unit: one (record, language) = every prompt attributed for it (edit prompt + paraphrases, ``record_items``), with
the attribution cache disabled, for both variants (``memla4mke``, ``exact``). Reference (``benchmarks.reference``:
the package as of commit ``cdad12e``) and current workers run alternately in subprocesses, ``--repeats`` times
each, on the same model, records and thread count. Per (record, language, variant) the table gives seconds on
both sides (wall and process CPU time: on a shared machine CPU time is the steadier of the two), their ratio,
the Spearman correlation of the scores (minimum over prompts) and whether the neuron sets at ``--threshold`` agree
(per prompt; neurons within ``1e-4`` relative of the threshold on either side are not counted), the FLOPs
(``benchmarks/attribution_flops.py``) and the achieved GFLOP/s per stage against the measured ``torch.mm`` rate.

Usage (from the repository root; the model cache only, never the attribution cache, is shared):
    MEMLA_CACHE=... nice -n 19 .venv/bin/python -m benchmarks.bench_attribution_speed --records 1 --languages en,zh
-> prints a table, writes benchmarks/results/attribution_speed_cpu.json (or --out)
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("bench_attribution_speed")
METHODS = ("memla4mke", "exact")
#: neurons within this relative distance of the threshold may fall on either side by rounding (issue #15)
MARGIN = 1e-4


# ------------------------------------------------------------------------------------------------ worker
class _StageClock:
    """Process CPU and wall seconds spent in the package's preparation and vocabulary-head functions.

    Both versions of the package call ``_prepare`` (clean run + baseline, which itself calls the head once) and
    ``_logprob_and_grad`` (now ``logprob_and_grad``, from ``head_logprob``) through module globals (the reference's ``memla_utils.attribution``; since the split of
    that module, ``attribution_ig`` and ``attribution_prep``), so wrapping them in every module that holds them
    splits the time into stages.
    """

    def __init__(self, modules: Sequence[Any]) -> None:
        self.cpu = {"prepare": 0.0, "head": 0.0}
        self.wall = {"prepare": 0.0, "head": 0.0}
        self._in_prepare = False
        for module in modules:
            if hasattr(module, "_prepare"):
                module._prepare = self._timed_prepare(module._prepare)
            for name in ("_logprob_and_grad", "logprob_and_grad"):  # the name before / since head_logprob.py
                if hasattr(module, name):
                    setattr(module, name, self._timed_head(getattr(module, name)))

    def _timed_prepare(self, prepare: Any) -> Any:
        def timed_prepare(*a: Any, **k: Any) -> Any:
            c, w = time.process_time(), time.perf_counter()
            self._in_prepare = True
            try:
                return prepare(*a, **k)
            finally:
                self._in_prepare = False
                self.cpu["prepare"] += time.process_time() - c
                self.wall["prepare"] += time.perf_counter() - w

        return timed_prepare

    def _timed_head(self, head: Any) -> Any:
        def timed_head(*a: Any, **k: Any) -> Any:
            if self._in_prepare:
                return head(*a, **k)
            c, w = time.process_time(), time.perf_counter()
            try:
                return head(*a, **k)
            finally:
                self.cpu["head"] += time.process_time() - c
                self.wall["head"] += time.perf_counter() - w

        return timed_head

    def reset(self) -> None:
        for d in (self.cpu, self.wall):
            for k in d:
                d[k] = 0.0


def worker(args: argparse.Namespace) -> None:
    """One side: attribute every (record, language, method) from scratch; JSON to ``--worker-out``, scores to .pt."""
    import memla_utils.attribution as attribution
    from benchmarks.attribution_flops import attribution_flops, matmul_gflops
    from benchmarks.common import bench_records
    from benchmarks.reference import worker_package_root
    from memla_utils.cache import ArtifactCache
    from memla_utils.models import load_model

    torch.set_num_threads(args.threads)
    langs = [s for s in args.languages.split(",") if s]
    lm = load_model(args.model, device="cpu", dtype="float32")
    records = bench_records(args.records, langs)
    off = ArtifactCache(enabled=False)
    # the reference commit has one module; the current package splits it (the modules that call the two functions)
    split = [importlib.import_module(f"memla_utils.{m}") for m in ("attribution_prep", "attribution_ig")
             if importlib.util.find_spec(f"memla_utils.{m}") is not None]
    clock = _StageClock(split or [attribution])
    warm = attribution.AttributionConfig(steps=2, use_paraphrases=False)
    attribution.record_attributions(lm, records[0], langs[0], warm, off)  # allocator, kernels
    rate = matmul_gflops()
    rows, scores = [], {}
    for rec in records:
        for lang in langs:
            for method in METHODS:
                cfg = attribution.AttributionConfig(method=method, steps=args.steps, threshold=args.threshold)
                clock.reset()
                c, w = time.process_time(), time.perf_counter()
                atts = attribution.record_attributions(lm, rec, lang, cfg, off)[lang]
                c, w = time.process_time() - c, time.perf_counter() - w
                items = attribution.record_items(rec, lang, cfg)
                flops = attribution_flops(lm, items, method, args.steps)
                rows.append({"example_id": rec.example_id, "language": lang, "method": method, "prompts": len(atts),
                             "cpu_s": round(c, 3), "wall_s": round(w, 3),
                             "stage_cpu_s": {k: round(v, 3) for k, v in clock.cpu.items()} | {
                                 "body": round(c - sum(clock.cpu.values()), 3)},
                             "flops": flops})
                for i, att in enumerate(atts):
                    scores[f"{method}|{rec.example_id}|{lang}|{i}"] = att.scores.clone()
                log.info("%s", rows[-1])
    scores_path = Path(args.scores_dir) / f"scores_{os.getpid()}.pt"
    torch.save(scores, scores_path)
    out = {"package_root": worker_package_root(), "scores_path": str(scores_path), "threads": torch.get_num_threads(), "matmul_gflops": rate,
           "rows": rows}
    Path(args.worker_out).write_text(json.dumps(out))


# ------------------------------------------------------------------------------------------------ comparison
def neuron_sets_agree(ref: torch.Tensor, cur: torch.Tensor, threshold: float, margin: float = MARGIN,
                      ) -> tuple[bool, int, int]:
    """Whether ``scores > threshold x max`` selects the same neurons on both sides, ignoring neurons within
    ``margin`` (relative) of either side's threshold; returns (agree, differing neurons, ignored neurons)."""
    t_ref, t_cur = threshold * float(ref.max()), threshold * float(cur.max())
    near = ((ref - t_ref).abs() <= margin * abs(t_ref)) | ((cur - t_cur).abs() <= margin * abs(t_cur))
    diff = ((ref > t_ref) != (cur > t_cur)) & ~near
    return not bool(diff.any()), int(diff.sum()), int(near.sum())


def compare(runs: dict[str, list[dict[str, Any]]], scores: dict[str, dict[str, torch.Tensor]], threshold: float,
            ) -> list[dict[str, Any]]:
    """Per (record, language, method): median seconds per side, ratios, agreement of the scores, GFLOP/s."""
    from benchmarks.common import spearman

    table = []
    for i, row in enumerate(runs["current"][0]["rows"]):
        key = f"{row['method']}|{row['example_id']}|{row['language']}"
        side = {s: [r["rows"][i] for r in runs[s]] for s in ("reference", "current")}
        cpu = {s: statistics.median(r["cpu_s"] for r in v) for s, v in side.items()}
        wall = {s: statistics.median(r["wall_s"] for r in v) for s, v in side.items()}
        rhos, agree, n_diff, n_near = [], True, 0, 0
        for j in range(row["prompts"]):
            a, b = scores["reference"][f"{key}|{j}"], scores["current"][f"{key}|{j}"]
            rhos.append(spearman(a, b))
            ok, d, n = neuron_sets_agree(a, b, threshold)
            agree, n_diff, n_near = agree and ok, n_diff + d, n_near + n
        rate = statistics.median(r["matmul_gflops"]["best_cpu"] for r in runs["current"] + runs["reference"])
        cur_stage = side["current"][0]["stage_cpu_s"]
        fl = row["flops"]
        table.append({
            "example_id": row["example_id"], "language": row["language"], "method": row["method"],
            "prompts": row["prompts"], "rows": int(fl["rows"]),
            "reference_cpu_s": cpu["reference"], "current_cpu_s": cpu["current"],
            "ratio_cpu": round(cpu["reference"] / cpu["current"], 3),
            "reference_wall_s": wall["reference"], "current_wall_s": wall["current"],
            "ratio_wall": round(wall["reference"] / wall["current"], 3),
            "spearman_min": round(min(rhos), 6), "neuron_sets_equal": agree, "neurons_differing": n_diff,
            "neurons_within_margin": n_near,
            "gflop": {k: round(v / 1e9, 2) for k, v in fl.items() if k != "rows"},
            "floor_cpu_s_at_matmul_rate": round(fl["floor"] / 1e9 / rate, 2),
            "gflops_achieved_cpu": {
                "total": round(fl["total"] / 1e9 / cpu["current"], 1),
                **{k: round(fl[k] / 1e9 / max(cur_stage[k], 1e-9), 1) for k in ("prepare", "body", "head")}},
            "gflops_reference_total_cpu": round(fl["total"] / 1e9 / cpu["reference"], 1),
            "matmul_gflops_cpu": rate,
            "current_stage_cpu_s": cur_stage,
        })
    return table


def print_table(table: Sequence[dict[str, Any]]) -> None:
    head = (f"{'record':<13}{'lang':<5}{'method':<10}{'rows':>6}{'ref cpu s':>10}{'cur cpu s':>10}{'ratio':>7}"
            f"{'wall ratio':>11}{'spearman':>10}{'sets':>6}{'floor s':>8}{'GFLOP/s now (prep/body/head)':>32}"
            f"{'mm GFLOP/s':>11}")
    print(head)
    print("-" * len(head))
    for r in table:
        g = r["gflops_achieved_cpu"]
        print(f"{r['example_id']:<13}{r['language']:<5}{r['method']:<10}{r['rows']:>6}{r['reference_cpu_s']:>10.1f}"
              f"{r['current_cpu_s']:>10.1f}{r['ratio_cpu']:>7.2f}{r['ratio_wall']:>11.2f}{r['spearman_min']:>10.6f}"
              f"{'same' if r['neuron_sets_equal'] else 'DIFF':>6}{r['floor_cpu_s_at_matmul_rate']:>8.1f}"
              f"{g['total']:>8.1f} ({g['prepare']:.0f}/{g['body']:.0f}/{g['head']:.0f})".ljust(32)
              + f"{r['matmul_gflops_cpu']:>11.1f}")


def main(argv: Sequence[str] | None = None) -> None:
    from benchmarks.common import add_worker_args

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1)
    ap.add_argument("--languages", default="en,zh")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads in both workers")
    ap.add_argument("--model", default="default")
    ap.add_argument("--repeats", type=int, default=1, help="reference/current worker pairs (median is reported)")
    add_worker_args(ap)
    ap.add_argument("--scores-dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.worker:
        worker(args)
        return

    from benchmarks.common import RESULTS, environment, write_json
    from benchmarks.reference import interleave, provenance

    common = ["--records", str(args.records), "--languages", args.languages, "--steps", str(args.steps),
              "--threshold", str(args.threshold), "--threads", str(args.threads), "--model", args.model]
    with tempfile.TemporaryDirectory() as tmp:  # each worker saves its scores under its own name, given in its JSON
        runs = interleave(__file__, [*common, "--scores-dir", tmp], repeats=args.repeats)
        scores = {side: torch.load(runs[side][0].pop("scores_path")) for side in runs}
        for side in runs:
            for r in runs[side][1:]:
                r.pop("scores_path")
    table = compare(runs, scores, args.threshold)
    print_table(table)
    result = {"benchmark": "attribution_speed", "steps": args.steps, "threshold": args.threshold,
              "margin": MARGIN, "records": args.records, "languages": args.languages.split(","),
              "threads": args.threads, "repeats": args.repeats, "provenance": provenance(), "rows": table,
              "runs": runs, "environment": environment("cpu")}
    out = write_json(args.out or RESULTS / "attribution_speed_cpu.json", result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
