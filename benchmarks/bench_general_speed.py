"""General-ability scoring (notebook 06): the reference commit against the working tree, side by side.

Notebook 06 scores the same probe set (true facts of unedited records, and 16 prose chunks per language) once for
the unedited model and once after every single edit and every sequential checkpoint; that teacher-forced scoring
(``memla_utils.general.score_probe``) is most of the notebook's time. Each worker (one process per side,
alternately reference / current, ``--repeats`` times; :mod:`benchmarks.reference`) loads the model, builds the
probe set as notebook 06 does (``build_probe_set`` over the records after the first ``--edit-records``, the run's
languages, the default prose) and times ``score_probe`` on the unedited model.

The driver compares the sides: seconds per probe pass (median over repeats), the ratio, and the values
(``summarize``: perplexity per language, fact accuracies; and every sentence's NLL): accuracies must be identical,
perplexities and NLLs equal within ``--rtol``. They are not equal at 1e-5: the reference computes the
cross-entropy with the vocabulary along a strided dimension, which on this CPU is biased by about -1.4e-4 nats
per token against float64 on the same logits; the current code (one contiguous row per scored position) is not.
The JSON's ``cross_entropy_error`` measures both on the same logits (:func:`cross_entropy_error`).

Usage (from the repository root; ``nice`` on a shared machine):
    python -m benchmarks.bench_general_speed --repeats 2 --threads 2
-> prints a table and writes benchmarks/results/general_speed_<device>.json (or --out)
"""
from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, "") and "--worker" not in sys.argv:  # the driver run as a file: make `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # importable (a worker gets PYTHONPATH)

from benchmarks.common import (
    add_model_args,
    add_worker_args,
    bench_records,
    environment,
    result_path,
    run_as_worker,
    setup_logging,
    write_json,
)

log = logging.getLogger("bench_general_speed")


