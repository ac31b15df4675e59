"""benchmarks.project_run: unit times read from a run's rows, fallbacks for methods it has not reached, the
remaining units of the run and another preset's units."""
from __future__ import annotations

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


def rates(times: pd.DataFrame) -> pr.Rates:
    return pr.Rates(times=times, run_prompts=10.0, eval_per_prompt=3.0, contention=1.5,
                    roofline={"edit rome": {"wall_s": 4.0}}, ike_eval_factor=6.0)


def test_unit_times_average_the_edit_and_evaluation_seconds_per_method_and_edit_language():
    t = pr.unit_times(timed_rows()).set_index(["method", "edit_lang"])
    assert t.loc[("memla", "en"), "units"] == 2
    assert t.loc[("memla", "en"), "edit_s"] == 20.0 and t.loc[("memla", "en"), "eval_s"] == 30.0
    assert t.loc[("memla-lie", "zh"), "edit_s"] == 60.0
    assert pr.unit_times(timed_rows().query("metric == 'ES'")).empty


def test_per_unit_prefers_the_run_then_the_other_edit_language_then_calibrated_fallbacks():
    r = rates(pr.unit_times(timed_rows()))
    assert pr._per_unit("memla", "en", r, prompts=20.0)[:2] == (20.0, 60.0)  # eval scaled by 20 / 10 prompts
    edit, ev, source = pr._per_unit("memla", "zh", r, prompts=10.0)
    assert (edit, ev) == (20.0, 30.0) and "edited in en" in source
    edit, ev, source = pr._per_unit("rome", "en", r, prompts=10.0)
    assert (edit, ev) == (6.0, 30.0) and "x 1.50" in source  # roofline 4 s x contention 1.5
    assert pr._per_unit("ike", "zh", r, prompts=10.0)[:2] == (0.0, 180.0)
    assert pr._per_unit("unedited", "en", r, prompts=10.0)[:2] == (0.0, 30.0)
    assert math.isnan(pr._per_unit("pmet", "en", r, prompts=10.0)[0])  # no measurement anywhere: NaN, not 0


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
