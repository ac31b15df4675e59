"""Tables, intervals and claim verdicts from synthetic tidy results (no model, no runner)."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest

from memla_utils import report
from memla_utils.report import BootstrapConfig, CellStat

FAST = BootstrapConfig(n_boot=400, seed=0)


def synthetic(methods: dict[str, float], *, n_records: int = 8, langs=("en", "zh", "fr", "ru"), noise=0.05,
              seed=0, cross_drop=0.2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for method, level in methods.items():
        for r in range(n_records):
            for el in ("en", "zh"):
                for vl in langs:
                    for metric in report.SCORE_METRICS:
                        v = level - (cross_drop if el != vl else 0) + rng.normal(0, noise)
                        rows.append({"record": f"r{r}", "method": method, "edit_lang": el, "eval_lang": vl,
                                     "metric": metric, "value": float(np.clip(v, 0, 1)), "n": 1})
    return pd.DataFrame(rows)


def claim(claims: pd.DataFrame, key: str, contains: str = "") -> pd.Series:
    sub = claims[(claims["key"] == key) & claims["claim"].str.contains(contains, regex=False)]
    assert len(sub) >= 1, f"no claim {key!r} {contains!r}"
    return sub.iloc[0]


# ------------------------------------------------------------------------------------------ statistics
def test_bootstrap_interval_contains_mean_is_deterministic_and_narrows_with_n():
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.5, 0.2, 10), rng.normal(0.5, 0.2, 400)
    a, b = report.bootstrap_ci(small, FAST), report.bootstrap_ci(small, FAST)
    assert a == b
    assert a.ci_low < a.mean < a.ci_high and a.n == 10
    big = report.bootstrap_ci(large, FAST)
    assert (big.ci_high - big.ci_low) < (a.ci_high - a.ci_low) / 3


def test_bootstrap_degenerate_inputs():
    one = report.bootstrap_ci([0.7], FAST)
    assert one.mean == pytest.approx(0.7) and one.n == 1 and math.isnan(one.ci_low)
    none = report.bootstrap_ci([None, float("nan")], FAST)
    assert none.n == 0 and math.isnan(none.mean)


def test_cell_stats_counts_records_not_rows_and_averages_per_record_first():
    df = pd.DataFrame([
        {"record": "a", "method": "m", "metric": "ES", "value": 1.0},
        {"record": "a", "method": "m", "metric": "ES", "value": 1.0},
        {"record": "a", "method": "m", "metric": "ES", "value": 1.0},
        {"record": "b", "method": "m", "metric": "ES", "value": 0.0},
    ])
    st = report.cell_stats(df, ["method", "metric"], FAST)
    assert st.loc[0, "n"] == 2
    assert st.loc[0, "mean"] == pytest.approx(0.5)  # per-record means 1.0 and 0.0, not 3 of 4 rows


def test_tidy_drops_unavailable_values_and_names_missing_columns():
    df = pd.DataFrame([{"record": "a", "method": "m", "edit_lang": "en", "eval_lang": "zh", "metric": "QS",
                        "value": None}, {"record": "a", "method": "m", "edit_lang": "en", "eval_lang": "en",
                                         "metric": "ES", "value": 1.0}])
    t = report.tidy(df)
    assert len(t) == 1 and t.iloc[0]["scope"] == "same"
    with pytest.raises(ValueError, match="record"):
        report.tidy(df.drop(columns=["record"]))


def test_paired_difference_picks_strongest_competitor():
    df = pd.DataFrame([{"method": m, "record": f"r{i}", "value": v + 0.01 * i}
                       for i in range(6) for m, v in (("memla", 0.9), ("ft", 0.5), ("rome", 0.7))])
    stat, best = report.paired_difference(df, "memla", ["ft", "rome"], FAST)
    assert best == "rome" and stat.mean == pytest.approx(0.2)


# ------------------------------------------------------------------------------------------ tables
def test_main_stats_separates_same_and_cross_language():
    df = synthetic({"memla": 0.8}, noise=0.0, cross_drop=0.3)
    st = report.main_stats(df, boot=FAST)
    same = st[(st["scope"] == "same") & (st["metric"] == "ES")]["mean"]
    cross = st[(st["scope"] == "cross") & (st["metric"] == "ES")]["mean"]
    assert np.allclose(same, 0.8) and np.allclose(cross, 0.5)
    assert set(st["edit_lang"]) == {"en", "zh"} and (st["n"] == 8).all()


def test_wide_table_shows_requested_methods_without_results_as_missing_and_orders_columns():
    df = synthetic({"memla": 0.8, "ft": 0.5}, n_records=3)
    st = report.main_stats(df, boot=FAST)
    table = report.wide(st, ["method"], ["edit_lang", "scope", "metric"], rows=["memla", "ft", "mend"])
    assert list(table.index) == ["memla", "ft", "mend"]
    assert (table.loc["mend"] == report.MISSING).all()
    assert table.loc["memla"].iloc[0].endswith("n=3")
    assert list(table.columns[:4]) == [("en", "same", m) for m in report.SCORE_METRICS]


def test_format_cell_percent_and_missing():
    assert report.format_cell(0.5, 0.4, 0.6, 7, "ES") == "50.0 [40.0, 60.0] n=7"
    assert report.format_cell(12.345, math.nan, math.nan, 1, "perplexity") == "12.3 n=1"
    assert report.format_cell(1.5, 1.25, 1.75, 2, "perplexity") == "1.500 [1.250, 1.750] n=2"
    assert report.format_cell(math.nan, math.nan, math.nan, 0, "ES") == report.MISSING


def test_latex_and_markdown_escape_special_characters():
    frame = pd.DataFrame({"a_b": ["x & y", "50%"]}, index=pd.Index(["m|1", "m2"], name="method"))
    tex = report.to_latex(frame, caption="c_d")
    assert r"x \& y" in tex and r"50\%" in tex and r"a\_b" in tex and r"\caption{c\_d}" in tex
    md = report.to_markdown(frame)
    assert r"m\|1" in md and md.splitlines()[1] == "|---|---|"


# ------------------------------------------------------------------------------------------ claims
def test_claims_supported_when_memla_clearly_better():
    df = synthetic({"memla": 0.85, "memla-lse": 0.7, "memla-lie": 0.65, "memla-random": 0.5, "ft": 0.5,
                    "rome": 0.6}, n_records=24)
    claims = report.claims_table(df, boot=FAST)
    for key in ("cross_lingual", "zh_ru", "lse_lie", "multihop"):
        row = claim(claims, key)
        assert row["verdict"] == "supported", (key, row["verdict"])
    assert claim(claims, "cross_lingual")["effect"] == pytest.approx(0.25, abs=0.03)  # vs rome, the best
    assert claim(claims, "neurons_matter", "Editing the located")["verdict"] == "supported"
    assert "+7.14%" in claim(claims, "cross_lingual")["paper"]


def test_located_vs_random_claim_names_the_method_the_run_lacks():
    claims = report.claims_table(synthetic({"memla": 0.6, "ft": 0.5}, n_records=24), boot=FAST)
    verdict = claim(claims, "neurons_matter", "Editing the located")["verdict"]
    assert verdict.startswith("not measured (") and "this run has no memla-random" in verdict
    assert "small preset" in verdict and "no memla " not in verdict


def test_claims_not_supported_when_memla_worse_and_inconclusive_when_tied_at_small_n():
    worse = report.claims_table(synthetic({"memla": 0.5, "ft": 0.8}, n_records=24), boot=FAST)
    assert claim(worse, "cross_lingual")["verdict"] == "not supported"
    tied = report.claims_table(synthetic({"memla": 0.6, "ft": 0.6}, n_records=3, noise=0.2, seed=3), boot=FAST,
                               config=report.ClaimConfig(min_n=2))
    assert claim(tied, "cross_lingual")["verdict"].startswith("inconclusive at n=3")


def test_no_verdict_below_the_minimum_n():
    """A clear effect on 8 records is still 'inconclusive (n too small)': verdicts need >= 20 records."""
    small = report.claims_table(synthetic({"memla": 0.9, "ft": 0.3}), boot=FAST)
    assert claim(small, "cross_lingual")["verdict"] == "inconclusive (n too small: n=8 < 20)"
    assert report.MIN_N_FOR_VERDICT == 20 == report.ClaimConfig().min_n
    assert report.verdict(CellStat(0.5, 0.4, 0.6, 19)).startswith("inconclusive (n too small")
    assert report.verdict(CellStat(0.5, 0.4, 0.6, 20)) == "supported"
    with pytest.raises(ValueError, match="min_n"):
        report.ClaimConfig(min_n=0)


def test_missing_inputs_give_not_measured_with_reason_never_an_error():
    claims = report.claims_table(None, None, None, None, boot=FAST)
    assert len(claims) >= 7
    assert claims["verdict"].str.startswith("not measured (").all()
    no_ru = report.claims_table(synthetic({"memla": 0.8, "ft": 0.5}, langs=("en", "zh")), boot=FAST)
    assert "ru" in claim(no_ru, "zh_ru")["verdict"]
    only_memla = report.claims_table(synthetic({"memla": 0.8}), boot=FAST)
    assert claim(only_memla, "cross_lingual")["verdict"] == "not measured (no baseline results)"


def test_general_claim_uses_tolerance_band():
    rows = []
    for r in range(24):
        for lang in ("en", "zh"):
            rows.append({"setting": "single", "method": "memla", "n_edits": 1, "record": f"r{r}", "eval_lang": lang,
                         "metric": "perplexity", "before": 20.0, "after": 20.0 * (1 + 0.002 * (r % 3)), "n": 5})
    g = pd.DataFrame(rows)
    g["delta"] = g["after"] - g["before"]
    ok = claim(report.claims_table(None, g, boot=FAST), "general")
    assert ok["verdict"] == "supported" and 0 <= ok["effect"] < 0.01
    g2 = g.assign(after=g["before"] * 1.5)
    g2["delta"] = g2["after"] - g2["before"]
    assert claim(report.claims_table(None, g2, boot=FAST), "general")["verdict"] == "not supported"


def test_verdict_rules():
    assert report.verdict(CellStat(0.1, 0.05, 0.15, 29)) == "supported"
    assert report.verdict(CellStat(-0.1, -0.15, -0.05, 29)) == "not supported"
    assert report.verdict(CellStat(0.0, -0.1, 0.1, 29)) == "inconclusive at n=29"
    assert report.verdict(CellStat(0.01, -0.02, 0.03, 29), tolerance=0.05) == "supported"
    assert report.verdict(CellStat(0.2, 0.1, 0.3, 29), tolerance=0.05) == "not supported"


def test_suppression_effect_reads_both_layouts():
    long = pd.DataFrame([{"record": f"r{i}", "language": "en", "intervention": "suppress", "neurons": n,
                          "value": v + 0.01 * i} for i in range(6) for n, v in (("knowledge", -0.5),
                                                                               ("random", -0.05))])
    stat, _ = report.suppression_effect(long, FAST)
    assert stat.mean == pytest.approx(0.45) and stat.n == 6
    wide = pd.DataFrame({"knowledge": [-0.4, -0.5, -0.6], "random": [0.0, -0.1, 0.0]})
    stat2, _ = report.suppression_effect(wide, FAST)
    assert stat2.mean == pytest.approx(0.4667, abs=1e-3)
    stat3, why = report.suppression_effect(pd.DataFrame({"x": [1]}), FAST)
    assert stat3 is None and "not understood" in why
    assert claim(report.claims_table(None, suppression=long, boot=FAST, config=report.ClaimConfig(min_n=6)),
                 "suppression")["verdict"] == "supported"
    assert "n too small" in claim(report.claims_table(None, suppression=long, boot=FAST), "suppression")["verdict"]
    bad = claim(report.claims_table(None, suppression=pd.DataFrame({"x": [1]}), boot=FAST), "suppression")
    assert bad["verdict"].startswith("not measured (suppression table columns")


# ------------------------------------------------------------------------------------------ end to end
def _write_run(run_dir, df):
    (run_dir / "results").mkdir(parents=True)
    df.to_json(run_dir / "results" / "results.jsonl", orient="records", lines=True)


def test_write_report_writes_every_artifact_with_manifest_and_is_bit_reproducible(tmp_path):
    df = synthetic({"memla": 0.8, "ft": 0.5}, n_records=3, langs=("en", "zh"))
    _write_run(tmp_path / "run", df)
    methods = ["memla", "memla-lse", "ft"]
    out = report.write_report(tmp_path / "run", tmp_path / "fig", methods=methods, boot=FAST)
    names = {p.name for p in out.files}
    for stem in ("main_comparison", "ablation", "multihop", "per_language_ES", "general_single", "claims"):
        assert {f"{stem}.csv", f"{stem}.md", f"{stem}.tex"} <= names
    assert {"heatmap_memla.png", "heatmap_memla.pdf", "heatmap_ft.png", "ablation_bars.png", "methods_bars.pdf"} <= names
    assert "sequential_editing" in out.missing  # no general-ability rows in this run
    assert "missing" in (tmp_path / "fig" / "tables" / "main_comparison.md").read_text()  # memla-lse row
    manifest = json.loads((tmp_path / "fig" / "MANIFEST.json").read_text())
    png = tmp_path / "fig" / "heatmap_memla.png"
    assert manifest["artifacts"]["heatmap_memla.png"]["sha256"] == hashlib.sha256(png.read_bytes()).hexdigest()
    assert manifest["inputs"]["results_rows"] == len(df)
    first = {p.name: p.read_bytes() for p in out.files if p.name != "MANIFEST.json"}
    again = report.write_report(tmp_path / "run", tmp_path / "fig", methods=methods, boot=FAST)
    assert {p.name: p.read_bytes() for p in again.files if p.name != "MANIFEST.json"} == first


def test_write_report_with_empty_run_dir_does_not_fail(tmp_path):
    out = report.write_report(tmp_path / "nothing", tmp_path / "fig", methods=["memla", "ft"], boot=FAST)
    assert (tmp_path / "fig" / "tables" / "claims.md").exists()
    assert out.claims["verdict"].str.startswith("not measured").all()
    assert (out.tables["main_comparison"].loc["memla"] == report.MISSING).all() or \
        out.tables["main_comparison"].shape[1] == 0


def test_mask_files_give_neuron_statistics_the_exists_claim_and_a_figure(tmp_path):
    import torch

    from memla_utils.masks import NeuronMasks, RecordMasks, save_record_masks

    run = tmp_path / "run"
    for i, n_ind in enumerate((2, 0, 3)):
        ind = NeuronMasks.from_sets({1: range(n_ind)}, 16)
        spec = NeuronMasks.from_sets({0: [5, 6], 2: [7]}, 16)
        save_record_masks(RecordMasks(f"r{i}", "en", specific=spec, independent=ind), run / "masks")
    (run / "masks" / "other.safetensors").write_bytes(b"not a masks file")  # ignored, not fatal
    stats = report.load_mask_stats(run)
    assert set(stats["record"]) == {"r0", "r1", "r2"}
    assert stats.groupby("record")["independent"].sum().to_dict() == {"r0": 2, "r1": 0, "r2": 3}
    frame = report.neuron_layer_frame(stats)
    assert set(frame["language"]) == {"independent", "specific (en)"}
    claims = report.claims_table(None, masks=stats, boot=FAST)
    row = claim(claims, "neurons_exist")
    assert row["effect"] == pytest.approx(2 / 3) and row["n"] == 3
    out = report.write_report(run, tmp_path / "fig", methods=["memla"], boot=FAST)
    assert "neurons_per_layer" not in out.missing and (tmp_path / "fig" / "neurons_per_layer.pdf").exists()
    del torch


def test_general_stats_report_relative_perplexity_and_accuracy_points():
    g = pd.DataFrame([{"setting": "single", "method": "memla", "n_edits": 1, "record": f"r{i}", "eval_lang": "en",
                       "metric": m, "before": b, "after": a, "delta": a - b, "n": 4}
                      for i in range(3) for m, b, a in (("perplexity", 20.0, 22.0), ("fact_accuracy", 0.5, 0.25))])
    st = report.general_stats(g, FAST).set_index("metric")
    assert st.loc["perplexity_rel", "mean"] == pytest.approx(0.1) and st.loc["perplexity_rel", "after"] == 22.0
    assert st.loc["fact_accuracy", "mean"] == pytest.approx(-0.25) and st.loc["fact_accuracy", "n"] == 3


def test_suppression_reads_notebook_02_sanity_effects_layout():
    rows = []
    for i in range(5):
        for lang in ("en", "zh"):
            for factor, kn, rnd in ((0.0, -0.6, -0.05), (2.0, 0.8, 0.0)):
                rows.append({"example_id": f"r{i}", "language": lang, "factor": factor, "neurons": "knowledge",
                             "n_neurons": 4, "effect": kn + 0.01 * i})
                rows.append({"example_id": f"r{i}", "language": lang, "factor": factor, "neurons": "random",
                             "n_neurons": 4, "effect": rnd})
    stat, how = report.suppression_effect(pd.DataFrame(rows), FAST)
    assert stat.n == 5 and stat.mean == pytest.approx(0.55 - 0.02)  # enhancement rows (factor 2) are ignored
    assert "suppressed" in how


def test_tables_name_the_manifest_they_come_from_and_the_digest_follows_the_inputs(tmp_path):
    """claims.md (every report table) ends with ``source: <manifest> (provenance sha256 ...)``, recomputable from
    the manifest; the same rows in another order name the same digest, a changed value another one."""
    from memla_utils.manifest import provenance_digest, read_manifest

    df = synthetic({"memla": 0.8, "ft": 0.5}, n_records=3, langs=("en", "zh"))
    _write_run(tmp_path / "a", df)
    report.write_report(tmp_path / "a", tmp_path / "fa", methods=["memla", "ft"], boot=FAST)
    manifest = read_manifest(tmp_path / "fa")
    digest = provenance_digest(manifest)
    assert manifest["provenance"]["sha256"] == digest
    line = f"source: {tmp_path / 'fa' / 'MANIFEST.json'} (provenance sha256 {digest[:16]})"
    for name in ("claims", "main_comparison", "general_single"):
        assert (tmp_path / "fa" / "tables" / f"{name}.md").read_text().splitlines()[-1] == line
        assert (tmp_path / "fa" / "tables" / f"{name}.tex").read_text().splitlines()[-1] == f"% {line}"
    assert "source:" not in (tmp_path / "fa" / "tables" / "claims.csv").read_text()

    _write_run(tmp_path / "b", df.sample(frac=1.0, random_state=1))  # same rows, shuffled
    report.write_report(tmp_path / "b", tmp_path / "fb", methods=["memla", "ft"], boot=FAST)
    changed = df.copy()
    changed.loc[0, "value"] = 1.0 - changed.loc[0, "value"]
    _write_run(tmp_path / "c", changed)
    report.write_report(tmp_path / "c", tmp_path / "fc", methods=["memla", "ft"], boot=FAST)
    strip = {k: v for k, v in manifest["parameters"].items() if k != "run_dir"}
    b, c = read_manifest(tmp_path / "fb"), read_manifest(tmp_path / "fc")
    assert b["inputs"]["results_digest"] == manifest["inputs"]["results_digest"] != c["inputs"]["results_digest"]
    assert {k: v for k, v in b["parameters"].items() if k != "run_dir"} == strip


def test_cross_lingual_claim_is_reported_against_the_strongest_baseline_and_against_their_mean():
    df = synthetic({"memla": 0.85, "ft": 0.5, "rome": 0.6}, n_records=24)
    claims = report.claims_table(df, boot=FAST)
    strongest, mean = claim(claims, "cross_lingual"), claim(claims, "cross_lingual_mean")
    assert strongest["effect"] == pytest.approx(0.25, abs=0.03) and "rome" in strongest["measured as"]
    assert mean["effect"] == pytest.approx(0.30, abs=0.03) and "mean of 2 baselines" in mean["measured as"]
    assert mean["verdict"] == "supported" and "+7.14%" in mean["paper"]
    # records that one baseline lacks are left out of the mean (it would not be a mean over the same baselines)
    partial = df[~((df["method"] == "ft") & (df["record"] == "r0"))]
    assert claim(report.claims_table(partial, boot=FAST), "cross_lingual_mean")["n"] == 23
    only_memla = report.claims_table(synthetic({"memla": 0.8}, n_records=24), boot=FAST)
    assert claim(only_memla, "cross_lingual_mean")["verdict"] == "not measured (no baseline results)"


def test_claims_breakdown_splits_by_relation_and_by_language_group():
    good = synthetic({"memla": 0.9, "ft": 0.5}, n_records=24)
    bad = synthetic({"memla": 0.3, "ft": 0.6}, n_records=24, seed=1)
    bad["record"] = "b" + bad["record"]
    df = pd.concat([good, bad], ignore_index=True)
    relations = {f"r{i}": "capital" for i in range(24)} | {f"br{i}": "currency" for i in range(24)}
    groups = {"en": "known well", "zh": "known well", "fr": "known poorly", "ru": "known poorly"}
    t = report.claims_breakdown(df, relations=relations, language_groups=groups, boot=FAST)
    rel = t[(t["by"] == "relation") & (t["comparison"] == "strongest baseline")].set_index("group")
    assert rel.loc["capital", "verdict"] == "supported" and rel.loc["currency", "verdict"] == "not supported"
    assert rel.loc["capital", "n"] == 24 and rel.loc["capital", "effect"] == pytest.approx(0.4, abs=0.03)
    lang = t[t["by"] == "language group"]
    assert set(lang["group"]) == {"known well", "known poorly"} and set(lang["n"]) == {48}
    assert set(t["comparison"]) == {"strongest baseline", "mean of baselines"}
    small = report.claims_breakdown(df[df["record"].isin(["r0", "r1"])], relations=relations, boot=FAST)
    assert small["verdict"].str.startswith("inconclusive (n too small").all()
    assert report.claims_breakdown(None, relations=relations).empty
    shown = report.format_breakdown(t)
    assert shown["measured effect ×100 [95% CI]"].iloc[0].startswith("+")


def test_probe_language_groups_split_at_the_median():
    probe = pd.DataFrame({"language": ["en", "zh", "fr", "th"], "known": [1.0, 0.75, 0.5, 0.25]})
    assert report.probe_language_groups(probe) == {"en": "known well", "zh": "known well",
                                                   "fr": "known poorly", "th": "known poorly"}
    assert report.probe_language_groups(None) is None
    assert report.probe_language_groups(pd.DataFrame({"language": ["en"]})) is None


def test_write_report_writes_the_breakdown_with_the_probe_groups(tmp_path):
    df = synthetic({"memla": 0.8, "ft": 0.5}, n_records=3, langs=("en", "zh"))
    _write_run(tmp_path / "run", df)
    (tmp_path / "fig" / "tables").mkdir(parents=True)
    pd.DataFrame({"language": ["en", "zh"], "known": [1.0, 0.5], "n": [12, 12]}).to_csv(
        tmp_path / "fig" / "tables" / "knowledge_probe.csv", index=False)
    out = report.write_report(tmp_path / "run", tmp_path / "fig", methods=["memla", "ft"], boot=FAST)
    table = pd.read_csv(tmp_path / "fig" / "tables" / "claims_breakdown.csv")
    assert set(table["by"]) == {"language group"} and set(table["group"]) == {"known well", "known poorly"}
    assert "claims_breakdown (relations)" in out.missing  # no run configuration: records unknown


# ------------------------------------------------------------------------------------------ baseline ranking
def test_baseline_ranking_orders_baselines_by_the_cross_lingual_score_and_leaves_memla_out():
    df = synthetic({"memla": 0.9, "memla-lse": 0.95, "ft": 0.5, "rome": 0.75, "ike": 0.6, "unedited": 0.99},
                   n_records=24)
    ranking = report.baseline_ranking(df, boot=FAST)
    assert list(ranking.columns) == list(report.RANKING_COLUMNS)
    assert list(ranking["method"]) == ["rome", "ike", "ft"] and list(ranking["rank"]) == [1, 2, 3]
    # cross-lingual only: the level minus synthetic()'s cross-language drop of 0.2, averaged over ES, PS, NS
    assert ranking.set_index("method").loc["rome", "mean"] == pytest.approx(0.55, abs=0.02)
    assert (ranking["n"] == 24).all() and (ranking["ci_low"] <= ranking["mean"]).all()
    assert report.strongest_baselines(ranking, 2) == ["rome", "ike"]
    # the claims table's "memla − strongest baseline" names the ranking's first method
    assert "(rome)" in claim(report.claims_table(df, boot=FAST), "cross_lingual")["measured as"]


def test_baseline_ranking_compares_on_the_records_every_baseline_has():
    df = synthetic({"ft": 0.5, "rome": 0.6}, n_records=24)
    hard = [f"r{i}" for i in range(12)]
    easy = synthetic({"ft": 1.0}, n_records=12, noise=0.0)  # ft gets perfect scores on r0-r11 ...
    df = pd.concat([df[~((df["method"] == "ft") & df["record"].isin(hard))], easy])
    df = df[~((df["method"] == "rome") & df["record"].isin(hard))]  # ... which rome lacks (e.g. no subject)
    over_all = df[df["method"] == "ft"]
    assert report.scores(over_all).query("scope == 'cross'")["value"].mean() > 0.5  # ft wins on all its records
    ranking = report.baseline_ranking(df, boot=FAST)
    assert (ranking["n"] == 12).all() and list(ranking["method"]) == ["rome", "ft"]  # rome wins on the shared ones


def test_baseline_ranking_without_baselines_and_strongest_baselines_errors():
    assert report.baseline_ranking(None).empty and report.baseline_ranking(synthetic({"memla": 0.8})).empty
    ranking = report.baseline_ranking(synthetic({"ft": 0.5, "rome": 0.6}), boot=FAST)
    with pytest.raises(ValueError, match="asked for 3 baselines, the ranking has 2"):
        report.strongest_baselines(ranking, 3)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        report.strongest_baselines(ranking, 0)


def test_failed_edits_lists_error_units_of_the_given_methods_only():
    rows = pd.DataFrame([
        {"record": "a", "method": "lie", "edit_lang": "en", "eval_lang": None, "metric": "error", "value": None,
         "n": 0, "kind": "error", "message": "no language-independent neuron"},
        {"record": "b", "method": "rome", "edit_lang": "zh", "eval_lang": None, "metric": "error", "value": None,
         "n": 0, "kind": "error", "message": "boom"},
        {"record": "a", "method": "lie", "edit_lang": "en", "eval_lang": "en", "metric": "ES", "value": 1.0,
         "n": 1, "kind": "metric", "message": None},
    ])
    every = report.failed_edits(rows)
    assert list(every.columns) == ["record", "method", "edit_lang", "message"]
    assert every["method"].tolist() == ["lie", "rome"]
    only = report.failed_edits(rows, ["rome", "ft"])
    assert only.to_dict("records") == [{"record": "b", "method": "rome", "edit_lang": "zh", "message": "boom"}]
    none = report.failed_edits(rows, ["ft"])
    assert none.empty and list(none.columns) == ["record", "method", "edit_lang", "message"]
