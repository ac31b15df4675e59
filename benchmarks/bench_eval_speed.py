"""Evaluation of one edit in all evaluation languages: the reference commit against the working tree, side by side.

The speed issue's target: evaluating one edit in all 12 MKEB languages >= 2x faster than the reference commit
(:data:`benchmarks.reference.REFERENCE_COMMIT`), with identical metrics, and the unedited values computed once
per record. Each worker (one process per side, alternately reference / current, ``--repeats`` times; see
:mod:`benchmarks.reference`) loads the model and, for every record:

1. computes the unedited evaluation in every language through ``PreEditCache`` (the runner's pre-edit values:
   ``get`` per language in the reference, ``get_many`` for the whole record where the code has it) and times it;
2. runs one runner unit (``memla_utils.runner.run_unit``: edit with ``--method`` in ``--edit-lang``, evaluate in
   every language, revert) exactly as ``make paper`` does, and reads the unit's ``eval_seconds`` row: the
   per-edit evaluation time in all languages.

The driver compares the sides: per-edit and pre-edit seconds (median over repeats of the mean over records),
their ratio, and whether every metric (value and n) of every record and language, unedited and edited, and every
unedited greedy continuation, is identical to the reference's.

Usage (from the repository root; ``nice`` on a shared machine):
    python -m benchmarks.bench_eval_speed --records 3 --repeats 2 --threads 1
-> prints a table and writes benchmarks/results/eval_speed_<device>.json (or --out)
"""
from __future__ import annotations

import argparse
import logging
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

log = logging.getLogger("bench_eval_speed")
ALL_LANGUAGES = "en,zh,fr,de,it,es,pt,pl,ru,ja,ko,th"


# ------------------------------------------------------------------------------------------------ worker
def _metric_table(metrics: dict[str, Any]) -> dict[str, list[Any]]:
    return {k: [v.value, v.n] for k, v in sorted(metrics.items())}


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One side's measurements (runs inside a subprocess with that side's ``memla_utils`` first on the path)."""
    import memla_utils.evaluate as ev
    from benchmarks.common import load_lm
    from benchmarks.reference import worker_package_root
    from memla_utils.editors import make_editor
    from memla_utils.runner import RunnerConfig, Unit, run_unit

    lm = load_lm(args)
    langs = args.languages.split(",")
    records = bench_records(args.records, langs)
    config = RunnerConfig(progress=False, cache_preedit=False, seed=args.seed)
    editor = make_editor(args.method, seed=args.seed)
    if args.train_records:  # IKE's demonstrations, MEND's training: the records after the evaluated ones
        editor = editor.fit(lm, bench_records(args.records + args.train_records, langs)[args.records:])
    ev.evaluate_language(lm, records[0], langs[0])  # warm-up (exists in both versions)
    out: list[dict[str, Any]] = []
    for rec in records:
        preedit = ev.PreEditCache(None)
        start = time.perf_counter()
        if hasattr(preedit, "get_many"):
            refs = preedit.get_many(lm, rec, langs, config.eval_config)
        else:
            refs = {lang: preedit.get(lm, rec, lang, config.eval_config) for lang in langs}
        pre_s = time.perf_counter() - start
        rows = run_unit(lm, Unit(rec.example_id, args.edit_lang, args.method), rec, langs, editor=editor,
                        preedit=preedit, config=config)
        errors = [r for r in rows if r.get("kind") == "error"]
        if errors:
            raise RuntimeError(f"{args.method} failed on {rec.example_id}: {errors[0].get('message')}")
        stats = {r["metric"]: r["value"] for r in rows if r.get("kind") == "edit"}
        edited: dict[str, dict[str, list[Any]]] = {}
        for r in rows:
            if r.get("kind") == "metric":
                edited.setdefault(r["eval_lang"], {})[r["metric"]] = [r["value"], r["n"]]
        out.append({"record": rec.example_id, "preedit_seconds": pre_s, "edit_eval_seconds": stats["eval_seconds"],
                    "edit_seconds": stats["seconds"],
                    "unedited": {lang: _metric_table(refs[lang].metrics) for lang in langs},
                    "unedited_continuations": {lang: refs[lang].continuations for lang in langs},
                    "edited": {lang: dict(sorted(edited[lang].items())) for lang in langs}})
        log.info("%s: pre-edit %.1f s, per-edit evaluation %.1f s", rec.example_id, pre_s, stats["eval_seconds"])
    return {"package_root": worker_package_root(), "records": out,
            "evaluate_record": hasattr(ev, "evaluate_record")}


# ------------------------------------------------------------------------------------------------ driver
def _side_seconds(runs: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    """Per repeat: mean over records of ``key``; summary: the median over repeats."""
    per_repeat = [statistics.mean(r[key] for r in run["records"]) for run in runs]
    return {"per_repeat": [round(x, 3) for x in per_repeat], "median": round(statistics.median(per_repeat), 3),
            "per_record": [{r["record"]: round(r[key], 3) for r in run["records"]} for run in runs]}


def _differences(ref: dict[str, Any], cur: dict[str, Any], where: str) -> tuple[int, list[str]]:
    """(values compared, descriptions of the differing ones) between two workers' outputs."""
    n, diffs = 0, []
    for a, b in zip(ref["records"], cur["records"], strict=True):
        for part in ("unedited", "edited", "unedited_continuations"):
            for lang, table in a[part].items():
                other = b[part].get(lang, {})
                for k in sorted(set(table) | set(other)):
                    n += 1
                    if table.get(k) != other.get(k):
                        diffs.append(f"{where} {a['record']} {part} {lang} {k}: {table.get(k)} vs {other.get(k)}")
    return n, diffs


