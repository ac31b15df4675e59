"""What the batch driver runs: its command-line parameters parsed and validated, and the chains they ask for.

``-p name=value`` assignments and ``--matrix`` values are parsed (declared notebook parameters get their declared
type, :mod:`memla_utils.notebook_parameters`), merged over a preset (:data:`memla_utils.presets.PRESETS`) and
checked against :class:`memla_utils.config.RunConfig` before anything runs; :func:`plan_runs` returns one
:class:`BatchPlan` per chain (one, or one per matrix combination and model, each in its own run folder) and
:func:`notebooks` the notebooks of the chain. Running them is :mod:`memla_utils.batch`'s job, which re-exports
these names.
"""
from __future__ import annotations

import difflib
import itertools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cache import PROJECT_ROOT
from .config import NOTEBOOK_PARAMETERS, PRESETS, ParameterError, RunConfig, coerce_parameter

log = logging.getLogger("memla_utils.batch")  # the batch driver's messages, wherever in it they are logged

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
#: The shared parameter names every notebook's parameters cell holds (RunConfig fields that are notebook params).
SHARED_PARAMETERS: tuple[str, ...] = ("model", "device", "dtype", "seed", "languages", "edit_languages",
                                      "n_records", "methods", "run_dir", "figures_dir", "mkeb_path", "record_selection")
#: RunConfig fields every notebook's parameters cell also holds (where the records come from: MKEB, MzsRE or
#: Bi-ZsRE), but which the batch passes only when a preset or ``-p`` sets them: a run that does not set them (small,
#: medium, full) keeps exactly the parameters, and so the run identity, it had before they existed.
SOURCE_PARAMETERS: tuple[str, ...] = ("dataset", "shared_data_dir")


class BatchError(RuntimeError):
    """A notebook of the chain failed, or the command line was wrong; the message says which and why."""


def parse_value(name: str, raw: str) -> Any:
    """``-p name=value`` values: a declared notebook parameter (:data:`memla_utils.config.NOTEBOOK_PARAMETERS`)
    gets its declared type (:func:`memla_utils.config.coerce_parameter`; a list-valued one, given as one value or
    a comma list, is passed on as a comma string, as the parameters cells write it); an undeclared one is read
    as a JSON-like literal, else a string."""
    raw = raw.strip()
    if name in NOTEBOOK_PARAMETERS:
        try:
            return _as_param(coerce_parameter(name, raw))
        except ParameterError as err:
            raise BatchError(str(err)) from None
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    if re.fullmatch(r"-?\d+", raw):
        return int(raw)
    if re.fullmatch(r"-?\d+\.\d*(e-?\d+)?", low):
        return float(raw)
    return raw


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """``["n_records=5", "languages=en,zh"]`` -> ``{"n_records": 5, "languages": "en,zh"}``."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise BatchError(f"-p expects name=value, got {item!r}")
        name, value = item.split("=", 1)
        name = name.strip()
        if not name.isidentifier():
            raise BatchError(f"-p: {name!r} is not a parameter name")
        out[name] = parse_value(name, value)
    return out


def parse_matrix(items: Sequence[str]) -> dict[str, list[str]]:
    """``["languages=en,zh,fr;en,de"]`` -> ``{"languages": ["en,zh,fr", "en,de"]}`` (``;`` separates values)."""
    out: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise BatchError(f"--matrix expects name=value1;value2, got {item!r}")
        name, values = item.split("=", 1)
        vals = [v.strip() for v in values.split(";") if v.strip()]
        if not vals:
            raise BatchError(f"--matrix {name}: no values")
        out[name.strip()] = vals
    return out


def _as_param(value: Any) -> Any:
    """Notebook parameters are scalars: lists become comma-separated strings (as in the parameters cell)."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    return value


def preset_parameters(preset: str | None) -> dict[str, Any]:
    if preset is None:
        return {}
    if preset not in PRESETS:
        raise BatchError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
    return {k: _as_param(v) for k, v in PRESETS[preset].items()}


