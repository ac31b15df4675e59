"""Editors: MEMLA (and its ablations) and every baseline behind one interface, found through a registry."""
from __future__ import annotations

import importlib
import logging

from .base import (
    EDITORS,
    BaseEditor,
    Edit,
    EditError,
    Editor,
    RecordProblem,
    applied_edits,
    make_editor,
    record_problems,
    recording_edit,
    register_editor,
)

log = logging.getLogger(__name__)

#: modules that register editors when imported (one module per method)
EDITOR_MODULES = ("memla", "ft", "lora", "rome", "memit", "pmet", "mend", "ike")


def load_all() -> None:
    """Import every editor module so the registry is complete (missing ones are logged, not fatal)."""
    for mod in EDITOR_MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{mod}":
                raise
            log.debug("editor module %s not present", mod)


__all__ = ["EDITORS", "BaseEditor", "Edit", "EditError", "Editor", "RecordProblem", "applied_edits", "load_all",
           "make_editor", "record_problems", "recording_edit", "register_editor"]
