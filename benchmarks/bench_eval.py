"""Seconds to evaluate one edited model on one record in one language (ES, PS, NS, QS and the variants).

Every unit of the experiment grid evaluates its edit in every evaluation language, and every record gets one
unedited evaluation per language, so this number times (units x languages) is most of a large run; the GPU
suite's full-preset projection uses it. Times ``evaluate_language`` (teacher-forced scoring of the edit and
paraphrase prompts, greedy continuations of the neighbourhood and multi-hop prompts) on unedited weights, which
costs the same as on edited ones (IKE's longer prompts excepted).

Usage (from the repository root):
    python -m benchmarks.bench_eval                                          # default model, CPU
    python -m benchmarks.bench_eval --init random --shape gemma3-270m --device cuda --dtype bfloat16
-> writes benchmarks/results/eval_<device>[_random-<shape>].json (or --out)
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    Budget,
    add_model_args,
    bench_records,
    default_out,
    environment,
    fixed_work,
    load_lm,
    setup_logging,
    timed,
    write_json,
)

log = logging.getLogger("bench_eval")


def run(lm, records: Sequence[Any], languages: Sequence[str], *, budget: Budget | None = None) -> dict[str, Any]:
    """Time ``evaluate_language`` for each (record, language) while the budget allows (one warm-up first)."""
    from memla_utils.evaluate import EvalConfig, evaluate_language

    budget = budget or Budget()
    cfg = EvalConfig()
    evaluate_language(lm, records[0], languages[0], config=cfg)  # warm-up
    rows: list[dict[str, Any]] = []
    for rec in records:
        for lang in languages:
            if rows and not budget.allows(max(r["seconds"] for r in rows), f"evaluation of {rec.example_id} [{lang}]"):
                break
            res, seconds = timed(lambda: evaluate_language(lm, rec, lang, config=cfg), lm.device)
            view = rec.for_language(lang)
            rows.append({"record": rec.example_id, "language": lang, "seconds": round(seconds, 4),
                         "prompts": 1 + len(view.paraphrase_prompts) + len(view.neighborhood_prompts)
                         + len(view.multi_hop_questions), "metrics": len(res.metrics)})
    per = [r["seconds"] for r in rows]
    return {"benchmark": "eval", "languages": list(languages), "evaluations": len(rows),
            "s_per_record_language": statistics.mean(per), "s_max": max(per), "rows": rows,
            "budget": budget.summary()}


def main(argv: Sequence[str] | None = None) -> None:
    from memla_utils.shapes import shape_summary

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(ap)
    ap.add_argument("--records", type=int, default=2)
    ap.add_argument("--languages", default="en,zh,fr,es")
    ap.add_argument("--mkeb", default=None, help="MKEB file (default: data/mkeb/mkeb.jsonl)")
    ap.add_argument("--max-seconds", type=float, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    setup_logging()
    lm = load_lm(args)
    langs = args.languages.split(",")
    records = bench_records(args.records, langs, **({"path": args.mkeb} if args.mkeb else {}))
    result = run(lm, records, langs, budget=Budget(args.max_seconds))
    result.update(environment=environment(lm.device), model=shape_summary(lm), fixed_work=fixed_work(lm))
    print(f"evaluation of one record in one language: {result['s_per_record_language']:.3f} s "
          f"(max {result['s_max']:.3f} s, {result['evaluations']} evaluations)")
    print(f"-> {write_json(args.out or default_out('eval', lm), result)}")


if __name__ == "__main__":
    main()
