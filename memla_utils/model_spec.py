"""How a worker process gets the run's model: reload it by name, or build it with a picklable factory (tests).

Shared by the executors that run units outside the notebook's process (:mod:`memla_utils.process_executor`,
:mod:`memla_utils.executors_ray`' Ray tasks).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .cache import default_cache_root, file_lock
from .models import LoadedModel

_DTYPE_NAMES = {"torch.float32": "float32", "torch.bfloat16": "bfloat16", "torch.float16": "float16"}


@dataclass(frozen=True)
class ModelSpec:
    """How a worker gets the model: ``load_model(name, device, dtype)``, or ``factory()`` (picklable, e.g.
    ``functools.partial(tiny_model, "llama")`` in tests). ``device="auto"``: the task's GPU if it has one."""

    name: str
    device: str = "auto"
    dtype: str = "auto"
    factory: Callable[[], LoadedModel] | None = None

    @classmethod
    def from_loaded(cls, lm: LoadedModel) -> ModelSpec:
        """The spec that reloads ``lm`` by name in a worker (the fingerprints are compared)."""
        if lm.name in ("in-memory", "") or lm.name.startswith(("tiny-", "random:")):
            raise ValueError(f"workers load the model by name, but {lm.name!r} was "
                             f"built in memory; pass a ModelSpec with a factory instead")
        return cls(lm.name, "auto", _DTYPE_NAMES.get(str(lm.dtype), "auto"))

    def key(self) -> str:
        return f"{self.name}|{self.device}|{self.dtype}"

    def load(self) -> LoadedModel:
        if self.factory is not None:
            return self.factory()
        from .models import load_model

        return load_model(self.name, device=self.device, dtype=self.dtype)


@contextmanager
def first_load_lock(spec: ModelSpec) -> Iterator[None]:
    """Workers sharing a cache folder (the GPUs of one node, or a shared filesystem) dequantize the embedded
    default model one at a time: the first writes it, the others then read it (one load in memory at a time;
    :func:`memla_utils.models.materialize_default_model` has a lock of its own for any other caller)."""
    if spec.factory is not None or spec.name != "default":
        yield
        return
    with file_lock(default_cache_root() / ".default-model.lock"):
        yield


__all__ = ["ModelSpec", "first_load_lock"]
