"""The editor interface every method implements, and the reversible ``Edit`` it returns.

An ``Edit`` snapshots the parameters it touched before and after editing, so ``revert()`` restores the
original weights bit-exactly, ``save()`` writes the edited values (safetensors), and ``apply()`` puts them back
into the same or a freshly loaded model. In-context methods (IKE) change no weights: their edit is a prompt
prefix per language, applied by :meth:`Edit.wrap_prompt`.

**Several edits on one model revert newest first.** Each model keeps the stack of edits applied to it. Reverting
an edit while a *later* edit that changed any of the same parameters is still applied raises ``EditError``
naming both edits (and changes nothing): restoring the older snapshot would silently undo the newer edit, and
the newer edit's own revert would then put the older edit's values back. Edits that touch disjoint parameters,
and in-context edits, revert in any order. Reverting an edit whose parameters were changed since by anything
else (a hand-made change, an edit that was dropped without revert) also raises. So whenever every ``revert()``
returns, the weights are bit-for-bit those before the first edit.

**Records an editor cannot use** are refused by :meth:`BaseEditor.check_record` (``EditError`` naming record,
language and why) before any weight changes; the runner calls it for every method before a run starts and skips
a record that any method refuses, for every method (see :mod:`memla_utils.runner`).
"""
from __future__ import annotations

import functools
import importlib
import itertools
import json
import logging
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from safetensors.torch import load_file
from torch import nn

from ..cache import write_json_atomic, write_tensors_atomic
from ..mkeb.record import Record, RecordError
from ..models import LoadedModel

log = logging.getLogger(__name__)


class EditError(RuntimeError):
    """An edit that could not be made (bad input, NaN loss, ...) or reverted out of order; the model is left
    unchanged."""


def _params(model: nn.Module) -> dict[str, nn.Parameter]:
    return dict(model.named_parameters())


#: model -> weak references to the edits applied to it, oldest first (see the module docstring)
_APPLIED: weakref.WeakKeyDictionary[nn.Module, list[weakref.ReferenceType[Edit]]] = weakref.WeakKeyDictionary()
_SERIAL = itertools.count(1)


def applied_edits(model: nn.Module) -> list[Edit]:
    """The edits currently applied to ``model`` (still referenced somewhere), oldest first."""
    live = [e for e in (r() for r in _APPLIED.get(model, [])) if e is not None and e.applied]
    return live


def _push(model: nn.Module, edit: Edit) -> None:
    refs = [r for r in _APPLIED.get(model, []) if r() is not None and r() is not edit]
    _APPLIED[model] = [*refs, weakref.ref(edit)]


def _pop(model: nn.Module, edit: Edit) -> None:
    if model in _APPLIED:
        _APPLIED[model] = [r for r in _APPLIED[model] if r() is not None and r() is not edit]


