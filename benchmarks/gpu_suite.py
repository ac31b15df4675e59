"""Every GPU figure in one command, on random weights of real shapes, within a time budget.

    python3 -m benchmarks.gpu_suite --out results/gpu                 # gemma3-270m and llama3-8b, bfloat16, GPU
    python3 -m benchmarks.gpu_suite --out /tmp/s --shape tiny         # the same on CPU in seconds (CI test)

For each shape (built from its config with seeded random weights: nothing is downloaded or read from outside the
repository) it runs, in this order: attribution (batched vs the knowledge-neurons loop), evaluation seconds per
(record, language), MEMLA edits one at a time and in parallel batches of 32 / 64, then FT, LoRA, ROME and MEMIT
seconds per edit. Editors run a fixed number of steps (no early stopping) and ROME/MEMIT's statistics come from
random token ids: see ``benchmarks/common.py``. Needs torch, transformers and peft only (no ``make setup``).

Time: the suite plans its own budget (``--budget-s``, default 420 s for an 8-minute slot). Each benchmark gets
a cap (its weight's share of the time left), starts items only while they fit, and its JSON is written as soon as
it finishes, so a stop leaves every finished benchmark's file. A watchdog ends the process at ``--hard-limit-s``
(writing ``suite.json`` first). ``suite.json`` holds the plan, each benchmark's status and seconds, the targets
and the full preset's projected time from the measured rates; it is rewritten after every benchmark.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

T0 = time.perf_counter()  # the budget counts from the start of the process (imports included)

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402 (after T0 and the path set-up)

from benchmarks.common import Budget, environment, free_memory, setup_logging, write_json  # noqa: E402

log = logging.getLogger("gpu_suite")

SUITE_VERSION = 1
DEFAULT_SHAPES = ("gemma3-270m", "llama3-8b")
#: the full preset (memla_utils.config.PRESETS["full"]): records, evaluation languages, methods
FULL_RECORDS, FULL_LANGUAGES = 1000, 12
FULL_METHODS: dict[str, tuple[str, str]] = {  # method -> (measured benchmark entry used, how)
    "memla": ("memla", "measured (parallel edits, largest batch)"),
    "memla-lse": ("memla", "stand-in: memla (one pair fewer per layer)"),
    "memla-lie": ("memla", "stand-in: memla (one pair fewer per layer)"),
    "memla-unmasked": ("memla", "stand-in: memla (same summed rank, no mask)"),
    "memla-random": ("memla", "stand-in: memla (same ranks)"),
    "ft": ("ft", "measured"), "ft-l": ("ft", "stand-in: ft (+ a clamp per step)"),
    "lora": ("lora", "measured"), "rome": ("rome", "measured"), "memit": ("memit", "measured"),
    "pmet": ("memit", "stand-in: memit (+ attention target)"),
    "mend": ("ft", "not measured; stand-in: ft (an upper bound; MEND's training not included)"),
    "ike": (None, "no weight update: edit 0 s, evaluation only (longer prompts not modelled)"),
}


@dataclass
class Profile:
    """How much work each benchmark of a shape asks for (items beyond the budget are left out)."""

    attribution_pairs: int
    loop_items: int
    eval_records: int
    eval_languages: tuple[str, ...]
    memla_single: int
    memla_parallel: tuple[int, ...]
    baseline_edits: int
    baseline_methods: tuple[str, ...] = ("ft", "lora", "rome", "memit")
    cov_texts: int = 16
    cov_length: int = 64
    steps: int | None = None        # None: every editor's default maximum (MEMLA 60, FT 25, LoRA 30, ROME 20, MEMIT 25)
    attribution_languages: tuple[str, ...] = ("en", "zh", "fr", "de", "es", "ru", "ja", "th")
    #: share of the time left that each benchmark may use (relative weights)
    weights: dict[str, float] = field(default_factory=lambda: {"attribution": 2, "eval": 1, "memla": 2,
                                                               "baselines": 3})


PROFILES: dict[str, Profile] = {
    "tiny": Profile(attribution_pairs=4, loop_items=1, eval_records=1, eval_languages=("en", "zh"),
                    memla_single=1, memla_parallel=(2, 4), baseline_edits=1, cov_texts=8, cov_length=16,
                    attribution_languages=("en", "zh"), steps=3),
    "gemma3-270m": Profile(attribution_pairs=64, loop_items=2, eval_records=4, eval_languages=("en", "zh", "ru", "th"),
                           memla_single=6, memla_parallel=(32, 64), baseline_edits=3,
                           weights={"attribution": 1, "eval": 0.5, "memla": 1, "baselines": 1.5}),
    "mgpt-1.3b": Profile(attribution_pairs=32, loop_items=1, eval_records=2, eval_languages=("en", "zh"),
                         memla_single=3, memla_parallel=(32, 64), baseline_edits=2),
    "llama3-8b": Profile(attribution_pairs=16, loop_items=1, eval_records=2, eval_languages=("en", "zh"),
                         memla_single=3, memla_parallel=(32, 64), baseline_edits=1,
                         weights={"attribution": 2, "memla": 2, "baselines": 4, "eval": 0.5}),
}
#: shape weight in the whole budget (the 8B shape takes most of it)
SHAPE_WEIGHTS = {"tiny": 1.0, "gemma3-270m": 1.0, "mgpt-1.3b": 1.5, "llama3-8b": 3.0}
ORDER = ("attribution", "eval", "memla", "baselines")


@dataclass
class SuiteState:
    """What suite.json says; rewritten after every benchmark (and by the watchdog)."""

    out: Path
    budget_s: float
    hard_limit_s: float
    args: dict[str, Any]
    env: dict[str, Any]
    plan: list[dict[str, Any]] = field(default_factory=list)
    done: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    current: str | None = None
    status: str = "running"
    t0: float = T0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def payload(self) -> dict[str, Any]:
        return {"suite_version": SUITE_VERSION, "status": self.status, "running": self.current,
                "elapsed_s": round(time.perf_counter() - self.t0, 1), "budget_s": self.budget_s,
                "hard_limit_s": self.hard_limit_s, "arguments": self.args, "environment": self.env,
                "plan": self.plan, "benchmarks": self.done, "targets": targets(self.results),
                "projection_full_preset": projection(self.results),
                "fixed_work": "random weights of real shapes; every editor runs a fixed number of steps (no early "
                              "stopping); ROME/MEMIT second moments from random token ids of the same length"}

    def write(self) -> None:
        with self.lock:
            write_json(self.out / "suite.json", self.payload())


# ------------------------------------------------------------------------------------------------ summaries
def _memla_s_per_edit(r: dict[str, Any]) -> float | None:
    if r.get("parallel"):
        return min(p["s_per_edit"] for p in r["parallel"])
    return (r.get("single") or {}).get("s_per_edit")


def targets(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets next to what was measured (``None`` where the benchmark did not run)."""
    att = results.get("attribution:gemma3-270m", {}).get("summary", {})
    mem = results.get("memla:gemma3-270m", {})
    return {"attribution_ms_per_pair_270m": {"target_max": 20.0, "measured": att.get("ms_per_pair_amortised")},
            "attribution_speedup_vs_loop_270m": {"target_min": 10.0, "measured": att.get("speedup_vs_loop")},
            "memla_parallel_edits_per_s_270m": {"target_min": 10.0, "measured": max(
                (p["edits_per_s"] for p in mem.get("parallel", [])), default=None)}}


