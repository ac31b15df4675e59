"""benchmarks.project_run: unit times read from a run's rows, fallbacks for methods it has not reached, the
remaining units of the run and another preset's units."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks import project_run as pr  # noqa: E402
from memla_utils.config import RunConfig  # noqa: E402
from memla_utils.mkeb.record import EditTarget, Record  # noqa: E402


def timed_rows() -> pd.DataFrame:
    rows = []
    for method, lang, edit, ev in [("memla", "en", 10.0, 20.0), ("memla", "en", 30.0, 40.0),
                                   ("memla-lie", "zh", 60.0, 30.0)]:
        rec = f"r{len(rows)}"
        rows += [{"record": rec, "method": method, "edit_lang": lang, "metric": "seconds", "value": edit},
                 {"record": rec, "method": method, "edit_lang": lang, "metric": "eval_seconds", "value": ev},
                 {"record": rec, "method": method, "edit_lang": lang, "metric": "ES", "value": 1.0}]
    return pd.DataFrame(rows)


def rates(times: pd.DataFrame, other: pd.DataFrame | None = None) -> pr.Rates:
    extra = {} if other is None else {"other": other}
    return pr.Rates(times=times, run_prompts=10.0, eval_per_prompt=3.0, roofline={"edit rome": {"wall_s": 4.0}},
                    ike_eval_factor=6.0, budget="paper", roofline_budget="cpu-small", **extra)


def other_runs() -> pd.DataFrame:
    return pd.DataFrame([
        {"run": "bizsre", "budget": "paper", "method": "memit", "edit_lang": "zh", "units": 50, "edit_s": 14.0,
         "eval_s": 2.0},
        {"run": "mzsre", "budget": "paper", "method": "memit", "edit_lang": "en", "units": 50, "edit_s": 12.0,
         "eval_s": 6.0},
        {"run": "bizsre", "budget": "paper", "method": "memit", "edit_lang": "en", "units": 150, "edit_s": 8.0,
         "eval_s": 2.0},
        {"run": "medium", "budget": "cpu-small", "method": "memit", "edit_lang": "en", "units": 100, "edit_s": 1.0,
         "eval_s": 9.0},
        {"run": "medium", "budget": "cpu-small", "method": "pmet", "edit_lang": "en", "units": 100, "edit_s": 7.0,
         "eval_s": 9.0}])


def test_unit_times_average_the_edit_and_evaluation_seconds_per_method_and_edit_language():
    t = pr.unit_times(timed_rows()).set_index(["method", "edit_lang"])
    assert t.loc[("memla", "en"), "units"] == 2
    assert t.loc[("memla", "en"), "edit_s"] == 20.0 and t.loc[("memla", "en"), "eval_s"] == 30.0
    assert t.loc[("memla-lie", "zh"), "edit_s"] == 60.0
    assert pr.unit_times(timed_rows().query("metric == 'ES'")).empty


def test_per_unit_prefers_the_run_then_the_other_edit_language_then_the_fallbacks():
    r = rates(pr.unit_times(timed_rows()))
    assert pr._per_unit("memla", "en", r, prompts=20.0)[:2] == (20.0, 60.0)  # eval scaled by 20 / 10 prompts
    edit, ev, source = pr._per_unit("memla", "zh", r, prompts=10.0)
    assert (edit, ev) == (20.0, 30.0) and "other edit language" in source and "few" in source  # 2 < 5
    edit, ev, source = pr._per_unit("rome", "en", r, prompts=10.0)
    assert (edit, ev) == (4.0, 30.0) and "LOWER BOUND" in source and "cpu-small" in source  # roofline, other budget
    same_budget = pr.Rates(**{**r.__dict__, "roofline_budget": "paper"})
    source = pr._per_unit("rome", "en", same_budget, prompts=10.0)[2]
    assert "lower bound" in source and "LOWER BOUND" not in source  # alone on the machine: still a lower bound
    assert pr._per_unit("ike", "zh", r, prompts=10.0)[:2] == (0.0, 180.0)
    assert pr._per_unit("unedited", "en", r, prompts=10.0)[:2] == (0.0, 30.0)
    edit, _, source = pr._per_unit("pmet", "en", r, prompts=10.0)
    assert math.isnan(edit) and source.startswith("no measurement")  # measured nowhere: NaN, not 0


def test_project_preset_subtracts_finished_units_and_counts_the_unedited_model():
    cfg = RunConfig.from_params(n_records=5, edit_languages="en,zh", methods="memla,rome")
    r = rates(pr.unit_times(timed_rows()))
    t = pr.project_preset(cfg, r, prompts=10.0, finished={("memla", "en"): 2, ("unedited", "zh"): 5})
    units = {(m, lang): n for m, lang, n in zip(t["method"], t["edit_lang"], t["units"])}
    assert units == {("memla", "en"): 3, ("memla", "zh"): 5, ("rome", "en"): 5, ("rome", "zh"): 5,
                     ("unedited", "en"): 5, ("unedited", "zh"): 0}
    memla_en = t[(t["method"] == "memla") & (t["edit_lang"] == "en")].iloc[0]
    assert memla_en["worker_h"] == pytest.approx(3 * (20.0 + 30.0) / 3600)


def test_prompts_per_unit_counts_every_scored_prompt_in_the_evaluation_languages():
    rec = Record("r0", "capital", {"en": EditTarget("The capital of {} is", "France", "Tokyo", "Paris"),
                                   "fr": EditTarget("La capitale de {} est", "France", "Tokyo", "Paris")},
                 paraphrase_prompts={"en": ["a", "b"]}, neighborhood_prompts={"en": ["c"], "fr": ["d", "e"]},
                 neighborhood_answers={"en": ["x"], "fr": ["y", "z"]}, multi_hop_questions={"fr": ["q"]})
    assert pr.prompts_per_unit([rec], ["en", "fr"]) == (1 + 2 + 1) + (1 + 2 + 1)
    assert pr.prompts_per_unit([rec], ["en", "zh"]) == 4
    with pytest.raises(ValueError, match="no records"):
        pr.prompts_per_unit([], ["en"])


def test_per_unit_falls_back_to_other_runs_at_the_same_budget_before_other_budgets_and_the_roofline():
    r = rates(pr.unit_times(timed_rows()), other_runs())
    edit, ev, source = pr._per_unit("memit", "en", r, prompts=10.0)
    # same budget and edit language: the unit-weighted mean of mzsre and bizsre (50 x 12 + 150 x 8) / 200
    assert (edit, ev) == (9.0, 30.0) and "bizsre,mzsre" in source and "LOWER BOUND" not in source
    edit, _, source = pr._per_unit("memit", "zh", r, prompts=10.0)
    assert edit == 14.0 and "other edit language" not in source
    edit, _, source = pr._per_unit("memit", "pl", r, prompts=10.0)  # no run edited in pl: every paper-budget unit
    assert edit == pytest.approx((50 * 14 + 50 * 12 + 150 * 8) / 250) and "other edit language" in source
    edit, _, source = pr._per_unit("pmet", "en", r, prompts=10.0)  # only at cpu-small: used, flagged as a bound
    assert edit == 7.0 and "LOWER BOUND: budget cpu-small" in source
    assert pr._per_unit("rome", "en", r, prompts=10.0)[0] == 4.0  # nowhere else: the roofline
    assert pr._per_unit("memla", "en", r, prompts=10.0)[0] == 20.0  # the run's own time wins


def _write_run(root: Path, name: str, params: dict, rows: pd.DataFrame) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "run_identity.json").write_text(json.dumps({"parameters": params}), encoding="utf-8")
    with (run / "results-shard000of001.jsonl").open("w", encoding="utf-8") as fh:
        for rec, group in rows.groupby("record", sort=False):
            for row in group.to_dict(orient="records"):
                fh.write(json.dumps({**row, "eval_lang": row["edit_lang"], "n": 1, "kind": "edit",
                                     "attempt": "a"}) + "\n")
            first = group.iloc[0]
            fh.write(json.dumps({"record": rec, "method": first["method"], "edit_lang": first["edit_lang"],
                                 "kind": "done", "attempt": "a"}) + "\n")
    return run


def test_other_run_times_reads_every_committed_run_of_the_model_with_its_budget(tmp_path):
    here = _write_run(tmp_path, "now", {"model": "default", "budget": "paper"}, timed_rows())
    _write_run(tmp_path, "old", {"model": "default", "budget": None, "device": "cpu"}, timed_rows())
    _write_run(tmp_path, "paper", {"model": "default", "budget": "paper"}, timed_rows().head(3))
    _write_run(tmp_path, "other-model", {"model": "gpt2", "budget": "paper"}, timed_rows())
    t = pr.other_run_times(tmp_path, here, "default")
    assert set(t["run"]) == {"old", "paper"}
    assert set(t.loc[t["run"] == "old", "budget"]) == {"cpu-small"}  # no budget on a CPU: "auto" = cpu-small
    assert set(t.loc[t["run"] == "paper", "budget"]) == {"paper"}
    assert pr.other_run_times(tmp_path, here, "nothing").empty


def many_rows(method: str, lang: str, n: int, edit: float, ev: float) -> pd.DataFrame:
    rows = []
    for i in range(n):
        rows += [{"record": f"m{i}", "method": method, "edit_lang": lang, "metric": "seconds", "value": edit},
                 {"record": f"m{i}", "method": method, "edit_lang": lang, "metric": "eval_seconds", "value": ev}]
    return pd.DataFrame(rows)


def test_a_few_own_units_give_way_to_other_runs_at_the_same_budget_and_enough_of_them_win():
    few = pr.unit_times(many_rows("memit", "en", 2, 40.0, 5.0))
    r = rates(few, other_runs())
    edit, ev, source = pr._per_unit("memit", "en", r, prompts=10.0)
    assert edit == 9.0 and "bizsre,mzsre" in source and ev == 5.0  # its own evaluation time, other runs' edits
    enough = rates(pr.unit_times(many_rows("memit", "en", pr.MIN_UNITS, 40.0, 5.0)), other_runs())
    edit, _, source = pr._per_unit("memit", "en", enough, prompts=10.0)
    assert edit == 40.0 and source == f"run: {pr.MIN_UNITS} units"
    edit, _, source = pr._per_unit("memit", "zh", enough, prompts=10.0)
    assert edit == 40.0 and "edited in en" in source


def test_another_preset_is_projected_at_its_own_budget():
    r = rates(pr.unit_times(many_rows("memit", "en", 10, 40.0, 5.0)), other_runs())  # this run: paper
    edit, _, source = pr._per_unit("memit", "en", r, prompts=10.0, budget="cpu-small")
    assert edit == 1.0 and "medium" in source  # the cpu-small run's time, not this paper-budget run's
    edit, _, source = pr._per_unit("pmet", "en", r, prompts=10.0, budget="cpu-small")
    assert edit == 7.0 and "BOUND" not in source
    edit, _, source = pr._per_unit("ft", "en", rates(pr.unit_times(timed_rows()), pd.DataFrame([
        {"run": "p", "budget": "paper", "method": "ft", "edit_lang": "en", "units": 9, "edit_s": 3.0,
         "eval_s": 1.0}])), prompts=10.0, budget="cpu-small")
    assert edit == 3.0 and "UPPER BOUND" in source  # paper-budget steps for a cpu-small run: more than it needs


def test_a_few_units_in_one_edit_language_do_not_hide_many_in_the_other():
    t = pr.unit_times(pd.concat([many_rows("memit", "en", 2, 5.0, 1.0), many_rows("memit", "zh", 50, 40.0, 1.0)]))
    r = rates(t, other_runs())
    edit, _, source = pr._per_unit("memit", "en", r, prompts=10.0)
    assert edit == pytest.approx((2 * 5.0 + 50 * 40.0) / 52) and source.startswith("run: 52 units")
    assert pr._per_unit("memit", "zh", r, prompts=10.0)[0] == 40.0  # its own 50 units


def test_weighted_leaves_out_rows_without_an_edit_time():
    rows = pd.DataFrame({"units": [3, 5], "edit_s": [2.0, float("nan")]})
    assert pr._weighted(rows) == 2.0 and math.isnan(pr._weighted(rows.iloc[1:]))
