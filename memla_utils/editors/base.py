"""The editor interface every method implements, and the reversible ``Edit`` it returns.

An ``Edit`` snapshots the parameters it touched before and after editing, so ``revert()`` restores the
original weights bit-exactly, ``save()`` writes the edited values (safetensors), and ``apply()`` puts them back
into the same or a freshly loaded model. In-context methods (IKE) change no weights: their edit is a prompt
prefix per language, applied by :meth:`Edit.wrap_prompt`.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from safetensors.torch import load_file
from torch import nn

from ..cache import write_json_atomic, write_tensors_atomic
from ..mkeb.record import Record
from ..models import LoadedModel


class EditError(RuntimeError):
    """An edit that could not be made (bad input, NaN loss, ...); the model is left unchanged."""


def _params(model: nn.Module) -> dict[str, nn.Parameter]:
    return dict(model.named_parameters())


@dataclass
class Edit:
    """A reversible change to a model's weights (and/or prompts)."""

    method: str
    edited: dict[str, torch.Tensor] = field(default_factory=dict)
    originals: dict[str, torch.Tensor] = field(default_factory=dict)
    prompt_prefix: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False)
    applied: bool = False

    @property
    def touched(self) -> list[str]:
        return sorted(self.edited)

    def wrap_prompt(self, prompt: str, language: str) -> str:
        """The prompt as the edited model sees it (IKE puts demonstrations and the new fact in front)."""
        return self.prompt_prefix.get(language, "") + prompt

    def delta(self, name: str) -> torch.Tensor:
        return self.edited[name].float() - self.originals[name].float()

    @torch.no_grad()
    def revert(self) -> None:
        """Restore every touched parameter to its value before the edit, bit for bit."""
        if not self.applied:
            return
        if self.model is None:
            raise EditError("edit has no model to revert")
        params = _params(self.model)
        for name, value in self.originals.items():
            params[name].data.copy_(value.to(params[name].device))
        self.applied = False

    @torch.no_grad()
    def apply(self, model: nn.Module | None = None) -> Edit:
        """Write the edited values into ``model`` (default: the one edited), remembering what they replace."""
        model = model if model is not None else self.model
        if model is None:
            raise EditError("apply() needs a model")
        if self.applied and model is self.model:
            return self
        params = _params(model)
        missing = [n for n in self.edited if n not in params]
        if missing:
            raise EditError(f"model has no parameter(s) {missing[:3]} that this {self.method} edit changes")
        for name, value in self.edited.items():
            if tuple(params[name].shape) != tuple(value.shape):
                raise EditError(f"parameter {name} has shape {tuple(params[name].shape)}, edit expects "
                                f"{tuple(value.shape)}")
        self.originals = {n: params[n].detach().cpu().clone() for n in self.edited}
        for name, value in self.edited.items():
            params[name].data.copy_(value.to(params[name].device, params[name].dtype))
        self.model, self.applied = model, True
        return self

    def save(self, path: str | Path) -> Path:
        """Write ``<path>.safetensors`` (edited values) and ``<path>.json`` (method, prefixes, info)."""
        path = Path(path)
        if self.edited:
            write_tensors_atomic(path.with_suffix(".safetensors"), self.edited)
        write_json_atomic(path.with_suffix(".json"), {"method": self.method, "prompt_prefix": self.prompt_prefix,
                                                      "info": self.info, "tensors": self.touched}, indent=2)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Edit:
        """Read an edit written by :meth:`save` (not applied; call :meth:`apply`)."""
        path = Path(path)
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        tensors = load_file(str(path.with_suffix(".safetensors"))) if meta.get("tensors") else {}
        return cls(method=meta["method"], edited=tensors, prompt_prefix=meta.get("prompt_prefix", {}),
                   info=meta.get("info", {}))


@contextmanager
def recording_edit(model: nn.Module, names: Iterable[str], method: str) -> Iterator[Edit]:
    """Snapshot ``names`` before the block and record their new values after it.

    If the block raises, or leaves a non-finite value, the parameters are restored and ``EditError`` raised,
    so a failed edit never corrupts the model.
    """
    params = _params(model)
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in params]
    if unknown:
        raise EditError(f"{method}: model has no parameter(s) {unknown[:3]}")
    edit = Edit(method=method, model=model)
    edit.originals = {n: params[n].detach().cpu().clone() for n in names}
    edit.applied = True
    try:
        yield edit
        with torch.no_grad():
            for n in names:
                if not torch.isfinite(params[n]).all():
                    raise EditError(f"{method}: edit produced non-finite values in {n}")
    except BaseException:
        edit.revert()
        raise
    edit.edited = {n: params[n].detach().cpu().clone() for n in names}


@runtime_checkable
class Editor(Protocol):
    """Anything that turns (model, record, edit language) into a reversible :class:`Edit`."""

    name: str

    def edit(self, lm: LoadedModel, record: Record, language: str, **context: Any) -> Edit: ...


class BaseEditor:
    """Shared plumbing: ``fit`` (optional preparation on training records) and batch editing.

    Subclasses implement ``edit``; methods that can edit several facts in one update override ``edit_batch``.
    """

    name = "base"
    #: whether the method needs ``target_true`` (e.g. its loss pushes the old answer down)
    needs_target_true = False

    def fit(self, lm: LoadedModel, train_records: Sequence[Record] = ()) -> BaseEditor:
        """Prepare on a training split (MEND's hypernetwork, IKE's demonstration pool); default: nothing."""
        return self

    def edit(self, lm: LoadedModel, record: Record, language: str, **context: Any) -> Edit:  # pragma: no cover
        raise NotImplementedError

    def edit_batch(self, lm: LoadedModel, records: Sequence[Record], language: str, **context: Any) -> list[Edit]:
        """Edit several facts; the default applies them one after another (sequential editing)."""
        return [self.edit(lm, r, language, **context) for r in records]

    def check_record(self, record: Record, language: str) -> None:
        view = record.for_language(language)
        if not view.target_new.strip():
            raise EditError(f"record {record.example_id!r} ({language}): empty target_new")
        if self.needs_target_true and not (view.target_true or "").strip():
            raise EditError(f"record {record.example_id!r} ({language}): {self.name} needs target_true, "
                            f"which this record does not have")


EditorFactory = Callable[..., BaseEditor]
EDITORS: dict[str, EditorFactory] = {}


def register_editor(name: str) -> Callable[[EditorFactory], EditorFactory]:
    """Decorator: make ``make_editor(name)`` build this editor (names are lower-case, e.g. ``memla-lse``)."""
    def deco(factory: EditorFactory) -> EditorFactory:
        EDITORS[name] = factory
        return factory
    return deco


def make_editor(name: str, **overrides: Any) -> BaseEditor:
    """Build a registered editor; unknown names list the available ones."""
    from . import load_all  # noqa: F401  (registers every editor module)

    load_all()
    if name not in EDITORS:
        raise ValueError(f"unknown editing method {name!r}; available: {', '.join(sorted(EDITORS))}")
    return EDITORS[name](**overrides)