@dataclass(eq=False)
class Edit:
    """A reversible change to a model's weights (and/or prompts).

    ``label`` names the edit in error messages (method, serial number and, when the editor set it, the record
    and language); edits compare by identity.
    """

    method: str
    edited: dict[str, torch.Tensor] = field(default_factory=dict)
    originals: dict[str, torch.Tensor] = field(default_factory=dict)
    prompt_prefix: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False)
    applied: bool = False
    label: str = ""
    serial: int = field(default_factory=lambda: next(_SERIAL), repr=False)

    def describe(self) -> str:
        """``"rome edit #3 (record 'r1', en)"``: how errors name this edit."""
        return f"{self.method} edit #{self.serial}" + (f" ({self.label})" if self.label else "")

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
        """Restore every touched parameter to its value before the edit, bit for bit.

        Raises ``EditError`` (and changes nothing) if a later edit that changed any of the same parameters is
        still applied (revert that one first: edits revert newest first), or if a touched parameter no longer
        holds the value this edit wrote. Reverting an edit that is not applied does nothing.
        """
        if not self.applied:
            return
        if self.model is None:
            raise EditError(f"{self.describe()} has no model to revert")
        mine = set(self.originals)
        stack = applied_edits(self.model)
        later = stack[stack.index(self) + 1:] if self in stack else []
        blocking = [e for e in later if mine & set(e.originals)]
        if blocking:
            shared = sorted(mine & set(blocking[-1].originals))
            raise EditError(
                f"cannot revert {self.describe()} while the later {blocking[-1].describe()} is still applied: "
                f"both changed {shared[0]}" + (f" and {len(shared) - 1} more parameter(s)" if len(shared) > 1 else "")
                + f"; revert edits newest first ({', '.join(e.describe() for e in reversed(blocking))}, then this "
                f"one), otherwise the older snapshot would undo the newer edit and the weights would not return "
                f"to their originals")
        params = _params(self.model)
        for name, value in self.edited.items():
            if name in params and not torch.equal(params[name].detach().cpu(), value.to(params[name].dtype)):
                raise EditError(f"cannot revert {self.describe()}: parameter {name} no longer holds the value this "
                                f"edit wrote (changed since by something that is not a later applied edit, e.g. by "
                                f"hand or by an edit dropped without revert); reverting would discard that change")
        self._restore()

    @torch.no_grad()
    def _restore(self) -> None:
        """Copy the snapshots back (no checks) and leave the model's stack of applied edits."""
        if self.model is not None:
            params = _params(self.model)
            for name, value in self.originals.items():
                params[name].data.copy_(value.to(params[name].device))
            _pop(self.model, self)
        self.applied = False

    @torch.no_grad()
    def apply(self, model: nn.Module | None = None) -> Edit:
        """Write the edited values into ``model`` (default: the one edited), remembering what they replace."""
        model = model if model is not None else self.model
        if model is None:
            raise EditError("apply() needs a model")
        if self.applied and model is self.model:
            return self
        if self.applied:
            raise EditError(f"{self.describe()} is applied to another model; revert it there before applying it "
                            f"to a new one")
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
        if self.edited:
            _push(model, self)
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
    so a failed edit never corrupts the model. A successful edit joins the model's stack of applied edits
    (reverts go newest first, see the module docstring).
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
        edit._restore()
        raise
    edit.edited = {n: params[n].detach().cpu().clone() for n in names}
    if names:
        _push(model, edit)


@runtime_checkable
class Editor(Protocol):
    """Anything that turns (model, record, edit language) into a reversible :class:`Edit`."""

    name: str

    def edit(self, lm: LoadedModel, record: Record, language: str, **context: Any) -> Edit: ...


def _labelled(edit_fn: Callable[..., Edit]) -> Callable[..., Edit]:
    """Wrap an editor's ``edit`` so the returned :class:`Edit` names its record and language in errors."""
    @functools.wraps(edit_fn)
    def edit(self: BaseEditor, lm: LoadedModel, record: Record, language: str, **context: Any) -> Edit:
        out = edit_fn(self, lm, record, language, **context)
        if isinstance(out, Edit) and not out.label:
            out.label = f"record {record.example_id!r}, {language}"
        return out
    return edit


