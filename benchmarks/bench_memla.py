"""Seconds per MEMLA edit and edits per second including evaluation, through the real runner.

Runs ``run_experiment`` (edit -> evaluate in every evaluation language -> revert) on the first records of
MKEB in a temporary run folder and reads the per-edit rows it writes (``seconds`` = the edit, ``eval_seconds``
= the evaluation of that edit in every language, ``steps``). Masks come from attribution (cached under
``.cache/memla``; computing them is timed separately as ``masks_s`` so the edit timing is the editor alone).
Pre-edit (unedited) evaluations are computed once per record and language and reported as ``preedit_s``.

Usage:
    .venv/bin/python benchmarks/bench_memla.py                         # default model, CPU, 3 records x en,zh
    .venv/bin/python benchmarks/bench_memla.py --device cuda --dtype bfloat16 --records 20
    .venv/bin/python benchmarks/bench_memla.py --device cuda --dtype bfloat16 --records 64 --parallel 64
    .venv/bin/python benchmarks/bench_memla.py --model tiny-llama --records 2   # smoke test in seconds
-> prints a table, writes benchmarks/results/memla_<device>.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
log = logging.getLogger("bench_memla")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="'default', an HF id / path, or tiny-<arch> (random, smoke)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--records", type=int, default=3)
    p.add_argument("--methods", default="memla", help="comma-separated registry names")
    p.add_argument("--edit-languages", default="en,zh")
    p.add_argument("--eval-languages", default="en,zh,fr,es")
    p.add_argument("--mkeb", default="data/mkeb/mkeb.jsonl")
    p.add_argument("--parallel", type=int, default=1,
                   help="train this many independent facts per batch (per-fact adapters; RunnerConfig.parallel_edits)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/memla_<device>.json)")
    return p.parse_args()


def load(args: argparse.Namespace):
    from memla_utils.models import load_model
    from memla_utils.testing import tiny_model

    if args.model.startswith("tiny-"):
        return tiny_model(args.model.removeprefix("tiny-"))
    return load_model(args.model, device=args.device, dtype=args.dtype)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from memla_utils.cache import ArtifactCache
    from memla_utils.masks import MaskConfig, compute_record_masks
    from memla_utils.mkeb import load_records
    from memla_utils.runner import RunnerConfig, load_results, run_experiment

    edit_langs, eval_langs = args.edit_languages.split(","), args.eval_languages.split(",")
    methods = args.methods.split(",")
    lm = load(args)
    records = load_records(args.mkeb, languages=list(dict.fromkeys(edit_langs + eval_langs)), n=args.records)
    cache = ArtifactCache()
    start = time.perf_counter()
    masks = {(r.example_id, l): compute_record_masks(lm, r, l, MaskConfig(), cache) for r in records
             for l in edit_langs}
    masks_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run_experiment(lm, records, methods, edit_langs, eval_langs, tmp,
                       masks=lambda r, l: masks[(r.example_id, l)], config=RunnerConfig(cache_preedit=False, parallel_edits=args.parallel),
                       cache=cache)
        total_s = time.perf_counter() - start
        df = load_results(tmp)
    edits = df[df["kind"] == "edit"].pivot_table(index=["record", "edit_lang", "method"], columns="metric",
                                                 values="value")
    errors = int((df["kind"] == "error").sum())
    n_edits = len(edits)
    per_method = {}
    for method, g in edits.groupby(level="method"):
        per_method[method] = {
            "edits": len(g), "edit_s_median": float(g["seconds"].median()), "edit_s_mean": float(g["seconds"].mean()),
            "eval_s_mean": float(g["eval_seconds"].mean()),
            "steps_mean": float(g["steps"].mean()) if "steps" in g else None,
            "edits_per_s_with_eval": float(len(g) / (g["seconds"] + g["eval_seconds"]).sum()),
            "edits_per_s_edit_only": float(len(g) / g["seconds"].sum()),
        }
    preedit_s = max(0.0, total_s - float((edits["seconds"] + edits["eval_seconds"]).sum()))
    device = torch.cuda.get_device_name(0) if lm.device.type == "cuda" else cpu_name()
    result = {
        "benchmark": "memla", "model": lm.name, "device": str(lm.device), "device_name": device,
        "dtype": str(lm.dtype), "threads": torch.get_num_threads(), "records": len(records),
        "parallel_edits": args.parallel,
        "edit_languages": edit_langs, "eval_languages": eval_langs, "n_edits": n_edits, "errors": errors,
        "masks_s": masks_s, "preedit_s": preedit_s, "total_s": total_s, "methods": per_method,
        "target_cpu_s_per_edit": 15.0, "torch": torch.__version__, "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],  # the machine may be shared: read timings with it
    }
    print(f"\nMEMLA on {lm.name} ({lm.device}, {lm.dtype}, {torch.get_num_threads()} threads): {n_edits} edits, "
          f"{errors} errors; masks {masks_s:.1f} s, pre-edit evaluation {preedit_s:.1f} s")
    print(f"{'method':<16}{'edits':>6}{'edit s (median)':>17}{'eval s':>9}{'steps':>7}{'edits/s incl. eval':>20}")
    for m, r in per_method.items():
        print(f"{m:<16}{r['edits']:>6}{r['edit_s_median']:>17.2f}{r['eval_s_mean']:>9.2f}"
              f"{(r['steps_mean'] or 0):>7.1f}{r['edits_per_s_with_eval']:>20.3f}")
    suffix = f"_parallel{args.parallel}" if args.parallel > 1 else ""
    out = Path(args.out) if args.out else RESULTS / f"memla_{lm.device.type}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