def projection(results: dict[str, dict[str, Any]], shape: str | None = None) -> dict[str, Any] | None:
    """Projected seconds of the full preset (1,000 records x 12 evaluation languages x 13 methods) on one device.

    From the measured rates of ``shape`` (default: gemma3-270m, else the first shape with results): attribution
    per (record, language) for the languages masks need, one unedited evaluation per (record, language), and per
    unit (record, edit language, method) the edit plus its evaluation in all 12 languages. Given for the preset's
    2 edit languages (en, zh) and for all 12.
    """
    shapes = [k.split(":", 1)[1] for k in results]
    shape = shape or ("gemma3-270m" if "gemma3-270m" in shapes else (shapes[0] if shapes else None))
    if shape is None:
        return None
    att = results.get(f"attribution:{shape}", {}).get("summary", {})
    ev = results.get(f"eval:{shape}", {})
    mem = results.get(f"memla:{shape}", {})
    base = results.get(f"baselines:{shape}", {}).get("methods", {})
    eval_s = ev.get("s_per_record_language")
    edit_s: dict[str, float | None] = {"memla": _memla_s_per_edit(mem)}
    for m in ("ft", "lora", "rome", "memit"):
        edit_s[m] = base.get(m, {}).get("seconds_per_edit")
    per_method, missing = {}, []
    for method, (source, how) in FULL_METHODS.items():
        s = 0.0 if source is None else edit_s.get(source)
        if s is None:
            missing.append(method)
        per_method[method] = {"edit_s": s, "from": how}
    out: dict[str, Any] = {"shape": shape, "records": FULL_RECORDS, "evaluation_languages": FULL_LANGUAGES,
                           "methods": len(FULL_METHODS), "eval_s_per_record_language": eval_s,
                           "attribution_ms_per_pair": att.get("ms_per_pair_amortised"), "per_method": per_method,
                           "missing": missing}
    if eval_s is None:
        missing.append("evaluation")
    if att.get("ms_per_pair_amortised") is None:
        missing.append("attribution")
    if missing:
        out["note"] = "incomplete: not measured, counted as 0 s"
    for n_edit in (2, 12):
        attr_langs = 3 if n_edit == 2 else FULL_LANGUAGES  # masks need the edit languages and en, zh, fr
        attribution = FULL_RECORDS * attr_langs * (att.get("ms_per_pair_amortised") or 0.0) / 1000
        preedit = FULL_RECORDS * FULL_LANGUAGES * (eval_s or 0.0)
        units = FULL_RECORDS * n_edit * len(FULL_METHODS)
        edits = sum(FULL_RECORDS * n_edit * (v["edit_s"] or 0.0) for v in per_method.values())
        evals = units * FULL_LANGUAGES * (eval_s or 0.0)
        total = attribution + preedit + edits + evals
        out[f"edit_languages_{n_edit}"] = {
            "units": units, "attribution_s": round(attribution, 1), "preedit_eval_s": round(preedit, 1),
            "edits_s": round(edits, 1), "eval_s": round(evals, 1), "total_s": round(total, 1),
            "total_h": round(total / 3600, 2)}
    return out