def _max_abs_difference(diffs: Sequence[str], ref: dict[str, Any], runs: Sequence[dict[str, Any]]) -> float:
    """The largest |reference - other| over the metric values that differ (0.0 when none does)."""
    worst = 0.0
    for run in runs:
        for a, b in zip(ref["records"], run["records"], strict=True):
            for part in ("unedited", "edited"):
                for lang, table in a[part].items():
                    for k, (value, _) in table.items():
                        other = b[part].get(lang, {}).get(k, [None])[0]
                        if isinstance(value, (int, float)) and isinstance(other, (int, float)):
                            worst = max(worst, abs(value - other))
    return worst if diffs else 0.0


def _paper_means(run: dict[str, Any], part: str) -> dict[str, float | None]:
    """Mean of each paper metric over records and languages (for the table; the check compares every value)."""
    out: dict[str, float | None] = {}
    for m in ("ES", "PS", "NS", "QS"):
        vals = [t[m][0] for r in run["records"] for t in r[part].values() if t.get(m, [None])[0] is not None]
        out[m] = round(statistics.mean(vals), 4) if vals else None
    return out


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Seconds per side, ratios and the identity check of every metric against the first reference run."""
    ref0 = runs["reference"][0]
    compared, diffs = 0, []
    for side in ("reference", "current"):
        for i, run in enumerate(runs[side]):
            if side == "reference" and i == 0:
                continue
            n, d = _differences(ref0, run, f"{side}[{i}]")
            compared += n
            diffs += d
    sides = {side: {"per_edit_eval_s": _side_seconds(runs[side], "edit_eval_seconds"),
                    "preedit_s": _side_seconds(runs[side], "preedit_seconds"),
                    "edit_s": _side_seconds(runs[side], "edit_seconds"),
                    "paper_means_unedited": _paper_means(runs[side][0], "unedited"),
                    "paper_means_edited": _paper_means(runs[side][0], "edited")} for side in runs}
    ratio = {k: round(sides["reference"][k]["median"] / sides["current"][k]["median"], 3)
             for k in ("per_edit_eval_s", "preedit_s")}
    others = [run for side in ("reference", "current") for run in runs[side]]
    return {"sides": sides, "speedup": ratio, "metrics_identical": not diffs, "values_compared": compared,
            "differences": diffs[:50], "n_differences": len(diffs),
            "max_abs_difference": _max_abs_difference(diffs, ref0, others)}


def print_table(result: dict[str, Any]) -> None:
    s = result["sides"]
    print(f"{'':34}{'reference':>12}{'current':>12}{'ratio':>8}")
    for key, label in (("per_edit_eval_s", f"per-edit evaluation, {result['n_languages']} languages (s)"),
                       ("preedit_s", "pre-edit values per record (s)")):
        print(f"{label:34}{s['reference'][key]['median']:>12.2f}{s['current'][key]['median']:>12.2f}"
              f"{result['speedup'][key]:>7.2f}x")
    for part in ("unedited", "edited"):
        ref, cur = s["reference"][f"paper_means_{part}"], s["current"][f"paper_means_{part}"]
        print(f"{'mean ES/PS/NS/QS ' + part:34}{'/'.join(str(ref[m]) for m in ref):>24}  vs  "
              f"{'/'.join(str(cur[m]) for m in cur)}")
    print(f"metrics identical: {result['metrics_identical']} ({result['values_compared']} values compared, "
          f"{result['n_differences']} differ, by at most {result['max_abs_difference']:.3g})")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(ap)
    ap.add_argument("--records", type=int, default=3)
    ap.add_argument("--languages", default=ALL_LANGUAGES)
    ap.add_argument("--method", default="ft", help="the edit evaluated (any runner method; ft: ROME's FT baseline)")
    ap.add_argument("--edit-lang", default="en")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--train-records", type=int, default=0,
                    help="records after the evaluated ones passed to the editor's fit (ike: its demonstrations)")
    ap.add_argument("--reference", default=None,
                    help="the commit to compare against (default: benchmarks.reference.REFERENCE_COMMIT)")
    add_worker_args(ap)
    args = ap.parse_args(argv)
    setup_logging()
    if run_as_worker(args, worker):
        return
    from benchmarks.reference import REFERENCE_COMMIT, interleave, provenance

    passed = ["--records", str(args.records), "--languages", args.languages, "--method", args.method,
              "--edit-lang", args.edit_lang, "--init", args.init, "--shape", args.shape, "--model", args.model,
              "--device", args.device, "--dtype", args.dtype, "--seed", str(args.seed), "--threads", str(args.threads),
              "--train-records", str(args.train_records)]
    reference = args.reference or REFERENCE_COMMIT
    start = time.perf_counter()
    runs = interleave(Path(__file__).resolve(), passed, repeats=args.repeats, reference=reference)
    result = {"benchmark": "eval_speed", **provenance(reference), "n_languages": len(args.languages.split(",")),
              "languages": args.languages.split(","), "records": [r["record"] for r in runs["reference"][0]["records"]],
              "method": args.method, "edit_lang": args.edit_lang, "repeats": args.repeats,
              "train_records": args.train_records,
              "command": "python -m benchmarks.bench_eval_speed " + " ".join(sys.argv[1:]),
              **summarize(runs), "wall_s": round(time.perf_counter() - start, 1),
              "environment": environment(args.device), "threads": args.threads, "model": args.model,
              "init": args.init}
    print_table(result)
    print(f"-> {write_json(result_path(args, 'eval_speed'), result)}")


if __name__ == "__main__":
    main()
