"""Multilingual-safe joining of prompts and answers at the token level.

Prompt and answer are tokenized separately and their ids concatenated; the answer is tokenized in its
word-initial form (with a leading space) only in languages written with spaces and only when the prompt does
not already end in whitespace. Text is never glued as ``prompt + ' ' + answer``, which is wrong for zh/ja/th.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .languages import answer_separator


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Prompt ids including the tokenizer's special prefix (BOS) when it adds one."""
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def encode_answer(tokenizer, answer: str, language: str, prompt: str = "x") -> list[int]:
    """Answer ids as a continuation of ``prompt`` in ``language`` (no special tokens)."""
    if not answer or not answer.strip():
        raise ValueError("empty answer: cannot score or train on an empty target")
    ids = list(tokenizer(answer_separator(language, prompt) + answer, add_special_tokens=False)["input_ids"])
    if not ids:
        raise ValueError(f"answer {answer!r} tokenizes to nothing")
    return ids


@dataclass
class PromptAnswerBatch:
    """Right-padded ``prompt ⧺ answer`` ids with the positions needed for teacher-forced scoring.

    ``answer_mask[b, t]`` is true where the logits at position ``t`` predict an answer token, and
    ``answer_targets[b, t]`` holds that token (pad elsewhere). ``prompt_lengths[b]`` = number of prompt ids.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    answer_mask: torch.Tensor
    answer_targets: torch.Tensor
    prompt_lengths: torch.Tensor
    answer_lengths: torch.Tensor

    def to(self, device: torch.device | str) -> PromptAnswerBatch:
        return PromptAnswerBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.answer_mask,
                                                          self.answer_targets, self.prompt_lengths,
                                                          self.answer_lengths)))


def build_batch(tokenizer, prompts: Sequence[str], answers: Sequence[str], languages: Sequence[str] | str,
                ) -> PromptAnswerBatch:
    """Tokenize and right-pad ``len(prompts)`` prompt/answer pairs for one teacher-forced forward."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    langs = [languages] * len(prompts) if isinstance(languages, str) else list(languages)
    rows, p_lens, a_lens = [], [], []
    for prompt, answer, lang in zip(prompts, answers, langs):
        p = encode_prompt(tokenizer, prompt)
        a = encode_answer(tokenizer, answer, lang, prompt)
        rows.append(p + a)
        p_lens.append(len(p))
        a_lens.append(len(a))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    amask = torch.zeros((len(rows), width), dtype=torch.bool)
    targets = torch.full((len(rows), width), pad, dtype=torch.long)
    for b, (row, pl, al) in enumerate(zip(rows, p_lens, a_lens)):
        ids[b, : len(row)] = torch.tensor(row)
        att[b, : len(row)] = 1
        amask[b, pl - 1: pl - 1 + al] = True
        targets[b, pl - 1: pl - 1 + al] = torch.tensor(row[pl: pl + al])
    return PromptAnswerBatch(ids, att, amask, targets, torch.tensor(p_lens), torch.tensor(a_lens))


def pad_prompts(tokenizer, prompts: Sequence[str], *, side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad prompt ids (left by default, so the last column is every prompt's last token)."""
    rows = [encode_prompt(tokenizer, p) for p in prompts]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        if side == "left":
            ids[b, width - len(r):] = torch.tensor(r)
            att[b, width - len(r):] = 1
        else:
            ids[b, : len(r)] = torch.tensor(r)
            att[b, : len(r)] = 1
    return ids, att
