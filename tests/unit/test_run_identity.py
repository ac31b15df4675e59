"""A run built in parts refuses to mix code, lock file, model or records; restart moves results aside."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import memla_utils.run_identity as ri
from memla_utils.mkeb.record import EditTarget, Record
from memla_utils.run_identity import (
    IDENTITY_FILE,
    RunIdentityError,
    check_run_identity,
    code_hashes,
    run_identity,
)


def recs(target: str = "Tokyo") -> list[Record]:
    return [Record("r0", "capital", {"en": EditTarget("The capital of {} is", "France", target, "Paris")})]


def test_identity_covers_every_stage_and_is_stable():
    a, b = code_hashes(), code_hashes()
    assert a == b and set(a) == {"foundation", "attribution", "editing", "evaluation", "notebooks"}
    assert run_identity("m", recs()) == run_identity("m", recs())


def test_a_run_refuses_other_inputs_and_says_what_changed(tmp_path):
    ident = run_identity("model-a", recs(), {"preset": "medium"})
    check_run_identity(tmp_path, ident)
    (tmp_path / "results-shard000of001.jsonl").write_text('{"x": 1}\n')
    check_run_identity(tmp_path, ident)  # same identity: appending is fine
    changed = run_identity("model-b", recs("Rome"), {"preset": "medium"})
    with pytest.raises(RunIdentityError, match=r"model: model-a -> model-b.*records:"):
        check_run_identity(tmp_path, changed)
    code = json.loads((tmp_path / IDENTITY_FILE).read_text())
    code["code"]["editing"] = "0" * 16  # as if the editors had changed since the run started
    (tmp_path / IDENTITY_FILE).write_text(json.dumps(code))
    with pytest.raises(RunIdentityError, match=r"code of stage 'editing'"):
        check_run_identity(tmp_path, ident)
    assert (tmp_path / "results-shard000of001.jsonl").is_file()  # nothing lost by refusing


def test_restart_moves_earlier_results_aside(tmp_path):
    check_run_identity(tmp_path, run_identity("model-a", recs()))
    (tmp_path / "results-shard000of001.jsonl").write_text('{"x": 1}\n')
    check_run_identity(tmp_path, run_identity("model-b", recs()), restart=True)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("superseded-")]
    assert len(aside) == 1 and (aside[0] / "results-shard000of001.jsonl").read_text() == '{"x": 1}\n'
    assert not (tmp_path / "results-shard000of001.jsonl").exists()
    assert json.loads((tmp_path / IDENTITY_FILE).read_text())["model"] == "model-b"


def _package_imports(path: Path) -> set[str]:
    """The memla_utils modules (``name.py`` or a package folder) that ``path`` imports, at any depth of its code."""
    import ast

    pkg = ri.PACKAGE_DIR
    rel = path.relative_to(pkg)
    here = rel.parts[:-1]  # the subpackage folder of this file
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
        names = [node.module] if node.module else [a.name for a in node.names]
        for name in names:
            parts = (*base, *name.split("."))
            top = parts[0]
            found.add(top if (pkg / top).is_dir() else f"{top}.py")
    return found


def test_every_module_a_stage_imports_is_hashed_or_says_why_not():
    covered = {e for entries in ri.STAGE_FILES.values() for e in entries}
    todo = [f for e in covered for f in ri._files(e)]
    seen: set[str] = set()
    while todo:
        path = todo.pop()
        for mod in _package_imports(path) - seen:
            seen.add(mod)
            if mod not in ri.NOT_STAGE_FILES:  # an exempt module decides no number, nor do its imports
                todo.extend(ri._files(mod))
    missing = sorted(m for m in seen if m not in covered and m not in ri.NOT_STAGE_FILES)
    assert not missing, f"stage code imports {missing}: add them to STAGE_FILES or NOT_STAGE_FILES with a reason"
    assert "prefix_scoring.py" in seen and "attribution_stair.py" in seen  # the walk reaches indirect imports


def test_an_unhashed_module_that_a_stage_imports_fails_the_coverage_check(monkeypatch):
    monkeypatch.setattr(ri, "STAGE_FILES", {k: tuple(e for e in v if e != "prefix_scoring.py")
                                           for k, v in ri.STAGE_FILES.items()})
    with pytest.raises(AssertionError, match="prefix_scoring.py"):
        test_every_module_a_stage_imports_is_hashed_or_says_why_not()


def test_the_notebooks_code_cells_count_and_their_outputs_do_not(tmp_path):
    """A changed code cell changes the run's identity; outputs, execution counts and markdown do not (an executed
    copy with its outputs hashes like its source); an unreadable notebook is named."""
    cell = {"cell_type": "code", "source": ["x = 1\n", "print(x)"], "outputs": [], "metadata": {},
            "execution_count": None}
    nb = {"cells": [{"cell_type": "markdown", "source": "# the claim", "metadata": {}}, cell], "metadata": {},
          "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "01_x.ipynb"
    path.write_text(json.dumps(nb))
    base = ri.notebooks_hash(tmp_path)
    cell.update(outputs=[{"output_type": "stream", "name": "stdout", "text": "1\n"}], execution_count=3)
    nb["cells"][0]["source"] = "# another claim"
    path.write_text(json.dumps(nb))
    assert ri.notebooks_hash(tmp_path) == base
    cell["source"] = "x = 2\nprint(x)"
    path.write_text(json.dumps(nb))
    assert ri.notebooks_hash(tmp_path) != base
    path.write_text("{not json")
    with pytest.raises(ValueError, match="01_x.ipynb"):
        ri.notebooks_hash(tmp_path)


def test_notebook_06s_parameters_rerun_only_notebook_06(tmp_path):
    params = {"preset": "medium", "n_records": 100}
    check_run_identity(tmp_path, run_identity("m", recs(), params))
    (tmp_path / "results-shard000of001.jsonl").write_text('{"x": 1}\n')
    (tmp_path / "general").mkdir()
    (tmp_path / "general" / "general.jsonl").write_text('{"g": 1}\n')
    # the run started without them (as the medium run did): adding notebook 06's study parameters re-runs 06 only
    study = {**params, "general_methods": "memla", "general_records": 30}
    ident = run_identity("m", recs(), study)
    assert "general_methods" not in ident.parameters
    assert ident.scoped == {"06_multihop_general": {"general_methods": "memla", "general_records": 30}}
    check_run_identity(tmp_path, ident)  # no error, no restart
    assert (tmp_path / "results-shard000of001.jsonl").read_text() == '{"x": 1}\n'  # the units' results stay
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("superseded-")]
    assert len(aside) == 1 and aside[0].name.endswith("-06_multihop_general")
    assert (aside[0] / "general" / "general.jsonl").read_text() == '{"g": 1}\n' and not (tmp_path / "general").exists()
    assert json.loads((tmp_path / IDENTITY_FILE).read_text())["scoped"] == ident.scoped
    check_run_identity(tmp_path, ident)  # the same again: nothing moves
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("superseded-")]) == 1
    # any other parameter is still refused, scoped ones changed or not
    with pytest.raises(RunIdentityError, match=r"parameter 'n_records': 100 -> 50"):
        check_run_identity(tmp_path, run_identity("m", recs(), {**study, "n_records": 50}))


def test_an_identity_file_written_before_scoped_parameters_existed_still_matches(tmp_path):
    ident = run_identity("m", recs(), {"preset": "medium"})
    legacy = {k: v for k, v in json.loads(json.dumps(ri.asdict(ident))).items() if k != "scoped"}
    (tmp_path / IDENTITY_FILE).write_text(json.dumps(legacy))
    (tmp_path / "results-shard000of001.jsonl").write_text('{"x": 1}\n')
    check_run_identity(tmp_path, ident)
    assert (tmp_path / "results-shard000of001.jsonl").is_file()


def test_scoped_parameters_are_read_by_their_notebook_only():
    """The claim SCOPED_PARAMETERS rests on: no other notebook's code mentions them."""
    import nbformat

    for path in sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb")):
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        for nb, names in ri.SCOPED_PARAMETERS.items():
            for name in names:
                if path.stem == nb:
                    assert name in code, (path.name, name)
                else:
                    assert name not in code, f"{path.name} reads {name}, a parameter scoped to {nb}"
    for nb in ri.SCOPED_PARAMETERS:
        assert nb in ri.SCOPED_OUTPUTS