def print_projection(p: dict[str, Any] | None) -> None:
    if not p:
        return
    print(f"\nfull preset projected on one device ({p['shape']} shape rates): {p['records']} records x "
          f"{p['evaluation_languages']} evaluation languages x {p['methods']} methods")
    for n_edit in (2, 12):
        q = p[f"edit_languages_{n_edit}"]
        print(f"  {n_edit:>2} edit languages: {q['units']:>7} units, attribution {q['attribution_s']:>9.0f} s, "
              f"edits {q['edits_s']:>9.0f} s, evaluation {q['eval_s'] + q['preedit_eval_s']:>10.0f} s "
              f"-> {q['total_h']:.1f} h")
    if p.get("note"):
        print(f"  ({p['note']}: {', '.join(p['missing'])})")


# ------------------------------------------------------------------------------------------------ running
def _run_benchmark(name: str, lm, records, prof: Profile, budget: Budget, tmp: str, seed: int) -> dict[str, Any]:
    from benchmarks import bench_attribution, bench_baselines, bench_eval, bench_memla
    from benchmarks.common import fixed_step_overrides

    if name == "attribution":
        return bench_attribution.run(lm, records, prof.attribution_languages,
                                     pairs=prof.attribution_pairs, loop_items=prof.loop_items, budget=budget)
    if name == "eval":
        return bench_eval.run(lm, records[: prof.eval_records], prof.eval_languages, budget=budget)
    if name == "memla":
        return bench_memla.run_editor(lm, records, "en", single=prof.memla_single, parallel=prof.memla_parallel,
                                      fixed=True, seed=seed, budget=budget, steps=prof.steps)
    if name == "baselines":
        cov = bench_baselines.random_covariance(lm, tmp, n_texts=prof.cov_texts, length=prof.cov_length, seed=seed)
        return bench_baselines.run(lm, records[: prof.baseline_edits + 1], prof.baseline_methods, "en",
                                   edits=prof.baseline_edits, overrides=fixed_step_overrides(cov, prof.steps),
                                   budget=budget)
    raise ValueError(f"unknown benchmark {name!r}")


