"""The dataset-build prose: cleaned, chunked, split into general-ability and statistics text."""
from __future__ import annotations

import re

import pytest

from memla_utils.corpus import (
    ISO639_3,
    CorpusError,
    TextConfig,
    chunk,
    clean_paragraphs,
    general_text,
    statistics_text,
    text_file,
)
from memla_utils.covariance import CorpusConfig, corpus_texts
from memla_utils.languages import MKEB_LANGUAGES

SCRIPTS = {"zh": r"[\u4e00-\u9fff]", "ja": r"[\u3040-\u30ff]", "ko": r"[\uac00-\ud7af]", "th": r"[\u0e00-\u0e7f]",
           "ru": r"[\u0400-\u04ff]"}


def test_every_mkeb_language_has_text():
    assert set(ISO639_3) == set(MKEB_LANGUAGES)
    for lang in MKEB_LANGUAGES:
        assert text_file(lang).is_file()
    with pytest.raises(CorpusError, match="no text for language 'nl'"):
        text_file("nl")


@pytest.mark.parametrize("lang", MKEB_LANGUAGES)
def test_the_reply_to_the_request_and_headings_are_dropped(lang):
    raw = text_file(lang).read_text(encoding="utf-8")
    first = re.split(r"\n\s*\n", raw.strip())[0]
    paras = clean_paragraphs(raw)
    assert first not in paras and all(not p.startswith(first[:30]) for p in paras)
    assert not any(p.startswith(("#", "**", "* ", "- ")) for p in paras)
    chunks = general_text(lang)
    assert len(chunks) == TextConfig().n_eval_chunks
    assert all(TextConfig().min_chars <= len(c) <= TextConfig().max_chars for c in chunks)
    if lang in SCRIPTS:  # the text is in its language
        assert all(re.search(SCRIPTS[lang], c) for c in chunks)


def test_the_opening_reply_is_recognised_in_a_new_file():
    text = ("Of course. Here is 30,000 words of varied text in English.\n\n## 1. Science\n\n"
            + "Physics is the study of matter and energy. " * 3 + "\n\n* **Item:** a list entry that is kept\n")
    paras = clean_paragraphs(text)
    assert paras and not any("Of course" in p for p in paras) and not any("Science" == p for p in paras)
    assert any(p.startswith("Item:") for p in paras)


def test_chunks_cut_at_a_boundary():
    assert chunk("short text", 300) == "short text"
    long = "word " * 100
    c = chunk(long, 52)
    assert len(c) <= 52 and c.endswith("word")
    zh = "这是一个句子。" * 30
    assert chunk(zh, 50).endswith("。")


def test_split_is_seeded_disjoint_and_statistics_interleave_languages():
    a, b = general_text("en"), general_text("en", TextConfig(seed=1))
    assert a == general_text("en") and a != b
    stats = statistics_text(["en", "zh"])
    assert not set(a) & set(stats)
    assert re.search(SCRIPTS["zh"], stats[1]) and not re.search(SCRIPTS["zh"], stats[0])


def test_covariance_corpus_defaults_to_the_statistics_text():
    cfg = CorpusConfig(languages=("en", "th"))
    assert cfg.source == "text"
    texts = corpus_texts(None, cfg)  # type: ignore[arg-type]  # the text source needs no model
    assert texts == statistics_text(["en", "th"]) and len(texts) > 100
    assert not set(texts) & set(general_text("en")) and not set(texts) & set(general_text("th"))
