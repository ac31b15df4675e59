"""The two attribution methods on the same records: seconds per (record, language) and neuron-set overlap.

For the first ``--records`` MKEB records and each language, every prompt (edit prompt + paraphrases) is
attributed from scratch (cache disabled) with ``method="memla4mke"`` (the released locator) and with
``method="exact"``, with the same steps, baseline and threshold; then the two neuron sets (union over the prompts,
scores > threshold x max) are compared (Jaccard) and the scores ranked against each other (Spearman, mean over
prompts).

Usage:
    MEMLA_CACHE=... .venv/bin/python benchmarks/bench_attribution_methods.py --records 2 --languages en,zh
    python -m benchmarks.bench_attribution_methods --init random --shape gemma3-270m --device cuda --dtype bfloat16
-> prints a table, writes benchmarks/results/attribution_methods_<device>[_random-<shape>].json (or --out)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.common import (
    MKEB_PATH,
    add_model_args,
    bench_records,
    default_out,
    environment,
    fixed_work,
    load_lm,
    spearman,
    write_json,
)


def main(argv: Sequence[str] | None = None) -> None:
    from memla_utils.attribution import METHODS, AttributionConfig, neurons_from_attributions, record_attributions
    from memla_utils.cache import ArtifactCache
    from memla_utils.masks import jaccard
    from memla_utils.shapes import shape_summary

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--records", type=int, default=2)
    ap.add_argument("--languages", default="en,zh")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--mkeb", default=str(MKEB_PATH))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    args.threads = args.threads or 1  # this benchmark's default: one thread
    langs = [s.strip() for s in args.languages.split(",") if s.strip()]
    lm = load_lm(args)
    records = bench_records(args.records, langs, args.mkeb)
    off = ArtifactCache(enabled=False)
    base = AttributionConfig(steps=args.steps, threshold=args.threshold)
    record_attributions(lm, records[0], langs[0], dataclasses.replace(base, steps=2, use_paraphrases=False), off)
    rows = []
    for rec in records:
        for lang in [l for l in langs if l in rec.edit]:
            row: dict = {"example_id": rec.example_id, "language": lang}
            atts, sets = {}, {}
            for method in METHODS:
                cfg = dataclasses.replace(base, method=method)
                t = time.perf_counter()
                atts[method] = record_attributions(lm, rec, lang, cfg, off)[lang]
                row[f"seconds_{method}"] = round(time.perf_counter() - t, 2)
                sets[method] = neurons_from_attributions(atts[method], args.threshold, lm.adapter.n_neurons)
                row[f"n_{method}"] = sets[method].total
            row["prompts"] = len(atts["exact"])
            row["answer_ids_memla4mke"] = len(lm.tokenizer.encode(atts["exact"][0].answer))
            row["n_shared"] = (sets["memla4mke"] & sets["exact"]).total
            row["jaccard"] = round(jaccard(sets["memla4mke"], sets["exact"]), 4)
            row["spearman"] = round(sum(spearman(a.scores, b.scores) for a, b in zip(atts["memla4mke"], atts["exact"]))
                                    / len(atts["exact"]), 4)
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
    out = {"model": lm.name, "device": str(lm.device), "dtype": str(lm.dtype), "threads": torch.get_num_threads(),
           "steps": args.steps, "threshold": args.threshold, "machine": platform.processor() or platform.machine(),
           "rows": rows, "environment": environment(lm.device), "model_shape": shape_summary(lm),
           "fixed_work": fixed_work(lm)}
    path = write_json(args.out or default_out("attribution_methods", lm), out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
