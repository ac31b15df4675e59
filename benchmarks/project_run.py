"""How long a multi-session run still needs, and what another preset would take, from the run's own unit times.

``bench_roofline`` projects a preset from one record timed on a quiet machine. A run in progress knows better: every
finished unit wrote its edit time (``seconds``) and its evaluation time (``eval_seconds``) into its results rows,
measured where the run runs (two one-thread workers side by side on this machine, so the contention between them is
included). This script reads those rows and projects, per (method, edit language):

* the **remaining units of the run** (planned minus finished), at the run's mean edit and evaluation times;
* **another preset** (``--presets mzsre,bizsre``): its units (records x edit languages x methods, plus the unedited
  model once per (record, edit language), as notebooks 04-05 run them), the edit time of the same method and edit
  language, and the evaluation time per scored prompt times that preset's prompts per unit (its records' prompts:
  edit prompt, paraphrases, neighbourhood prompts and multi-hop questions in every evaluation language);
  attribution from ``benchmarks/results/roofline_cpu.json`` (one (record, language) on one core) for its records x
  attributed languages.

A (method, edit language) the run has not reached yet takes its edit time, in this order: the method's mean over the
run's other edit language; else the mean edit time of the same method in **another committed run of the same model**
(``results/*/``), at the run's budget first (e.g. MEMIT at the paper budget from ``results/bizsre``), then at another
budget, same edit language first; else ``roofline_cpu.json``'s edit time, measured alone on one core. A time taken at
another budget than the run's (``cpu-small`` vs ``paper``: fewer optimisation steps, a smaller covariance corpus) or
from the roofline (alone on the machine) is a **lower bound**: such rows are listed in the summary's
``lower_bound``.
Its evaluation time is the run's mean evaluation time per prompt (IKE: times its measured factor). The ``source``
column says which. Wall hours = worker-seconds / ``--workers``. Not projected: notebook 06 (general ability: its
units are not in the results rows) and notebooks 00-03 of the other presets beyond attribution.

    python -m benchmarks.project_run --preset medium --presets mzsre,bizsre

prints the tables and writes ``benchmarks/results/projection_<preset>.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from memla_utils.config import PRESETS, RunConfig, recorded_budget
from memla_utils.results_files import finished_units, load_results

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
#: The reference row every (record, edit language) of notebook 04 evaluates once (no edit).
UNEDITED = "unedited"
#: A part's length on this machine (issue 16: parts of at most 2.5 hours).
PART_HOURS = 2.5


def prompts_per_unit(records: Sequence[Any], languages: Sequence[str]) -> float:
    """Mean number of prompts one evaluation scores per record: over ``languages``, the edit prompt, paraphrases,
    neighbourhood prompts and multi-hop questions the record has in that language."""
    if not records:
        raise ValueError("prompts_per_unit: no records")
    total = 0
    for r in records:
        for lang in languages:
            total += (1 if lang in r.edit else 0) + len(r.paraphrase_prompts.get(lang, [])) \
                + len(r.neighborhood_prompts.get(lang, [])) + len(r.multi_hop_questions.get(lang, []))
    return total / len(records)


def unit_times(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (method, edit_lang): ``units`` (finished units with a time), mean ``edit_s`` and mean ``eval_s``
    (worker seconds), from the ``seconds`` / ``eval_seconds`` rows the runner writes per unit."""
    t = rows[rows["metric"].isin(["seconds", "eval_seconds"])]
    if t.empty:
        return pd.DataFrame(columns=["method", "edit_lang", "units", "edit_s", "eval_s"])
    wide = t.pivot_table(index=["method", "edit_lang", "record"], columns="metric", values="value", aggfunc="mean")
    out = wide.groupby(level=["method", "edit_lang"]).agg(
        units=("eval_seconds", "size"), edit_s=("seconds", "mean"), eval_s=("eval_seconds", "mean"))
    return out.reset_index()


def planned_units(cfg: RunConfig) -> list[tuple[str, str, int]]:
    """``(method, edit_lang, units)`` of notebooks 04-05 for ``cfg``: one unit per record for each method and for
    the unedited model."""
    methods = [*cfg.methods, UNEDITED]
    return [(m, lang, cfg.n_records) for m in methods for lang in cfg.edit_languages]


