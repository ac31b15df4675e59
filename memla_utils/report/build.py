"""One call that writes every table, figure and the claims of a run, plus a manifest tying them to their inputs."""
from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .base_run import load_base_run, merge_results, run_sources, unedited_agreement
from .claims import claims_breakdown, claims_table, format_breakdown, format_claims, probe_language_groups
from .figures import ablation_figure, heatmap_figure, method_bars, neuron_figure, save_figure, sequential_figure
from .inputs import find_table, load_general_table, load_mask_stats, load_results_table, neuron_layer_frame
from .names import ABLATION_METHODS, MISSING, SCORE_METRICS, TOKEN_ACC_METRICS, method_order
from .stats import (
    BootstrapConfig,
    ablation_stats,
    cell_stats,
    general_stats,
    main_stats,
    multihop_stats,
    needs_token_accuracy,
    per_language_stats,
    scores,
)
from .tables import format_cell, wide, write_table

log = logging.getLogger(__name__)
#: |diff| above which an unedited row of a run and of its base run counts as differing (float rounding is far below)
AGREEMENT_TOL = 1e-9


@dataclass
class ReportOutputs:
    """What :func:`write_report` produced: formatted tables by name, the claims, and every file written."""

    tables: dict[str, pd.DataFrame]
    claims: pd.DataFrame
    files: list[Path]
    missing: dict[str, str]


def _relations(cfg: Any, missing: dict[str, str]) -> dict[str, str] | None:
    """Record id -> relation for the run's records (``mkeb.select.relation_of``); None without a config."""
    if cfg is None:
        missing["claims_breakdown (relations)"] = "no run configuration: records unknown"
        return None
    from ..mkeb.select import relation_of

    try:
        records, _ = cfg.run_records()
    except (OSError, ValueError) as err:
        missing["claims_breakdown (relations)"] = f"records not readable: {err}"
        return None
    return {r.example_id: relation_of(r) for r in records}


