"""Load time of the model: the embedded default (first load vs later loads) or a random model of a shape.

``--init pretrained`` (default): the embedded default model in fresh processes, first load (assemble GGUF +
dequantize + cache) vs later loads (cached safetensors). ``--init random --shape NAME``: building the shape from
its config with seeded random weights directly on the device (what every random-weight benchmark pays first),
twice in this process.

Usage (from the repository root):
    python -m benchmarks.bench_load                       -> benchmarks/results/load_cpu.json
    python -m benchmarks.bench_load --init random --shape llama3-8b --device cuda --dtype bfloat16
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, add_model_args, environment, free_memory, setup_logging, write_json

CHILD = ("import time, json; t=time.perf_counter(); from memla_utils.models import load_model; "
         "lm=load_model('default', device='cpu', dtype='float32'); "
         "print(json.dumps({'seconds': time.perf_counter()-t, 'fingerprint': lm.fingerprint}))")


def timed_load(cache: str) -> dict:
    """One load in a fresh process (so nothing is warm in memory), with the given cache folder."""
    env = {**os.environ, "MEMLA_CACHE": cache}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_random(shape: str, device: str, dtype: str, seed: int = 0, repeats: int = 2) -> dict:
    """Seconds to build ``shape`` with random weights on ``device`` (``repeats`` times; same fingerprint)."""
    from memla_utils.shapes import build_random_model, shape_summary

    builds, summary, prints = [], None, set()
    for _ in range(repeats):
        lm = build_random_model(shape, device=device, dtype=dtype, seed=seed)
        builds.append(round(lm.load_seconds, 3))
        prints.add(lm.fingerprint)
        summary = shape_summary(lm)
        del lm
        free_memory()
    return {"benchmark": "load", "init": "random", "build_s": builds, "first_build_s": builds[0],
            "later_build_s": min(builds[1:]) if len(builds) > 1 else None, "model": summary,
            "same_weights_every_build": len(prints) == 1}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(ap)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    setup_logging()
    if args.init == "random":
        result = run_random(args.shape, args.device, args.dtype, args.seed)
        result["environment"] = environment(args.device)
        print(f"build {args.shape} with random weights: {result['build_s']} s")
        out = Path(args.out) if args.out else RESULTS / f"load_{result['model']['device'].split(':')[0]}" \
                                                        f"_random-{args.shape}.json"
        print(f"-> {write_json(out, result)}")
        return
    with tempfile.TemporaryDirectory() as cache:
        first = timed_load(cache)
        later = [timed_load(cache) for _ in range(2)]
    assert all(r["fingerprint"] == first["fingerprint"] for r in later)
    result = {"device": environment("cpu")["device"], "first_load_s": round(first["seconds"], 1),
              "later_load_s": round(min(r["seconds"] for r in later), 1), "fingerprint": first["fingerprint"]}
    print(f"{'first load (assemble+dequantize+cache)':<42}{result['first_load_s']:>8.1f} s")
    print(f"{'later load (cached safetensors)':<42}{result['later_load_s']:>8.1f} s")
    write_json(Path(args.out) if args.out else RESULTS / "load_cpu.json", result)


if __name__ == "__main__":
    main()