def slug(combo: dict[str, Any]) -> str:
    """A folder name for one matrix combination, e.g. ``languages-en_zh__model-default``."""
    parts = []
    for k, v in sorted(combo.items()):
        text = re.sub(r"[^A-Za-z0-9.]+", "_", str(v)).strip("_")
        parts.append(f"{k}-{text}")
    return "__".join(parts) or "default"


@dataclass
class BatchPlan:
    """One chain to run: its parameters (run_dir and figures_dir resolved)."""

    parameters: dict[str, Any]
    label: str = "default"

    @property
    def run_dir(self) -> Path:
        p = Path(self.parameters["run_dir"])
        return p if p.is_absolute() else PROJECT_ROOT / p


def plan_runs(preset: str | None = None, params: dict[str, Any] | None = None,
              matrix: dict[str, list[str]] | None = None, models: Sequence[str] = ()) -> list[BatchPlan]:
    """Every chain the command asks for: one, or one per combination of the matrix values and models."""
    base = {**preset_parameters(preset), **(params or {})}
    grid = dict(matrix or {})
    if models:
        grid["model"] = list(models)
    # validate early: the config must accept the base parameters (unknown language, method, ...)
    defaults = {f: _as_param(getattr(RunConfig(), f)) for f in SHARED_PARAMETERS}
    defaults["run_dir"] = "runs/small"
    defaults["figures_dir"] = "figures"
    defaults["mkeb_path"] = "data/mkeb/mkeb.jsonl"
    full = {**defaults, **base}
    if "figures_dir" not in base and str(full["run_dir"]) != defaults["run_dir"]:
        # only the default configuration writes the committed figures/; any other run keeps its own
        full["figures_dir"] = str(Path(full["run_dir"]) / "figures")
    if not grid:
        _validate(full)
        return [BatchPlan(full)]
    keys = list(grid)
    plans = []
    root = full["run_dir"]
    for values in itertools.product(*(grid[k] for k in keys)):
        combo = dict(zip(keys, values))
        p = {**full, **{k: parse_value(k, v) for k, v in combo.items()}}
        if "languages" in combo and "edit_languages" not in base and "edit_languages" not in combo:
            p["edit_languages"] = _edit_languages_within(str(p["edit_languages"]), str(p["languages"]))
        label = slug(combo)
        p["run_dir"] = str(Path(root) / label)
        if "figures_dir" not in base:
            p["figures_dir"] = str(Path(root) / label / "figures")
        _validate(p)
        plans.append(BatchPlan(p, label))
    return plans


def _edit_languages_within(edit_languages: str, languages: str) -> str:
    """Default edit languages restricted to a matrix language set (its first language if none is in it)."""
    langs = [l.strip() for l in languages.split(",") if l.strip()]
    if languages.strip() == "all":
        return edit_languages
    kept = [l for l in edit_languages.split(",") if l.strip() in langs]
    if not kept:
        kept = langs[:1]
    log.info("edit_languages %s -> %s for languages %s", edit_languages, ",".join(kept), languages)
    return ",".join(kept)


def _validate(params: dict[str, Any]) -> None:
    """Every parameter a chain would pass, checked before anything runs or touches a run folder: its name is one
    some notebook declares (:data:`NOTEBOOK_PARAMETERS`; papermill would only warn and the notebook would run its
    default), its value fits :class:`RunConfig` and the checks of the code that reads it (:func:`check_values`).
    Raises :class:`BatchError` naming the parameter."""
    unknown = sorted(k for k in params if k not in NOTEBOOK_PARAMETERS)
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, NOTEBOOK_PARAMETERS, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise BatchError(f"unknown parameter(s) {', '.join(hints)}: no notebook declares them "
                         f"(memla_utils.notebook_parameters.NOTEBOOK_PARAMETERS lists every one)")
    try:
        check_values(params, RunConfig.from_params(**params))
    except (ValueError, TypeError, RuntimeError) as err:
        raise BatchError(f"invalid parameters: {err}") from err


#: Integer parameters with a lower bound (name -> minimum), as the code that reads them requires.
MINIMUMS: dict[str, int] = {"n_boot": 1, "probe_records": 1, "parallel_edits": 1, "n_train_records": 0,
                            "torch_threads": 0, "threads": 0}
