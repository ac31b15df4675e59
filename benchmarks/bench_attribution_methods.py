"""The two attribution methods on the same records: seconds per (record, language) and neuron-set overlap.

For the first ``--records`` MKEB records and each language, every prompt (edit prompt + paraphrases) is
attributed from scratch (cache disabled) with ``method="memla4mke"`` (the released locator) and with
``method="exact"``, with the same steps, baseline and threshold; then the two neuron sets (union over the prompts,
scores > threshold x max) are compared (Jaccard) and the scores ranked against each other (Spearman, mean over
prompts).

Usage:
    MEMLA_CACHE=... .venv/bin/python benchmarks/bench_attribution_methods.py --records 2 --languages en,zh
-> prints a table, writes benchmarks/results/attribution_methods_<device>.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    from scipy.stats import spearmanr

    from memla_utils.attribution import METHODS, AttributionConfig, neurons_from_attributions, record_attributions
    from memla_utils.cache import PROJECT_ROOT, ArtifactCache
    from memla_utils.masks import jaccard
    from memla_utils.mkeb import load_records
    from memla_utils.models import load_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--records", type=int, default=2)
    ap.add_argument("--languages", default="en,zh")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mkeb", default=str(PROJECT_ROOT / "data" / "mkeb" / "mkeb.jsonl"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    langs = [s.strip() for s in args.languages.split(",") if s.strip()]
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    records = load_records(args.mkeb, languages=langs, n=args.records)
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
            row["spearman"] = round(sum(float(spearmanr(a.scores.flatten().numpy(), b.scores.flatten().numpy())
                                              .statistic) for a, b in zip(atts["memla4mke"], atts["exact"]))
                                    / len(atts["exact"]), 4)
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
    out = {"model": lm.name, "device": str(lm.device), "dtype": str(lm.dtype), "threads": args.threads,
           "steps": args.steps, "threshold": args.threshold, "machine": platform.processor() or platform.machine(),
           "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"attribution_methods_{lm.device.type}.json"
    path.write_text(json.dumps(out, ensure_ascii=False, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
