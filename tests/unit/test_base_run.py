"""A report over a run and a base run on the same records (notebook 07's ``base_run_dir``, the medium-paper preset)."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from memla_utils import report
from memla_utils.batch import PRESET_NOTEBOOKS, plan_runs
from memla_utils.cache import PROJECT_ROOT
from memla_utils.config import NOTEBOOK_PARAMETERS, PRESETS, RunConfig
from memla_utils.presets import MEDIUM_BASELINES
from memla_utils.report.base_run import BaseRunError, check_base_run, load_base_run, merge_results
from memla_utils.run_identity import IDENTITY_FILE, records_hash

MEDIUM = PROJECT_ROOT / "results" / "medium"
MEDIUM_FIGURES = PROJECT_ROOT / "figures" / "medium"


def _rows(method: str, value: float, records=("r1", "r2")) -> pd.DataFrame:
    return pd.DataFrame([{"record": r, "method": method, "edit_lang": "en", "eval_lang": "en", "metric": "ES",
                          "value": value, "n": 1, "kind": "score"} for r in records])


def test_merge_keeps_this_run_s_methods_and_borrows_only_the_others():
    own = pd.concat([_rows("ft", 1.0), _rows("unedited", 0.0)])
    base = pd.concat([_rows("ft", 0.5), _rows("memla", 0.9), _rows("unedited", 0.25)])
    merged, borrowed = merge_results(own, base, ["ft", "ike"])
    assert borrowed == ["memla"]
    by = merged.groupby("method")["value"].agg(list).to_dict()
    assert by == {"ft": [1.0, 1.0], "unedited": [0.0, 0.0], "memla": [0.9, 0.9]}
    # a method this run declares but has not reached yet is not filled in from the base run
    merged, borrowed = merge_results(own, pd.concat([base, _rows("ike", 0.7)]), ["ft", "ike"])
    assert "ike" not in borrowed and "ike" not in set(merged["method"])


def test_merge_borrows_the_unedited_rows_only_when_this_run_has_none():
    base = pd.concat([_rows("memla", 0.9), _rows("unedited", 0.25)])
    merged, borrowed = merge_results(_rows("ft", 1.0), base, ["ft"])
    assert borrowed == ["memla", "unedited"] and set(merged["method"]) == {"ft", "memla", "unedited"}
    merged, borrowed = merge_results(pd.DataFrame(), base, ["ft"])
    assert borrowed == ["memla", "unedited"] and len(merged) == 4


def _small_identity(cfg: RunConfig, **params) -> dict:
    parameters = {"model": cfg.model, "dtype": cfg.dtype, "seed": cfg.seed, "languages": ",".join(cfg.languages),
                  "edit_languages": ",".join(cfg.edit_languages), "n_records": cfg.n_records,
                  "record_selection": cfg.record_selection, "figures_dir": "figures", **params}
    return {"code": {}, "lock": None, "model": "default", "records": records_hash(cfg.run_records()[0]),
            "parameters": parameters}


def test_check_base_run_names_every_difference_and_accepts_the_same_experiment():
    cfg = RunConfig.from_params(n_records=2)
    check_base_run(cfg, _small_identity(cfg))  # same records, model, seed, languages: no error
    with pytest.raises(BaseRunError, match=r"seed: 1 \(base run\) vs 0.*records \(content hash\)"):
        check_base_run(cfg, _small_identity(cfg, seed=1) | {"records": "0123456789abcdef"})
    with pytest.raises(BaseRunError, match=r"languages: .*edit_languages"):
        check_base_run(cfg, _small_identity(cfg, languages="en,zh", edit_languages="en"))
    with pytest.raises(BaseRunError, match="n_records"):
        check_base_run(cfg, _small_identity(cfg, n_records=3))


def test_load_base_run_refuses_a_folder_without_a_run_and_a_report_without_a_configuration(tmp_path):
    cfg = RunConfig.from_params(n_records=2)
    with pytest.raises(BaseRunError, match=f"{IDENTITY_FILE} is missing"):
        load_base_run(tmp_path, cfg)
    (tmp_path / IDENTITY_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(BaseRunError, match="unreadable"):
        load_base_run(tmp_path, cfg)
    with pytest.raises(BaseRunError, match="needs the run configuration"):
        report.write_report(tmp_path, tmp_path / "fig", base_run_dir=tmp_path)


def test_the_medium_paper_preset_is_the_medium_run_s_experiment_with_its_baselines_at_the_paper_budget():
    medium, paper = PRESETS["medium"], PRESETS["medium-paper"]
    for key in ("languages", "edit_languages", "n_records", "record_selection"):
        assert paper[key] == medium[key], key
    assert paper["methods"] == [m for m in medium["methods"] if m in MEDIUM_BASELINES]
    assert paper["budget"] == "paper" and paper["base_run_dir"] == medium["run_dir"]
    assert PRESET_NOTEBOOKS["medium-paper"] == ("00", "01", "05", "07")


@pytest.mark.skipif(not (MEDIUM / IDENTITY_FILE).is_file() or not (MEDIUM_FIGURES / "tables").is_dir(),
                    reason="the medium run's committed results are not in this checkout")
def test_a_report_over_the_medium_run_s_baselines_and_its_base_run_equals_the_medium_run_s_report(tmp_path):
    """Splitting the medium run into a run of its baselines (+ unedited) and borrowing the rest from the base run
    gives the committed claims and main table: the merge adds nothing and loses nothing."""
    own_dir, figures = tmp_path / "run", tmp_path / "figures"
    own_dir.mkdir()
    own_methods = {*MEDIUM_BASELINES, "unedited"}
    for shard in sorted(MEDIUM.glob("results-shard*.jsonl")):
        lines = [line for line in shard.read_text(encoding="utf-8").splitlines()
                 if line.strip() and json.loads(line).get("method") in own_methods]
        (own_dir / shard.name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    params = dict(plan_runs("medium-paper")[0].parameters, run_dir=str(own_dir), figures_dir=str(figures))
    cfg = RunConfig.from_params(**{k: v for k, v in params.items() if k in NOTEBOOK_PARAMETERS})
    # this run's identity, as the batch driver records it, but with the medium run's budget ("auto")
    identity = json.loads((MEDIUM / IDENTITY_FILE).read_text(encoding="utf-8"))
    (own_dir / IDENTITY_FILE).write_text(json.dumps(identity), encoding="utf-8")
    out = report.write_report(cfg.run_dir, cfg.figures_dir, methods=cfg.methods, sources=cfg.edit_languages,
                              cfg=cfg, boot=report.BootstrapConfig(n_boot=2000, seed=cfg.seed),
                              base_run_dir=cfg.extra["base_run_dir"])
    for name in ("claims", "main_comparison", "claims_breakdown", "general_single"):
        pd.testing.assert_frame_equal(pd.read_csv(figures / "tables" / f"{name}.csv"),
                                      pd.read_csv(MEDIUM_FIGURES / "tables" / f"{name}.csv"),
                                      check_exact=False, rtol=0, atol=1e-9, obj=name)
    sources = pd.read_csv(figures / "tables" / "run_sources.csv").set_index("method")
    assert set(sources.loc[["memla", "memla-lse", "memla-lie"], "run"]) == {"results/medium"}
    assert set(sources.loc[list(MEDIUM_BASELINES), "run"]) == {str(own_dir)}
    # the identity copied from the medium run set no budget: on a CPU that is cpu-small, said so for baselines only
    assert set(sources.loc[list(MEDIUM_BASELINES), "budget"]) == {"auto -> cpu-small"}
    assert set(sources.loc[["memla", "memla-lse", "memla-lie"], "budget"]) == {"not a baseline (memla4mke's settings)"}
    manifest = json.loads((figures / "MANIFEST.json").read_text(encoding="utf-8"))
    assert manifest["inputs"]["base_run"]["borrowed_methods"] == ["memla", "memla-lie", "memla-lse"]
    assert out.tables["run_sources"].shape[0] == len(MEDIUM_BASELINES) + 3
    agreement = manifest["inputs"]["base_run"]["unedited_agreement"]  # both halves hold the same unedited rows
    assert agreement["compared"] > 1000 and agreement["differing"] == 0 and agreement["max_abs_diff"] == 0.0
    assert (figures / "tables" / "run_consistency.csv").is_file()


def test_a_base_run_on_other_records_is_refused_before_anything_is_written(tmp_path):
    if not (MEDIUM / IDENTITY_FILE).is_file():
        pytest.skip("the medium run's committed results are not in this checkout")
    base = tmp_path / "base"
    base.mkdir()
    shutil.copy2(MEDIUM / IDENTITY_FILE, base / IDENTITY_FILE)
    cfg = RunConfig.from_params(preset="medium-paper", n_records=50)
    with pytest.raises(BaseRunError, match=r"n_records: 100 \(base run\) vs 50 \(this run\).*records"):
        report.write_report(tmp_path / "run", tmp_path / "figures", methods=cfg.methods, cfg=cfg, base_run_dir=base)
    assert not (tmp_path / "figures").exists()


def test_budget_label_resolves_auto_per_device_and_names_methods_the_budget_does_not_touch():
    from memla_utils.report.base_run import budget_label

    cpu_auto = {"parameters": {"device": "cpu"}}
    assert budget_label(cpu_auto, "rome") == "auto -> cpu-small"
    assert budget_label({"parameters": {"device": "cuda", "budget": "auto"}}, "ike") == "auto -> paper"
    assert budget_label({"parameters": {"device": "cpu", "budget": "paper"}}, "ft") == "paper"
    assert budget_label(cpu_auto, "memla-lie").startswith("not a baseline")
    assert budget_label({}, "ft") == "unknown"



def test_unedited_agreement_compares_the_rows_both_runs_hold_and_counts_the_differing_ones():
    from memla_utils.report.base_run import unedited_agreement

    def rows(values, method="unedited"):
        return pd.DataFrame([{"record": f"r{i}", "method": method, "edit_lang": "en", "eval_lang": "zh",
                              "metric": "ES", "value": v} for i, v in enumerate(values)])

    same = unedited_agreement(rows([0.1, 0.5, float("nan")]), rows([0.1, 0.5, 0.3, 0.9]))
    assert same == {"compared": 2, "differing": 0, "max_abs_diff": 0.0, "metrics_differing": []}  # NaN row skipped
    off = unedited_agreement(rows([0.1, 0.6]), rows([0.1, 0.5]))
    assert off["differing"] == 1 and off["max_abs_diff"] == pytest.approx(0.1) and off["metrics_differing"] == ["ES"]
    assert unedited_agreement(rows([0.1], method="ft"), rows([0.1]))["compared"] == 0  # no unedited rows here
