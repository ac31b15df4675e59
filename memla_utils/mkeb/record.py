"""The MKEB record: one fact in many languages (the official MKEB / MLiKE schema).

A released MKEB file drops in unchanged; every importer converts its dataset into these records. Fields a
source does not have (no ``target_true`` in zsRE-derived sets, no multi-hop questions in some) are ``None``
or empty, never invented: metrics that need them report "not available".
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

#: per-language lists of prompts and answers (each item must be a non-blank string)
_PROMPT_LISTS = ("paraphrase_prompts", "neighborhood_prompts", "neighborhood_answers", "multi_hop_questions")


class RecordError(ValueError):
    """A record or file that does not follow the schema; the message names file, record index and field."""


@dataclass(frozen=True)
class EditTarget:
    """The fact to edit in one language: ``prompt`` has a ``{}`` slot that ``subject`` fills."""

    prompt: str
    subject: str
    target_new: str
    target_true: str | None = None

    @property
    def filled_prompt(self) -> str:
        return self.prompt.replace("{}", self.subject, 1) if "{}" in self.prompt else self.prompt


@dataclass(frozen=True)
class LanguageView:
    """Everything one language of a record offers, with the edit prompt already filled."""

    language: str
    prompt: str
    subject: str
    target_new: str
    target_true: str | None
    paraphrase_prompts: list[str]
    neighborhood_prompts: list[str]
    neighborhood_answers: list[str]
    multi_hop_questions: list[str]
    multi_hop_new_answer: str | None


@dataclass
class Record:
    """One MKEB fact. Per-language dictionaries are keyed by ISO 639-1 codes."""

    example_id: str
    relation_description: str
    edit: dict[str, EditTarget]
    paraphrase_prompts: dict[str, list[str]] = field(default_factory=dict)
    neighborhood_prompts: dict[str, list[str]] = field(default_factory=dict)
    neighborhood_answers: dict[str, list[str]] = field(default_factory=dict)
    multi_hop_questions: dict[str, list[str]] = field(default_factory=dict)
    multi_hop_new_answer: dict[str, str | None] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        return list(self.edit)

    def blank_fields(self, language: str, *, target_new: bool = True) -> list[str]:
        """Fields of ``language`` holding a blank (empty or whitespace-only) prompt or answer, e.g.
        ``["paraphrase_prompts.en[1]"]``: nothing can be edited or scored on them. ``target_true`` is not checked
        (blank or None means "not available"), nor a multi-hop answer without multi-hop questions;
        ``target_new=False`` leaves out the new answer (editors report it as the edit's own error)."""
        out: list[str] = []
        e = self.edit.get(language)
        if e is not None:
            if not e.filled_prompt.strip():
                out.append(f"edit.{language}.prompt")
            if target_new and not e.target_new.strip():
                out.append(f"edit.{language}.target_new")
        for name in _PROMPT_LISTS:
            out += [f"{name}.{language}[{k}]" for k, s in enumerate(getattr(self, name).get(language, []))
                    if not s.strip()]
        if self.multi_hop_questions.get(language) and not (self.multi_hop_new_answer.get(language) or "").strip():
            out.append(f"multi_hop_new_answer.{language}")
        return out

    def for_language(self, language: str) -> LanguageView:
        """The prompts of one language; raises ``RecordError`` naming the record if it lacks the language or if
        a prompt or answer of that language is blank (so no metric is ever computed on an empty prompt). A blank
        ``target_new`` is left to the editors' ``check_record`` (an edit error naming the method)."""
        if language not in self.edit:
            raise RecordError(f"record {self.example_id!r} has no language {language!r} "
                              f"(it has: {', '.join(self.edit) or 'none'})")
        blank = self.blank_fields(language, target_new=False)
        if blank:
            raise RecordError(f"record {self.example_id!r}, language {language!r}: blank (empty or whitespace-only) "
                              f"field(s) {', '.join(blank)}; nothing can be edited or scored on a blank prompt or "
                              f"answer (fix the record, or load with skip_bad=True to skip it)")
        e = self.edit[language]
        return LanguageView(
            language=language, prompt=e.filled_prompt, subject=e.subject, target_new=e.target_new,
            target_true=e.target_true,
            paraphrase_prompts=list(self.paraphrase_prompts.get(language, [])),
            neighborhood_prompts=list(self.neighborhood_prompts.get(language, [])),
            neighborhood_answers=list(self.neighborhood_answers.get(language, [])),
            multi_hop_questions=list(self.multi_hop_questions.get(language, [])),
            multi_hop_new_answer=self.multi_hop_new_answer.get(language),
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["meta"]:
            d.pop("meta")
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "record") -> Record:
        """Build a record from the JSON schema, raising ``RecordError`` that names ``where`` and the field."""
        if not isinstance(data, dict):
            raise RecordError(f"{where}: expected an object, got {type(data).__name__}")
        for key in ("example_id", "edit"):
            if key not in data:
                raise RecordError(f"{where}: missing field {key!r}")
        if not isinstance(data["edit"], dict) or not data["edit"]:
            raise RecordError(f"{where}: field 'edit' must be a non-empty object keyed by language")
        edit: dict[str, EditTarget] = {}
        for lang, e in data["edit"].items():
            if not isinstance(e, dict):
                raise RecordError(f"{where}: field 'edit.{lang}' must be an object")
            for key in ("prompt", "subject", "target_new"):
                if not isinstance(e.get(key), str):
                    raise RecordError(f"{where}: field 'edit.{lang}.{key}' missing or not a string")
            tt = e.get("target_true")
            if tt is not None and not isinstance(tt, str):
                raise RecordError(f"{where}: field 'edit.{lang}.target_true' must be a string or null")
            edit[lang] = EditTarget(e["prompt"], e["subject"], e["target_new"], tt)

        def per_lang_list(name: str) -> dict[str, list[str]]:
            value = data.get(name) or {}
            if not isinstance(value, dict):
                raise RecordError(f"{where}: field {name!r} must be an object keyed by language")
            out: dict[str, list[str]] = {}
            for lang, items in value.items():
                if isinstance(items, str):
                    items = [items]
                if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
                    raise RecordError(f"{where}: field '{name}.{lang}' must be a list of strings")
                out[lang] = list(items)
            return out

        mh = data.get("multi_hop_new_answer") or {}
        if not isinstance(mh, dict):
            raise RecordError(f"{where}: field 'multi_hop_new_answer' must be an object keyed by language")
        for lang, ans in mh.items():
            if ans is not None and not isinstance(ans, str):
                raise RecordError(f"{where}: field 'multi_hop_new_answer.{lang}' must be a string or null")
        return cls(
            example_id=str(data["example_id"]),
            relation_description=str(data.get("relation_description", "")),
            edit=edit,
            paraphrase_prompts=per_lang_list("paraphrase_prompts"),
            neighborhood_prompts=per_lang_list("neighborhood_prompts"),
            neighborhood_answers=per_lang_list("neighborhood_answers"),
            multi_hop_questions=per_lang_list("multi_hop_questions"),
            multi_hop_new_answer=dict(mh),
            meta=dict(data.get("meta") or {}),
        )

    def content_hash(self) -> str:
        """sha256 of the canonical JSON: the key under which per-record artifacts are cached."""
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]
