"""Side-by-side speed comparisons against a reference commit of the package, in one benchmark run.

The speed issue measures every ratio against *the commit just before its first change* (:data:`REFERENCE_COMMIT`),
on the same inputs and machine, in the same run. This module gives each benchmark that reference:

- :func:`checkout` extracts ``memla_utils/`` of a commit (``git archive``) into a content-addressed folder
  (``.cache/memla/reference/<commit>``, written atomically; nothing is checked out over the working tree);
- :func:`run_worker` runs a benchmark script's ``--worker`` mode in a subprocess whose ``PYTHONPATH`` starts
  with that folder, so ``import memla_utils`` there is the reference code (or the working tree's, for
  ``code_root=None``); the worker writes one JSON object (timings and the outputs to compare) to a file;
- :func:`interleave` alternates reference and current workers ``repeats`` times (ref, new, ref, new, ...), so
  a machine that slows down during the run slows both sides alike.

A worker must only call functions that exist in both versions (stage-level entry points: attribution,
evaluation, an editor's ``apply``). Outputs are compared by the caller (same metrics, Spearman of scores, ...).
"""
from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import PROJECT_ROOT

log = logging.getLogger("benchmarks")

#: The commit just before the speed issue's first change (after the fidelity and trust fixes).
REFERENCE_COMMIT = "cdad12e"
REFERENCE_ROOT = PROJECT_ROOT / ".cache" / "memla" / "reference"


def resolve(commit: str) -> str:
    """The full 40-hex hash of ``commit`` (raises ``ValueError`` naming it when git does not know it)."""
    r = subprocess.run(["git", "rev-parse", "--verify", f"{commit}^{{commit}}"], cwd=PROJECT_ROOT,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise ValueError(f"reference commit {commit!r} is not in this repository ({r.stderr.strip()})")
    return r.stdout.strip()


def head_commit() -> str:
    """The working tree's HEAD (the JSON says whether the tree had uncommitted changes: :func:`dirty`)."""
    return resolve("HEAD")


def dirty() -> bool:
    """True when ``memla_utils/`` or ``benchmarks/`` differ from HEAD (a measurement of uncommitted code)."""
    r = subprocess.run(["git", "status", "--porcelain", "--", "memla_utils", "benchmarks"], cwd=PROJECT_ROOT,
                       capture_output=True, text=True)
    return bool(r.stdout.strip())


def checkout(commit: str = REFERENCE_COMMIT, root: Path = REFERENCE_ROOT) -> Path:
    """A folder holding ``memla_utils/`` as of ``commit``; extracted once, atomically (rename of a temp dir)."""
    full = resolve(commit)
    dest = root / full
    if (dest / "memla_utils" / "__init__.py").exists():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", "--format=tar", full, "memla_utils"], cwd=PROJECT_ROOT,
                             capture_output=True, check=True).stdout
    tmp = Path(tempfile.mkdtemp(prefix=f".{full[:12]}-", dir=root))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp, filter="data")
    try:
        tmp.rename(dest)
    except OSError:  # another process extracted it first
        if not (dest / "memla_utils" / "__init__.py").exists():
            raise
    log.info("reference code %s at %s", full[:12], dest)
    return dest


def run_worker(script: str | Path, args: Sequence[str], code_root: Path | None) -> dict[str, Any]:
    """Run ``python <script> --worker <args> --worker-out F`` with ``code_root`` first on ``PYTHONPATH``.

    ``code_root=None`` runs the working tree's package. Returns the JSON the worker wrote; raises
    ``RuntimeError`` with the worker's last output lines when it fails.
    """
    env = dict(os.environ)
    root = str(code_root) if code_root is not None else str(PROJECT_ROOT)
    env["PYTHONPATH"] = os.pathsep.join([root, str(PROJECT_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                                                                     else []))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "worker.json"
        cmd = [sys.executable, str(script), "--worker", *args, "--worker-out", str(out)]
        r = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
        if r.returncode != 0 or not out.exists():
            tail = "\n".join((r.stdout + r.stderr).splitlines()[-30:])
            raise RuntimeError(f"benchmark worker failed ({' '.join(cmd)}; code {root}):\n{tail}")
        return json.loads(out.read_text())


def worker_package_root() -> str:
    """Inside a worker: the folder its ``memla_utils`` was imported from (to prove which code ran)."""
    import memla_utils

    return str(Path(memla_utils.__file__).resolve().parent.parent)


def interleave(script: str | Path, args: Sequence[str], *, repeats: int = 1,
               reference: str = REFERENCE_COMMIT) -> dict[str, list[dict[str, Any]]]:
    """Reference and current workers alternately, ``repeats`` times each: ``{"reference": [...], "current": [...]}``."""
    ref_root = checkout(reference)
    runs: dict[str, list[dict[str, Any]]] = {"reference": [], "current": []}
    for i in range(repeats):
        for side, root in (("reference", ref_root), ("current", None)):
            log.info("worker %s (%d/%d)", side, i + 1, repeats)
            res = run_worker(script, args, root)
            expected = str(ref_root if root is not None else PROJECT_ROOT)
            if res.get("package_root") not in (None, expected):
                raise RuntimeError(f"{side} worker imported memla_utils from {res['package_root']}, not {expected}")
            runs[side].append(res)
    return runs


def provenance(reference: str = REFERENCE_COMMIT) -> dict[str, Any]:
    """What the JSON of a side-by-side benchmark records about the code it compared."""
    return {"reference_commit": resolve(reference), "current_commit": head_commit(), "current_dirty": dirty()}


__all__ = ["REFERENCE_COMMIT", "checkout", "dirty", "head_commit", "interleave", "provenance", "resolve",
           "run_worker", "worker_package_root"]
