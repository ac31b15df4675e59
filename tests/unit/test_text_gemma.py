"""The prompt/answer join on the real default tokenizer (Gemma 3), one test per fault of the previous join.

Gemma itself has no SentencePiece dummy prefix and appends no EOS, so those two faults are checked on Gemma's
vocabulary with Llama-2's normalizer (dummy '▁' on every text) and with a post-processor that appends <eos>.
"""
from __future__ import annotations

import pytest

from memla_utils.text import build_batch, encode_answer, encode_prompt

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gemma():
    from transformers import AutoTokenizer

    from memla_utils.models import materialize_default_model

    return AutoTokenizer.from_pretrained(str(materialize_default_model()))


def _variant(tok, *, dummy_prefix: bool = False, append_eos: bool = False):
    from tokenizers import Tokenizer, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    if dummy_prefix:
        backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    if append_eos:
        backend.post_processor = processors.TemplateProcessing(
            single="<bos> $A <eos>", special_tokens=[("<bos>", tok.bos_token_id), ("<eos>", tok.eos_token_id)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def _tokens(tok, ids):
    return tok.convert_ids_to_tokens(list(ids))


def _row(tok, batch, b=0):
    return _tokens(tok, batch.input_ids[b][batch.attention_mask[b].bool()].tolist())


def test_target_with_leading_space_is_one_word_initial_token(gemma):
    # the old join gave ['▁▁', 'Paris']
    assert _tokens(gemma, encode_answer(gemma, " Paris", "en", "The capital of France is")) == ["▁Paris"]
    batch = build_batch(gemma, ["The capital of France is"], [" Paris"], "en")
    assert _row(gemma, batch) == ["<bos>", "The", "▁capital", "▁of", "▁France", "▁is", "▁Paris"]


def test_prompt_ending_in_space_has_no_lone_separator(gemma):
    # the old join gave [..., '▁is', '▁', 'Paris']
    batch = build_batch(gemma, ["The capital of France is "], ["Paris"], "en")
    assert _row(gemma, batch) == ["<bos>", "The", "▁capital", "▁of", "▁France", "▁is", "▁Paris"]
    assert _tokens(gemma, batch.answer_targets[0][batch.answer_mask[0]].tolist()) == ["▁Paris"]


def test_no_dummy_prefix_before_zh_ja_th_answers(gemma):
    llama2_style = _variant(gemma, dummy_prefix=True)
    # the old join gave ['▁', '巴黎']
    assert _tokens(llama2_style, encode_answer(llama2_style, "巴黎", "zh", "法国的首都是")) == ["巴黎"]
    for tok in (gemma, llama2_style):
        for prompt, answer, lang in [("法国的首都是", "巴黎", "zh"), ("日本の首都は", "東京", "ja"),
                                     ("เมืองหลวงของฝรั่งเศสคือ", "ปารีส", "th")]:
            batch = build_batch(tok, [prompt], [answer], lang)
            assert batch.input_ids[0].tolist() == tok(prompt + answer)["input_ids"], (prompt, answer)


def test_no_eos_between_prompt_and_answer_and_exactly_one_bos(gemma):
    with_eos = _variant(gemma, append_eos=True)
    assert with_eos("x")["input_ids"][-1] == gemma.eos_token_id  # the variant really appends EOS
    batch = build_batch(with_eos, ["The capital of France is", "法国的首都是"], ["Paris", "巴黎"], ["en", "zh"])
    assert _row(with_eos, batch, 0) == ["<bos>", "The", "▁capital", "▁of", "▁France", "▁is", "▁Paris"]
    assert gemma.eos_token_id not in batch.input_ids[1].tolist()
    assert encode_prompt(with_eos, "The capital of France is")[-1] != gemma.eos_token_id
    # a prompt whose text already starts with <bos> (e.g. a templated prefix) gets no second BOS
    batch = build_batch(gemma, ["<bos>The capital of France is"], ["Paris"], "en")
    assert _row(gemma, batch) == ["<bos>", "The", "▁capital", "▁of", "▁France", "▁is", "▁Paris"]
