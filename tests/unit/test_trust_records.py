"""Records that cannot be used as written: blank prompts are rejected (never scored), subjects are found as whole
words, and ROME/MEMIT/PMET refuse a subject that is not in the prompt instead of editing some other token.

Each case here passed silently before (issue 13 §3): a blank paraphrase gave PS = 1.0 with n = 1, ``slot_prompt``
put the slot inside "Alison", and the locate-then-edit methods edited at the last prompt token.
"""
from __future__ import annotations

import json
import logging
import unicodedata

import pytest
import torch

from memla_utils.covariance import CorpusConfig, CovarianceConfig
from memla_utils.editors import EditError, make_editor
from memla_utils.editors.locate import Request, subject_last_position
from memla_utils.evaluate import evaluate_language
from memla_utils.mkeb import Record, RecordError, read_records
from memla_utils.mkeb.importers import slot_prompt as importers_slot_prompt
from memla_utils.mkeb.record import EditTarget
from memla_utils.mkeb.subjects import find_subject, slot_prompt
from memla_utils.testing import tiny_model
from memla_utils.text import encode_prompt

BLANKS = ["", "   ", "\t\n", "\u3000"]  # empty, spaces, tab/newline, ideographic space


def raw(i: int = 0) -> dict:
    return {"example_id": f"r{i}", "relation_description": "capital",
            "edit": {l: {"prompt": p, "subject": s, "target_new": "Tokyo", "target_true": "Paris"}
                     for l, p, s in (("en", "The capital of {} is", "France"), ("zh", "{}的首都是", "法国"))},
            "paraphrase_prompts": {"en": ["France's capital is"], "zh": ["法国的首都叫"]},
            "neighborhood_prompts": {"en": ["The capital of Italy is"], "zh": ["意大利的首都是"]},
            "neighborhood_answers": {"en": ["Rome"], "zh": ["罗马"]},
            "multi_hop_questions": {"en": ["The currency of the country whose capital is Tokyo is"]},
            "multi_hop_new_answer": {"en": "yen"}}


FIELDS = [("paraphrase_prompts", "zh"), ("neighborhood_prompts", "en"), ("neighborhood_answers", "zh"),
          ("multi_hop_questions", "en")]


# ------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("field,lang", FIELDS)
@pytest.mark.parametrize("blank", BLANKS)
def test_blank_prompt_or_answer_is_rejected_naming_file_record_field_language(tmp_path, field, lang, blank):
    rows = [raw(0), raw(1), raw(2)]
    rows[1][field][lang] = [*rows[1][field][lang], blank]
    if field == "neighborhood_answers":  # keep prompts and answers paired: the blank is the only fault
        rows[1]["neighborhood_prompts"][lang] = [*rows[1]["neighborhood_prompts"][lang], "The capital of Peru is"]
    if field == "neighborhood_prompts":
        rows[1]["neighborhood_answers"][lang] = [*rows[1]["neighborhood_answers"][lang], "Lima"]
    path = tmp_path / "recs.json"
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(RecordError) as err:
        read_records(path)
    msg = str(err.value)
    assert str(path) in msg and "record 1" in msg and "(r1)" in msg
    assert f"'{field}.{lang}[1]'" in msg and f"language '{lang}'" in msg and "blank" in msg
    rep = read_records(path, skip_bad=True)  # skip_bad: the record is skipped and counted
    assert [r.example_id for r in rep.records] == ["r0", "r2"] and rep.n_skipped == 1
    assert f"{field}.{lang}[1]" in rep.skipped[0]


def test_blank_multi_hop_answer_with_questions_is_rejected(tmp_path):
    row = raw(0)
    row["multi_hop_new_answer"]["en"] = "  "
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(RecordError, match=r"multi_hop_new_answer\.en"):
        read_records(path)


@pytest.mark.parametrize("blank", BLANKS)
def test_a_blank_paraphrase_is_never_scored(blank):
    """Before: PS = 1.0 with n = 1 for a record whose only paraphrase was blank."""
    lm = tiny_model("qwen2")
    rec = Record("r9", "capital", {"en": EditTarget("The capital of {} is", "France", "Tokyo", "Paris")},
                 paraphrase_prompts={"en": [blank]})
    with pytest.raises(RecordError, match=r"r9.*'en'.*paraphrase_prompts\.en\[0\]"):
        rec.for_language("en")
    with pytest.raises(RecordError, match="blank"):
        evaluate_language(lm, rec, "en")


