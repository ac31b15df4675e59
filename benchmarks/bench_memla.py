"""MEMLA edits per second: one at a time and trained in parallel batches; optionally through the real runner.

``--mode editor`` (default with ``--init random``) times the editor alone: ``edit`` + ``revert`` one fact at a
time, and ``edit_parallel`` with 32 / 64 independent facts per batch (each then applied and reverted on its own,
the paper's protocol), giving edits per second. With random weights the work is fixed (``benchmarks/common.py``:
every fact trains MEMLA's 60 steps, fixed-size masks); with the pretrained model the masks come from attribution
(cached under ``.cache/memla``, timed separately as ``masks_s``) and early stopping applies.

``--mode runner`` (default for the pretrained model) runs ``run_experiment`` (edit -> evaluate in every
evaluation language -> revert) on the first MKEB records and reads the per-edit rows it writes (``seconds`` =
the edit, ``eval_seconds`` = its evaluation in every language, ``steps``); it needs the full environment (pandas).

Usage (from the repository root):
    python -m benchmarks.bench_memla                                         # default model, CPU, runner mode
    python -m benchmarks.bench_memla --device cuda --dtype bfloat16 --records 64 --parallel 64
    python -m benchmarks.bench_memla --init random --shape gemma3-270m --device cuda --dtype bfloat16
    python -m benchmarks.bench_memla --model tiny-llama --records 2          # smoke test in seconds
-> prints a table, writes benchmarks/results/memla_<device>[_random-<shape>].json (or --out)
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.common import (
    Budget,
    add_model_args,
    bench_records,
    default_out,
    environment,
    fixed_masks,
    fixed_step_overrides,
    fixed_work,
    load_lm,
    setup_logging,
    sync,
    write_json,
)

log = logging.getLogger("bench_memla")

#: target of the GPU run (issue 18): edits per second with parallel edits, 270M shape, bfloat16
TARGET_EDITS_PER_S = 10.0


def masks_provider(lm, language: str, *, fixed: bool, seed: int = 0) -> Callable[[Any], Any]:
    """record -> RecordMasks: fixed-size random masks (random weights) or attribution's (cached)."""
    if fixed:
        return lambda rec: fixed_masks(lm, rec, language, seed=seed)
    from memla_utils.cache import ArtifactCache
    from memla_utils.masks import MaskConfig, compute_record_masks

    cache = ArtifactCache()
    return lambda rec: compute_record_masks(lm, rec, language, MaskConfig(), cache)


def run_editor(lm, records: Sequence[Any], language: str, *, single: int = 4, parallel: Sequence[int] = (32, 64),
               fixed: bool = True, seed: int = 0, budget: Budget | None = None,
               method: str = "memla", steps: int | None = None) -> dict[str, Any]:
    """Edits per second of ``method`` one at a time (``single`` edits) and in parallel batches of each size."""
    from memla_utils.editors import make_editor

    budget = budget or Budget()
    editor = make_editor(method, **(fixed_step_overrides(steps=steps)[method] if fixed else {}))
    get_masks = masks_provider(lm, language, fixed=fixed, seed=seed)
    start = time.perf_counter()
    masks = {r.example_id: get_masks(r) for r in records}
    masks_s = time.perf_counter() - start

    def one(rec) -> dict[str, float]:
        sync(lm.device)
        t = time.perf_counter()
        edit = editor.edit(lm, rec, language, masks=masks[rec.example_id])
        edit.revert()
        sync(lm.device)
        return {"seconds": time.perf_counter() - t, "steps": float(edit.info.get("steps", 0))}

    one(records[0])  # warm-up: kernels, allocator
    singles: list[dict[str, float]] = []
    for rec in records[1: 1 + single]:
        if singles and not budget.allows(max(s["seconds"] for s in singles), "single edit"):
            break
        singles.append(one(rec))
    out: dict[str, Any] = {"method": method, "language": language, "masks_s": round(masks_s, 3)}
    if singles:
        s_per_edit = statistics.mean(s["seconds"] for s in singles)
        out["single"] = {"edits": len(singles), "s_per_edit": round(s_per_edit, 4),
                         "edits_per_s": round(1 / s_per_edit, 3),
                         "steps_mean": statistics.mean(s["steps"] for s in singles),
                         "s_per_step": round(sum(s["seconds"] for s in singles) /
                                             max(1.0, sum(s["steps"] for s in singles)), 5)}
    out["parallel"] = []
    estimate = None
    for size in parallel:
        batch = list(records[:size])
        if len(batch) < size:
            log.warning("parallel %d: only %d records", size, len(batch))
        if estimate is not None and not budget.allows(estimate * len(batch), f"parallel batch of {len(batch)}"):
            continue
        if estimate is None and singles and not budget.allows(2 * out["single"]["s_per_edit"],
                                                              f"parallel batch of {len(batch)}"):
            continue
        sync(lm.device)
        t = time.perf_counter()
        pending = editor.edit_parallel(lm, batch, language, masks=[masks[r.example_id] for r in batch])
        sync(lm.device)
        train_s = time.perf_counter() - t
        errors = [str(p) for p in pending if isinstance(p, Exception)]
        steps = []
        for p in pending:
            if not isinstance(p, Exception):
                edit = p.apply(lm)
                edit.revert()
                steps.append(float(p.info.get("steps", 0)))
        sync(lm.device)
        total = time.perf_counter() - t
        estimate = total / len(batch)
        out["parallel"].append({"batch": len(batch), "train_s": round(train_s, 4), "total_s": round(total, 4),
                                "s_per_edit": round(total / len(batch), 5), "edits_per_s": round(len(batch) / total, 3),
                                "steps_mean": statistics.mean(steps) if steps else None, "errors": errors[:3]})
        log.info("parallel %d: %.2f s, %.1f edits/s", len(batch), total, len(batch) / total)
    best = max([p["edits_per_s"] for p in out["parallel"]] + [out.get("single", {}).get("edits_per_s", 0.0)])
    out["best_edits_per_s"] = best
    out["targets"] = {"edits_per_s_min": TARGET_EDITS_PER_S, "applies_to": "gemma3-270m shape, bfloat16, GPU, "
                      "parallel edits", "met": bool(out["parallel"]) and max(
                          p["edits_per_s"] for p in out["parallel"]) >= TARGET_EDITS_PER_S}
    out["budget"] = budget.summary()
    return {"benchmark": "memla", "mode": "editor", **out}


