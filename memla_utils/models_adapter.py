"""The per-architecture adapter: the only module that names model architectures (:data:`ARCHITECTURES`).

``ModelAdapter`` gives one view of every supported architecture: decoder layers, the FFN *neurons* (the input
of the MLP down projection: act(gate)*up for gated MLPs, act(fc) for GPT-2/BLOOM style) and the down
projection itself, with the axis of its weight that belongs to the neurons; and the neurons' pre-activation
point (output of the gate projection, or of the first projection), which memla4mke's attribution reads.
:func:`check_dtype` refuses a dtype an architecture is known to overflow in. Import it from
:mod:`memla_utils.models` (which re-exports every name here) or from here.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


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


__all__ = ["ARCHITECTURES", "ArchSpec", "ModelAdapter", "NeuronProbe", "UnsafeDtypeError", "UnsupportedModelError",
           "check_dtype"]
