"""Joining a prompt and its answer, for every tokenizer family: the one place where that happens.

**Join rule.** The prompt's trailing whitespace and the answer's leading and trailing whitespace are stripped,
then the language's separator is inserted (:func:`memla_utils.languages.answer_separator`: one space in languages
written with spaces, nothing in zh/ja/th), and the result is tokenized as ONE string, with the tokenizer's own
special tokens (:func:`join_text`, :func:`join_prompt_answer`). So ``"The capital of France is "`` + ``" Paris"``
is ``"The capital of France is Paris"`` in every case, and the answer's token ids are exactly the ids the model
sees for it in the whole text: word-initial ``▁Paris`` / ``ĠParis``, no doubled separator, no SentencePiece dummy
prefix before a zh/ja/th answer, no BOS/EOS between prompt and answer.

**Split rule** (where the prompt ends in the ids). Characters ``[0, boundary)`` are the prompt, with
``boundary = len(normalised prompt)``; the separator belongs to the answer. With a fast tokenizer's character
offsets, the prompt's ids are the special tokens the tokenizer puts first (BOS) followed by the longest prefix of
the content tokens that all end at or before ``boundary``; the answer's ids are the rest, minus special tokens the
tokenizer appends at the end (EOS). **Straddle rule:** a token that covers characters on both sides of the
boundary (common in zh/ja/th with byte-level BPE, e.g. ``是巴`` in ``…首都是`` + ``巴黎``) is the answer's first
token, so the answer's ids may begin with a few prompt characters (``JoinedIds.straddle``). Tokens that share
one character (a multi-byte character split into byte tokens) are never separated: if one of them straddles the
boundary, all of them belong to the answer, so prompt and answer ids each decode to whole characters ("whole"
is decided by decoding the prefix, not by overlapping spans: a lone metaspace token ``▁`` at the start shares its
span with the next token yet decodes to nothing, and stays with the prompt).

**Without offsets** (a slow, Python tokenizer), the prompt's ids are the longest common prefix of the whole
text's ids and the normalised prompt's own ids, shortened to whole characters (:func:`split_by_common_prefix`).
That is always a valid split (those tokens cover only prompt characters), equal to the offset split unless
tokenizing the whole text changes the prompt's tokens before the boundary, in which case more tokens go to the
answer.

**Special tokens.** Exactly one BOS at the start where the tokenizer's post-processor puts one (none for GPT-2,
Qwen2 and BLOOM, whose models expect none); a literal BOS at the start of the prompt text is not doubled. Special
tokens a post-processor appends (EOS) are dropped: they belong neither to the prompt nor to the answer.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .languages import answer_separator

#: Version of the join and split rules, for cache keys of artifacts computed from joined ids
#: (1: prompt and answer tokenized separately; 2: one string split at character offsets).
JOIN_VERSION = 2


def normalize_prompt(prompt: str) -> str:
    """The prompt as it is joined and as generation starts from it: trailing whitespace stripped."""
    return prompt.rstrip()


def normalize_answer(answer: str) -> str:
    """The answer as it is joined: surrounding whitespace stripped (a stored ``" Paris"`` is ``"Paris"``)."""
    return answer.strip()


def join_text(prompt: str, answer: str, language: str) -> tuple[str, int]:
    """``(text, boundary)``: normalised prompt + the language's separator + normalised answer, and the prompt's length.

    Raises ``ValueError`` for an answer that is empty or only whitespace.
    """
    a = normalize_answer(answer)
    if not a:
        raise ValueError(f"empty answer {answer!r}: cannot score or train on an empty target")
    p = normalize_prompt(prompt)
    return p + answer_separator(language, p) + a, len(p)


@dataclass(frozen=True)
class JoinedIds:
    """One prompt/answer pair tokenized as one string and split at the prompt's end (see the module docstring).

    ``prompt_ids`` = leading special tokens (``n_special_prefix`` of them: BOS) + the prompt's tokens;
    ``prompt_ids + answer_ids`` = the whole text's ids without the special tokens appended at the end.
    ``straddle``: the answer's first token also covers prompt characters (without offsets: the prompt's own
    ids were not all matched, so it may). ``method``: ``"offsets"`` or ``"common_prefix"`` (no offsets).
    """

    text: str
    boundary: int
    prompt_ids: list[int]
    answer_ids: list[int]
    n_special_prefix: int
    straddle: bool
    method: str


@dataclass(frozen=True)
class _Encoded:
    prefix: list[int]                           # special tokens the post-processor puts first (one BOS)
    content: list[int]
    offsets: list[tuple[int, int]] | None       # per content token, characters [start, end) of the text


def _encode(tokenizer, text: str, *, offsets: bool) -> _Encoded:
    """Encode with the tokenizer's special tokens, separating the leading and trailing special ones.

    With ``offsets``, ``_Encoded.offsets`` is None when the tokenizer gives no character offsets (slow tokenizers).
    """
    kwargs = {"add_special_tokens": True, "return_special_tokens_mask": True}
    if offsets and getattr(tokenizer, "is_fast", False):
        kwargs["return_offsets_mapping"] = True
    enc = tokenizer(text, **kwargs)
    ids = list(enc["input_ids"])
    mask = list(enc.get("special_tokens_mask") or [0] * len(ids))
    spans = [tuple(o) for o in enc["offset_mapping"]] if "offset_mapping" in enc else None
    lead = 0
    while lead < len(ids) and mask[lead]:
        lead += 1
    end = len(ids)
    while end > lead and mask[end - 1]:
        end -= 1
    prefix, content = ids[:lead], ids[lead:end]
    spans = spans[lead:end] if spans is not None else None
    # a literal special token at the start of the text (e.g. "<bos>…") repeating the one the tokenizer adds
    while prefix and content and content[0] == prefix[-1]:
        content = content[1:]
        spans = spans[1:] if spans is not None else None
    return _Encoded(prefix, content, spans)


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Ids of ``prompt`` alone: the tokenizer's leading special tokens (one BOS) + the text's tokens.

    Special tokens a post-processor appends (EOS) are dropped, so a model can continue the text. The text is
    not normalised (callers that generate after a prompt pass :func:`normalize_prompt` of it).
    """
    enc = _encode(tokenizer, prompt, offsets=False)
    return enc.prefix + enc.content


