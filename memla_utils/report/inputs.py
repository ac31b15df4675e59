"""Reading what a run left behind (results, general-ability rows, masks, notebook tables), tolerating absences."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


def _read_tidy(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return pd.DataFrame(rows)
    data = json.loads(path.read_text(encoding="utf-8"))
    return pd.DataFrame(data if isinstance(data, list) else data.get("rows", []))


def find_table(run_dir: str | Path, pattern: str, *, skip_prefix: str | None = None) -> pd.DataFrame | None:
    """The first ``*pattern*.{csv,jsonl,json}`` under ``run_dir`` (sorted, so the choice is stable), or None."""
    root = Path(run_dir)
    if not root.exists():
        return None
    for ext in ("csv", "jsonl", "json"):
        for path in sorted(root.rglob(f"*{pattern}*.{ext}")):
            if "notebooks" in path.parts or path.name == "MANIFEST.json" or \
                    (skip_prefix and path.name.startswith(skip_prefix)):
                continue
            try:
                df = _read_tidy(path)
            except (ValueError, json.JSONDecodeError) as err:
                log.warning("could not read %s: %s", path, err)
                continue
            log.info("using %s for %s", path, pattern)
            return df
    return None


def load_results_table(run_dir: str | Path) -> pd.DataFrame:
    """The runner's tidy results under ``run_dir`` (empty frame when nothing has been run yet)."""
    try:
        from ..runner import load_results  # the runner owns its file layout
    except ImportError:
        load_results = None
    if load_results is not None:
        try:
            df = load_results(run_dir)
            if df is not None and not df.empty:
                return df
        except FileNotFoundError:
            pass
    df = find_table(run_dir, "results", skip_prefix="results-shard")  # e.g. a results table exported elsewhere
    return df if df is not None else pd.DataFrame(columns=["record", "method", "edit_lang", "eval_lang", "metric",
                                                           "value", "n"])


def load_mask_stats(run_dir: str | Path) -> pd.DataFrame | None:
    """Per (record, edit language, layer): independent and specific neuron counts, from the record-mask files
    (:func:`memla_utils.mask_files.save_record_masks`) anywhere under ``run_dir``; None when there are none."""
    from ..mask_files import load_record_masks

    root = Path(run_dir)
    if not root.exists():
        return None
    rows = []
    for path in sorted(root.rglob("*.safetensors")):
        try:
            rm = load_record_masks(path)
        except Exception:  # noqa: BLE001 - not a masks file (a saved edit, a corrupt file): not ours to judge
            log.debug("%s is not a record-masks file", path)
            continue
        layers = sorted(set(rm.independent.masks) | set(rm.specific.masks))
        for layer in layers or [0]:
            ind = int(rm.independent.masks[layer].sum()) if layer in rm.independent.masks else 0
            spec = int(rm.specific.masks[layer].sum()) if layer in rm.specific.masks else 0
            rows.append({"record": rm.example_id, "edit_language": rm.edit_language, "layer": layer,
                         "independent": ind, "specific": spec})
    if not rows:
        return None
    return pd.DataFrame(rows).drop_duplicates(["record", "edit_language", "layer"])


def neuron_layer_frame(mask_stats: pd.DataFrame) -> pd.DataFrame:
    """``layer, language, count`` for :func:`neuron_figure`: language-specific neurons per edit language and the
    language-independent ones, mean per (record, edit language)."""
    per = mask_stats.groupby(["edit_language", "layer"])[["specific", "independent"]].mean().reset_index()
    spec = per.rename(columns={"specific": "count"}).assign(
        language=lambda d: "specific (" + d["edit_language"] + ")")[["layer", "language", "count"]]
    ind = per.groupby("layer")["independent"].mean().reset_index().rename(columns={"independent": "count"})
    ind["language"] = "independent"
    return pd.concat([spec, ind[["layer", "language", "count"]]], ignore_index=True)


def load_general_table(run_dir: str | Path) -> pd.DataFrame:
    """Rows written by notebook 06 (:func:`memla_utils.general.write_rows`) or an empty frame."""
    path = Path(run_dir) / "general" / "general.jsonl"
    if not path.is_file():
        return pd.DataFrame()
    return _read_tidy(path)