class BaseEditor:
    """Shared plumbing: ``fit`` (optional preparation on training records), the record check and batch editing.

    Subclasses implement ``edit`` (and call :meth:`check_record` first); methods that can edit several facts in
    one update override ``edit_batch``. Methods with further requirements on a record (the locate-then-edit
    family needs the subject in the prompt) extend :meth:`check_record`, which the runner calls for every
    method before a run starts.
    """

    name = "base"
    #: whether the method needs ``target_true`` (e.g. its loss pushes the old answer down)
    needs_target_true = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "edit" in cls.__dict__:
            cls.edit = _labelled(cls.__dict__["edit"])  # type: ignore[method-assign]

    def fit(self, lm: LoadedModel, train_records: Sequence[Record] = ()) -> BaseEditor:
        """Prepare on a training split (MEND's hypernetwork, IKE's demonstration pool); default: nothing."""
        return self

    def edit(self, lm: LoadedModel, record: Record, language: str, **context: Any) -> Edit:  # pragma: no cover
        raise NotImplementedError

    def edit_batch(self, lm: LoadedModel, records: Sequence[Record], language: str, **context: Any) -> list[Edit]:
        """Edit several facts; the default applies them one after another (sequential editing)."""
        return [self.edit(lm, r, language, **context) for r in records]

    def check_record(self, record: Record, language: str) -> None:
        """Raise ``EditError`` naming the record, language and reason if this method cannot edit ``record`` in
        ``language`` as written (missing language, blank prompt or answer, missing ``target_true`` for a method
        that needs it, ...). Pure check on the record: no model, nothing changes."""
        e = record.edit.get(language)
        if e is not None and not e.target_new.strip():
            raise EditError(f"record {record.example_id!r} ({language}): empty target_new")
        try:
            view = record.for_language(language)
        except RecordError as err:
            raise EditError(f"{self.name}: {err}") from err
        if self.needs_target_true and not (view.target_true or "").strip():
            raise EditError(f"record {record.example_id!r} ({language}): {self.name} needs target_true, "
                            f"which this record does not have")


@dataclass(frozen=True)
class RecordProblem:
    """Why a record cannot be used: which language and (when it is one method's requirement) which method."""

    record: str
    language: str
    method: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"record": self.record, "language": self.language, "method": self.method, "reason": self.reason}


def record_problems(record: Record, editors: dict[str, BaseEditor], edit_languages: Sequence[str],
                    eval_languages: Sequence[str] = ()) -> list[RecordProblem]:
    """Everything that makes ``record`` unusable for a run: blank prompts or answers in any language of the run
    (nothing could be scored on them), then every editor's :meth:`~BaseEditor.check_record` in every edit
    language. Empty list: every method can edit the record in every edit language. A language the record lacks
    is not a problem here (callers decide whether that is a configuration error)."""
    out: list[RecordProblem] = []
    for lang in dict.fromkeys([*edit_languages, *eval_languages]):
        if lang not in record.edit:
            continue
        blank = record.blank_fields(lang)
        if blank:
            out.append(RecordProblem(record.example_id, lang, None,
                                     f"blank (empty or whitespace-only) field(s) {', '.join(blank)}"))
    if out:
        return out
    for lang in dict.fromkeys(edit_languages):
        if lang not in record.edit:
            continue
        for method, editor in editors.items():
            try:
                editor.check_record(record, lang)
            except (EditError, RecordError) as err:
                out.append(RecordProblem(record.example_id, lang, method, str(err)))
    return out


EditorFactory = Callable[..., BaseEditor]
EDITORS: dict[str, EditorFactory] = {}


def register_editor(name: str) -> Callable[[EditorFactory], EditorFactory]:
    """Decorator: make ``make_editor(name)`` build this editor (names are lower-case, e.g. ``memla-lse``)."""
    def deco(factory: EditorFactory) -> EditorFactory:
        EDITORS[name] = factory
        return factory
    return deco


#: modules that register editors when imported (one module per method)
EDITOR_MODULES = ("memla", "ft", "lora", "rome", "memit", "pmet", "mend", "ike")


def load_all() -> None:
    """Import every editor module so the registry is complete (missing ones are logged, not fatal)."""
    for mod in EDITOR_MODULES:
        try:
            importlib.import_module(f"{__package__}.{mod}")
        except ModuleNotFoundError as err:
            if err.name != f"{__package__}.{mod}":
                raise
            log.debug("editor module %s not present", mod)


def make_editor(name: str, **overrides: Any) -> BaseEditor:
    """Build a registered editor (every editor module is imported first); unknown names list the available ones."""
    load_all()
    if name not in EDITORS:
        raise ValueError(f"unknown editing method {name!r}; available: {', '.join(sorted(EDITORS))}")
    return EDITORS[name](**overrides)
