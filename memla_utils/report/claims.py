"""The paper's claims checked on a run: each a measured effect, its 95% interval, n and a verdict.

A claim whose inputs are absent reads "not measured (reason)", never an error.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import pandas as pd

from .names import baseline_methods, method_order
from .stats import BootstrapConfig, CellStat, bootstrap_ci, in_value_order, paired_difference, per_record, scores

#: What the paper reports for each claim (quoted beside the measured effect).
PAPER_FIGURES: dict[str, str] = {
    "cross_lingual": "+7.14% average over the baselines (cross-lingual; the paper does not say against which "
                     "aggregate: this row takes the strongest baseline, the next the mean over the baselines)",
    "cross_lingual_mean": "+7.14% average over the baselines (cross-lingual)",
    "zh_ru": "+13.95% for zh→ru",
    "lse_lie": "removing either editor lowers the scores (ablation)",
    "multihop": "MEMLA has the best multi-hop (QS) scores",
    "general": "general ability barely affected by editing",
    "neurons_exist": "language-independent neurons exist (shared by all languages)",
    "neurons_matter": "masking to the located neurons beats editing other neurons",
    "suppression": "not reported in the paper (the companion's check that located neurons carry the fact)",
}


#: No claim gets a verdict from fewer records than this (this companion's rule: a bootstrap interval over
#: fewer records is too unstable to support or refute anything); below it the verdict reads
#: "inconclusive (n too small: n=k < 20)".
MIN_N_FOR_VERDICT = 20


@dataclass(frozen=True)
class ClaimConfig:
    """Verdict rules. ``general_tolerance``: a relative change within ±5% counts as "barely affected"
    (the paper gives no number; 5% is this companion's choice, stated in the claims table). ``min_n``: the
    fewest records (edited facts) a verdict may rest on (:data:`MIN_N_FOR_VERDICT`)."""

    main_metrics: tuple[str, ...] = ("ES", "PS", "NS")
    general_tolerance: float = 0.05
    min_n: int = MIN_N_FOR_VERDICT

    def __post_init__(self) -> None:
        if self.min_n < 1:
            raise ValueError(f"ClaimConfig.min_n must be >= 1, got {self.min_n}")


def verdict(stat: CellStat, *, tolerance: float | None = None, min_n: int = MIN_N_FOR_VERDICT) -> str:
    """supported / not supported / inconclusive at this n, from the interval (two-sided 95%).

    Fewer than ``min_n`` records give "inconclusive (n too small: ...)" whatever the interval says.
    """
    if stat.n == 0 or math.isnan(stat.mean):
        return "not measured"
    if stat.n < min_n:
        return f"inconclusive (n too small: n={stat.n} < {min_n})"
    if math.isnan(stat.ci_low) or math.isnan(stat.ci_high):
        return f"inconclusive at n={stat.n}"
    if tolerance is None:
        if stat.ci_low > 0:
            return "supported"
        if stat.ci_high < 0:
            return "not supported"
        return f"inconclusive at n={stat.n}"
    if -tolerance <= stat.ci_low and stat.ci_high <= tolerance:
        return "supported"
    if stat.ci_low > tolerance or stat.ci_high < -tolerance:
        return "not supported"
    return f"inconclusive at n={stat.n}"


def _claim_row(key: str, claim: str, measure: str, stat: CellStat | None, note: str = "", *,
           reason: str | None = None, tolerance: float | None = None,
           min_n: int = MIN_N_FOR_VERDICT) -> dict[str, Any]:
    row: dict[str, Any] = {"claim": claim, "measured as": measure, "paper": PAPER_FIGURES.get(key, ""), "key": key}
    if reason is not None or stat is None:
        row.update(effect=math.nan, ci_low=math.nan, ci_high=math.nan, n=0,
                   verdict=f"not measured ({reason or 'no input'})", note=note)
        return row
    row.update(effect=stat.mean, ci_low=stat.ci_low, ci_high=stat.ci_high, n=stat.n,
               verdict=verdict(stat, tolerance=tolerance, min_n=min_n), note=note)
    if row["verdict"] == "not measured":
        row["verdict"] = "not measured (no shared records)"
    return row


def _score_per_record(t: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """One score per (method, record): mean over the chosen metrics of the record's cell means.

    Sorted by method and record, each mean summing its terms in order of value (:func:`in_value_order`), so the
    scores do not depend on the order of ``t``'s rows.
    """
    t = t[t["metric"].isin(metrics)]
    cell = in_value_order(t).groupby(["method", "record", "metric"], sort=True)["value"].mean().reset_index()
    return in_value_order(cell).groupby(["method", "record"], sort=True)["value"].mean().reset_index()


def _vs_baselines(t: pd.DataFrame, metrics: Sequence[str], boot: BootstrapConfig) -> tuple[CellStat | None, str]:
    methods = set(t["method"])
    if "memla" not in methods:
        return None, "no memla results"
    base = baseline_methods(method_order(methods))
    if not base:
        return None, "no baseline results"
    stat, best = paired_difference(_score_per_record(t, metrics), "memla", base, boot)
    if best is None:
        return None, "memla and the baselines share no record"
    return stat, f"memla − strongest baseline ({best}) on {', '.join(m for m in metrics if m in set(t['metric']))}"


def _vs_baseline_mean(t: pd.DataFrame, metrics: Sequence[str], boot: BootstrapConfig
                      ) -> tuple[CellStat | None, str]:
    """Record-paired MEMLA − (mean over the baselines), on the records every present baseline and MEMLA share."""
    per = _score_per_record(t, metrics)
    methods = set(per["method"])
    if "memla" not in methods:
        return None, "no memla results"
    base = baseline_methods(method_order(methods))
    if not base:
        return None, "no baseline results"
    wide_ = per.pivot_table(index="record", columns="method", values="value", aggfunc="mean")
    shared = wide_[["memla", *base]].dropna()
    if shared.empty:
        return None, "memla and the baselines share no record"
    diff = (shared["memla"] - shared[list(base)].mean(axis=1)).to_numpy()
    used = [m for m in metrics if m in set(t["metric"])]
    return bootstrap_ci(diff, boot), f"memla − mean of {len(base)} baselines ({', '.join(base)}) on {', '.join(used)}"


def claims_table(results: pd.DataFrame | None, general: pd.DataFrame | None = None,
                 suppression: pd.DataFrame | None = None, masks: pd.DataFrame | None = None, *,
                 boot: BootstrapConfig = BootstrapConfig(), config: ClaimConfig = ClaimConfig()) -> pd.DataFrame:  # noqa: B008 - frozen dataclass, immutable
    """Each paper claim with the measured effect, its 95% interval, n (records) and a verdict.

    Effects are record-paired differences in score fractions (0.07 = 7 points). Missing inputs give
    "not measured (reason)".
    """
    _claim = partial(_claim_row, min_n=config.min_n)  # every verdict below obeys the minimum n
    rows: list[dict[str, Any]] = []
    t = scores(results) if results is not None and not results.empty else None
    main = list(config.main_metrics)
    main_txt = "/".join(main)

    # 1. cross-lingual editing, average
    claim = "MEMLA beats the baselines on cross-lingual editing"
    if t is None:
        rows.append(_claim("cross_lingual", claim, "", None, reason="no editing results"))
    else:
        stat, how = _vs_baselines(t[t["scope"] == "cross"], main, boot)
        rows.append(_claim("cross_lingual", claim, f"{how}, edit ≠ eval language" if stat else "", stat,
                           reason=None if stat else how))
    claim = "MEMLA beats the baselines on cross-lingual editing (vs their mean)"
    if t is None:
        rows.append(_claim("cross_lingual_mean", claim, "", None, reason="no editing results"))
    else:
        stat, how = _vs_baseline_mean(t[t["scope"] == "cross"], main, boot)
        rows.append(_claim("cross_lingual_mean", claim, f"{how}, edit ≠ eval language" if stat else "", stat,
                           reason=None if stat else how))
    # 2. zh -> ru
    claim = "MEMLA beats the baselines for zh→ru"
    if t is None:
        rows.append(_claim("zh_ru", claim, "", None, reason="no editing results"))
    else:
        sub = t[(t["edit_lang"] == "zh") & (t["eval_lang"] == "ru")]
        if sub.empty:
            rows.append(_claim("zh_ru", claim, "", None, reason="no zh→ru results: needs edit language zh and "
                                                               "evaluation language ru"))
        else:
            stat, how = _vs_baselines(sub, main, boot)
            rows.append(_claim("zh_ru", claim, how if stat else "", stat, reason=None if stat else how))
    # 3. LSE + LIE together
    claim = "LSE and LIE together beat either alone"
    if t is None:
        rows.append(_claim("lse_lie", claim, "", None, reason="no editing results"))
    else:
        per = _score_per_record(t, main)
        have = [m for m in ("memla-lse", "memla-lie") if m in set(per["method"])]
        if "memla" not in set(per["method"]) or not have:
            rows.append(_claim("lse_lie", claim, "", None, reason="needs memla and memla-lse/memla-lie results"))
        else:
            stat, best = paired_difference(per, "memla", have, boot)
            rows.append(_claim("lse_lie", claim, f"memla − better single editor ({best}) on {main_txt}, all "
                                                 f"language pairs", stat,
                               note="" if len(have) == 2 else f"only {have[0]} available",
                               reason=None if best else "no shared records"))
    # 4. multi-hop
    claim = "MEMLA improves multi-hop reasoning (QS)"
    if t is None or t[t["metric"] == "QS"].empty:
        rows.append(_claim("multihop", claim, "", None, reason="no QS results (records without multi-hop "
                                                               "questions?)"))
    else:
        stat, how = _vs_baselines(t, ("QS",), boot)
        rows.append(_claim("multihop", claim, how + ", all language pairs" if stat else "", stat,
                           reason=None if stat else how))
    # 5. general ability
    claim = "General ability is barely affected"
    g = general[(general["method"] == "memla") & (general["setting"] == "single")] \
        if general is not None and not general.empty else None
    if g is None or g.empty:
        rows.append(_claim("general", claim, "", None, reason="no general-ability results for memla"))
    else:
        ppl = g[g["metric"] == "perplexity"].copy()
        if ppl.empty:
            rows.append(_claim("general", claim, "", None, reason="no perplexity results for memla"))
        else:
            ppl["value"] = ppl["after"] / ppl["before"] - 1.0
            stat = bootstrap_ci(per_record(ppl, [])["value"].to_numpy(), boot)
            rows.append(_claim("general", claim, "relative perplexity change on unrelated prose (dataset-build) after one memla edit "
                                                 f"(supported if the 95% interval lies within "
                                                 f"±{config.general_tolerance:.0%})", stat,
                               tolerance=config.general_tolerance))
        acc = g[g["metric"] == "fact_accuracy"].copy()
        if not acc.empty:
            acc["value"] = acc["delta"]
            stat = bootstrap_ci(per_record(acc, [])["value"].to_numpy(), boot)
            rows.append(_claim("general", claim + " (unrelated facts)",
                               f"change in unrelated-fact accuracy after one memla edit (within "
                               f"±{config.general_tolerance:.0%} points)", stat, tolerance=config.general_tolerance))
    # 6. language-independent neurons exist
    claim = "Language-independent neurons exist"
    if masks is None or masks.empty or "independent" not in masks.columns:
        rows.append(_claim("neurons_exist", claim, "", None, reason="no mask statistics in run_dir "
                                                                    "(notebook 03)"))
    else:
        per = masks.groupby("record")["independent"].sum() if "record" in masks.columns else masks["independent"]
        stat = bootstrap_ci((per.to_numpy(dtype=float) > 0).astype(float), boot)
        rows.append(_claim("neurons_exist", claim, "share of facts with ≥1 language-independent neuron",
                           stat, note=f"mean {float(per.mean()):.1f} independent neurons per fact"))
    # 7. ... and matter: suppression check, and masked vs random-neuron editing
    claim = "Knowledge neurons matter (suppression lowers P(true) more than random neurons)"
    if suppression is None or suppression.empty:
        rows.append(_claim("suppression", claim, "", None, reason="no suppression-check table in run_dir "
                                                                  "(notebook 02)"))
    else:
        stat, how = suppression_effect(suppression, boot)
        rows.append(_claim("suppression", claim, how, stat, reason=None if stat else how))
    claim = "Editing the located neurons beats editing random neurons"
    if t is None or not {"memla", "memla-random"} <= set(t["method"]):
        lacking = sorted({"memla", "memla-random"} - (set() if t is None else set(t["method"])))
        rows.append(_claim("neurons_matter", claim, "", None,
                           reason=f"needs memla and memla-random results; this run has no {' or '.join(lacking)}, "
                                  "the small preset runs both: figures/tables/claims.csv"))
    else:
        stat, best = paired_difference(_score_per_record(t[t["scope"] == "cross"], main), "memla",
                                       ["memla-random"], boot)
        rows.append(_claim("neurons_matter", claim, f"memla − memla-random on {main_txt}, cross-lingual", stat,
                           reason=None if best else "no shared records"))
    return pd.DataFrame(rows)


def claims_breakdown(results: pd.DataFrame | None, *, relations: dict[str, str] | None = None,
                     language_groups: dict[str, str] | None = None, boot: BootstrapConfig = BootstrapConfig(),  # noqa: B008 - frozen dataclass, immutable
                     config: ClaimConfig = ClaimConfig()) -> pd.DataFrame:  # noqa: B008 - frozen dataclass, immutable
    """The cross-lingual claim (MEMLA − strongest baseline, MEMLA − mean of the baselines; ES/PS/NS, edit ≠
    evaluation language) within each relation and within each group of evaluation languages (issue 16).

    ``relations``: record id -> relation (records missing from it count as "unknown"); ``language_groups``:
    evaluation language -> group (e.g. :func:`probe_language_groups`). Each row: ``by`` ("relation" or
    "language group"), ``group``, ``comparison``, effect, 95% interval, n (records) and the verdict under the
    same minimum n as the claims table. Empty when there are no results.
    """
    cols = ["by", "group", "comparison", "measured as", "effect", "ci_low", "ci_high", "n", "verdict"]
    if results is None or results.empty:
        return pd.DataFrame(columns=cols)
    t = scores(results)
    t = t[t["scope"] == "cross"]
    main = list(config.main_metrics)
    splits: list[tuple[str, pd.Series]] = []
    if relations is not None:
        splits.append(("relation", t["record"].map(lambda r: relations.get(r, "unknown"))))
    if language_groups is not None:
        splits.append(("language group", t["eval_lang"].map(lambda lang: language_groups.get(lang, "unknown"))))
    rows: list[dict[str, Any]] = []
    for by, key in splits:
        for group in sorted(set(key)):
            sub = t[key == group]
            for comparison, fn in (("strongest baseline", _vs_baselines), ("mean of baselines", _vs_baseline_mean)):
                stat, how = fn(sub, main, boot)
                row = _claim_row("cross_lingual", "", how if stat else "", stat, reason=None if stat else how,
                                 min_n=config.min_n)
                rows.append({"by": by, "group": group, "comparison": comparison, "measured as": row["measured as"],
                             **{k: row[k] for k in ("effect", "ci_low", "ci_high", "n", "verdict")}})
    return pd.DataFrame(rows, columns=cols)


def probe_language_groups(probe: pd.DataFrame | None) -> dict[str, str] | None:
    """Evaluation language -> "known well" / "known poorly", split at the median of notebook 00's knowledge probe
    (``knowledge_probe`` table: share of well-known facts the unedited model ranks first, per language; a language
    at or above the median is "known well"). None without a probe table."""
    if probe is None or probe.empty or not {"language", "known"} <= set(probe.columns):
        return None
    med = float(probe["known"].median())
    return {str(lang): ("known well" if float(k) >= med else "known poorly")
            for lang, k in zip(probe["language"], probe["known"])}


def suppression_effect(table: pd.DataFrame, boot: BootstrapConfig = BootstrapConfig(),  # noqa: B008 - frozen dataclass, immutable
                       ) -> tuple[CellStat | None, str]:
    """Random-neuron minus knowledge-neuron change in P(true) under suppression (positive = neurons matter).

    Reads notebook 02's tidy effects (:func:`memla_utils.suppression.sanity_effects`: ``example_id, language,
    factor, neurons, effect``; suppression = factor 0), or ``intervention``/``value`` columns, or one row per
    fact with ``knowledge`` and ``random`` columns. Paired per (fact, language), averaged per fact; n = facts.
    With a record column, the facts go to the bootstrap sorted, whatever the order of ``table``'s rows.
    """
    t = table.rename(columns={"example_id": "record", "effect": "value"}).copy()
    if "factor" in t.columns:
        t = t[pd.to_numeric(t["factor"], errors="coerce") == 0]
    if "intervention" in t.columns:
        t = t[t["intervention"].astype(str).str.startswith("suppress")]
    if {"knowledge", "random"} <= set(t.columns):
        t["diff"] = pd.to_numeric(t["random"], errors="coerce") - pd.to_numeric(t["knowledge"], errors="coerce")
        diff = in_value_order(t, "diff").groupby("record")["diff"].mean() if "record" in t.columns else t["diff"]
    elif {"neurons", "value"} <= set(t.columns):
        keys = [c for c in ("record", "language") if c in t.columns]
        if not keys:
            return None, "suppression table has no record/language column to pair on"
        piv = in_value_order(t).pivot_table(index=keys, columns="neurons", values="value", aggfunc="mean")
        if not {"knowledge", "random"} <= set(piv.columns):
            return None, f"suppression table has neuron sets {sorted(piv.columns)}, expected knowledge and random"
        paired = (piv["random"] - piv["knowledge"]).rename("diff").reset_index()
        diff = paired.groupby(keys[0])["diff"].mean()
    else:
        return None, f"suppression table columns {sorted(table.columns)} not understood"
    stat = bootstrap_ci(diff.dropna().to_numpy(), boot)
    return stat, ("relative change in P(true) with random neurons suppressed − with the fact's knowledge neurons "
                  "suppressed (same counts per layer), per fact")


def _fmt_effect(r: pd.Series) -> str:
    if r["n"] == 0 or math.isnan(r["effect"]):
        return "—"
    k = 100.0
    ci = "" if math.isnan(r["ci_low"]) else f" [{r['ci_low'] * k:+.1f}, {r['ci_high'] * k:+.1f}]"
    return f"{r['effect'] * k:+.1f}{ci}"


def format_breakdown(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`claims_breakdown` as shown to readers: effect and interval in points (×100)."""
    effect = table.apply(_fmt_effect, axis=1) if not table.empty else pd.Series(dtype=str)
    subset = [f"{by}: {group}" for by, group in zip(table["by"], table["group"])]
    return pd.DataFrame({"subset": subset, "comparison": table["comparison"],
                         "measured effect ×100 [95% CI]": effect, "n": table["n"].astype(int),
                         "verdict": table["verdict"]}).set_index("subset")


def format_claims(claims: pd.DataFrame) -> pd.DataFrame:
    """The claims table as shown to readers: effect and interval in points (×100)."""
    out = pd.DataFrame({"claim": claims["claim"], "measured effect ×100 [95% CI]": claims.apply(_fmt_effect, axis=1),
                        "n": claims["n"].astype(int), "verdict": claims["verdict"], "paper": claims["paper"],
                        "measured as": claims["measured as"]})
    return out.set_index("claim")