@dataclass(frozen=True)
class Rates:
    """What a unit costs, measured on the run in progress (worker seconds), and the fallbacks for methods it has not
    reached. ``eval_per_prompt``: the run's mean evaluation seconds per scored prompt (all its timed units);
    ``other``: :func:`unit_times` of other committed runs at the run's budget and model, with a ``run`` column
    (:func:`other_run_times`); ``roofline``: ``roofline_cpu.json``'s per-unit times (alone, one core) at
    ``roofline_budget``, the run being at ``budget``; ``ike_eval_factor``: IKE's evaluation over the default
    evaluation (``eval_speed_ike_cpu.json``: its demonstrations are scored with every prompt)."""

    times: pd.DataFrame
    run_prompts: float
    eval_per_prompt: float
    roofline: Mapping[str, Mapping[str, Any]]
    ike_eval_factor: float
    other: pd.DataFrame = dataclasses.field(default_factory=lambda: no_other_runs())
    budget: str = "paper"
    roofline_budget: str = "cpu-small"


def no_other_runs() -> pd.DataFrame:
    """The empty table of :func:`other_run_times`."""
    return pd.DataFrame(columns=["run", "budget", "method", "edit_lang", "units", "edit_s", "eval_s"])


def other_run_times(results_root: Path, exclude: Path, model: str) -> pd.DataFrame:
    """:func:`unit_times` of every run folder under ``results_root`` (its ``run_identity.json`` read) other than
    ``exclude`` whose parameters name ``model``, with columns ``run`` (folder name) and ``budget``
    (:func:`memla_utils.config.recorded_budget`)."""
    frames = []
    for ident in sorted(results_root.glob("*/run_identity.json")):
        run_dir = ident.parent
        if run_dir.resolve() == exclude.resolve():
            continue
        params = json.loads(ident.read_text(encoding="utf-8")).get("parameters", {})
        if str(params.get("model")) != model:
            continue
        t = unit_times(load_results(run_dir))
        if len(t):
            frames.append(t.assign(run=run_dir.name, budget=recorded_budget(params)))
    if not frames:
        return no_other_runs()
    return pd.concat(frames, ignore_index=True)


#: A (method, edit language) with fewer finished units than this in the run is projected from other runs at the
#: same budget when they have it (a mean of one or two edits says little: ROME's edit time varies 3x by record).
MIN_UNITS = 5


def _weighted(rows: pd.DataFrame) -> float:
    """Unit-weighted mean edit time of ``rows`` (rows without an edit time left out; NaN when none has one)."""
    rows = rows[rows["edit_s"].notna()]
    if rows.empty:
        return math.nan
    units = rows["units"].astype(float)
    return float((rows["edit_s"] * units).sum() / units.sum())


def _per_unit(method: str, lang: str, rates: Rates, prompts: float,
              budget: str | None = None) -> tuple[float, float, str]:
    """(edit s, eval s, source) of one unit of ``method`` edited in ``lang`` at ``prompts`` prompts per unit, for a
    run at ``budget`` (default: the run's). Edit time, in order: the run's own units (same edit language, else the
    method's other one) when the run is at that budget and has :data:`MIN_UNITS` of them; other committed runs at
    that budget; the run's own few units; other runs at another budget; the roofline. Evaluation: the run's own
    per-unit time scaled by prompts when the run has the method, else its time per prompt (IKE: x its factor)."""
    budget = budget or rates.budget
    times = rates.times
    scale = prompts / rates.run_prompts
    own_same = times[(times["method"] == method) & (times["edit_lang"] == lang)]
    own_any = times[times["method"] == method]
    enough = [t for t in (own_same, own_any) if len(t) and int(t["units"].sum()) >= MIN_UNITS]
    own = enough[0] if enough else (own_same if len(own_same) else own_any)
    own_same = own_same if own is own_same else own_same.iloc[0:0]
    own_ok = budget == rates.budget and bool(enough)
    ev = rates.eval_per_prompt * prompts
    if method == "ike":
        ev *= rates.ike_eval_factor
    if len(own):
        ev = float((own["eval_s"] * own["units"]).sum() / own["units"].sum()) * scale
    if method in (UNEDITED, "ike"):  # no edit: only the evaluation counts
        if len(own):
            label = f"run: {int(own['units'].sum())} units (evaluation)"
        elif method == UNEDITED:
            label = "run's evaluation per prompt (no edit)"
        else:
            label = (f"run's evaluation per prompt x {rates.ike_eval_factor:.2f} (eval_speed_ike_cpu.json: "
                     "demonstrations in every prompt)")
        return 0.0, ev, label
    if own_ok:
        edit = _weighted(own)
        return edit, ev, (f"run: {int(own['units'].sum())} units"
                          + ("" if len(own_same) else f" edited in {','.join(sorted(set(own['edit_lang'])))}"))
    other = rates.other[rates.other["method"] == method]
    at = other[other["budget"] == budget]
    tiers: list[tuple[pd.DataFrame, str]] = [(at, "")]
    if budget == rates.budget and len(own):
        tiers.append((own.assign(run="this run"), ", few"))
    for b in sorted(set(other["budget"]) - {budget}):
        bound = "LOWER BOUND" if (b, budget) == ("cpu-small", "paper") else "UPPER BOUND" \
            if (b, budget) == ("paper", "cpu-small") else "OTHER BUDGET"
        tiers.append((other[other["budget"] == b], f"; {bound}: budget {b}, projected run's {budget}"))
    for tier, note in tiers:
        if not len(tier):
            continue
        same = tier[tier["edit_lang"] == lang]
        use = same if len(same) else tier
        runs = ",".join(sorted(set(use["run"])))
        return _weighted(use), ev, (f"edit: {runs} ({int(use['units'].sum())} units"
                                    + ("" if len(same) else ", other edit language") + note
                                    + ") + run's evaluation per prompt")
    edit = rates.roofline.get(f"edit {method}", {}).get("wall_s", math.nan)
    if math.isnan(edit):
        return edit, ev, "no measurement (in no committed run and not in roofline_cpu.json)"
    note = ("lower bound" if rates.roofline_budget == budget
            else f"LOWER BOUND: roofline budget {rates.roofline_budget}, projected run's {budget}")
    return edit, ev, f"roofline_cpu.json edit, alone on one core ({note}) + run's evaluation per prompt"


