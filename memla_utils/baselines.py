"""The paper's baselines as a group: names, budget presets for their hyperparameters, and cost tables.

``paper`` keeps every method's defaults (each config cites the paper it comes from). ``cpu-small`` shortens
the inner loops so notebook 05 runs every baseline on the default model in minutes on two CPU cores; it
changes step counts, context templates, corpus size and demonstration counts, never the update rules.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pandas as pd

from .covariance import CorpusConfig, CovarianceConfig
from .languages import MKEB_LANGUAGES

#: the baselines of the MEMLA paper's comparison (+ plain LoRA, MEMLA's mask ablation), in table order
BASELINES: tuple[str, ...] = ("ft", "ft-l", "lora", "rome", "memit", "pmet", "mend", "ike")
BUDGETS: tuple[str, ...] = ("paper", "cpu-small")


def baseline_overrides(budget: str = "paper", languages: Sequence[str] = MKEB_LANGUAGES
                       ) -> dict[str, dict[str, Any]]:
    """``make_editor`` keyword overrides per method for a budget (``RunnerConfig.editor_overrides``)."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown baseline budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    corpus = CorpusConfig(languages=tuple(languages))
    if budget == "paper":
        cov = CovarianceConfig(corpus=corpus)
        return {m: {"covariance": cov} for m in ("rome", "memit", "pmet")}
    cov = CovarianceConfig(corpus=dataclasses.replace(corpus, samples_per_language=4, sample_tokens=32),
                           n_samples=4 * len(languages))
    locate = {"covariance": cov, "n_context": 2, "v_steps": 8}
    return {"ft": {"steps": 8}, "ft-l": {"steps": 8}, "lora": {"steps": 8},
            "rome": locate, "memit": locate, "pmet": locate,
            "mend": {"train_steps": 12}, "ike": {"n_copy": 1, "n_update": 1, "n_retain": 2}}


def resolve_budget(budget: str, device: str) -> str:
    """The budget a run uses: ``"auto"`` is ``cpu-small`` on a CPU and ``paper`` elsewhere (notebooks 05, 06)."""
    if budget == "auto":
        return "cpu-small" if str(device).startswith("cpu") else "paper"
    if budget not in BUDGETS:
        raise ValueError(f"parameter budget: unknown {budget!r}; choose auto or one of {', '.join(BUDGETS)}")
    return budget


def describe(methods: Sequence[str], overrides: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per method: its config class and every hyperparameter as used (defaults + overrides)."""
    from .editors import make_editor

    rows = []
    for m in methods:
        editor = make_editor(m, **overrides.get(m, {}))
        cfg = getattr(editor, "config", None)
        params = {} if cfg is None else {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
        cov = params.pop("covariance", None)
        if cov is not None:
            params["covariance"] = (f"{cov.corpus.source}: {cov.n_samples} texts, "
                                    f"{len(cov.corpus.languages)} languages")
        rows.append({"method": m, "config": type(cfg).__name__,
                     "hyperparameters": ", ".join(f"{k}={v}" for k, v in params.items())})
    return pd.DataFrame(rows)


def edit_costs(results: pd.DataFrame, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Seconds per edit (mean, min, max over units) and evaluation seconds, from the runner's ``edit`` rows."""
    df = results[(results.get("kind") == "edit") & results["metric"].isin(["seconds", "eval_seconds"])]
    if methods is not None:
        df = df[df["method"].isin(methods)]
    if df.empty:
        return pd.DataFrame(columns=["method", "edits", "seconds_per_edit", "min_s", "max_s", "eval_seconds"])
    g = df.pivot_table(index=["method", "record", "edit_lang"], columns="metric", values="value").reset_index()
    out = g.groupby("method").agg(edits=("seconds", "size"), seconds_per_edit=("seconds", "mean"),
                                  min_s=("seconds", "min"), max_s=("seconds", "max"),
                                  eval_seconds=("eval_seconds", "mean")).reset_index()
    order = {m: i for i, m in enumerate(methods or BASELINES)}
    return out.sort_values("method", key=lambda s: s.map(lambda m: order.get(m, len(order)))).reset_index(drop=True)


def mend_training_note(lm: Any, methods: Sequence[str], overrides: dict[str, dict[str, Any]],
                       train_records: Sequence[Any]) -> str | None:
    """One line on MEND's hypernetwork training (seconds, steps, records, whether it came from the cache) when
    ``methods`` includes MEND, else ``None``. Fits MEND as the runner does (``make_editor("mend", **overrides)``
    on ``train_records``): a cache hit when notebook 05's run trained it already."""
    if "mend" not in methods:
        return None
    from .editors import make_editor

    info = make_editor("mend", **overrides.get("mend", {})).fit(lm, train_records).fit_info
    return (f"MEND training: {info['fit_seconds']:.1f} s for {info['train_steps']} steps on "
            f"{info['n_train_records']} records (cached: {info['cached']})")


__all__ = ["BASELINES", "BUDGETS", "baseline_overrides", "describe", "edit_costs", "mend_training_note"]
