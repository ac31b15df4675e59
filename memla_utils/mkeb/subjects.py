"""Finding a record's subject in its prompt: whole words where words are separated by spaces.

Every place that searches a subject in a text (the importers putting the ``{}`` slot into a prompt, the
locate-then-edit methods finding the subject's last token) uses :func:`find_subject`, so they agree on what
counts as an occurrence:

* in scripts written with spaces (Latin, Cyrillic, Greek, Arabic, Hangul, ...) the subject must be a whole
  word: ``"Ali"`` is not found in ``"Alison"``, ``"B5"`` not in ``"B52"``. A word boundary is any change
  between a letter/digit/mark and anything else, or a change of script (``"iPhone的"``, ``"GPT-4は"``);
* in scripts written without spaces (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar) there are no word
  boundaries to check, so a substring is an occurrence (the only option there);
* Korean attaches particles to the noun (``"프랑스의 수도"``): a Hangul subject may be followed directly by
  more Hangul, but must still start a word.

``language`` (ISO 639-1), when given, switches zh/ja/th (and the other codes in
:data:`memla_utils.languages.NO_SPACE_LANGUAGES`) to plain substring search whatever the characters.
Matching is exact (case and Unicode form as written): a subject written in simplified characters is not found in
a prompt written in traditional ones.
"""
from __future__ import annotations

import unicodedata
from functools import lru_cache

from ..languages import NO_SPACE_LANGUAGES

#: Unicode name prefixes of scripts written without spaces between words.
_NO_SPACE_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR", "HALFWIDTH KATAKANA",
                     "IDEOGRAPHIC")


@lru_cache(maxsize=4096)
def _script(char: str) -> str | None:
    """The script of a word character (``"LATIN"``, ``"HANGUL"``, ``"COMMON"`` for digits), None otherwise."""
    cat = unicodedata.category(char)
    if cat[0] == "N" or char == "_":
        return "COMMON"
    if cat[0] == "M" and not unicodedata.name(char, "").startswith(_NO_SPACE_SCRIPTS):
        return "MARK"  # a combining mark belongs to the character before it
    if cat[0] not in "LM":
        return None
    name = unicodedata.name(char, "")
    if name.startswith(_NO_SPACE_SCRIPTS):
        return "NOSPACE"
    return name.split(" ", 1)[0] or "UNKNOWN"


def _joined(left: str, right: str, *, suffix: bool = False) -> bool:
    """True if ``left`` and ``right`` (adjacent characters) belong to the same word.

    ``suffix``: ``right`` follows the end of a subject, where Korean particles may attach.
    """
    a, b = _script(left), _script(right)
    if a is None or b is None or "NOSPACE" in (a, b):
        return False
    if suffix and a == b == "HANGUL":
        return False
    return a == b or "COMMON" in (a, b) or b == "MARK"


def find_subject(text: str, subject: str, language: str | None = None, start: int = 0) -> int:
    """Index of the first occurrence of ``subject`` in ``text`` (from ``start``) as a whole word, or -1.

    See the module docstring for what counts as a whole word; ``language`` in a no-space language means any
    substring counts. An empty subject is never found.
    """
    if not subject:
        return -1
    substring_only = language is not None and language in NO_SPACE_LANGUAGES
    i = text.find(subject, start)
    while i >= 0:
        j = i + len(subject)
        if substring_only:
            return i
        left_ok = i == 0 or not _joined(text[i - 1], subject[0])
        right_ok = j == len(text) or not _joined(subject[-1], text[j], suffix=True)
        if left_ok and right_ok:
            return i
        i = text.find(subject, i + 1)
    return -1


def contains_subject(text: str, subject: str, language: str | None = None) -> bool:
    """Whether :func:`find_subject` finds ``subject`` in ``text``."""
    return find_subject(text, subject, language) >= 0


def slot_prompt(prompt: str, subject: str, language: str | None = None) -> str:
    """The prompt with its first whole-word mention of the subject replaced by the ``{}`` slot.

    Unchanged if the prompt already has a slot or the subject does not occur as a whole word (the record then
    keeps a slot-less prompt; editors that must locate the subject refuse it with a clear error).
    """
    if "{}" in prompt:
        return prompt
    i = find_subject(prompt, subject, language)
    if i < 0:
        return prompt
    return prompt[:i] + "{}" + prompt[i + len(subject):]


__all__ = ["contains_subject", "find_subject", "slot_prompt"]