# ------------------------------------------------------------------------------------------- subject search
@pytest.mark.parametrize("prompt,subject,language,expected", [
    ("Where was Alison's friend Ali born?", "Ali", None, "Where was Alison's friend {} born?"),
    ("Where was Alison's friend Ali born?", "Ali", "en", "Where was Alison's friend {} born?"),
    ("Where was Alison born?", "Ali", "en", "Where was Alison born?"),                 # only inside a word
    ("What does the B52 carry, unlike the B5?", "B5", None, "What does the B52 carry, unlike the {}?"),
    ("Wer ist Berliners Bürgermeister in Berlin?", "Berlin", "de", "Wer ist Berliners Bürgermeister in {}?"),
    ("Кто мэр Иваново, где родился Иван?", "Иван", "ru", "Кто мэр Иваново, где родился {}?"),
    ("l'Italie est où ?", "Italie", "fr", "l'{} est où ?"),                           # elision is a boundary
    ("Ali's father is", "Ali", "en", "{}'s father is"),
    ("法国的首都是", "法国", "zh", "{}的首都是"),                                         # substrings in zh/ja/th
    ("法國的首都是", "法国", "zh", "法國的首都是"),                                       # traditional ≠ simplified
    ("日本の首都は", "日本", "ja", "{}の首都は"),
    ("เมืองหลวงของประเทศไทยคือ", "ประเทศไทย", "th", "เมืองหลวงของ{}คือ"),
    ("iPhone的制造商是", "iPhone", None, "{}的制造商是"),                                 # script change = boundary
    ("프랑스의 수도는", "프랑스", "ko", "{}의 수도는"),                                   # Korean particle attached
    ("오프랑스의 수도는", "프랑스", "ko", "오프랑스의 수도는"),                             # ... but a word must start
    (unicodedata.normalize("NFD", "Where is José?"), "Jose", "en",
     unicodedata.normalize("NFD", "Where is José?")),                                     # a combining accent joins
    ("The capital of {} is", "France", "en", "The capital of {} is"),                     # already slotted
])
def test_slot_prompt_matches_whole_words(prompt, subject, language, expected):
    assert slot_prompt(prompt, subject, language) == expected


def test_the_importers_use_the_whole_word_rule():
    assert importers_slot_prompt("Where was Alison's friend Ali born?", "Ali") == "Where was Alison's friend {} born?"
    assert find_subject("KKWE is in which state?", "KWE") == -1


# ------------------------------------------------------------------------------------------- locate-then-edit
COV = CovarianceConfig(corpus=CorpusConfig(languages=("en", "zh"), samples_per_language=2, sample_tokens=12),
                       n_samples=4)
LOCATE = dict(covariance=COV, n_context=0, v_steps=2, v_lr=1.0, clamp_norm_factor=50.0, v_weight_decay=0.01)


pytestmark = pytest.mark.usefixtures("module_cache")  # a fresh artifact cache for this module (conftest)


def slotless(prompt: str, subject: str, lang: str = "en") -> Record:
    return Record("s1", "capital", {lang: EditTarget(prompt, subject, "Tokyo", "Paris")})


BAD_SUBJECTS = [
    ("法國的首都是", "法国", "zh"),                  # the case: traditional prompt, simplified subject
    ("Where was Alison born?", "Ali", "en"),        # only inside a longer word
    ("What is the capital?", "France", "en"),       # absent
    ("What is the capital of this country?", "", "en"),  # no subject at all (MLaKE)
]


@pytest.mark.parametrize("method", ["rome", "memit", "pmet"])
@pytest.mark.parametrize("prompt,subject,lang", BAD_SUBJECTS)
def test_locate_methods_refuse_a_subject_not_in_the_prompt(method, prompt, subject, lang):
    lm = tiny_model("llama")
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    rec = slotless(prompt, subject, lang)
    editor = make_editor(method, **LOCATE)
    with pytest.raises(EditError) as err:
        editor.check_record(rec, lang)
    msg = str(err.value)
    assert "'s1'" in msg and f"'{lang}'" in msg and repr(subject) in msg and repr(prompt) in msg
    with pytest.raises(EditError, match="subject"):
        editor.edit(lm, rec, lang)
    assert all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters())


def test_subject_position_uses_the_whole_word_occurrence():
    lm = tiny_model("llama")
    prompt = "Where was Alison's friend Ali born?"
    pos = subject_last_position(lm.tokenizer, Request(slotless(prompt, "Ali"), "en"))
    ids = encode_prompt(lm.tokenizer, prompt)
    assert lm.tokenizer.decode(ids[: pos + 1]).endswith("friend Ali")


def test_other_methods_accept_a_slotless_prompt(caplog):
    """The subject requirement belongs to ROME/MEMIT/PMET only; FT edits the record as written."""
    rec = slotless("What is the capital of this country?", "")
    with caplog.at_level(logging.WARNING):
        make_editor("ft").check_record(rec, "en")
