"""The README's headline tables regenerate from the committed medium-run results with this checkout's report code.

``make drift`` leaves ``figures/medium`` out (it regenerates the small preset only). This test does for the medium
run what ``make report PRESET=medium`` does (notebook 07's ``report.write_report``), into a temporary folder, and
compares the tables the README quotes with the committed ones. Skipped when the run's results are absent.
"""
from __future__ import annotations

import shutil

import pandas as pd
import pytest

from memla_utils import report
from memla_utils.batch import plan_runs
from memla_utils.cache import PROJECT_ROOT
from memla_utils.config import NOTEBOOK_PARAMETERS, RunConfig

RUN = PROJECT_ROOT / "results" / "medium"
FIGURES = PROJECT_ROOT / "figures" / "medium"
#: the tables the README's medium section quotes (claims block, breakdown, main comparison, general ability)
TABLES = ("claims", "claims_breakdown", "main_comparison", "ablation", "multihop", "general_single")

pytestmark = pytest.mark.skipif(not (RUN / "run_identity.json").is_file() or not (FIGURES / "tables").is_dir(),
                                reason="the medium run's committed results are not in this checkout")


def test_the_medium_run_s_committed_tables_regenerate_from_its_committed_results(tmp_path):
    params = dict(plan_runs("medium")[0].parameters, figures_dir=str(tmp_path))
    cfg = RunConfig.from_params(**{k: v for k, v in params.items() if k in NOTEBOOK_PARAMETERS})
    (tmp_path / "tables").mkdir()
    # the earlier notebooks' tables that notebook 07 reads: 02's suppression effects, 00's knowledge probe
    for stem in ("kn_sanity_effects", "knowledge_probe"):
        for path in (FIGURES / "tables").glob(f"{stem}.*"):
            shutil.copy2(path, tmp_path / "tables" / path.name)
    report.write_report(cfg.run_dir, cfg.figures_dir, methods=cfg.methods, sources=cfg.edit_languages, cfg=cfg,
                        boot=report.BootstrapConfig(n_boot=2000, seed=cfg.seed))  # notebook 07's default n_boot
    for name in TABLES:
        committed = pd.read_csv(FIGURES / "tables" / f"{name}.csv")
        regenerated = pd.read_csv(tmp_path / "tables" / f"{name}.csv")
        pd.testing.assert_frame_equal(regenerated, committed, check_exact=False, rtol=0, atol=1e-9,
                                      obj=f"figures/medium/tables/{name}.csv")