def plan(shapes: Sequence[str], budget_s: float) -> list[dict[str, Any]]:
    """Planned caps (seconds) per (shape, benchmark) if every benchmark used its whole share."""
    total_w = sum(SHAPE_WEIGHTS.get(s, 1.0) for s in shapes)
    out = []
    for s in shapes:
        prof = PROFILES[s]
        share = budget_s * SHAPE_WEIGHTS.get(s, 1.0) / total_w
        wsum = sum(prof.weights.get(b, 1.0) for b in ORDER)
        for b in ORDER:
            out.append({"shape": s, "benchmark": b, "planned_cap_s": round(share * prof.weights.get(b, 1.0) / wsum, 1),
                        "weight": SHAPE_WEIGHTS.get(s, 1.0) * prof.weights.get(b, 1.0) / wsum})
    return out


def run_suite(out: Path, shapes: Sequence[str], *, device: str = "auto", dtype: str = "bfloat16",
              budget_s: float = 420.0, hard_limit_s: float = 0.0, seed: int = 0, only: Sequence[str] = ORDER,
              args: dict[str, Any] | None = None, t0: float | None = None) -> SuiteState:
    """Run the benchmarks of ``only`` on each shape; see the module docstring. ``t0``: when the budget started
    (default: now); ``hard_limit_s <= 0``: no watchdog (in-process callers such as the tests)."""
    from benchmarks.common import bench_records, fixed_work
    from memla_utils.languages import MKEB_LANGUAGES
    from memla_utils.models import resolve_device
    from memla_utils.shapes import build_random_model, shape_summary

    dev = resolve_device(device)
    out.mkdir(parents=True, exist_ok=True)
    state = SuiteState(out, budget_s, hard_limit_s, args or {}, environment(dev),
                       t0=time.perf_counter() if t0 is None else t0)
    state.plan = [p for p in plan(shapes, budget_s) if p["benchmark"] in only]
    print(f"[suite] device {state.env['device']}, torch {state.env['torch']} (CUDA {state.env['cuda']}), "
          f"transformers {state.env['transformers']}, peft {state.env['peft']}")
    print(f"[suite] budget {budget_s:.0f} s (hard limit {hard_limit_s:.0f} s); planned caps:")
    for p in state.plan:
        print(f"    {p['shape']:<12} {p['benchmark']:<12} {p['planned_cap_s']:>7.1f} s")
    print(f"    projected total {sum(p['planned_cap_s'] for p in state.plan):.0f} s of {budget_s:.0f} s "
          f"(+ {time.perf_counter() - state.t0:.0f} s already spent starting)")
    state.write()
    if hard_limit_s > 0:
        _start_watchdog(state)
    n_records = max(_records_needed(PROFILES[s]) for s in shapes)
    records = bench_records(n_records, list(MKEB_LANGUAGES))
    remaining = list(state.plan)
    with tempfile.TemporaryDirectory(prefix="memla-suite-") as tmp:
        os.environ["MEMLA_CACHE"] = str(Path(tmp) / "cache")  # random-model artifacts never reach the real cache
        for shape in shapes:
            steps = [p for p in remaining if p["shape"] == shape]
            if not steps:
                continue
            state.current = f"{shape}: building the model"
            state.write()
            lm = None
            try:
                lm = build_random_model(shape, device=dev, dtype=dtype, seed=seed)
            except Exception as err:  # noqa: BLE001 - e.g. out of memory: the other shapes still run
                log.exception("building %s failed", shape)
                for p in steps:
                    state.done.append({**_entry(p), "status": "error", "error": f"model build: {err}"[:500]})
                    remaining.remove(p)
                state.write()
                continue
            print(f"[suite] {shape}: built in {lm.load_seconds:.1f} s "
                  f"({lm.info['n_parameters'] / 1e9:.2f}B parameters, {lm.dtype})")
            for p in steps:
                left = budget_s - (time.perf_counter() - state.t0)
                wsum = sum(q["weight"] for q in remaining)
                cap = max(0.0, left * p["weight"] / wsum) if wsum else 0.0
                remaining.remove(p)
                name = f"{p['benchmark']}:{shape}"
                entry = {**_entry(p), "cap_s": round(cap, 1)}
                if cap < 3.0:
                    state.done.append({**entry, "status": "skipped", "reason": "no time left in the budget"})
                    print(f"[suite] {name}: skipped (cap {cap:.1f} s)")
                    state.write()
                    continue
                state.current = name
                state.write()
                budget = Budget(cap)
                t = time.perf_counter()
                try:
                    result = _run_benchmark(p["benchmark"], lm, records, PROFILES[shape], budget, tmp, seed)
                    result.update(environment=state.env, model=shape_summary(lm),
                                  fixed_work=fixed_work(lm, cov_length=PROFILES[shape].cov_length,
                                                            steps=PROFILES[shape].steps),
                                  suite_version=SUITE_VERSION)
                    path = write_json(out / f"{p['benchmark']}_{shape}.json", result)
                    state.results[name] = result
                    entry.update(status="ok", file=path.name)
                except Exception as err:  # noqa: BLE001 - record it, keep the others
                    log.exception("%s failed", name)
                    entry.update(status="error", error=f"{type(err).__name__}: {err}"[:500])
                    write_json(out / f"{p['benchmark']}_{shape}.json",
                               {"benchmark": p["benchmark"], "shape": shape, "error": entry["error"],
                                "environment": state.env})
                entry.update(seconds=round(time.perf_counter() - t, 1), left_out=budget.stopped)
                state.done.append(entry)
                state.current = None
                free_memory()
                elapsed = time.perf_counter() - state.t0
                print(f"[suite] {name}: {entry['status']} in {entry['seconds']:.1f} s (cap {cap:.1f} s); "
                      f"elapsed {elapsed:.0f} s, projected finish <= "
                      f"{elapsed + sum(q['planned_cap_s'] for q in remaining):.0f} s of {budget_s:.0f} s")
                state.write()
            del lm
            free_memory()
    state.status = "finished"
    state.current = None
    state.write()
    print_projection(projection(state.results))
    print(f"[suite] targets: {targets(state.results)}")
    print(f"[suite] finished in {time.perf_counter() - state.t0:.0f} s; results in {out}")
    return state


