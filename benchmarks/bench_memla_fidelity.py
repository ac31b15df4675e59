"""MEMLA as memla4mke orients its LoRA factors vs the companion's earlier orientation: NS and training steps.

The check of the issue "MEMLA as its released code does it": on the first 12 MKEB records, English edits
evaluated in English, three run seeds, the default model. For each seed and method (``memla`` = zero factor
on the neuron side, memla4mke; ``memla-zero-hidden`` = zero on the hidden side, the earlier parameterisation)
it runs the real runner (edit -> evaluate -> revert) and reports the mean ES/PS/NS, the mean number of
training steps until the stop rule, next to the unedited model's NS. Masks come from attribution
(``MaskConfig`` defaults: memla4mke attribution of the edit prompt and its paraphrases; cached).

Targets (issue 12): MEMLA's mean NS within 10 points of the unedited model's, and mean steps >= 3.

Usage:
    .venv/bin/python benchmarks/bench_memla_fidelity.py                # 12 records x 3 seeds (CPU: ~1 h cold)
    .venv/bin/python benchmarks/bench_memla_fidelity.py --records 3 --seeds 0
    .venv/bin/python benchmarks/bench_memla_fidelity.py --attribution-method exact   # masks from exact IG
-> prints a table, writes benchmarks/results/memla_fidelity_<device>.json
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
log = logging.getLogger("bench_memla_fidelity")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--records", type=int, default=12)
    p.add_argument("--only", default="",
                   help="comma-separated record ids to keep among the first --records (a diagnostic subset)")
    p.add_argument("--attribution-method", default="memla4mke", choices=("memla4mke", "exact"),
                   help="how the masks' neurons are attributed (memla4mke: the released locator, the default of "
                        "every preset; exact: exact IG, a labelled ablation)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default="memla,memla-zero-hidden")
    p.add_argument("--mkeb", default="data/mkeb/mkeb.jsonl")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=None)
    return p.parse_args()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from memla_utils.attribution import AttributionConfig
    from memla_utils.cache import ArtifactCache
    from memla_utils.editors.memla import mask_overrides
    from memla_utils.masks import MaskConfig, compute_record_masks
    from memla_utils.mkeb import load_records
    from memla_utils.models import load_model
    from memla_utils.runner import RunnerConfig, load_results, run_experiment

    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    records = load_records(args.mkeb)[: args.records]
    if args.only:
        keep = {x.strip() for x in args.only.split(",") if x.strip()}
        missing = keep - {r.example_id for r in records}
        if missing:
            raise SystemExit(f"--only: {sorted(missing)} not among the first {args.records} records of {args.mkeb}")
        records = [r for r in records if r.example_id in keep]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    cache = ArtifactCache()
    mask_cfg = MaskConfig(attribution=AttributionConfig(method=args.attribution_method))
    start = time.perf_counter()
    masks = {r.example_id: compute_record_masks(lm, r, "en", mask_cfg, cache=cache) for r in records}
    masks_s = time.perf_counter() - start
    rows = []
    per_record: list[dict] = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = RunnerConfig(seed=seed, editor_overrides=mask_overrides(mask_cfg), progress=True)
            run_experiment(lm, records, methods, ["en"], ["en"], tmp, masks=lambda r, _l: masks[r.example_id],
                           config=cfg, cache=cache)
            df = load_results(tmp)
        for (method, rid), d in df.groupby(["method", "record"], sort=False):
            ns = d[(d["kind"] == "metric") & (d["metric"] == "NS")]["value"]
            st = d[d["metric"] == "steps"]["value"]
            per_record.append({"seed": seed, "method": method, "record": rid,
                               "NS": float(ns.mean()) if len(ns) else None,
                               "steps": int(st.iloc[0]) if len(st) else None})
        for method in ["unedited", *methods]:
            d = df[df["method"] == method]
            m = d[d["kind"] == "metric"].groupby("metric")["value"].mean()
            steps = d[d["metric"] == "steps"]["value"]
            errors = int((d["kind"] == "error").sum())
            rows.append({"seed": seed, "method": method, "ES": float(m.get("ES", float("nan"))),
                         "PS": float(m.get("PS", float("nan"))), "NS": float(m.get("NS", float("nan"))),
                         "mean_steps": float(steps.mean()) if len(steps) else None,
                         "steps": [int(s) for s in steps], "errors": errors})
    import pandas as pd

    table = pd.DataFrame(rows)
    summary = table.groupby("method", sort=False).agg(ES=("ES", "mean"), PS=("PS", "mean"), NS=("NS", "mean"),
                                                      mean_steps=("mean_steps", "mean"))
    ns_unedited = float(summary.loc["unedited", "NS"])
    checks = {}
    if "memla" in summary.index:
        checks = {"memla_ns_within_10_points_of_unedited":
                  bool(abs(100 * (summary.loc["memla", "NS"] - ns_unedited)) <= 10),
                  "memla_mean_steps_at_least_3": bool(summary.loc["memla", "mean_steps"] >= 3)}
    print((summary * pd.Series({"ES": 100, "PS": 100, "NS": 100, "mean_steps": 1})).round(1).to_markdown())
    print(checks)
    by_record = pd.DataFrame(per_record).pivot_table(index="record", columns="method", values="NS", aggfunc="mean")
    print("NS per record (mean over seeds, %):")
    print((100 * by_record).round(1).to_markdown())
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    suffix = "" if args.attribution_method == "memla4mke" else f"_{args.attribution_method}"
    suffix += f"_{len(records)}records" if args.only else ""
    out = Path(args.out) if args.out else RESULTS / f"memla_fidelity_{args.device}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "memla_fidelity", "commit": commit, "model": args.model, "device": args.device,
        "dtype": args.dtype, "records": [r.example_id for r in records], "edit_language": "en",
        "eval_language": "en", "seeds": seeds, "mask_config": {k: str(v) for k, v in vars(mask_cfg).items()},
        "masks_seconds": masks_s, "per_seed": rows,
        "per_record": per_record,
        "summary": {k: {c: (float(v) if pd.notna(v) else None) for c, v in row.items()}
                    for k, row in summary.iterrows()},
        "checks": checks, "seconds": time.perf_counter() - start}, indent=1), encoding="utf-8")
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()
