"""Why the notebooks' units run in one-thread processes: one process on all threads vs one on one thread vs
several one-thread processes side by side, in one benchmark run (issue 15).

Each configuration runs worker processes (``--worker``) of this script at the same time and reads what each one
measured on the same work: a MEMLA edit of the first ``--records`` MKEB records trained for exactly ``--steps``
steps (early stopping off, :func:`benchmarks.common.fixed_step_overrides`; masks with a fixed number of random
neurons per layer, :func:`benchmarks.common.fixed_masks`), then the unedited evaluation of each record in the
small preset's languages (``PreEditCache.get_many``, no cache). Configurations (default, for a 2-core machine):

- ``1x2``: one process, 2 torch threads (the ``local`` executor on this machine);
- ``1x1``: one process, 1 thread;
- ``2x1``: two 1-thread processes at once (the ``processes`` executor).

Throughput = processes / seconds per unit of work: the ratio ``2x1`` / ``1x2`` is what the executor gains.

``--work attribution`` times attribution instead (what :mod:`memla_utils.attribution_parallel` runs in one-thread
processes): each English prompt of the first ``--records`` records (edit prompt + paraphrases) alone in its
``attribute_batch`` call with ``--steps`` IG steps, seconds per (record, language).

Usage: ``python -m benchmarks.bench_unit_threads [--records 2 --steps 10 --threads-max 2]``
-> prints a table and writes benchmarks/results/unit_threads_cpu.json
(``--work attribution --records 2 --steps 2`` -> benchmarks/results/unit_threads_attribution_cpu.json)
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, "") and "--worker" not in sys.argv:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    PROJECT_ROOT,
    add_worker_args,
    bench_records,
    environment,
    fixed_masks,
    fixed_step_overrides,
    result_path,
    run_as_worker,
    setup_logging,
    write_json,
)

log = logging.getLogger("bench_unit_threads")
LANGUAGES = "en,zh,fr,es"


def attribution_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per (record, en) attribution on ``args.threads`` threads (each prompt alone in its batch)."""
    import torch

    from memla_utils.attribution import AttributionConfig, attribute_batch, record_items
    from memla_utils.models import load_model

    torch.set_num_threads(args.threads)
    lm = load_model("default", device="cpu", dtype="float32")
    config = AttributionConfig(steps=args.steps)
    records = bench_records(args.records, ["en"])
    attribute_batch(lm, record_items(records[0], "en", config)[:1], config)  # warm-up
    seconds = []
    for rec in records:
        start = time.perf_counter()
        for item in record_items(rec, "en", config):
            attribute_batch(lm, [item], config)
        seconds.append(time.perf_counter() - start)
    return {"threads": args.threads, "attribution_seconds": seconds}


def worker(args: argparse.Namespace) -> dict[str, Any]:
    if args.work == "attribution":
        return attribution_worker(args)
    import torch

    from memla_utils.editors import make_editor
    from memla_utils.evaluate import PreEditCache
    from memla_utils.models import load_model
    from memla_utils.runner import RunnerConfig

    torch.set_num_threads(args.threads)
    lm = load_model("default", device="cpu", dtype="float32")
    langs = args.languages.split(",")
    records = bench_records(args.records, langs)
    editor = make_editor("memla", seed=0, **fixed_step_overrides(steps=args.steps)["memla"])
    eval_config = RunnerConfig().eval_config
    masks = [fixed_masks(lm, r, "en") for r in records]
    editor.edit(lm, records[0], "en", masks=masks[0]).revert()  # warm-up
    step_s, eval_s = [], []
    for rec, m in zip(records, masks, strict=True):
        start = time.perf_counter()
        edit = editor.edit(lm, rec, "en", masks=m)
        step_s.append((time.perf_counter() - start) / max(1, int(edit.info["steps"])))
        edit.revert()
        start = time.perf_counter()
        PreEditCache(None).get_many(lm, rec, langs, eval_config)
        eval_s.append(time.perf_counter() - start)
    return {"threads": args.threads, "seconds_per_step": step_s, "eval_seconds": eval_s}