def write_report(run_dir: str | Path, figures_dir: str | Path, *, methods: Sequence[str] | None = None,
                 sources: Sequence[str] = ("en", "zh"), cfg: Any = None,
                 boot: BootstrapConfig = BootstrapConfig(),  # noqa: B008 - frozen dataclass, immutable
                 base_run_dir: str | Path | None = None) -> ReportOutputs:
    """Every table (``figures_dir/tables``) and figure (``figures_dir``), the claims table and a manifest.

    Works with whatever exists in ``run_dir``: requested methods without results appear as "missing" rows,
    figures whose inputs are absent are skipped and listed in ``missing``. ``base_run_dir`` (notebook 07's
    parameter; needs ``cfg``): a finished run on the same records whose results stand in for the methods this run
    does not run, and whose notebook 00/02/03/06 outputs stand in for those this run lacks
    (:mod:`memla_utils.report.base_run`; :class:`~memla_utils.report.base_run.BaseRunError` when it is not the same
    experiment); the ``run_sources`` table says where each method's numbers come from.
    """
    from ..manifest import build_manifest

    run_dir, figures_dir = Path(run_dir), Path(figures_dir)
    tables_dir = figures_dir / "tables"
    results = load_results_table(run_dir)
    general = load_general_table(run_dir)
    suppression = find_table(run_dir, "suppression")
    if suppression is None:  # notebook 02 writes its per-fact sanity effects as a table
        suppression = find_table(tables_dir, "kn_sanity_effects")
    masks = load_mask_stats(run_dir)
    probe = find_table(tables_dir, "knowledge_probe")  # notebook 00: which languages the model knows well
    base = None
    agreement: dict[str, Any] | None = None
    if base_run_dir:
        base = load_base_run(base_run_dir, cfg)
        agreement = unedited_agreement(results, base.results, tol=AGREEMENT_TOL)
        if agreement["differing"]:
            log.warning("base run %s scores the unedited model differently from this run in %d of %d rows (max "
                        "|diff| %.3g; %s): the two runs' evaluation differs, so their methods are not comparable "
                        "as they stand", base_run_dir, agreement["differing"], agreement["compared"],
                        agreement["max_abs_diff"], ", ".join(agreement["metrics_differing"]))
        results, base.borrowed_methods = merge_results(results, base.results, methods or ())
        general = general if not general.empty else base.general
        suppression = suppression if suppression is not None else base.suppression
        masks = masks if masks is not None else base.masks
        probe = probe if probe is not None else base.probe
    t = scores(results) if not results.empty else results
    have = set(t["method"]) if not t.empty else set()
    rows = method_order(set(methods or ()) | have)
    out: dict[str, pd.DataFrame] = {}
    files: list[Path] = []
    missing: dict[str, str] = {}

    # The manifest is built first: every table names it (path + provenance digest) in a ``source:`` line.
    params: dict[str, Any] = {"bootstrap": dict(boot.__dict__)}
    if cfg is None:
        params["run_dir"] = str(run_dir)
    run_manifest = run_dir / "manifest.json"  # the runner's: which model produced the results
    model = json.loads(run_manifest.read_text(encoding="utf-8")) if run_manifest.is_file() else {}
    manifest = build_manifest("report", cfg=cfg, parameters=params, model_name=model.get("model"),
                              model_fingerprint=model.get("model_fingerprint"),
                              inputs={"results_rows": int(len(results)),
                                      "results_digest": table_digest(outcome_rows(results)),
                                      "general_rows": int(len(general)), "general_digest": table_digest(general),
                                      "suppression_digest": table_digest(suppression),
                                      "masks_digest": table_digest(masks),
                                      **({"base_run": {"run_dir": str(base_run_dir), "identity_digest": base.digest(),
                                                       "budget": base.budget,
                                                       "borrowed_methods": base.borrowed_methods,
                                                       "unedited_agreement": agreement}}
                                         if base is not None else {})})
    manifest_path = figures_dir / "MANIFEST.json"
    source = source_line(manifest_path, manifest.provenance_digest())

    def table(name: str, stats: pd.DataFrame, formatted: pd.DataFrame, caption: str) -> None:
        out[name] = formatted
        files.extend(write_table(name, stats, formatted, tables_dir, caption=caption, source=source))

    st = main_stats(results, sources=sources, boot=boot) if not t.empty else cell_stats(t, [])
    table("main_comparison", st, wide(st, ["method"], ["edit_lang", "scope", "metric"], rows=rows),
          "Main comparison: score (%) [95% bootstrap CI] n=records, by source language and same/cross language")
    st = ablation_stats(results, boot) if not t.empty else cell_stats(t, [])
    table("ablation", st, wide(st, ["method"], ["scope", "metric"], rows=list(ABLATION_METHODS)),
          "LSE/LIE ablation: MEMLA, LSE only, LIE only, unmasked LoRA, random neurons")
    per_lang = per_language_stats(results, boot) if not t.empty else pd.DataFrame()
    for metric in SCORE_METRICS:
        st = per_lang[per_lang["metric"] == metric] if not per_lang.empty else cell_stats(t, [])
        table(f"per_language_{metric}", st, wide(st, ["method"], ["edit_lang", "eval_lang"], metric=metric, rows=rows),
              f"{metric} per edit language and evaluation language")
    token_acc = needs_token_accuracy(results)  # MzsRE / Bi-ZsRE: no true answers, so no paper ES / PS
    if token_acc:
        note = ("ES / PS = teacher-forced token accuracy of the new target (the records have no true answer, so "
                "P(new) > P(true) is not available); NS / QS as in the paper")
        st = main_stats(results, sources=sources, boot=boot, metrics=TOKEN_ACC_METRICS)
        table("main_comparison_token_acc", st, wide(st, ["method"], ["edit_lang", "scope", "metric"], rows=rows),
              f"Main comparison: score (%) [95% bootstrap CI] n=records, by source language and same/cross "
              f"language; {note}")
        st = ablation_stats(results, boot, metrics=TOKEN_ACC_METRICS)
        table("ablation_token_acc", st, wide(st, ["method"], ["scope", "metric"], rows=list(ABLATION_METHODS)),
              f"LSE/LIE ablation; {note}")
        per_tok = per_language_stats(results, boot, metrics=TOKEN_ACC_METRICS[:2])
        for metric in TOKEN_ACC_METRICS[:2]:
            st = per_tok[per_tok["metric"] == metric] if not per_tok.empty else cell_stats(t, [])
            table(f"per_language_{metric}", st,
                  wide(st, ["method"], ["edit_lang", "eval_lang"], metric=metric, rows=rows),
                  f"{metric} per edit language and evaluation language (teacher-forced token accuracy, %)")
    figure_metrics = TOKEN_ACC_METRICS if token_acc else SCORE_METRICS
    st = multihop_stats(results, sources=sources, boot=boot) if not t.empty else cell_stats(t, [])
    table("multihop", st, wide(st, ["method"], ["edit_lang", "eval_lang"], metric="QS", rows=rows),
          "Multi-hop (QS, %) by edit language and evaluation language")
    gst = general_stats(general, boot)
    single = gst[gst["setting"] == "single"] if not gst.empty else gst
    grows = method_order({"memla", *(general["method"] if not general.empty else [])})
    table("general_single", single, wide(single, ["method"], ["metric", "eval_lang"], rows=grows),
          "General ability after one edit: change vs the unedited model (perplexity: relative, %; accuracy: points)")
    seq = general[general["setting"] == "sequential"] if not general.empty else general
    if not seq.empty:
        seq_st = seq.groupby(["method", "n_edits", "metric"])[["before", "after"]].mean().reset_index()
        seq_st["n"] = seq.groupby(["method", "n_edits", "metric"]).size().to_numpy()
        fmt = seq_st.assign(cell=[format_cell(a, math.nan, math.nan, n, m)
                                  for a, n, m in zip(seq_st["after"], seq_st["n"], seq_st["metric"])])
        seq_wide = fmt.pivot_table(index="method", columns=["metric", "n_edits"], values="cell",
                                   aggfunc="first").fillna(MISSING)
    else:
        seq_st, seq_wide = pd.DataFrame(columns=["method", "n_edits", "metric", "before", "after", "n"]), \
            pd.DataFrame(index=pd.Index(grows, name="method"))
    table("general_sequential", seq_st, seq_wide,
          "Sequential editing: general ability after N accumulated edits (mean over languages; n = languages)")

    claims = claims_table(results if not results.empty else None, general if not general.empty else None,
                          suppression, masks, boot=boot)
    table("claims", claims, format_claims(claims), "The paper's claims checked on this run")
    breakdown = claims_breakdown(results if not results.empty else None, relations=_relations(cfg, missing),
                                 language_groups=probe_language_groups(probe), boot=boot)
    table("claims_breakdown", breakdown, format_breakdown(breakdown),
          "The cross-lingual claim per relation and per evaluation-language group (known well / poorly: "
          "notebook 00's probe, split at its median)")

    if base is not None:
        own = [m for m in method_order(set(methods or ())) if m not in base.borrowed_methods]
        src = run_sources(run_dir, own, base)
        table("run_sources", src, src.set_index("method"),
              "Where each method's numbers come from: run folder, notebook 05 budget, editing-code hash")
        ag = pd.DataFrame([{"check": "the unedited model's rows, this run vs the base run", **{
            k: (", ".join(v) if isinstance(v, list) else v) for k, v in (agreement or {}).items()}}])
        table("run_consistency", ag, ag.set_index("check"),
              "Do both runs evaluate alike? Every unedited row (record, edit language, evaluation language, metric) "
              f"present in both runs, compared (differing: |diff| > {AGREEMENT_TOL:g})")

    for method in [m for m in rows if m in have]:
        try:
            files.extend(save_figure(heatmap_figure(results, method, figure_metrics), f"heatmap_{method}",
                                     figures_dir))
        except ValueError as err:
            missing[f"heatmap_{method}"] = str(err)
    for name, make in (("ablation_bars", lambda: ablation_figure(ablation_stats(results, boot, figure_metrics))),
                       ("methods_bars", lambda: method_bars(cell_stats(scores(results, figure_metrics),
                                                                       ["method", "scope", "metric"], boot))),
                       ("sequential_editing", lambda: sequential_figure(general)),
                       ("neurons_per_layer", lambda: neuron_figure(
                           neuron_layer_frame(masks) if masks is not None else find_table(run_dir, "neurons_per_layer")))):
        try:
            if results.empty and name in ("ablation_bars", "methods_bars"):
                raise ValueError("no results")
            files.extend(save_figure(make(), name, figures_dir))
        except (ValueError, KeyError) as err:
            missing[name] = str(err)
            log.info("figure %s skipped: %s", name, err)

    manifest.inputs["missing"] = missing  # an outcome: not part of the provenance digest
    for f in files:
        manifest.add(f, root=figures_dir)
    files.append(manifest.write(manifest_path))
    return ReportOutputs(out, claims, files, missing)


