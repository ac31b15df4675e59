"""The notebooks' parameters: each one's declared type, and the conversion of a passed value to it.

Every notebook's ``parameters`` cell holds names declared in :data:`NOTEBOOK_PARAMETERS`; papermill, the batch
driver (``-p name=value``) and :meth:`memla_utils.config.RunConfig.from_params` hand values in as lists, comma
strings or scalars, and :func:`coerce_parameter` turns each into its declared type or raises
:class:`ParameterError` naming the parameter. Re-exported by :mod:`memla_utils.config`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ParameterError(ValueError):
    """A notebook / batch parameter whose value does not fit its declared type; the message names it."""


@dataclass(frozen=True)
class Param:
    """The declared type of one notebook parameter.

    ``kind`` is the type of the value (or of each item when ``is_list``); ``keywords`` are special strings kept
    as they are (``"all"``, ``"auto"``, ``"full"``).
    """

    kind: type
    is_list: bool = False
    keywords: tuple[str, ...] = ()


#: Every parameter of every notebook's ``parameters`` cell, with its declared type (a test parses the notebooks
#: and fails on a parameter missing here). List-valued parameters accept a list, a comma-separated string or a
#: single scalar (``papermill -p sweep_steps 10`` passes the int 10).
NOTEBOOK_PARAMETERS: dict[str, Param] = {
    # shared by every notebook (RunConfig fields)
    "model": Param(str), "device": Param(str), "dtype": Param(str), "seed": Param(int),
    "languages": Param(str, True, ("all",)), "edit_languages": Param(str, True, ("all",)),
    "n_records": Param(int), "methods": Param(str, True, ("all",)),
    "run_dir": Param(str), "figures_dir": Param(str), "mkeb_path": Param(str), "record_selection": Param(str),
    "dataset": Param(str), "shared_data_dir": Param(str),
    # 00
    "probe_languages": Param(str, True, ("all",)),
    # 01
    "known_only_demo": Param(bool), "rebuild": Param(bool),
    # 02, 03: the languages their per-language analyses attribute (RunConfig.attribution_languages)
    "attribution_languages": Param(str, True, ("run", "masks")),
    # 02, 03, 04, 06: attribution and masks
    "attribution_prompts": Param(str), "attribution_method": Param(str), "max_records": Param(int),
    "steps": Param(int), "baseline": Param(str),
    "threshold": Param(float), "n_boot": Param(int), "torch_threads": Param(int),
    "independent_languages": Param(str, True, ("all",)),
    "sweep_thresholds": Param(float, True), "sweep_steps": Param(int, True), "method_overlap_records": Param(int),
    # 04, 05
    "parallel_edits": Param(int), "threads": Param(int), "budget": Param(str), "n_train_records": Param(int),
    # 06
    "general_methods": Param(str, True, ("auto", "all")), "general_records": Param(int, False, ("auto",)),
    "sequential_steps": Param(int, True, ("auto", "full")), "probe_records": Param(int),
    # 07: a finished run on the same records that stands in for the methods this run does not run
    "base_run_dir": Param(str),
}

#: names of the list-valued notebook parameters
LIST_PARAMETERS: tuple[str, ...] = tuple(k for k, p in NOTEBOOK_PARAMETERS.items() if p.is_list)


def _item(name: str, spec: Param, value: Any) -> Any:
    """One scalar converted to ``spec.kind`` (strings parsed), or ``ParameterError`` naming the parameter."""
    kind = spec.kind
    what = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[kind]
    text = value.strip() if isinstance(value, str) else value
    try:
        if kind is bool:
            if isinstance(text, bool):
                return text
            if isinstance(text, str) and text.lower() in ("true", "false"):
                return text.lower() == "true"
            raise ValueError
        if kind is int:
            if isinstance(text, bool):
                raise ValueError
            if isinstance(text, float):
                if not text.is_integer():
                    raise ValueError
                return int(text)
            return int(text)
        if kind is float:
            if isinstance(text, bool):
                raise ValueError
            out = float(text)
            if out != out or out in (float("inf"), float("-inf")):
                raise ValueError
            return out
        if isinstance(text, (list, tuple, dict, set)):
            raise ValueError
        return str(text)
    except (TypeError, ValueError):
        raise ParameterError(f"parameter {name} must be {what}" + (" (or a list of them)" if spec.is_list else "")
                             + (f" or one of {', '.join(spec.keywords)}" if spec.keywords else "")
                             + f", got {value!r}") from None


def coerce_parameter(name: str, value: Any) -> Any:
    """``value`` converted to ``name``'s declared type (:data:`NOTEBOOK_PARAMETERS`); undeclared names and ``None``
    pass through unchanged.

    List-valued parameters become a list of the item type whether given as a list/tuple, a comma-separated
    string (``"5,10,20"``) or a single scalar (``10`` or ``"10"``); a keyword (``"all"``, ``"auto"``) stays a
    string. Scalars are converted (``"5"`` -> 5 for an int). Anything else raises :class:`ParameterError`
    naming the parameter.
    """
    spec = NOTEBOOK_PARAMETERS.get(name)
    if spec is None or value is None:
        return value
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str) and value.strip() in spec.keywords:
        return value.strip()
    if not spec.is_list:
        return _item(name, spec, value)
    if isinstance(value, str):
        items: list[Any] = [v for v in value.split(",") if v.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    return [_item(name, spec, v) for v in items]


def coerce_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """:func:`coerce_parameter` applied to every entry of ``params``."""
    return {k: coerce_parameter(k, v) for k, v in params.items()}


__all__ = ["LIST_PARAMETERS", "NOTEBOOK_PARAMETERS", "Param", "ParameterError", "coerce_parameter",
           "coerce_parameters"]
