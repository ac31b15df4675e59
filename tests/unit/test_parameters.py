"""Notebook parameters: every list-valued one accepts a list, a comma string or a single scalar (issue 13 §7).

Before: ``papermill notebooks/03_masks.ipynb out.ipynb -p sweep_steps 10`` (and the batch driver's
``-p sweep_steps=10``) crashed: papermill passes the single value as the int 10 and the notebook called
``sweep_steps.split(",")``. The parameters are enumerated from the notebooks' own parameters cells, so a new one
is covered (or fails here until it is declared in ``memla_utils.config.NOTEBOOK_PARAMETERS``).
"""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from memla_utils import batch
from memla_utils.config import NOTEBOOK_PARAMETERS, ParameterError, RunConfig, coerce_parameter
from memla_utils.notebook_setup import RUN_PARAMETERS, start_notebook

NOTEBOOKS = batch.notebooks()


def parameter_cell(path: Path) -> dict[str, object]:
    """name -> default value of the notebook's ``parameters`` cell."""
    nb = nbformat.read(str(path), as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", []))
    out = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign):
            for t in node.targets:
                out[t.id] = ast.literal_eval(node.value)
    return out


def code_cells(path: Path) -> list[str]:
    nb = nbformat.read(str(path), as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])]


def start_call(path: Path) -> ast.Call:
    """The notebook's ``start_notebook(globals(), ...)`` call (its set-up: parameters cell -> RunConfig)."""
    for src in code_cells(path):
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "start_notebook":
                first = node.args[0] if node.args else None
                assert isinstance(first, ast.Call) and getattr(first.func, "id", None) == "globals", \
                    f"{path.name}: start_notebook must read the parameters cell's own namespace (globals())"
                return node
    raise AssertionError(f"{path.name}: no start_notebook(globals(), ...) call")


def routed_names(call: ast.Call) -> set[str]:
    """The parameters a start_notebook call reads: RunConfig's fields and the names it lists."""
    return set(RUN_PARAMETERS) | {a.value for a in call.args[1:] if isinstance(a, ast.Constant)}


LIST_PARAMS = sorted({(p.name, name) for p in NOTEBOOKS for name in parameter_cell(p)
                      if NOTEBOOK_PARAMETERS.get(name) and NOTEBOOK_PARAMETERS[name].is_list})

#: a valid item per list parameter, and a second one (the scalar/comma/list forms are built from these)
SAMPLES = {"languages": ("en", "zh"), "edit_languages": ("en", "zh"), "probe_languages": ("en", "zh"),
           "independent_languages": ("en", "zh"), "attribution_languages": ("en", "zh"), "methods": ("memla", "ft"), "general_methods": ("memla", "ft"),
           "sweep_thresholds": (0.25, 0.5), "sweep_steps": (10, 20), "sequential_steps": (1, 3)}


def test_every_notebook_parameter_is_declared_and_its_default_fits():
    seen = set()
    for path in NOTEBOOKS:
        for name, default in parameter_cell(path).items():
            assert name in NOTEBOOK_PARAMETERS, f"{path.name}: parameter {name!r} has no declared type in " \
                                                f"memla_utils.config.NOTEBOOK_PARAMETERS"
            coerce_parameter(name, default)
            seen.add(name)
    assert LIST_PARAMS and {n for _, n in LIST_PARAMS} <= set(SAMPLES), "add a sample for each list parameter"
    assert set(NOTEBOOK_PARAMETERS) == seen, "declared parameters that no notebook has"


@pytest.mark.parametrize("notebook,name", LIST_PARAMS)
def test_list_parameter_accepts_scalar_comma_string_and_list(notebook, name):
    a, b = SAMPLES[name]
    kind = NOTEBOOK_PARAMETERS[name].kind
    assert coerce_parameter(name, a) == [a]                                      # papermill -p name a
    assert coerce_parameter(name, str(a)) == [a]                                 # batch -p name=a / a string
    assert coerce_parameter(name, f"{a},{b}") == [a, b] == coerce_parameter(name, f" {a} , {b} ")
    assert coerce_parameter(name, [a, b]) == [a, b] == coerce_parameter(name, (a, str(b)))
    assert all(type(v) is kind for v in coerce_parameter(name, f"{a},{b}"))
    with pytest.raises(ParameterError, match=name):
        coerce_parameter(name, {"not": "a list"})