# ------------------------------------------------------------------------------------------------ worker
def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One side's measurements (runs inside a subprocess with that side's ``memla_utils`` first on the path)."""
    import memla_utils.general as general
    from benchmarks.common import load_lm
    from benchmarks.reference import worker_package_root

    lm = load_lm(args)
    langs = args.languages.split(",")
    records = bench_records(args.edit_records + args.probe_records, langs)
    probe = general.build_probe_set(records, langs, exclude=[r.example_id for r in records[:args.edit_records]],
                                    max_records=args.probe_records)
    general.score_probe(lm, general.ProbeSet(facts={langs[0]: probe.facts[langs[0]][:1]}))  # warm-up
    seconds, scores = [], None
    for _ in range(args.passes):
        start = time.perf_counter()
        scores = general.score_probe(lm, probe)
        seconds.append(time.perf_counter() - start)
    assert scores is not None
    summary = {f"{lang}/{metric}": [value, n] for (lang, metric), (value, n) in general.summarize(probe, scores).items()}
    rows = {lang: {"facts_nll": sc.facts.row_nll if sc.facts else [], "text_nll": sc.text.row_nll if sc.text else [],
                   "facts_em": sc.facts.exact_match if sc.facts else []} for lang, sc in scores.items()}
    tokens = sum(sc.text.n_tokens for sc in scores.values() if sc.text) + sum(
        sc.facts.n_tokens for sc in scores.values() if sc.facts)
    return {"package_root": worker_package_root(), "seconds": seconds, "summary": summary, "rows": rows,
            "tokens_scored": tokens, "cross_entropy_error": cross_entropy_error(lm, probe.text[langs[0]][:4])}


def cross_entropy_error(lm, texts) -> dict[str, float]:
    """Per-token NLL of ``texts`` from the same float32 logits, two ways, against float64: the reference's layout
    (``cross_entropy(logits[B, T, V].transpose(1, 2))``, the vocabulary along a strided dimension) and the
    current one (``cross_entropy(logits[N, V])``, one contiguous row per scored position). Nats per token."""
    import torch

    from memla_utils.text import encode_prompt

    rows = [encode_prompt(lm.tokenizer, t) for t in texts]
    ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
    att = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        ids[b, :len(r)], att[b, :len(r)] = torch.tensor(r), 1
    with torch.no_grad():
        logits = lm.model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
    targets, mask = ids[:, 1:], att[:, 1:].bool()
    strided = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")[mask]
    rowwise = torch.nn.functional.cross_entropy(logits[mask], targets[mask], reduction="none")
    exact = torch.nn.functional.cross_entropy(logits[mask].double(), targets[mask], reduction="none")
    return {"tokens": int(mask.sum()),
            "strided_max_abs": float((strided - exact).abs().max()), "strided_mean": float((strided - exact).mean()),
            "rowwise_max_abs": float((rowwise - exact).abs().max()), "rowwise_mean": float((rowwise - exact).mean())}


# ------------------------------------------------------------------------------------------------ driver
def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-30)


def compare(ref: dict[str, Any], cur: dict[str, Any], rtol: float) -> dict[str, Any]:
    """Accuracies identical, perplexities and per-sentence NLLs within ``rtol`` (relative)."""
    diffs, worst, n = [], 0.0, 0
    for key in sorted(set(ref["summary"]) | set(cur["summary"])):
        a, b = ref["summary"].get(key), cur["summary"].get(key)
        n += 1
        if a is None or b is None or a[1] != b[1]:
            diffs.append(f"{key}: {a} vs {b}")
            continue
        if "perplexity" in key:
            r = _rel(a[0], b[0])
            worst = max(worst, r)
            if not math.isfinite(b[0]) or r > rtol:
                diffs.append(f"{key}: {a[0]} vs {b[0]} (relative {r:.2e})")
        elif a[0] != b[0]:
            diffs.append(f"{key}: {a[0]} vs {b[0]}")
    for lang, rows in ref["rows"].items():
        other = cur["rows"].get(lang, {})
        for part in ("facts_nll", "text_nll"):
            for i, (a, b) in enumerate(zip(rows[part], other.get(part, []), strict=True)):
                n += 1
                r = _rel(a, b)
                worst = max(worst, r)
                if r > rtol:
                    diffs.append(f"{lang} {part}[{i}]: {a} vs {b} (relative {r:.2e})")
        if rows["facts_em"] != other.get("facts_em"):
            diffs.append(f"{lang} facts exact match: {rows['facts_em']} vs {other.get('facts_em')}")
    return {"values_compared": n, "max_relative_difference": worst, "differences": diffs[:50],
            "n_differences": len(diffs), "equal_within_rtol": not diffs}


def summarize_runs(runs: dict[str, list[dict[str, Any]]], rtol: float) -> dict[str, Any]:
    sides = {}
    for side, rs in runs.items():
        per_repeat = [statistics.median(r["seconds"]) for r in rs]
        sides[side] = {"seconds_per_probe_pass": {"per_repeat": [round(x, 3) for x in per_repeat],
                                                  "median": round(statistics.median(per_repeat), 3)},
                       "tokens_scored": rs[0]["tokens_scored"]}
    ratio = round(sides["reference"]["seconds_per_probe_pass"]["median"]
                  / sides["current"]["seconds_per_probe_pass"]["median"], 3)
    checks = [compare(runs["reference"][0], run, rtol) for run in runs["current"]]
    repeat_ok = all(run["summary"] == runs["current"][0]["summary"] for run in runs["current"])
    return {"sides": sides, "speedup": ratio, "rtol": rtol, "comparison": checks[0],
            "equal_within_rtol": all(c["equal_within_rtol"] for c in checks), "current_repeatable": repeat_ok,
            "summary_reference": runs["reference"][0]["summary"], "summary_current": runs["current"][0]["summary"],
            "cross_entropy_error": runs["current"][0]["cross_entropy_error"]}


def print_table(result: dict[str, Any]) -> None:
    s = result["sides"]
    print(f"{'':40}{'reference':>12}{'current':>12}{'ratio':>8}")
    print(f"{'one probe pass, unedited model (s)':40}{s['reference']['seconds_per_probe_pass']['median']:>12.2f}"
          f"{s['current']['seconds_per_probe_pass']['median']:>12.2f}{result['speedup']:>7.2f}x")
    for key in sorted(result["summary_reference"]):
        if key.endswith("/perplexity"):
            print(f"{'perplexity ' + key.split('/')[0]:40}{result['summary_reference'][key][0]:>12.4f}"
                  f"{result['summary_current'][key][0]:>12.4f}")
    c = result["comparison"]
    print(f"equal within rtol {result['rtol']:g}: {result['equal_within_rtol']} ({c['values_compared']} values, "
          f"max relative difference {c['max_relative_difference']:.2e}, {c['n_differences']} differ); "
          f"current repeatable: {result['current_repeatable']}")
    e = result["cross_entropy_error"]
    print(f"NLL per token against float64 on the same logits ({e['tokens']} tokens): reference layout max "
          f"{e['strided_max_abs']:.2e}, mean {e['strided_mean']:+.2e}; current max {e['rowwise_max_abs']:.2e}, "
          f"mean {e['rowwise_mean']:+.2e} nats")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(ap)
    ap.add_argument("--languages", default="en,zh,fr,es", help="the small preset's languages")
    ap.add_argument("--edit-records", type=int, default=5, help="records left out of the probe (as edited)")
    ap.add_argument("--probe-records", type=int, default=8, help="notebook 06's probe_records")
    ap.add_argument("--passes", type=int, default=2, help="probe passes per worker (the median is used)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rtol", type=float, default=1e-5)
    add_worker_args(ap)
    args = ap.parse_args(argv)
    setup_logging()
    if run_as_worker(args, worker):
        return
    from benchmarks.reference import interleave, provenance

    passed = ["--languages", args.languages, "--edit-records", str(args.edit_records), "--probe-records",
              str(args.probe_records), "--passes", str(args.passes), "--init", args.init, "--shape", args.shape,
              "--model", args.model, "--device", args.device, "--dtype", args.dtype, "--seed", str(args.seed),
              "--threads", str(args.threads)]
    start = time.perf_counter()
    runs = interleave(Path(__file__).resolve(), passed, repeats=args.repeats)
    result = {"benchmark": "general_speed", **provenance(), "languages": args.languages.split(","),
              "edit_records": args.edit_records, "probe_records": args.probe_records, "passes": args.passes,
              "repeats": args.repeats,
              "command": "python -m benchmarks.bench_general_speed " + " ".join(sys.argv[1:]),
              **summarize_runs(runs, args.rtol), "wall_s": round(time.perf_counter() - start, 1),
              "environment": environment(args.device), "threads": args.threads, "model": args.model,
              "init": args.init}
    print_table(result)
    print(f"-> {write_json(result_path(args, 'general_speed'), result)}")


if __name__ == "__main__":
    main()
