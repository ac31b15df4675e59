"""IKE (Zheng et al., 2023): in-context editing; no weight changes, the edit is a prompt prefix per language.

The prefix holds demonstrations built from the *training split* (never the evaluated record) followed by the
new fact. Each demonstration states a training fact in the **edit** language and then asks, in the
**evaluation** language, one of three kinds of prompts (IKE's mix):

* copy: the fact's own prompt (edit language) -> its new answer;
* update: a paraphrase of the fact (evaluation language; its edit prompt when no paraphrase exists) -> the new
  answer in that language;
* retain: an unrelated neighbourhood prompt (evaluation language) -> its unchanged answer.

IKE used 32 demonstrations chosen by embedding similarity; the default here is 8 (1 copy : 3 update : 4 retain,
IKE's ratio), drawn with a seeded RNG per (record, edit language), to keep CPU evaluation of long prompts cheap.
Prompt and answer are joined with the language's separator (no space in zh/ja/th).
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..mkeb.record import Record
from ..models import LoadedModel
from ..text import join_text
from .base import BaseEditor, Edit, EditError, register_editor


@dataclass
class IkeConfig:
    """Demonstration counts per kind (IKE: 32 in all, copy:update:retain = 1:3:4) and the prompt labels."""

    n_copy: int = 1
    n_update: int = 3
    n_retain: int = 4
    fact_label: str = "New Fact: "
    prompt_label: str = "Prompt: "
    seed: int = 0


def join(prompt: str, answer: str, language: str) -> str:
    """A prompt followed by its answer as text (:func:`memla_utils.text.join_text`; an empty answer leaves the
    prompt alone)."""
    return join_text(prompt, answer, language)[0] if answer.strip() else prompt.rstrip()


@register_editor("ike")
class IkeEditor(BaseEditor):
    name = "ike"

    def __init__(self, config: IkeConfig | None = None, **overrides: Any) -> None:
        self.config = replace(config if config is not None else IkeConfig(), **overrides)
        self.pool: list[Record] = []

    def fit(self, lm: LoadedModel, train_records: Sequence[Record] = ()) -> IkeEditor:
        """Remember the training split as the demonstration pool."""
        self.pool = list(train_records)
        return self

    def fact(self, record: Record, language: str) -> str:
        v = record.for_language(language)
        return self.config.fact_label + join(v.prompt, v.target_new, language)

    def demonstrations(self, record: Record, edit_lang: str, eval_lang: str) -> list[str]:
        cfg = self.config
        pool = [r for r in self.pool if r.example_id != record.example_id
                and edit_lang in r.edit and eval_lang in r.edit]
        if not pool:
            raise EditError(f"ike: no training record has both {edit_lang!r} and {eval_lang!r} to build "
                            f"demonstrations for record {record.example_id!r}; call fit(lm, train_records) "
                            f"with a training split disjoint from the evaluated records")
        rng = random.Random(f"{cfg.seed}:{record.example_id}:{edit_lang}:{eval_lang}")
        demos: list[str] = []
        plan = ["copy"] * cfg.n_copy + ["update"] * cfg.n_update + ["retain"] * cfg.n_retain
        for kind in plan:
            r = rng.choice(pool)
            fv, ev = r.for_language(edit_lang), r.for_language(eval_lang)
            if kind == "copy":
                q = join(fv.prompt, fv.target_new, edit_lang)
            elif kind == "update":
                prompt = rng.choice(ev.paraphrase_prompts) if ev.paraphrase_prompts else ev.prompt
                q = join(prompt, ev.target_new, eval_lang)
            else:
                pairs = list(zip(ev.neighborhood_prompts, ev.neighborhood_answers))
                if not pairs:
                    continue
                p, a = rng.choice(pairs)
                q = join(p, a, eval_lang)
            demos.append(f"{self.fact(r, edit_lang)}\n{cfg.prompt_label}{q}\n\n")
        rng.shuffle(demos)
        return demos

    def edit(self, lm: LoadedModel, record: Record, language: str, **context: Any) -> Edit:
        self.check_record(record, language)
        if not self.pool:
            raise EditError("ike: no demonstration pool; call fit(lm, train_records) with the training split first")
        eval_languages = context.get("eval_languages") or record.languages
        prefixes = {}
        for lang in eval_languages:
            if lang not in record.edit:
                continue
            demos = self.demonstrations(record, language, lang)
            prefixes[lang] = "".join(demos) + f"{self.fact(record, language)}\n{self.config.prompt_label}"
        return Edit(method=self.name, prompt_prefix=prefixes, model=lm.model,
                    info={"n_demonstrations": {l: p.count(self.config.fact_label) - 1 for l, p in prefixes.items()},
                          "pool_size": len(self.pool)})