def project_preset(cfg: RunConfig, rates: Rates, prompts: float,
                   finished: Mapping[tuple[str, str], int] | None = None, budget: str | None = None) -> pd.DataFrame:
    """Rows ``method, edit_lang, units, edit_s, eval_s, worker_h, source`` of ``cfg``'s notebooks 04-05, minus
    ``finished`` units per (method, edit_lang) when projecting the run itself; ``budget``: the projected run's
    (default: the run in progress's)."""
    rows = []
    for method, lang, n in planned_units(cfg):
        left = n - (finished or {}).get((method, lang), 0)
        edit, ev, source = _per_unit(method, lang, rates, prompts, budget)
        rows.append({"method": method, "edit_lang": lang, "units": left, "edit_s": edit, "eval_s": ev,
                     "worker_h": left * (edit + ev) / 3600, "source": source})
    return pd.DataFrame(rows)


def attribution_row(cfg: RunConfig, roofline: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Notebook 02's attribution for ``cfg``: records x attributed languages at roofline_cpu.json's time."""
    langs = list(dict.fromkeys([*cfg.edit_languages, *cfg.attribution_languages()]))
    per = roofline.get("attribution", {}).get("wall_s", math.nan)
    n = cfg.n_records * len(langs)
    return {"method": "attribution", "edit_lang": ",".join(langs), "units": n, "edit_s": per, "eval_s": 0.0,
            "worker_h": n * per / 3600,
            "source": "roofline_cpu.json (one (record, language), alone on one core: a lower bound)"}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="medium", help="the run in progress (its run_dir is read)")
    ap.add_argument("--presets", default="mzsre,bizsre", help="other presets projected from the run's times")
    ap.add_argument("--workers", type=int, default=2, help="units run side by side (the processes executor)")
    ap.add_argument("--roofline", default=str(RESULTS / "roofline_cpu.json"))
    ap.add_argument("--ike", default=str(RESULTS / "eval_speed_ike_cpu.json"))
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/projection_<preset>.json)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.workers < 1:
        ap.error(f"--workers must be >= 1, got {args.workers}")

    cfg = RunConfig.from_params(preset=args.preset)
    run_dir = ROOT / cfg.run_dir
    rows = load_results(run_dir)
    times = unit_times(rows)
    if times.empty:
        raise SystemExit(f"{run_dir}: no finished unit with a time yet: nothing to project from")
    records, _ = cfg.run_records()
    run_prompts = prompts_per_unit(records, cfg.languages)
    mean_eval = float((times["eval_s"] * times["units"]).sum() / times["units"].sum())
    roofline_json = json.loads(Path(args.roofline).read_text(encoding="utf-8"))
    roofline = roofline_json["per_unit"]
    ike = json.loads(Path(args.ike).read_text(encoding="utf-8"))
    ike_eval = float(ike["sides"]["current"]["per_edit_eval_s"]["median"])
    ident = run_dir / "run_identity.json"
    params = json.loads(ident.read_text(encoding="utf-8")).get("parameters", {}) if ident.exists() else {}
    budget = recorded_budget(params)
    rates = Rates(times=times, run_prompts=run_prompts, eval_per_prompt=mean_eval / run_prompts, roofline=roofline,
                  ike_eval_factor=ike_eval / roofline["evaluation"]["wall_s"],
                  other=other_run_times(ROOT / "results", run_dir, str(params.get("model", cfg.model))), budget=budget,
                  roofline_budget=str(roofline_json.get("budget", "cpu-small")))
    finished: dict[tuple[str, str], int] = {}
    for _record, lang, method in finished_units(run_dir):
        finished[(method, lang)] = finished.get((method, lang), 0) + 1

    tables = {args.preset: project_preset(cfg, rates, run_prompts, finished)}
    prompts = {args.preset: run_prompts}
    for name in [p for p in args.presets.split(",") if p]:
        other = RunConfig.from_params(preset=name)
        other_records, _ = other.run_records()
        prompts[name] = prompts_per_unit(other_records, other.languages)
        t = project_preset(other, rates, prompts[name],
                           budget=recorded_budget({"budget": PRESETS.get(name, {}).get("budget"),
                                                   "device": other.device}))
        tables[name] = pd.concat([pd.DataFrame([attribution_row(other, roofline)]), t], ignore_index=True)

    summary = {}
    for name, t in tables.items():
        worker_h = float(t["worker_h"].sum())  # rows without any measurement (NaN) are listed in "missing"
        missing = [f"{m} {lang}" for m, lang, h in zip(t["method"], t["edit_lang"], t["worker_h"]) if pd.isna(h)]
        lower = [f"{m} {lang}" for m, lang, src, h in zip(t["method"], t["edit_lang"], t["source"], t["worker_h"])
                 if "lower bound" in src.lower() and not pd.isna(h)]
        upper = [f"{m} {lang}" for m, lang, src in zip(t["method"], t["edit_lang"], t["source"])
                 if "UPPER BOUND" in src or "OTHER BUDGET" in src]
        summary[name] = {"worker_h": worker_h, "wall_h": worker_h / args.workers, "missing": missing,
                         "lower_bound": lower, "upper_bound_or_other_budget": upper,
                         "parts_of_2_5_h": math.ceil(worker_h / args.workers / PART_HOURS),
                         "prompts_per_unit": prompts[name], "units": int(t["units"].sum())}
        print(f"\n## {name}: {'remaining' if name == args.preset else 'projected'} "
              f"{summary[name]['wall_h']:.1f} h on {args.workers} workers "
              f"({summary[name]['parts_of_2_5_h']} part{'' if summary[name]['parts_of_2_5_h'] == 1 else 's'} of {PART_HOURS} h), {prompts[name]:.1f} prompts per unit"
              + (f"; not measured, left out: {', '.join(missing)}" if missing else "")
              + (f"; lower bounds (smaller budget or measured alone): {', '.join(lower)}" if lower else "")
              + (f"; upper bounds or another budget: {', '.join(upper)}" if upper else "") + "\n")
        print(t.to_markdown(index=False, floatfmt=".1f"))
    note = "notebook 06 (general ability) is not projected; other presets: notebooks 04-05 and attribution only"
    result = {"benchmark": "project_run", "run": args.preset, "run_dir": str(cfg.run_dir),
              "workers": args.workers, "eval_seconds_per_prompt": rates.eval_per_prompt,
              "budget": rates.budget, "roofline_budget": rates.roofline_budget,
              "other_runs": sorted(set(rates.other["run"])), "ike_eval_factor": rates.ike_eval_factor,
              "finished_units": sum(finished.values()), "summary": summary, "note": note,
              "tables": {k: v.astype(object).where(v.notna(), None).to_dict(orient="records") for k, v in tables.items()}}
    out = Path(args.out) if args.out else RESULTS / f"projection_{args.preset}.json"
    out.write_text(json.dumps(result, indent=1, sort_keys=True, default=float, allow_nan=False) + "\n", encoding="utf-8")
    log.info("wrote %s", out)
    return result


if __name__ == "__main__":
    main()
