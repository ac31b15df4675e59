"""Load time of the embedded default model: first load (assemble + dequantize + cache) vs later loads.

Usage: .venv/bin/python benchmarks/bench_load.py  -> prints a table, writes benchmarks/results/load_<device>.json
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CHILD = ("import time, json; t=time.perf_counter(); from memla_utils.models import load_model; "
         "lm=load_model('default', device='cpu', dtype='float32'); "
         "print(json.dumps({'seconds': time.perf_counter()-t, 'fingerprint': lm.fingerprint}))")


def timed_load(cache: str) -> dict:
    """One load in a fresh process (so nothing is warm in memory), with the given cache folder."""
    env = {**os.environ, "MEMLA_CACHE": cache}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from memla_utils.environment import device_description

    with tempfile.TemporaryDirectory() as cache:
        first = timed_load(cache)
        later = [timed_load(cache) for _ in range(2)]
    assert all(r["fingerprint"] == first["fingerprint"] for r in later)
    result = {"device": device_description(), "first_load_s": round(first["seconds"], 1),
              "later_load_s": round(min(r["seconds"] for r in later), 1), "fingerprint": first["fingerprint"]}
    print(f"{'first load (assemble+dequantize+cache)':<42}{result['first_load_s']:>8.1f} s")
    print(f"{'later load (cached safetensors)':<42}{result['later_load_s']:>8.1f} s")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "load_cpu.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
