"""Languages, text joining, scoring, cache and the record schema."""
from __future__ import annotations

import json

import pytest
import torch

from memla_utils.cache import ArtifactCache, cache_key, content_hash
from memla_utils.config import RunConfig
from memla_utils.languages import answer_separator, validate_languages
from memla_utils.mkeb.record import Record, RecordError
from memla_utils.scoring import answer_logprob, score_answers
from memla_utils.testing import tiny_model, tiny_tokenizer
from memla_utils.text import build_batch, encode_answer, encode_prompt, join_prompt_answer


def test_unknown_language_lists_supported():
    with pytest.raises(ValueError, match=r"unknown language code 'xx'.*supported: .*en"):
        validate_languages(["en", "xx"])
    assert validate_languages("en, cz") == ["en", "cs"]
    assert len(validate_languages("all")) == 12


def test_answer_separator_depends_on_script():
    assert answer_separator("en", "The capital is") == " "
    assert answer_separator("zh", "法国的首都是") == ""
    assert answer_separator("th", "เมืองหลวงคือ") == ""
    assert answer_separator("en", "Q: x\nA: ") == ""


def test_prompt_answer_join_is_token_level():
    tok = tiny_tokenizer()
    batch = build_batch(tok, ["法国的首都是", "The capital is"], ["巴黎", "Paris"], ["zh", "en"])
    joined = join_prompt_answer(tok, "法国的首都是", "巴黎", "zh")  # one string, split at the prompt's end
    p0, a0 = joined.prompt_ids, encode_answer(tok, "巴黎", "zh", "法国的首都是")
    assert batch.input_ids[0, : len(p0) + len(a0)].tolist() == p0 + a0
    # the answer mask marks the positions whose logits predict answer tokens
    assert batch.answer_targets[0][batch.answer_mask[0]].tolist() == a0
    a1 = encode_answer(tok, "Paris", "en", "The capital is")
    assert a1 == tok(" Paris", add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="empty answer"):
        encode_answer(tok, "  ", "en")


def test_scoring_matches_manual_logprob():
    lm = tiny_model("llama")
    prompt, answer = "The capital of France is", "Paris"
    scores = score_answers(lm.model, lm.tokenizer, [prompt], [answer], "en")
    ids = encode_prompt(lm.tokenizer, prompt) + encode_answer(lm.tokenizer, answer, "en", prompt)
    n_p = len(encode_prompt(lm.tokenizer, prompt))
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(torch.tensor([ids])).logits[0].float(), -1)
    manual = sum(float(logp[t - 1, ids[t]]) for t in range(n_p, len(ids)))
    assert float(scores["logprob"][0]) == pytest.approx(manual, abs=1e-4)
    # padding must not change the score of a row
    both = score_answers(lm.model, lm.tokenizer, [prompt, "x"], [answer, "a much longer answer here"], "en")
    assert float(both["logprob"][0]) == pytest.approx(manual, abs=1e-4)
    batch = build_batch(lm.tokenizer, [prompt], [answer], "en")
    assert float(answer_logprob(lm.model, batch)[0]) == pytest.approx(manual, abs=1e-4)


def test_cache_roundtrip_and_keys(tmp_path):
    cache = ArtifactCache(tmp_path)
    k1 = cache_key("attr", model="abc", params={"steps": 20, "langs": ["en"]})
    k2 = cache_key("attr", model="abc", params={"langs": ["en"], "steps": 20})
    k3 = cache_key("attr", model="abc", params={"steps": 21, "langs": ["en"]})
    assert k1 == k2 != k3
    assert k1 not in cache
    cache.put_json(k1, {"x": 1})
    cache.put_tensors(k3, {"t": torch.arange(3)})
    assert cache.get_json(k1) == {"x": 1}
    assert torch.equal(cache.get_tensors(k3)["t"], torch.arange(3))
    assert not list(tmp_path.rglob("*.tmp")), "atomic writes leave no temporary files"
    assert content_hash({"a": 1, "b": 2}) == content_hash({"b": 2, "a": 1})


def _record_dict():
    return {"example_id": "r1", "relation_description": "capital",
            "edit": {"en": {"prompt": "The capital of {} is", "subject": "France", "target_new": "Rome",
                            "target_true": "Paris"},
                     "zh": {"prompt": "{}的首都是", "subject": "法国", "target_new": "罗马", "target_true": "巴黎"}},
            "paraphrase_prompts": {"en": ["France's capital is"]},
            "multi_hop_new_answer": {"en": "Italy"}}


