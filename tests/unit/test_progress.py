"""Progress bars come from one place and are text bars (memla_utils/progress.py)."""
from __future__ import annotations

import ast
from pathlib import Path

import tqdm.std

import memla_utils
from memla_utils.progress import tqdm as bar

PACKAGE = Path(memla_utils.__file__).parent


def test_bars_are_text_bars_in_every_context():
    # tqdm.auto would return the ipywidgets bar inside Jupyter (and warn "IProgress not found" without ipywidgets)
    assert bar is tqdm.std.tqdm


def test_no_module_imports_tqdm_directly():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "progress.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tqdm":
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
            elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "tqdm" for a in node.names):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, f"import tqdm from memla_utils.progress instead: {offenders}"