#: The notebook parameters that describe the attribution and masks (notebooks 03, 04, 06 build one
#: ``MaskConfig`` from them with ``mask_compute.notebook_mask_config``).
MASK_PARAMETERS: tuple[str, ...] = ("independent_languages", "steps", "baseline", "threshold", "attribution_prompts",
                                    "attribution_method")


def check_values(params: dict[str, Any], cfg: RunConfig | None = None) -> None:
    """The values :class:`RunConfig` does not check, checked by the same functions the notebooks call: ``device``
    (a device type this project runs on: cpu, cuda[:N], mps or auto; whether it is present is checked when the
    model loads), ``dtype`` (``models.DTYPES`` or auto), ``budget`` (``baselines.resolve_budget``), the attribution
    and mask parameters (``mask_compute.notebook_mask_config``), notebook 06's study settings
    (``general_plan.plan_study``), the attributed and probed languages, notebook 03's sweeps, that ``base_run_dir``
    holds a run, and the integers of :data:`MINIMUMS`. Raises ``ValueError`` naming the parameter."""
    import torch

    from .baselines import resolve_budget
    from .mask_compute import notebook_mask_config
    from .models import DTYPES

    device = str(params.get("device", "cpu"))
    if device != "auto":
        try:
            kind = torch.device(device).type
        except RuntimeError:
            raise ValueError(f"parameter device: {device!r} is not a device; use cpu, cuda, cuda:N, mps or "
                             "auto") from None
        if kind not in ("cpu", "cuda", "mps"):
            raise ValueError(f"parameter device: {device!r}; use cpu, cuda, cuda:N, mps or auto")
    dtype = str(params.get("dtype", "float32"))
    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"parameter dtype: {dtype!r}; use auto or one of {', '.join(DTYPES)}")
    if "budget" in params:
        resolve_budget(str(params["budget"]), device)
    mask = {k: params[k] for k in MASK_PARAMETERS if k in params}
    if mask:
        notebook_mask_config(**mask)
    for name, low in MINIMUMS.items():
        if name in params and int(params[name]) < low:
            raise ValueError(f"parameter {name} must be >= {low}, got {params[name]!r}")
    cfg = cfg if cfg is not None else RunConfig.from_params(**params)  # the caller's, when it built one
    cfg.attribution_languages()  # notebooks 02-03: a language the run does not evaluate
    if "probe_languages" in params and str(params["probe_languages"]) != "all":
        from .languages import validate_languages

        validate_languages(str(params["probe_languages"]).split(","), parameter="probe_languages")
    from .attribution_config import AttributionConfig

    for t in cfg.extra.get("sweep_thresholds") or ():  # notebook 03's sweeps, checked as each config checks itself
        AttributionConfig(threshold=float(t))
    for n in cfg.extra.get("sweep_steps") or ():
        AttributionConfig(steps=int(n))
    study = ("general_methods", "general_records", "sequential_steps")
    if any(k in params for k in study):
        from .general_plan import plan_study

        plan_study(*(str(params.get(k, "auto")) for k in study), cfg.methods, cfg.n_records)
    base = str(params.get("base_run_dir") or "")
    if base:
        path = Path(base) if Path(base).is_absolute() else PROJECT_ROOT / base
        if not (path / "run_identity.json").is_file():
            raise ValueError(f"parameter base_run_dir: {path} holds no run (no run_identity.json)")


def notebooks(directory: Path = NOTEBOOKS_DIR, only: Sequence[str] = ()) -> list[Path]:
    """``NN_*.ipynb`` in order; ``only`` keeps those whose number or name matches (e.g. ``06``, ``07``)."""
    found = sorted(p for p in Path(directory).glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [p for p in found if any(p.name.startswith(o) or p.stem == o for o in only)]
    if not found:
        raise BatchError(f"no notebooks NN_*.ipynb in {directory}" + (f" matching {list(only)}" if only else ""))
    return found


__all__ = ["NOTEBOOKS_DIR", "SHARED_PARAMETERS", "SOURCE_PARAMETERS", "BatchError", "BatchPlan", "notebooks",
           "check_values", "parse_assignments", "parse_matrix", "parse_value", "plan_runs", "preset_parameters", "slug"]