def _records_needed(prof: Profile) -> int:
    return max(max(prof.memla_parallel, default=1) + 1, prof.memla_single + 1, prof.eval_records,
               prof.baseline_edits + 1, -(-prof.attribution_pairs // len(prof.attribution_languages)))


def _entry(p: dict[str, Any]) -> dict[str, Any]:
    return {"shape": p["shape"], "benchmark": p["benchmark"], "planned_cap_s": p["planned_cap_s"]}


def _start_watchdog(state: SuiteState) -> None:
    """End the process at the hard limit (after writing suite.json), whatever is running."""
    def fire() -> None:
        state.status = f"stopped by the hard time limit ({state.hard_limit_s:.0f} s) during {state.current}"
        try:
            state.write()
        finally:
            print(f"[suite] {state.status}; finished benchmarks' files are in {state.out}", flush=True)
            os._exit(124)

    delay = state.hard_limit_s - (time.perf_counter() - state.t0)
    timer = threading.Timer(max(0.0, delay), fire)
    timer.daemon = True
    timer.start()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m benchmarks.gpu_suite", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="folder for one JSON per benchmark + suite.json")
    ap.add_argument("--shape", dest="shapes", action="append", default=None, choices=sorted(PROFILES),
                    help=f"shape to run (repeatable; default: {', '.join(DEFAULT_SHAPES)})")
    ap.add_argument("--only", default=",".join(ORDER), help=f"benchmarks to run, among {','.join(ORDER)}")
    ap.add_argument("--device", default="auto", help="auto (CUDA if present) | cuda | cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--budget-s", type=float, default=420.0, help="planned seconds for the whole suite")
    ap.add_argument("--hard-limit-s", type=float, default=None,
                    help="the watchdog ends the process here (default: budget + 45 s; <= 0: no watchdog)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args(argv)
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = args.shapes or list(DEFAULT_SHAPES)
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    bad = [b for b in only if b not in ORDER]
    if bad:
        ap.error(f"--only: unknown benchmark(s) {bad}; choose among {', '.join(ORDER)}")
    hard = args.hard_limit_s if args.hard_limit_s is not None else args.budget_s + 45.0
    state = run_suite(args.out, shapes, device=args.device, dtype=args.dtype, budget_s=args.budget_s,
                      hard_limit_s=hard, seed=args.seed, only=only,
                      args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, t0=T0)
    return 1 if any(d["status"] == "error" for d in state.done) else 0


if __name__ == "__main__":
    raise SystemExit(main())