def run_runner(lm, records: Sequence[Any], methods: Sequence[str], edit_langs: Sequence[str],
               eval_langs: Sequence[str], parallel: int = 1) -> dict[str, Any]:
    """The real runner on ``records``: per-edit seconds, evaluation seconds, steps (needs pandas)."""
    from memla_utils.cache import ArtifactCache
    from memla_utils.masks import MaskConfig, compute_record_masks
    from memla_utils.runner import RunnerConfig, load_results, run_experiment

    cache = ArtifactCache()
    start = time.perf_counter()
    masks = {(r.example_id, l): compute_record_masks(lm, r, l, MaskConfig(), cache) for r in records
             for l in edit_langs}
    masks_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run_experiment(lm, records, methods, edit_langs, eval_langs, tmp,
                       masks=lambda r, l: masks[(r.example_id, l)],
                       config=RunnerConfig(cache_preedit=False, parallel_edits=parallel), cache=cache)
        total_s = time.perf_counter() - start
        df = load_results(tmp)
    edits = df[df["kind"] == "edit"].pivot_table(index=["record", "edit_lang", "method"], columns="metric",
                                                 values="value")
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
    return {"benchmark": "memla", "mode": "runner", "records": len(records), "parallel_edits": parallel,
            "edit_languages": list(edit_langs), "eval_languages": list(eval_langs), "n_edits": len(edits),
            "errors": int((df["kind"] == "error").sum()), "masks_s": masks_s, "preedit_s": preedit_s,
            "total_s": total_s, "methods": per_method, "target_cpu_s_per_edit": 15.0}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--mode", choices=("editor", "runner"), default=None,
                   help="editor: edits/s of the editor alone; runner: run_experiment with evaluation "
                        "(default: editor for --init random, runner otherwise)")
    p.add_argument("--records", type=int, default=3, help="runner mode: records; editor mode: single edits")
    p.add_argument("--methods", default="memla", help="comma-separated registry names (runner mode)")
    p.add_argument("--edit-languages", default="en,zh")
    p.add_argument("--eval-languages", default="en,zh,fr,es")
    p.add_argument("--mkeb", default=None, help="MKEB file (default: data/mkeb/mkeb.jsonl)")
    p.add_argument("--parallel", default="1",
                   help="runner mode: RunnerConfig.parallel_edits; editor mode: comma-separated batch sizes "
                        "(e.g. 32,64)")
    p.add_argument("--max-seconds", type=float, default=None, help="editor mode: time budget")
    p.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/memla_<device>...json)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    from memla_utils.shapes import shape_summary

    setup_logging()
    args = parse_args(argv)
    mode = args.mode or ("editor" if args.init == "random" else "runner")
    lm = load_lm(args)
    edit_langs, eval_langs = args.edit_languages.split(","), args.eval_languages.split(",")
    path = {"path": args.mkeb} if args.mkeb else {}
    sizes = [int(s) for s in str(args.parallel).split(",") if s.strip()]
    if mode == "editor":
        sizes = [s for s in sizes if s > 1]
        records = bench_records(max([args.records + 1, *sizes]), edit_langs[:1], **path)
        result = run_editor(lm, records, edit_langs[0], single=args.records, parallel=sizes,
                            fixed=lm.info.get("init") == "random", seed=args.seed, budget=Budget(args.max_seconds))
        print(f"\nMEMLA editor on {lm.name} ({lm.device}, {lm.dtype}): single {result.get('single')}")
        for p in result["parallel"]:
            print(f"  parallel {p['batch']:>3}: {p['edits_per_s']:.2f} edits/s ({p['total_s']:.2f} s)")
    else:
        records = bench_records(args.records, list(dict.fromkeys(edit_langs + eval_langs)), **path)
        result = run_runner(lm, records, args.methods.split(","), edit_langs, eval_langs, parallel=max(sizes))
        print(f"\nMEMLA on {lm.name} ({lm.device}, {lm.dtype}, {torch.get_num_threads()} threads): "
              f"{result['n_edits']} edits, {result['errors']} errors; masks {result['masks_s']:.1f} s, pre-edit "
              f"evaluation {result['preedit_s']:.1f} s")
        print(f"{'method':<16}{'edits':>6}{'edit s (median)':>17}{'eval s':>9}{'steps':>7}{'edits/s incl. eval':>20}")
        for m, r in result["methods"].items():
            print(f"{m:<16}{r['edits']:>6}{r['edit_s_median']:>17.2f}{r['eval_s_mean']:>9.2f}"
                  f"{(r['steps_mean'] or 0):>7.1f}{r['edits_per_s_with_eval']:>20.3f}")
    result.update(environment=environment(lm.device), model=shape_summary(lm), fixed_work=fixed_work(lm),
                  cpu_count=os.cpu_count())
    suffix = f"_parallel{max(sizes)}" if mode == "runner" and max(sizes) > 1 else ""
    out = write_json(args.out or default_out("memla", lm, suffix), result)
    print(f"-> {out}")


if __name__ == "__main__":
    main()
