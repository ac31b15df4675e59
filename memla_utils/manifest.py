"""Run manifests: what produced an artifact (commit, package versions, model, parameters, timings, device).

A reviewer looking at a table or figure must be able to tell exactly which code, model and configuration made
it. Every folder of artifacts gets one ``MANIFEST.json`` listing its files with their sha256, and the batch
driver writes one per run. Timestamps and timings live only in the manifest, never in the artifacts, so the
artifacts themselves stay bit-for-bit reproducible.
"""
from __future__ import annotations

import hashlib
import logging
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

#: Packages whose versions decide the numbers (the model stack) or the artifacts (the plotting stack).
TRACKED_PACKAGES: tuple[str, ...] = ("memla-utils", "torch", "transformers", "peft", "accelerate", "safetensors",
                                     "numpy", "pandas", "scipy", "matplotlib", "seaborn", "papermill", "babel")

MANIFEST_NAME = "MANIFEST.json"


def git_state(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """Commit hash and whether the working tree has uncommitted changes (``None`` outside a git checkout)."""
    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    dirty = run("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(dirty) if dirty is not None else None}


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (``None`` where it is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_info(device: str | None = None) -> dict[str, Any]:
    """Host, Python, CPU count and (when torch sees one) the accelerator name."""
    import os

    info: dict[str, Any] = {"requested": device, "python": sys.version.split()[0], "platform": platform.platform(),
                            "machine": platform.machine(), "cpu_count": os.cpu_count()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["cuda"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


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

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self.__dict__)

    def write(self, path: str | Path) -> Path:
        """Write as JSON (atomically); a folder gets ``MANIFEST.json`` inside it."""
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / MANIFEST_NAME
        write_json_atomic(path, self.to_dict(), indent=2)
        log.info("wrote manifest %s (%d artifacts)", path, len(self.artifacts))
        return path


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
                    inputs=dict(inputs or {}),
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


__all__ = ["MANIFEST_NAME", "Manifest", "Stopwatch", "TRACKED_PACKAGES", "build_manifest", "device_info",
           "file_sha256", "git_state", "model_info", "package_versions", "read_manifest", "skipped_in"]