def table_digest(frame: pd.DataFrame | None) -> str | None:
    """sha256 (16 hex) of a table's rows, whatever their order (``None`` for no table): the same input rows give
    the same digest, however the shards that hold them were written."""
    if frame is None:
        return None
    text = frame.to_csv(index=False, lineterminator="\n").splitlines()
    return hashlib.sha256("\n".join([text[0], *sorted(text[1:])]).encode()).hexdigest()[:16] if text else \
        hashlib.sha256(b"").hexdigest()[:16]


def outcome_rows(results: pd.DataFrame | None) -> pd.DataFrame | None:
    """``results`` without what measures the run rather than the edits (:data:`runner.RUN_SPECIFIC_METRICS`
    rows: wall-clock seconds, peak memory; :data:`runner.RUN_SPECIFIC_COLUMNS`: attempt ids), so that two runs of
    one configuration give the same digest and the same ``source:`` line (the drift check compares it)."""
    from ..runner import RUN_SPECIFIC_COLUMNS, RUN_SPECIFIC_METRICS  # the runner owns its row layout

    if results is None:
        return None
    out = results.drop(columns=[c for c in RUN_SPECIFIC_COLUMNS if c in results.columns])
    if "metric" in out.columns:
        out = out[~out["metric"].isin(RUN_SPECIFIC_METRICS)]
    return out


def source_line(manifest_path: Path, digest: str) -> str:
    """``source: figures/MANIFEST.json (provenance sha256 1a2b3c4d5e6f7a8b)``: the manifest a table comes from
    (path relative to the project) and the first 16 hex of its provenance digest
    (:func:`memla_utils.manifest.provenance_digest` recomputes it from the manifest)."""
    from ..cache import PROJECT_ROOT

    p = Path(manifest_path)
    p = p if p.is_absolute() else PROJECT_ROOT / p
    shown = p.relative_to(PROJECT_ROOT) if p.is_relative_to(PROJECT_ROOT) else p
    return f"source: {shown.as_posix()} (provenance sha256 {digest[:16]})"
