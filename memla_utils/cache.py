"""Content-addressed artifact cache: the one place that knows how artifacts are keyed, written and found.

Key = sha256 over canonical JSON of (kind, model fingerprint, content hashes, parameters). Values are JSON or
safetensors (never pickle), written to a temporary file and renamed, so an interrupted run leaves either the
complete artifact or nothing; a safetensors file that already holds the same content is not rewritten
(:func:`write_tensors_atomic`). The cache root is ``$MEMLA_CACHE`` or ``<project>/.cache/memla``.

A multi-session run (the medium preset, issue 16) also has a *durable* cache, ``$MEMLA_RUN_CACHE`` (the batch
driver sets it to ``<run_dir>/cache``, a tracked folder): each part may run on a fresh machine whose local cache is
empty, so what is expensive to recompute and small enough for git is mirrored there and committed with the
run's results: the JSON kinds of :data:`DURABLE_JSON_KINDS` as they are, and attribution scores in the compact
form of :mod:`memla_utils.attribution` (written through :meth:`ArtifactCache.put_durable_tensors`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .file_mode import set_new_file_mode

PROJECT_ROOT = Path(__file__).resolve().parent.parent

log = logging.getLogger(__name__)


def default_cache_root() -> Path:
    """``$MEMLA_CACHE`` if set, else ``.cache/memla`` beside the package (ignored by git)."""
    return Path(os.environ.get("MEMLA_CACHE", PROJECT_ROOT / ".cache" / "memla"))


#: Environment variable naming the durable cache of a multi-session run (``batch`` sets it; unset: none).
DURABLE_ENV = "MEMLA_RUN_CACHE"
#: JSON kinds mirrored into the durable cache: the unedited evaluation of a record per language (``preedit``,
#: the NS reference, ~30 min for the medium run), the knowledge probe (``known``) and the suppression check's
#: effects per record and language (``sanity``, ~25 min for the medium run); each a few kB per entry or less.
#: Covariances (16 MB per layer) and MEND's trained editor stay local: a part recomputes them in minutes.
DURABLE_JSON_KINDS: tuple[str, ...] = ("preedit", "known", "sanity")


def default_durable_root() -> Path | None:
    """``$MEMLA_RUN_CACHE`` if set (a multi-session run's ``<run_dir>/cache``), else ``None``."""
    root = os.environ.get(DURABLE_ENV)
    return Path(root) if root else None


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
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds. The file
    keeps the mode a plain new file would get (:mod:`memla_utils.file_mode`; ``mkstemp`` alone gives 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        set_new_file_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` for the block: the project's one way for processes (the
    executors' workers, xdist workers, two notebooks sharing a cache) to take turns at a shared file.

    ``fcntl.flock`` (POSIX advisory lock, ``LOCK_EX``) on ``path``, opened for this call; the file and its folder
    are created if missing and left in place afterwards (removing a lock file races with the next holder). The
    lock belongs to the open file, so threads of one process exclude each other too, and so does a nested
    ``file_lock`` of the same path: that deadlocks, give each job its own lock file. The kernel releases it when
    its holder dies. Blocks until the lock is free (logged at INFO when it has to wait). Raises ``OSError`` if the
    file cannot be created and ``ModuleNotFoundError`` (no ``fcntl``) off POSIX.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for the lock %s (another process holds it)", path)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_json_atomic(path: Path, value: Any, *, indent: int | None = None) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(value), ensure_ascii=False, indent=indent), encoding="utf-8")


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bytes (bit for bit: a NaN equals the same NaN, ``-0.0`` differs from ``0.0``)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


def file_holds_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bool:
    """Whether the safetensors file ``path`` already holds exactly ``tensors`` and ``metadata``.

    Equal means: the same tensor names, and per name the same dtype, shape and values bit for bit; and the same
    metadata as a dict (key order is ignored: safetensors writes the header's metadata keys in an order that
    changes from process to process; ``None`` and ``{}`` are the same). ``False`` when the file is missing or
    not a readable safetensors file. Tensors are read one at a time, so at most one extra tensor is in memory.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}) != (metadata or {}) or set(f.keys()) != set(tensors):
                return False
            return all(_same_bits(f.get_tensor(name), t.detach().cpu()) for name, t in tensors.items())
    except (OSError, SafetensorError):
        return False


def write_tensors_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (and the string ``metadata``) to the safetensors file ``path`` atomically: a temporary
    file renamed onto ``path``, so a reader sees the old file or the new one, never half of one.

    A file that already holds the same content (:func:`file_holds_tensors`: same names, dtypes, shapes, values
    bit for bit, same metadata in any key order) is left alone, bytes and mtime: without this every rerun
    rewrote each tracked mask file with its metadata keys in another order (git noise in ``results/``).
    """
    if file_holds_tensors(path, tensors, metadata):
        return
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def _kind(key: str) -> str:
    return key.split("-", 1)[0]


class ArtifactCache:
    """A folder of content-addressed artifacts, grouped in sub-folders by kind, with an optional durable mirror.

    ``durable``: the durable cache's folder; ``None`` takes :func:`default_durable_root` (``$MEMLA_RUN_CACHE``),
    ``False`` disables it. JSON artifacts of :data:`DURABLE_JSON_KINDS` are written to both folders and read from
    the durable one when the local one lacks them; tensors go there only through :meth:`put_durable_tensors`.
    """

    def __init__(self, root: str | Path | None = None, *, enabled: bool = True,
                 durable: str | Path | None | bool = None) -> None:
        self.root = Path(root) if root is not None else default_cache_root()
        self.enabled = enabled
        if durable is None or durable is True:
            self.durable_root: Path | None = default_durable_root()
        elif durable is False:
            self.durable_root = None
        else:
            self.durable_root = Path(durable)

    def path(self, key: str, suffix: str) -> Path:
        return self.root / _kind(key) / f"{key}{suffix}"

    def durable_path(self, key: str, suffix: str) -> Path | None:
        """Where ``key`` lies in the durable cache; ``None`` without one (or when caching is disabled)."""
        if not self.enabled or self.durable_root is None:
            return None
        return self.durable_root / _kind(key) / f"{key}{suffix}"

    def get_json(self, key: str) -> Any | None:
        if not self.enabled:
            return None
        for p in (self.path(key, ".json"), self._durable_json(key)):
            if p is not None and p.exists():
                return json.loads(p.read_text(encoding="utf-8"))
        return None

    def put_json(self, key: str, value: Any) -> None:
        if self.enabled:
            write_json_atomic(self.path(key, ".json"), value)
            durable = self._durable_json(key)
            if durable is not None:
                write_json_atomic(durable, value)

    def _durable_json(self, key: str) -> Path | None:
        return self.durable_path(key, ".json") if _kind(key) in DURABLE_JSON_KINDS else None

    def get_durable_tensors(self, key: str) -> dict[str, torch.Tensor] | None:
        """Tensors stored under ``key`` in the durable cache (``None``: no durable cache or not there)."""
        p = self.durable_path(key, ".safetensors")
        return load_file(str(p)) if p is not None and p.exists() else None

    def put_durable_tensors(self, key: str, tensors: dict[str, torch.Tensor],
                            metadata: dict[str, str] | None = None) -> None:
        """Write ``tensors`` under ``key`` into the durable cache (nothing without one). Callers store a compact
        form there: the durable cache is committed to git."""
        p = self.durable_path(key, ".safetensors")
        if p is not None:
            write_tensors_atomic(p, tensors, metadata)

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
