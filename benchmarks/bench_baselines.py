"""Seconds per edit and peak memory of every baseline (FT, FT-L, LoRA, ROME, MEMIT, PMET, MEND, IKE).

Same model, records and budget for every method; each edit is reverted before the next. Timing covers
``editor.edit`` only; the one-off preparation is done first and reported separately as ``prepare_s``: MEND's
training, the covariance statistics and context templates of ROME/MEMIT/PMET (computed directly, not through a
whole edit), a warm-up edit for the others.
Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the model's own allocation; on CPU the highest
resident set size seen by a 5 ms sampler during the edits, minus the RSS just before them.

With ``--init random`` the work is fixed (``benchmarks/common.py``): no early stopping (each method's default
maximum steps), and ROME/MEMIT/PMET's second moments come from ``--cov-texts`` texts of ``--cov-length`` random
token ids (a one-off cost, in ``prepare_s``); ``--budget`` is then ignored.

Usage (from the repository root):
    python -m benchmarks.bench_baselines                                    # default model, CPU, cpu-small budget
    python -m benchmarks.bench_baselines --device cuda --budget paper --edits 5
    python -m benchmarks.bench_baselines --init random --shape llama3-8b --device cuda --dtype bfloat16 \
        --methods ft,lora,rome,memit
    python -m benchmarks.bench_baselines --model tiny-llama --edits 2      # smoke test in seconds
-> prints a table, writes benchmarks/results/baselines_<device>[_random-<shape>].json (or --out)
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
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
    fixed_step_overrides,
    fixed_work,
    free_memory,
    load_lm,
    random_token_corpus,
    setup_logging,
    write_json,
)

log = logging.getLogger("bench_baselines")
NEEDS_TRAINING = ("mend", "ike")


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


def random_covariance(lm, folder: str | Path, *, n_texts: int = 16, length: int = 64, seed: int = 0):
    """ROME/MEMIT statistics' config over ``n_texts`` texts of ``length`` random token ids (fixed work)."""
    from memla_utils.covariance import CorpusConfig, CovarianceConfig

    path = random_token_corpus(lm.tokenizer, Path(folder) / f"random-corpus-{n_texts}x{length}-seed{seed}.txt",
                               n_texts=n_texts, length=length, seed=seed)
    return CovarianceConfig(corpus=CorpusConfig(source=str(path)), n_samples=n_texts, max_length=length)


def time_method(lm, method: str, overrides: dict[str, Any], edit_records: Sequence[Any], language: str, *,
                train: Sequence[Any] = (), budget: Budget | None = None) -> dict[str, Any]:
    """One warm-up edit (``prepare_s``), then timed edits of ``edit_records[1:]`` while the budget allows."""
    from memla_utils.editors import make_editor

    budget = budget or Budget()
    editor = make_editor(method, **overrides)
    t = time.perf_counter()
    if train:
        editor.fit(lm, list(train))
    if hasattr(editor, "layers_for") and hasattr(editor.config, "covariance"):
        # ROME/MEMIT/PMET: the one-off parts of an edit, without paying a whole edit twice (on large shapes an
        # edit's float64 solves take many seconds)
        from memla_utils.covariance import second_moments
        from memla_utils.editors.locate import context_prefixes

        cfg = editor.config
        context_prefixes(lm, cfg.n_context, cfg.context_tokens, cfg.seed)
        second_moments(lm, editor.layers_for(lm), cfg.covariance)
    else:
        warm = editor.edit(lm, edit_records[0], language)  # kernels, caches
        warm.revert()
    prepare = time.perf_counter() - t
    seconds, peaks, steps = [], [], []
    for rec in edit_records[1:]:
        if not seconds and budget.remaining() <= 0:
            budget.allows(float("inf"), f"{method} edits (preparation used the whole share)")
            break
        if seconds and not budget.allows(max(seconds), f"{method} edit"):
            break
        with PeakSampler(lm.device) as mem:
            if lm.device.type == "cuda":
                torch.cuda.synchronize(lm.device)
            t = time.perf_counter()
            edit = editor.edit(lm, rec, language)
            if lm.device.type == "cuda":
                torch.cuda.synchronize(lm.device)
            seconds.append(time.perf_counter() - t)
        peaks.append(mem.extra_mb)
        steps.append(float(edit.info.get("steps", 0)))
        edit.revert()
    out: dict[str, Any] = {"prepare_s": round(prepare, 3), "edits": len(seconds), "seconds": seconds,
                           "fit_seconds": getattr(editor, "fit_info", {}).get("fit_seconds")}
    if seconds:
        out.update(seconds_per_edit=statistics.mean(seconds), peak_extra_mb=max(peaks),
                   steps_mean=statistics.mean(steps), s_per_step=sum(seconds) / max(1.0, sum(steps)))
    return out