@pytest.mark.parametrize("notebook,name", LIST_PARAMS)
def test_the_notebook_routes_the_parameter_through_the_coercion(notebook, name):
    """The notebook's own set-up call (its start_notebook(globals(), ...), executed on the parameters cell with
    papermill's value for a single item) gives the coerced list, and no other cell reads the raw parameter."""
    path = next(p for p in NOTEBOOKS if p.name == notebook)
    call = start_call(path)
    assert name in routed_names(call), f"{notebook}: {name} is not read by start_notebook"
    namespace = {**parameter_cell(path), "start_notebook": start_notebook}
    a, _ = SAMPLES[name]
    namespace[name] = batch_value = _papermill_value(str(a))
    if name == "languages":  # the edit languages must be among the evaluated ones
        namespace["edit_languages"] = _papermill_value(str(a))
    # the notebook's own call; globals() inside eval is ``namespace``
    cfg = eval(compile(ast.Expression(call), notebook, "eval"), namespace)  # noqa: S307
    got = getattr(cfg, name) if name in ("languages", "edit_languages", "methods") else cfg.extra[name]
    assert got == [a], (notebook, name, batch_value, got)
    for src in code_cells(path):
        raw = [n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Name) and n.id == name]
        assert not raw, f"{notebook}: a cell reads the raw parameter {name!r} instead of the coerced value"


def _papermill_value(text: str):
    """What ``papermill -p name <text>`` injects (its own command-line type resolution)."""
    from papermill.cli import _resolve_type

    return _resolve_type(text)


def test_papermill_passes_a_single_value_as_a_scalar():
    assert _papermill_value("10") == 10 and _papermill_value("0.5") == 0.5 and _papermill_value("5,10") == "5,10"


@pytest.mark.parametrize("name", sorted({n for _, n in LIST_PARAMS}))
def test_batch_driver_accepts_one_value_of_every_list_parameter(name):
    a, b = SAMPLES[name]
    one = batch.parse_assignments([f"{name}={a}"] + (["edit_languages=en"] if name == "languages" else []))
    two = batch.parse_assignments([f"{name}={a},{b}"])
    assert coerce_parameter(name, one[name]) == [a] and coerce_parameter(name, two[name]) == [a, b]
    if name not in ("edit_languages", "methods", "general_methods"):
        (plan,) = batch.plan_runs(None, one)  # validated like a notebook would read it
        cfg = RunConfig.from_params(**{k: v for k, v in plan.parameters.items() if k in NOTEBOOK_PARAMETERS})
        got = getattr(cfg, name) if name in ("languages", "edit_languages", "methods") else cfg.extra[name]
        assert got == [a]


def test_batch_reports_a_bad_item_naming_the_parameter():
    with pytest.raises(batch.BatchError, match="sweep_steps must be an integer"):
        batch.parse_assignments(["sweep_steps=5,x"])
    with pytest.raises(batch.BatchError, match="n_records must be an integer"):
        batch.parse_assignments(["n_records=many"])
    with pytest.raises(batch.BatchError, match="invalid parameters: parameter sweep_thresholds"):
        batch.plan_runs(None, {"sweep_thresholds": "0.1,high"})


def test_the_helpers_downstream_take_lists():
    from memla_utils.general import parse_methods, plan_study
    from memla_utils.masks import notebook_mask_config

    assert notebook_mask_config(["en", "zh"]).independent_languages == notebook_mask_config("en,zh").independent_languages
    assert notebook_mask_config("all").independent_languages == "all"
    assert parse_methods(["ft", "memla"], ["memla", "ft", "rome"]) == parse_methods("ft,memla", ["memla", "ft", "rome"])
    assert plan_study(["memla"], 2, [1, 3], ["memla"], 3).steps == (1, 3)


def test_attribution_languages_resolve_to_run_languages_in_run_order():
    run = dict(languages="en,zh,fr,es,ru", edit_languages="en,zh")
    assert RunConfig.from_params(**run).attribution_languages() == ["en", "zh", "fr", "es", "ru"]  # default "run"
    assert RunConfig.from_params(**run, attribution_languages="run").attribution_languages() == \
        ["en", "zh", "fr", "es", "ru"]
    # "masks": the edit languages + the independence languages (memla4mke: en, zh, fr), not es / ru
    assert RunConfig.from_params(**run, attribution_languages="masks").attribution_languages() == ["en", "zh", "fr"]
    assert RunConfig.from_params(**run, attribution_languages="masks", independent_languages="en,ru",
                                 ).attribution_languages() == ["en", "zh", "ru"]
    assert RunConfig.from_params(**run, attribution_languages="masks", independent_languages="all",
                                 ).attribution_languages() == ["en", "zh", "fr", "es", "ru"]
    assert RunConfig.from_params(**run, attribution_languages="ru,en").attribution_languages() == ["en", "ru"]
    with pytest.raises(ParameterError, match="attribution_languages.*'ko'"):
        RunConfig.from_params(**run, attribution_languages="en,ko").attribution_languages()
    with pytest.raises(ValueError, match="attribution_languages"):
        RunConfig.from_params(**run, attribution_languages="en,xx").attribution_languages()


def test_the_medium_preset_attributes_only_the_mask_languages():
    cfg = RunConfig.from_params(preset="medium")
    assert len(cfg.languages) == 12 and cfg.attribution_languages() == ["en", "zh", "fr"]
