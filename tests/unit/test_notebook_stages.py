"""The package functions the notebooks call instead of holding logic: notebook 02's attribution settings, the
record-text filter of MzsRE / Bi-ZsRE runs, notebook 05's MEND note and notebook 06's
general-ability stage (settings, plan, records, rows file)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from memla_utils import general_run
from memla_utils.config import RunConfig
from memla_utils.masks import notebook_attribution_config, notebook_mask_config


def test_notebook_attribution_config_is_the_masks_attribution_and_names_bad_parameters():
    assert notebook_attribution_config(5, "zero", 0.2, "edit", "exact") == \
        notebook_mask_config("en,zh", 5, "zero", 0.2, "edit", "exact").attribution
    cfg = notebook_attribution_config(steps="7", threshold="0.4")  # papermill may pass strings
    assert (cfg.steps, cfg.threshold, cfg.use_paraphrases, cfg.method) == (7, 0.4, True, "memla4mke")
    with pytest.raises(ValueError, match="attribution_prompts"):
        notebook_attribution_config(attribution_prompts="Edit")
    with pytest.raises(ValueError, match="attribution_method"):
        notebook_attribution_config(attribution_method="ig")


def test_public_drops_record_text_only_for_runs_that_may_not_show_it():
    frame = pd.DataFrame([{"record": "r0", "prompt": "The capital of France is", "answer": "Paris", "n": 3}])
    assert list(RunConfig().public(frame).columns) == ["record", "prompt", "answer", "n"]
    hidden = RunConfig.from_params(preset="mzsre").public(frame)
    assert list(hidden.columns) == ["record", "n"]
    assert list(RunConfig.from_params(preset="mzsre").public(frame[["record", "n"]]).columns) == ["record", "n"]


def test_mend_training_note_is_none_without_mend():
    from memla_utils.baselines import mend_training_note

    assert mend_training_note(object(), ["ft", "rome"], {}, []) is None


def test_edit_overrides_combine_the_budget_and_the_masks_and_name_a_bad_budget():
    from memla_utils.baselines import baseline_overrides
    from memla_utils.editors.memla import mask_overrides

    cfg = RunConfig(languages=["en", "zh"])
    mask_cfg = notebook_mask_config("en,zh")
    got = general_run.edit_overrides(cfg, "auto", mask_cfg)
    want = {**baseline_overrides("cpu-small", ["en", "zh"]), **mask_overrides(mask_cfg)}
    assert got.keys() == want.keys() and got["ft"] == want["ft"] and got["memla"] == want["memla"]
    with pytest.raises(ValueError, match="budget"):
        general_run.edit_overrides(cfg, "huge", mask_cfg)


def test_run_general_study_reads_what_the_plan_needs_and_writes_the_rows(tmp_path, monkeypatch):
    cfg = RunConfig(languages=["en", "zh"], n_records=3, run_dir=tmp_path, methods=["memla", "ft"],
                    extra={"general_methods": "auto", "general_records": "auto", "sequential_steps": "auto"})
    asked: dict = {}

    def source_records(self, n=None):
        asked["n"] = n
        return [f"record{i}" for i in range(n)]

    def study(lm, records, methods, languages, edit_language, **kw):
        asked.update(records=records, methods=methods, languages=languages, edit_language=edit_language, **kw)
        return [{"setting": "single", "method": methods[0], "record": records[0]}], ["mend"]

    monkeypatch.setattr(RunConfig, "source_records", source_records)
    monkeypatch.setattr(general_run, "general_study", study)
    out = general_run.run_general_study(None, cfg, probe_records=4, overrides={"ft": {}}, masks=lambda r, l: None)
    # auto on a 3-record run: MEMLA only, 2 single edits, sequential checkpoints 1 and 3, then 4 probe records and
    # the training split after the edited ones
    assert out.plan.methods == ["memla"] and out.plan.n_single == 2 and out.plan.steps == (1, 3)
    assert asked["n"] == out.plan.records_needed(4) and len(asked["records"]) == asked["n"]
    assert asked["languages"] == ["en", "zh"] and asked["edit_language"] == "en"
    assert asked["config"].max_probe_records == 4 and asked["config"].seed == cfg.seed
    assert out.missing == ["mend"] and out.path == tmp_path / "general" / "general.jsonl"
    assert [json.loads(line) for line in out.path.read_text().splitlines()] == out.rows
    assert "1 rows" in str(out)


def test_a_general_run_without_rows_shows_empty_tables_and_says_there_is_no_curve(tmp_path):
    from memla_utils.general_plan import StudyPlan

    empty = general_run.GeneralRun([], ["mend"], StudyPlan(["memla"], 2, (1, 3)), tmp_path / "general.jsonl")
    assert empty.frame() is None and empty.single_edit_table().empty
    assert empty.sequential_figure().startswith("no sequential-editing results")
    singles = general_run.GeneralRun([{"setting": "single", "method": "memla"}], [], empty.plan, empty.path)
    assert len(singles.frame()) == 1
    assert singles.sequential_figure().startswith("no sequential-editing results")  # single edits only


def test_notebook_01_build_stage_says_why_there_is_no_mkeb_and_refuses_a_record_with_problems(tmp_path):
    from types import SimpleNamespace

    from memla_utils.mkeb.record import EditTarget, Record
    from memla_utils.mkeb.run_build import RunBuild, build_for_run

    other = build_for_run(RunConfig.from_params(preset="mzsre", figures_dir=str(tmp_path)))
    assert other.built is None and "dataset='mzsre'" in other.note
    assert other.summary() == other.counts() == other.examples() == other.check_quality() == other.note
    assert not list(tmp_path.rglob("*"))  # nothing saved for a run without an MKEB build
    only_en = Record(example_id="r0", relation_description="capital",
                     edit={"en": EditTarget("The capital of {} is", "France", "Rome", "Paris")})
    with pytest.raises(ValueError, match="problems in 1 MKEB records"):
        RunBuild(SimpleNamespace(records=[only_en]), "", tmp_path, tmp_path).check_quality()
