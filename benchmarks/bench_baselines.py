"""Seconds per edit and peak memory of every baseline (FT, FT-L, LoRA, ROME, MEMIT, PMET, MEND, IKE).

Same model, records and budget for every method; each edit is reverted before the next. Timing covers
``editor.edit`` only (the one-off preparation -- MEND's training, the covariance statistics and context
templates of ROME/MEMIT/PMET -- is done by a warm-up edit first and reported separately as ``prepare_s``).
Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the model's own allocation; on CPU the highest
resident set size seen by a 5 ms sampler during the edits, minus the RSS just before them.

Usage:
    .venv/bin/python benchmarks/bench_baselines.py                            # default model, CPU, cpu-small budget
    .venv/bin/python benchmarks/bench_baselines.py --device cuda --budget paper --edits 5
    .venv/bin/python benchmarks/bench_baselines.py --model tiny-llama --edits 2  # smoke test in seconds
-> prints a table, writes benchmarks/results/baselines_<device>.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import threading
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
log = logging.getLogger("bench_baselines")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakSampler:
    """Highest RSS (MB) seen while the block runs (CPU); CUDA uses the allocator's own peak."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak, self._stop = device, 0.0, threading.Event()

    def __enter__(self) -> PeakSampler:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self.base = rss_mb()
            self.peak = self.base
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, rss_mb())

    @property
    def extra_mb(self) -> float:
        return self.peak - self.base


def load(args):
    from memla_utils.models import load_model
    from memla_utils.testing import tiny_model

    if args.model.startswith("tiny-"):
        return tiny_model(args.model.removeprefix("tiny-"))
    return load_model(args.model, device=args.device, dtype=args.dtype)


def main() -> None:
    from memla_utils.baselines import BASELINES, baseline_overrides
    from memla_utils.editors import make_editor
    from memla_utils.mkeb.io import load_records

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--methods", default=",".join(BASELINES))
    ap.add_argument("--edits", type=int, default=2, help="timed edits per method (after one warm-up edit)")
    ap.add_argument("--train", type=int, default=8, help="training records for MEND/IKE (after the edited ones)")
    ap.add_argument("--budget", default="cpu-small", help="paper | cpu-small")
    ap.add_argument("--languages", default="en,zh,fr,es")
    ap.add_argument("--edit-language", default="en")
    ap.add_argument("--mkeb", default="data/mkeb/mkeb.jsonl")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    languages = args.languages.split(",")
    lm = load(args)
    records = load_records(args.mkeb, languages, n=args.edits + 1 + args.train)
    edit_records, train = records[: args.edits + 1], records[args.edits + 1:]
    overrides = baseline_overrides(args.budget, languages)
    out: dict[str, dict] = {}
    for method in args.methods.split(","):
        editor = make_editor(method, **overrides.get(method, {}))
        t = time.perf_counter()
        editor.fit(lm, train)
        warm = editor.edit(lm, edit_records[0], args.edit_language)  # covariance, contexts, caches
        warm.revert()
        prepare = time.perf_counter() - t
        seconds, peaks = [], []
        for rec in edit_records[1:]:
            with PeakSampler(lm.device) as mem:
                if lm.device.type == "cuda":
                    torch.cuda.synchronize(lm.device)
                t = time.perf_counter()
                edit = editor.edit(lm, rec, args.edit_language)
                if lm.device.type == "cuda":
                    torch.cuda.synchronize(lm.device)
                seconds.append(time.perf_counter() - t)
            peaks.append(mem.extra_mb)
            edit.revert()
        out[method] = {"seconds_per_edit": statistics.mean(seconds), "seconds": seconds,
                       "peak_extra_mb": max(peaks), "prepare_s": prepare,
                       "fit_seconds": getattr(editor, "fit_info", {}).get("fit_seconds")}
        log.info("%-6s %.2f s/edit, peak +%.0f MB, prepare %.1f s", method, out[method]["seconds_per_edit"],
                 out[method]["peak_extra_mb"], prepare)
    device = lm.device.type
    payload = {"model": lm.name, "fingerprint": lm.fingerprint, "device": device,
               "device_name": torch.cuda.get_device_name(lm.device) if device == "cuda" else platform.processor(),
               "torch_threads": torch.get_num_threads(), "dtype": str(lm.dtype), "budget": args.budget,
               "edit_language": args.edit_language, "edits_per_method": args.edits, "torch": torch.__version__,
               "methods": out}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"baselines_{device}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"{'method':8} {'s/edit':>8} {'peak MB':>8} {'prepare s':>10}")
    for m, r in out.items():
        print(f"{m:8} {r['seconds_per_edit']:8.2f} {r['peak_extra_mb']:8.0f} {r['prepare_s']:10.1f}")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
