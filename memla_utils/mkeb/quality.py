"""Checks a built benchmark must pass: a record that fails one would test nothing or give its answer away."""
from __future__ import annotations

from collections.abc import Sequence

from .record import Record


def _has_slot(text: str) -> bool:
    return "{}" in text or "[X]" in text


def quality_problems(record: Record, languages: Sequence[str]) -> list[str]:
    """Every problem of one record in ``languages`` (empty list = clean).

    Checks: each language present with every field; no unfilled slot outside the edit prompt; the edit prompt
    has its ``{}`` slot; neither the true nor the new answer appears in the edit prompt or a paraphrase; the
    new target differs from the truth; neighbourhood and multi-hop answers do not appear in their questions.
    """
    out: list[str] = []
    rid = record.example_id
    for lang in languages:
        if lang not in record.edit:
            out.append(f"{rid}: language {lang!r} missing")
            continue
        v = record.for_language(lang)
        e = record.edit[lang]
        if e.prompt.count("{}") != 1:
            out.append(f"{rid} [{lang}]: edit prompt lacks its '{{}}' slot")
        if not v.paraphrase_prompts or not v.neighborhood_prompts or not v.multi_hop_questions:
            out.append(f"{rid} [{lang}]: missing paraphrases, neighbourhood or multi-hop questions")
        for text in (v.prompt, *v.paraphrase_prompts, *v.neighborhood_prompts, *v.multi_hop_questions):
            if _has_slot(text):
                out.append(f"{rid} [{lang}]: unfilled slot in {text!r}")
        answers = [a for a in (v.target_true, v.target_new) if a]
        for text in (v.prompt, *v.paraphrase_prompts):
            for a in answers:
                if a.casefold() in text.casefold():
                    out.append(f"{rid} [{lang}]: answer {a!r} appears in prompt {text!r}")
        if v.target_true is not None and v.target_true.casefold() == v.target_new.casefold():
            out.append(f"{rid} [{lang}]: target_new equals target_true ({v.target_new!r})")
        for p, a in zip(v.neighborhood_prompts, v.neighborhood_answers):
            if a.casefold() in p.casefold():
                out.append(f"{rid} [{lang}]: neighbourhood answer {a!r} appears in {p!r}")
        for q in v.multi_hop_questions:
            if v.multi_hop_new_answer and v.multi_hop_new_answer.casefold() in q.casefold():
                out.append(f"{rid} [{lang}]: multi-hop answer {v.multi_hop_new_answer!r} appears in {q!r}")
    return out
