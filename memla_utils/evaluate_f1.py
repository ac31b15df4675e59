"""F1 scores of a continuation against an answer: over sets of token ids (the paper's NS / QS) and over words.

:func:`set_f1` is memla4mke ``utils/evaluator.py``'s ``calc_f1`` (F1 between the *sets of token ids* of the
greedy continuation and of the answer), the paper's NS and QS. :func:`text_f1` is a labelled variant, not in the
paper: SQuAD-style bag-of-words F1 on decoded text, with characters as words for the languages written without
spaces (zh/ja/th), used for ``NS_text_f1`` / ``QS_text_f1`` (:mod:`memla_utils.evaluate_metrics`).
"""
from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .languages import NO_SPACE_LANGUAGES


def set_f1(reference: Sequence[Any], prediction: Sequence[Any]) -> float:
    """memla4mke ``calc_f1``: F1 over the *sets* of items (token ids), 0 when nothing overlaps."""
    ref, pred = set(reference), set(prediction)
    if not ref and not pred:
        raise ValueError("set_f1: both reference and prediction are empty")
    common = len(ref & pred)
    if common == 0:
        return 0.0
    p, r = common / len(pred), common / len(ref)
    return 2 * p * r / (p + r)


def _is_punct(char: str) -> bool:
    """Punctuation and symbols (Unicode P*/S*); combining marks (Thai vowels, Devanagari signs) are letters."""
    return unicodedata.category(char)[0] in "PS"


def text_tokens(text: str, language: str) -> list[str]:
    """Words for F1: lower-cased, punctuation dropped; characters in languages written without spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    if language in NO_SPACE_LANGUAGES:
        return [c for c in text if not c.isspace() and not _is_punct(c)]
    return "".join(" " if _is_punct(c) else c for c in text).split()


def text_f1(prediction: str, reference: str, language: str) -> float:
    """SQuAD-style bag-of-tokens F1 with :func:`text_tokens` (so it works for zh/ja/th)."""
    pred, ref = Counter(text_tokens(prediction, language)), Counter(text_tokens(reference, language))
    common = sum((pred & ref).values())
    if common == 0:
        return 0.0
    p, r = common / sum(pred.values()), common / sum(ref.values())
    return 2 * p * r / (p + r)


__all__ = ["set_f1", "text_f1", "text_tokens"]
