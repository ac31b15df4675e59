"""Per-language templates of the MKEB builder (:mod:`memla_utils.mkeb.builder`).

Package data ``templates/<language>.json`` holds, for one language, each relation's edit prompt and paraphrases
and the multi-hop questions, each with exactly one ``{}`` slot (:func:`load_templates` reads and checks them).
:func:`fill` puts a name in the slot; :func:`leaks` tells whether a filled prompt gives its answer away.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from ..languages import MKEB_LANGUAGES


@dataclass
class RelationTemplates:
    """One language's templates for one relation: the edit prompt and its paraphrases, each with ``{}``."""

    prompt: str
    paraphrases: list[str]


@dataclass
class LanguageTemplates:
    language: str
    relations: dict[str, RelationTemplates]
    multi_hop: dict[str, str]  # "<bridge>.<relation>" -> question with "{}" for the bridge entity


def load_templates(language: str) -> LanguageTemplates:
    """Read ``templates/<language>.json`` (package data) and check every template has exactly one ``{}``."""
    try:
        text = resources.files(__package__).joinpath("templates", f"{language}.json").read_text("utf-8")
    except FileNotFoundError as exc:
        raise ValueError(f"no MKEB templates for language {language!r}; available: {', '.join(MKEB_LANGUAGES)}") from exc
    data = json.loads(text)
    rels = {k: RelationTemplates(v["prompt"], list(v["paraphrases"])) for k, v in data["relations"].items()}
    where = f"templates/{language}.json"
    for name, t in rels.items():
        if len(t.paraphrases) < 2:
            raise ValueError(f"{where}: relation {name!r} needs at least 2 paraphrases")
        for s in (t.prompt, *t.paraphrases):
            if s.count("{}") != 1 or s.replace("{}", "").count("{") or s.replace("{}", "").count("}"):
                raise ValueError(f"{where}: relation {name!r} template {s!r} must hold exactly one '{{}}' slot")
    for key, s in data["multi_hop"].items():
        if s.count("{}") != 1:
            raise ValueError(f"{where}: multi_hop {key!r} template {s!r} must hold exactly one '{{}}' slot")
    return LanguageTemplates(language, rels, dict(data["multi_hop"]))


def fill(template: str, subject: str) -> str:
    """Put the subject in the slot (``str.replace``, so braces in names cannot break formatting)."""
    return template.replace("{}", subject, 1)


def leaks(answer: str, text: str) -> bool:
    """True if the answer appears in the text (case-insensitive): such a prompt gives its answer away."""
    return answer.casefold() in text.casefold()