def run(lm, records: Sequence[Any], methods: Sequence[str], language: str, *, edits: int = 2,
        overrides: dict[str, dict[str, Any]] | None = None, train: Sequence[Any] = (),
        budget: Budget | None = None) -> dict[str, Any]:
    """Every method in turn on ``records[:edits + 1]``; a method that fails is recorded with its error."""
    budget = budget or Budget()
    overrides = overrides or {}
    out: dict[str, Any] = {}
    for i, method in enumerate(methods):
        share = Budget(None if budget.seconds is None else max(0.0, budget.remaining() / (len(methods) - i)))
        if budget.seconds is not None and budget.remaining() <= 0:
            budget.allows(1.0, f"{method} (no time left)")
            out[method] = {"skipped": "no time left in the budget"}
            continue
        try:
            out[method] = time_method(lm, method, overrides.get(method, {}), records[: edits + 1], language,
                                      train=train if method in NEEDS_TRAINING else (), budget=share)
            out[method]["budget"] = share.summary()
        except Exception as err:  # noqa: BLE001 - one method failing must not lose the others' numbers
            log.exception("%s failed", method)
            out[method] = {"error": f"{type(err).__name__}: {err}"[:500]}
        free_memory()
        r = out[method]
        if "seconds_per_edit" in r:
            log.info("%-6s %.3f s/edit, peak +%.0f MB, prepare %.1f s", method, r["seconds_per_edit"],
                     r["peak_extra_mb"], r["prepare_s"])
    return {"benchmark": "baselines", "edit_language": language, "edits_per_method": edits, "methods": out,
            "budget": budget.summary()}


def main(argv: Sequence[str] | None = None) -> None:
    from memla_utils.shapes import shape_summary

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap)
    ap.add_argument("--methods", default="ft,ft-l,lora,rome,memit,pmet,mend,ike")
    ap.add_argument("--edits", type=int, default=2, help="timed edits per method (after one warm-up edit)")
    ap.add_argument("--train", type=int, default=8, help="training records for MEND/IKE (after the edited ones)")
    ap.add_argument("--budget", default="cpu-small", help="hyperparameter budget: paper | cpu-small (pretrained)")
    ap.add_argument("--languages", default="en,zh,fr,es")
    ap.add_argument("--edit-language", default="en")
    ap.add_argument("--mkeb", default=None, help="MKEB file (default: data/mkeb/mkeb.jsonl)")
    ap.add_argument("--cov-texts", type=int, default=16, help="--init random: texts of the ROME/MEMIT statistics")
    ap.add_argument("--cov-length", type=int, default=64, help="--init random: tokens per statistics text")
    ap.add_argument("--max-seconds", type=float, default=None, help="time budget (edits start only while they fit)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    setup_logging()
    torch.manual_seed(args.seed)
    languages = args.languages.split(",")
    methods = args.methods.split(",")
    lm = load_lm(args)
    records = bench_records(args.edits + 1 + args.train, languages, **({"path": args.mkeb} if args.mkeb else {}))
    edit_records, train = records[: args.edits + 1], records[args.edits + 1:]
    with tempfile.TemporaryDirectory() as tmp:
        if lm.info.get("init") == "random":
            os.environ["MEMLA_CACHE"] = str(Path(tmp) / "cache")  # a random model's statistics are not worth keeping
            overrides = fixed_step_overrides(random_covariance(lm, tmp, n_texts=args.cov_texts,
                                                               length=args.cov_length, seed=args.seed))
            budget_name = "fixed steps (random weights)"
        else:
            from memla_utils.baselines import baseline_overrides

            overrides, budget_name = baseline_overrides(args.budget, languages), args.budget
        result = run(lm, edit_records, methods, args.edit_language, edits=args.edits, overrides=overrides,
                     train=train, budget=Budget(args.max_seconds))
    result.update(hyperparameter_budget=budget_name, environment=environment(lm.device), model=shape_summary(lm),
                  fixed_work=fixed_work(lm, cov_length=args.cov_length), fingerprint=lm.fingerprint)
    path = write_json(args.out or default_out("baselines", lm), result)
    print(f"{'method':8} {'s/edit':>8} {'peak MB':>8} {'prepare s':>10}")
    for m, r in result["methods"].items():
        if "seconds_per_edit" in r:
            print(f"{m:8} {r['seconds_per_edit']:8.3f} {r['peak_extra_mb']:8.0f} {r['prepare_s']:10.1f}")
        else:
            print(f"{m:8} {r.get('error') or r.get('skipped')}")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