def _reorder_metadata(path, order):
    """Rewrite a safetensors file's header with its metadata keys in ``order`` (as another process might write
    them: safetensors' header order is not fixed); the header keeps its length, so the data is untouched."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["__metadata__"] = {k: header["__metadata__"][k] for k in order}
    text = json.dumps(header, separators=(",", ":")).encode()
    text = text + b" " * (n - len(text))  # safetensors allows trailing spaces in the header
    assert len(text) == n
    path.write_bytes(raw[:8] + text + raw[8 + n:])


def test_write_tensors_atomic_leaves_a_file_with_the_same_content_alone(tmp_path):
    """Writing what a file already holds (same names, dtypes, shapes, bits; same metadata in any key order)
    keeps its bytes and mtime (before: every rerun rewrote each tracked mask file); other content is written."""
    import os

    from safetensors import safe_open
    from safetensors.torch import load_file

    from memla_utils.cache import file_holds_tensors, write_tensors_atomic

    path = tmp_path / "m.safetensors"
    tensors = {"specific.0": torch.tensor([True, False, True]), "w": torch.tensor([[0.5, -0.0], [float("nan"), 2.0]])}
    meta = {"example_id": "r1", "edit_language": "en", "n_neurons": "3", "source": "abc", "attribution_method": "m"}
    write_tensors_atomic(path, tensors, meta)
    _reorder_metadata(path, sorted(meta, reverse=True))
    with safe_open(str(path), framework="pt") as f:
        assert list(f.metadata()) != list(meta)  # the file's key order differs from the dict's
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = path.read_bytes()

    def unchanged() -> bool:
        return path.read_bytes() == before and path.stat().st_mtime_ns == 1_000_000_000

    write_tensors_atomic(path, {k: v.clone() for k, v in tensors.items()}, dict(meta))
    assert unchanged()
    write_tensors_atomic(path, dict(reversed(tensors.items())), dict(reversed(meta.items())))
    assert unchanged()
    # anything different is written: a value (even -0.0 -> 0.0), a dtype, a shape, a name, a metadata value
    w = tensors["w"]
    for other, other_meta in [
        ({**tensors, "w": torch.where(w == 0, torch.zeros_like(w), w)}, meta),
        ({**tensors, "w": w.double()}, meta),
        ({**tensors, "w": w.reshape(4)}, meta),
        ({**tensors, "extra": torch.zeros(1)}, meta),
        (tensors, {**meta, "source": "other"}),
        (tensors, None),
    ]:
        assert not file_holds_tensors(path, other, other_meta)
        write_tensors_atomic(path, other, other_meta)
        back = load_file(str(path))
        assert set(back) == set(other)
        assert all(back[k].dtype == v.dtype and torch.equal(back[k].view(-1).view(torch.uint8),
                                                            v.contiguous().view(-1).view(torch.uint8))
                   for k, v in other.items())
        with safe_open(str(path), framework="pt") as f:
            assert (f.metadata() or {}) == (other_meta or {})
        assert file_holds_tensors(path, other, other_meta)
    # a file that is not a readable safetensors file is replaced
    path.write_bytes(b"not safetensors")
    assert not file_holds_tensors(path, tensors, meta)
    write_tensors_atomic(path, tensors, meta)
    assert file_holds_tensors(path, tensors, meta)


def test_record_roundtrip_and_view():
    r = Record.from_dict(_record_dict())
    assert Record.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    v = r.for_language("zh")
    assert v.prompt == "法国的首都是" and v.target_new == "罗马"
    assert v.multi_hop_new_answer is None and v.paraphrase_prompts == []
    with pytest.raises(RecordError, match="record 'r1' has no language 'ko'"):
        r.for_language("ko")


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.pop("edit"), "missing field 'edit'"),
    (lambda d: d["edit"]["en"].pop("target_new"), r"edit\.en\.target_new"),
    (lambda d: d.__setitem__("paraphrase_prompts", {"en": [1]}), r"paraphrase_prompts\.en"),
])
def test_malformed_record_names_the_field(mutate, match):
    d = _record_dict()
    mutate(d)
    with pytest.raises(RecordError, match=match):
        Record.from_dict(d, where="file.json record 4")


def test_run_config_validates_parameters():
    cfg = RunConfig.from_params(languages="en,zh", edit_languages="zh", methods="memla,ft", n_records=2)
    assert cfg.languages == ["en", "zh"] and cfg.methods == ["memla", "ft"]
    with pytest.raises(ValueError, match="unknown method"):
        RunConfig.from_params(methods="memla,magic")
    with pytest.raises(ValueError, match="edit_languages"):
        RunConfig.from_params(languages="en", edit_languages="zh")
    assert RunConfig.from_params(preset="full").n_records >= 1000
