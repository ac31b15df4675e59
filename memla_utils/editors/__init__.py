"""Editors: MEMLA (and its ablations) and every baseline behind one interface, found through a registry."""
from __future__ import annotations

from .base import (
    EDITOR_MODULES,
    EDITORS,
    BaseEditor,
    Edit,
    EditError,
    Editor,
    RecordProblem,
    applied_edits,
    load_all,
    make_editor,
    record_problems,
    recording_edit,
    register_editor,
)

__all__ = ["EDITOR_MODULES", "EDITORS", "BaseEditor", "Edit", "EditError", "Editor", "RecordProblem", "applied_edits",
           "load_all", "make_editor", "record_problems", "recording_edit", "register_editor"]
