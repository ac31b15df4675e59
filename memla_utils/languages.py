"""Language codes used across the companion, and how text is joined in each language.

MKEB's twelve languages are the default everywhere; imported benchmarks (MzsRE, MLaKE, BMIKE-53) bring
other codes, so any code in ``KNOWN_LANGUAGES`` is accepted where a language list is validated.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

#: The twelve languages of the paper's benchmark MKEB, in the paper's order.
MKEB_LANGUAGES: tuple[str, ...] = ("en", "zh", "fr", "de", "it", "es", "pt", "pl", "ru", "ja", "ko", "th")

#: The languages whose knowledge neurons are intersected by default (memla4mke uses en, zh, fr).
PAPER_INDEPENDENT_LANGUAGES: tuple[str, ...] = ("en", "zh", "fr")

#: Scripts written without spaces between words: answers are appended without a separator and F1 is
#: computed over characters rather than whitespace tokens.
NO_SPACE_LANGUAGES: frozenset[str] = frozenset({"zh", "ja", "th", "yue", "lo", "km", "my"})

#: Codes some public datasets use instead of ISO 639-1 (MzsRE: cz = Czech, du = Dutch).
LANGUAGE_ALIASES: dict[str, str] = {"cz": "cs", "du": "nl", "jp": "ja", "kr": "ko", "cn": "zh"}

#: Every code accepted by validation (MKEB plus the languages of MzsRE, MLaKE, BMIKE-53).
KNOWN_LANGUAGES: frozenset[str] = frozenset(MKEB_LANGUAGES) | frozenset(
    "af ar az be bg bn ca cs cy da el et eu fa fi ga gl gu he hi hr hu hy id is ka kk km kn lo lt lv mk ml mn mr "
    "ms my ne nl no pa ro si sk sl sq sr sv sw ta te tl tr uk ur uz vi yue".split()
)


def normalize_language(code: str) -> str:
    """Map dataset-specific aliases (``cz``, ``du``) to ISO 639-1 and lower-case the code."""
    code = code.strip().lower()
    return LANGUAGE_ALIASES.get(code, code)


def validate_languages(languages: str | Iterable[str], *, allowed: Iterable[str] | None = None,
                       parameter: str = "languages") -> list[str]:
    """Return the list of language codes, or raise ``ValueError`` naming the unknown code and the choices.

    ``"all"`` expands to the MKEB languages; a comma-separated string is accepted (papermill parameters).
    """
    if isinstance(languages, str):
        languages = list(MKEB_LANGUAGES) if languages.strip() == "all" else [
            s for s in languages.replace(" ", "").split(",") if s]
    pool = frozenset(allowed) if allowed is not None else KNOWN_LANGUAGES
    result: list[str] = []
    for raw in languages:
        code = normalize_language(raw)
        if code not in pool:
            raise ValueError(f"unknown language code {raw!r} in {parameter}; supported: {', '.join(sorted(pool))}")
        if code not in result:
            result.append(code)
    if not result:
        raise ValueError(f"{parameter} is empty; give at least one of: {', '.join(MKEB_LANGUAGES)}")
    return result


def answer_separator(language: str, prompt: str) -> str:
    """The text that goes between a prompt and its answer: a space in spaced scripts, nothing in zh/ja/th.

    The join itself (whitespace stripped at the join, then this separator, tokenized as one string) is
    :func:`memla_utils.text.join_text` / :func:`memla_utils.text.join_prompt_answer`; this only names the separator.
    """
    if language in NO_SPACE_LANGUAGES or not prompt or prompt[-1].isspace():
        return ""
    return " "


def ordered(languages: Sequence[str]) -> list[str]:
    """Sort codes in MKEB order first, then alphabetically, so tables and figures have a stable layout."""
    rank = {c: i for i, c in enumerate(MKEB_LANGUAGES)}
    return sorted(set(languages), key=lambda c: (rank.get(c, len(rank)), c))