def split_by_offsets(offsets: Sequence[tuple[int, int]], boundary: int,
                     whole_characters: Callable[[int], bool] | None = None) -> int:
    """Number of leading tokens that belong to the prompt, from their character spans ``[start, end)``.

    The longest prefix whose tokens all end at or before ``boundary`` and that does not end inside a character.
    ``whole_characters(k)`` says whether the first ``k`` tokens decode to whole characters (what
    :func:`join_prompt_answer` passes: the decoded prefix does not end in U+FFFD). Without it, overlapping spans
    stand for a split character (byte-level tokenizers give the byte tokens of one character overlapping spans)
    — an approximation that also moves a lone metaspace token (``▁``, whose span overlaps the next token's)
    to the answer, which is why the tokenizer's own decoding decides when it is available.
    """
    k = next((i for i, (_, end) in enumerate(offsets) if end > boundary), len(offsets))
    if whole_characters is not None:
        while 0 < k < len(offsets) and not whole_characters(k):
            k -= 1
        return k
    while 0 < k < len(offsets) and offsets[k - 1][1] > offsets[k][0]:
        k -= 1
    return k


def split_by_common_prefix(tokenizer, whole: Sequence[int], prompt_alone: Sequence[int]) -> int:
    """Number of leading tokens of ``whole`` that belong to the prompt, without offsets.

    The longest common prefix of the whole text's ids and the prompt's own ids, shortened while it decodes to
    an incomplete character (U+FFFD at its end) so that no character is split between prompt and answer.
    """
    k = 0
    for a, b in zip(whole, prompt_alone):
        if a != b:
            break
        k += 1
    while k > 0 and k < len(whole) and tokenizer.decode(list(whole[:k])).endswith("\ufffd"):
        k -= 1
    return k


def join_prompt_answer(tokenizer, prompt: str, answer: str, language: str) -> JoinedIds:
    """Tokenize ``prompt`` + separator + ``answer`` as one string and split it into prompt and answer ids.

    Uses the tokenizer's character offsets where it has them, else the common-prefix fallback (module
    docstring). Raises ``ValueError`` for an empty answer or one that leaves no token after the split.
    """
    text, boundary = join_text(prompt, answer, language)
    whole = _encode(tokenizer, text, offsets=True)
    if whole.offsets is not None:
        k = split_by_offsets(whole.offsets, boundary,
                             lambda n: not tokenizer.decode(list(whole.content[:n])).endswith("\ufffd"))
        straddle = k < len(whole.content) and whole.offsets[k][0] < boundary
        method = "offsets"
    else:
        alone = _encode(tokenizer, text[:boundary], offsets=False).content if boundary else []
        k = split_by_common_prefix(tokenizer, whole.content, alone)
        straddle = k < len(alone)
        method = "common_prefix"
    if k >= len(whole.content):
        raise ValueError(f"answer {answer!r} leaves no token after prompt {prompt!r} (joined text {text!r})")
    return JoinedIds(text, boundary, whole.prefix + whole.content[:k], whole.content[k:], len(whole.prefix),
                     straddle, method)


def encode_answer(tokenizer, answer: str, language: str, prompt: str = "x") -> list[int]:
    """The answer's ids as they appear after ``prompt`` in ``language`` (the default prompt is a placeholder
    one-letter word, giving the word-initial form). Raises ``ValueError`` for an empty answer."""
    return join_prompt_answer(tokenizer, prompt, answer, language).answer_ids


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
    """Tokenize (:func:`join_prompt_answer`) and right-pad ``len(prompts)`` pairs for one teacher-forced forward.

    Raises ``ValueError`` when the lists differ in length or a prompt has no ids to predict the answer from.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    langs = [languages] * len(prompts) if isinstance(languages, str) else list(languages)
    rows, p_lens, a_lens = [], [], []
    for prompt, answer, lang in zip(prompts, answers, langs):
        joined = join_prompt_answer(tokenizer, prompt, answer, lang)
        if not joined.prompt_ids:
            raise ValueError(f"prompt {prompt!r} gives no token before answer {answer!r} and the tokenizer adds no "
                             f"BOS: the first answer token cannot be scored")
        rows.append(joined.prompt_ids + joined.answer_ids)
        p_lens.append(len(joined.prompt_ids))
        a_lens.append(len(joined.answer_ids))
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
    """Pad :func:`encode_prompt` ids (left by default, so the last column is every prompt's last token)."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
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
