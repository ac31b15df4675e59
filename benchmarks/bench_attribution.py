"""Speed of knowledge-neuron attribution: the knowledge-neurons style loop vs the batched implementation.

Same model, machine and prompts for both: the loop scores one layer at a time with IG steps in batches of 4
and a full forward + backward (all positions, full logits) per batch; the batched pass scores every (layer,
step) row as a one-token continuation of the prompt's cache. Reports seconds per (record, language, prompt),
the speedup and the Spearman correlation of the two score vectors (same quantity: must be >= 0.99).

Usage:
    .venv/bin/python benchmarks/bench_attribution.py                 # CPU, 2 prompts (the loop takes minutes)
    .venv/bin/python benchmarks/bench_attribution.py --device cuda --dtype bfloat16 --prompts 4 --amortise 32
-> prints a table, writes benchmarks/results/attribution_<device>.json
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
FALLBACK = [("The capital of France is", "Paris", "en"), ("法国的首都是", "巴黎", "zh")]
log = logging.getLogger("bench_attribution")


def items_from_mkeb(path: str, n: int, languages: list[str]) -> list[tuple[str, str, str]]:
    """(prompt, true answer, language) of the first records' edit prompts and paraphrases."""
    from memla_utils.attribution import AttributionConfig, record_items
    from memla_utils.mkeb import load_records

    try:
        records = load_records(path, languages=languages, n=max(1, n))
    except (OSError, ValueError) as err:
        log.warning("no MKEB records (%s): using built-in prompts", err)
        return (FALLBACK * n)[:n]
    out: list[tuple[str, str, str]] = []
    for rec in records:
        for lang in languages:
            out.extend(record_items(rec, lang, AttributionConfig())[:1])
    return out[:n] if len(out) >= n else (out + FALLBACK * n)[:n]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


def main() -> None:
    from scipy.stats import spearmanr

    from memla_utils.attribution import AttributionConfig, attribute_batch, attribute_prompt_loop
    from memla_utils.environment import device_description
    from memla_utils.models import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--prompts", type=int, default=2, help="(record, language, prompt) items timed with both")
    ap.add_argument("--languages", default="en,zh")
    ap.add_argument("--mkeb-path", default="data/mkeb/mkeb.jsonl")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--loop-batch", type=int, default=4, help="IG steps per forward in the loop (knowledge-neurons)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's; on a shared machine 1 thread can be faster)")
    ap.add_argument("--amortise", type=int, default=0, help="also time this many items batched in one call")
    ap.add_argument("--bf16-head", action="store_true",
                    help="also time head_precision='bfloat16' (the vocabulary projection's products in bfloat16)")
    ap.add_argument("--skip-loop", action="store_true", help="time only the batched implementation")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    cfg = AttributionConfig(steps=args.steps)
    langs = [s for s in args.languages.split(",") if s]
    items = items_from_mkeb(args.mkeb_path, args.prompts, langs)
    attribute_batch(lm, [FALLBACK[0]], AttributionConfig(steps=2))  # warm-up (allocator, kernels)

    rows = []
    for prompt, answer, lang in items:
        batched, t_batched = timed(lambda: attribute_batch(lm, [(prompt, answer, lang)], cfg)[0].scores, lm.device)
        row = {"prompt": prompt, "answer": answer, "language": lang, "batched_s": round(t_batched, 3)}
        if not args.skip_loop:
            loop, t_loop = timed(lambda: attribute_prompt_loop(lm, prompt, answer, lang, cfg,
                                                               batch_size=args.loop_batch), lm.device)
            rho = float(spearmanr(loop.flatten().numpy(), batched.flatten().numpy()).statistic)
            rel = float((loop - batched).abs().max() / loop.abs().max())
            row.update(loop_s=round(t_loop, 3), speedup=round(t_loop / t_batched, 1), spearman=round(rho, 6),
                       max_rel_diff=float(f"{rel:.3g}"))
        if args.bf16_head:
            fast_cfg = AttributionConfig(steps=args.steps, head_precision="bfloat16")
            fast, t_fast = timed(lambda: attribute_batch(lm, [(prompt, answer, lang)], fast_cfg)[0].scores, lm.device)
            ref = loop if not args.skip_loop else batched
            row.update(bf16_head_s=round(t_fast, 3), bf16_head_spearman=round(float(
                spearmanr(ref.flatten().numpy(), fast.flatten().numpy()).statistic), 6))
            if not args.skip_loop:
                row["bf16_head_speedup"] = round(t_loop / t_fast, 1)
        rows.append(row)
        log.info("%s", row)

    amortised = None
    if args.amortise:
        many = (items * args.amortise)[: args.amortise]
        _, t_many = timed(lambda: attribute_batch(lm, many, cfg), lm.device)
        amortised = {"items": len(many), "total_s": round(t_many, 3), "per_item_s": round(t_many / len(many), 4)}

    summary = {"batched_s_per_prompt": round(statistics.mean(r["batched_s"] for r in rows), 3)}
    if not args.skip_loop:
        summary.update(loop_s_per_prompt=round(statistics.mean(r["loop_s"] for r in rows), 3),
                       speedup=round(sum(r["loop_s"] for r in rows) / sum(r["batched_s"] for r in rows), 1),
                       min_spearman=min(r["spearman"] for r in rows))
    if args.bf16_head:
        summary.update(bf16_head_s_per_prompt=round(statistics.mean(r["bf16_head_s"] for r in rows), 3),
                       bf16_head_min_spearman=min(r["bf16_head_spearman"] for r in rows))
        if not args.skip_loop:
            summary["bf16_head_speedup"] = round(sum(r["loop_s"] for r in rows) / sum(r["bf16_head_s"] for r in rows), 1)
    result = {"device": device_description(), "processor": platform.processor() or platform.machine(),
              "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "model": args.model,
              "n_layers": lm.adapter.n_layers, "n_neurons": lm.adapter.n_neurons, "dtype": str(lm.dtype),
              "steps": args.steps, "loop_batch": args.loop_batch, "rows": rows, "summary": summary,
              "amortised": amortised}

    head = f"{'lang':<5}{'prompt':<42}{'loop s':>9}{'batched s':>11}{'speedup':>9}{'spearman':>10}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['language']:<5}{r['prompt'][:40]:<42}{r.get('loop_s', float('nan')):>9.1f}{r['batched_s']:>11.2f}"
              f"{r.get('speedup', float('nan')):>9.1f}{r.get('spearman', float('nan')):>10.4f}")
    print(f"summary: {summary}" + (f"; amortised: {amortised}" if amortised else ""))
    out = Path(args.out) if args.out else RESULTS / f"attribution_{lm.device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
