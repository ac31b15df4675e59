"""Content-addressed artifact cache: the one place that knows how artifacts are keyed, written and found.

Key = sha256 over canonical JSON of (kind, model fingerprint, content hashes, parameters). Values are JSON or
safetensors (never pickle), written to a temporary file and renamed, so an interrupted run leaves either the
complete artifact or nothing. The cache root is ``$MEMLA_CACHE`` or ``<project>/.cache/memla``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_cache_root() -> Path:
    """``$MEMLA_CACHE`` if set, else ``.cache/memla`` beside the package (ignored by git)."""
    return Path(os.environ.get("MEMLA_CACHE", PROJECT_ROOT / ".cache" / "memla"))


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    return value


def canonical_json(value: Any) -> str:
    """Stable JSON text for hashing: sorted keys, dataclasses expanded, no whitespace variation."""
    return json.dumps(_jsonable(value), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def content_hash(value: Any, length: int = 16) -> str:
    """Hash of any JSON-able value (records, parameter dataclasses, lists of texts)."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()[:length]


def cache_key(kind: str, **parts: Any) -> str:
    """Key of one artifact: its kind plus everything that determines its content."""
    return f"{kind}-{content_hash({'kind': kind, **parts}, 24)}"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path: Path, value: Any, *, indent: int | None = None) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(value), ensure_ascii=False, indent=indent), encoding="utf-8")


def write_tensors_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


class ArtifactCache:
    """A folder of content-addressed artifacts, grouped in sub-folders by kind."""

    def __init__(self, root: str | Path | None = None, *, enabled: bool = True) -> None:
        self.root = Path(root) if root is not None else default_cache_root()
        self.enabled = enabled

    def path(self, key: str, suffix: str) -> Path:
        kind = key.split("-", 1)[0]
        return self.root / kind / f"{key}{suffix}"

    def get_json(self, key: str) -> Any | None:
        p = self.path(key, ".json")
        if not self.enabled or not p.exists():
            return None
        return json.loads(p.read_text(encoding="utf-8"))

    def put_json(self, key: str, value: Any) -> None:
        if self.enabled:
            write_json_atomic(self.path(key, ".json"), value)

    def get_tensors(self, key: str) -> dict[str, torch.Tensor] | None:
        p = self.path(key, ".safetensors")
        if not self.enabled or not p.exists():
            return None
        return load_file(str(p))

    def put_tensors(self, key: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
        if self.enabled:
            write_tensors_atomic(self.path(key, ".safetensors"), tensors, metadata)

    def __contains__(self, key: str) -> bool:
        return self.enabled and (self.path(key, ".json").exists() or self.path(key, ".safetensors").exists())