def run_config(processes: int, threads: int, passed: Sequence[str]) -> list[dict[str, Any]]:
    """``processes`` workers of ``threads`` threads started together; their measurements."""
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for k in range(processes):
            out = Path(tmp) / f"w{k}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--threads", str(threads),
                   "--worker-out", str(out), *passed]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
            procs.append((subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True), out))
        results = []
        for p, out in procs:
            text, _ = p.communicate()
            if p.returncode != 0 or not out.exists():
                raise RuntimeError(f"worker failed ({processes}x{threads}):\n" + "\n".join(text.splitlines()[-20:]))
            results.append(json.loads(out.read_text()))
        return results


def summarize_attribution(configs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per configuration: mean seconds per (record, language) and attributions per minute (all processes)."""
    out: dict[str, Any] = {}
    for name, workers in configs.items():
        sec = statistics.mean(s for w in workers for s in w["attribution_seconds"])
        out[name] = {"processes": len(workers), "threads": workers[0]["threads"], "seconds": round(sec, 2),
                     "per_minute": round(60 * len(workers) / sec, 3)}
    return out


def summarize(configs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, workers in configs.items():
        step = statistics.mean(s for w in workers for s in w["seconds_per_step"])
        ev = statistics.mean(s for w in workers for s in w["eval_seconds"])
        out[name] = {"processes": len(workers), "threads": workers[0]["threads"],
                     "seconds_per_step": round(step, 4), "eval_seconds": round(ev, 3),
                     "steps_per_second": round(len(workers) / step, 3), "evals_per_minute": round(60 * len(workers) / ev, 2)}
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--languages", default=LANGUAGES)
    ap.add_argument("--threads-max", type=int, default=2, help="threads of the one-process configuration; also "
                                                                "the number of 1-thread processes run side by side")
    ap.add_argument("--work", choices=("memla", "attribution"), default="memla",
                    help="what each process times: a MEMLA edit + evaluation, or attribution")
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    add_worker_args(ap)
    args = ap.parse_args(argv)
    setup_logging()
    if run_as_worker(args, worker):
        return
    passed = ["--records", str(args.records), "--steps", str(args.steps), "--languages", args.languages,
              "--work", args.work]
    n = args.threads_max
    start = time.perf_counter()
    configs = {f"1x{n}": run_config(1, n, passed), "1x1": run_config(1, 1, passed), f"{n}x1": run_config(n, 1, passed)}
    if args.work == "attribution":
        table = summarize_attribution(configs)
        for row in table.values():
            row["throughput_vs_one_process"] = round(row["per_minute"] / table[f"1x{n}"]["per_minute"], 3)
        result = {"benchmark": "unit_threads_attribution", "records": args.records, "steps": args.steps,
                  "configurations": table, "wall_s": round(time.perf_counter() - start, 1),
                  "command": "python -m benchmarks.bench_unit_threads " + " ".join(sys.argv[1:]),
                  "environment": environment("cpu")}
        print(f"{'processes x threads':22}{'s per record-language':>23}{'per minute':>12}{'vs 1x' + str(n):>10}")
        for name, row in table.items():
            print(f"{name:22}{row['seconds']:>23.2f}{row['per_minute']:>12.3f}{row['throughput_vs_one_process']:>9.2f}x")
        print(f"-> {write_json(result_path(args, 'unit_threads_attribution'), result)}")
        return
    table = summarize(configs)
    base = table[f"1x{n}"]
    for row in table.values():
        row["throughput_vs_one_process"] = {"steps": round(row["steps_per_second"] / base["steps_per_second"], 3),
                                            "evals": round(row["evals_per_minute"] / base["evals_per_minute"], 3)}
    result = {"benchmark": "unit_threads", "records": args.records, "steps": args.steps,
              "languages": args.languages.split(","), "configurations": table,
              "command": "python -m benchmarks.bench_unit_threads " + " ".join(sys.argv[1:]),
              "wall_s": round(time.perf_counter() - start, 1), "environment": environment("cpu")}
    print(f"{'processes x threads':22}{'s/step':>9}{'eval s':>9}{'steps/s':>9}{'evals/min':>11}{'vs 1x' + str(n):>10}")
    for name, row in table.items():
        print(f"{name:22}{row['seconds_per_step']:>9.3f}{row['eval_seconds']:>9.2f}{row['steps_per_second']:>9.2f}"
              f"{row['evals_per_minute']:>11.2f}{row['throughput_vs_one_process']['steps']:>9.2f}x")
    print(f"-> {write_json(result_path(args, 'unit_threads'), result)}")


if __name__ == "__main__":
    main()
