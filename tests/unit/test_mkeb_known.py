"""known_only: the true answer ranked first among the record's candidates, cached per model and record."""
from __future__ import annotations

import pytest

from memla_utils.cache import ArtifactCache
from memla_utils.mkeb import Record
from memla_utils.mkeb import known as known_mod
from memla_utils.mkeb.known import KnownConfig, candidates, filter_known, is_known
from memla_utils.scoring import score_answers
from memla_utils.testing import tiny_model
from memla_utils.text import encode_answer


def rec(i: int, true: str | None = "Paris", new: str = "Rome") -> Record:
    return Record.from_dict({
        "example_id": f"k{i}", "relation_description": "capital",
        "edit": {l: {"prompt": "The capital of {} is", "subject": f"Land{i}", "target_new": new, "target_true": true}
                 for l in ("en", "zh")},
        "neighborhood_prompts": {"en": ["The capital of Peru is"], "zh": ["秘鲁的首都是"]},
        "neighborhood_answers": {"en": ["Lima"], "zh": ["利马"]},
    })


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def test_candidates_are_distinct_true_first():
    r = rec(0, true="Lima", new="Rome")
    assert candidates(r, "en") == ["Lima", "Rome"]
    assert candidates(r, "en", KnownConfig(use_neighborhood_answers=False)) == ["Lima", "Rome"]
    assert candidates(rec(1), "zh") == ["Paris", "Rome", "利马"]


def test_known_matches_direct_ranking_and_is_cached(model, tmp_path, monkeypatch):
    cache = ArtifactCache(tmp_path)
    for i, (true, new) in enumerate([("Paris", "Rome"), ("Rome", "Paris"), ("Lima", "Oslo")]):
        r = rec(i, true, new)
        cands = candidates(r, "en")
        prompt = r.for_language("en").prompt
        lp = score_answers(model.model, model.tokenizer, [prompt] * len(cands), cands, "en")["logprob"]
        per_tok = [float(lp[j]) / len(encode_answer(model.tokenizer, a, "en", prompt)) for j, a in enumerate(cands)]
        expected = max(range(len(cands)), key=per_tok.__getitem__) == 0
        assert is_known(model, r, "en", cache=cache) is expected
    # second pass must come from the cache: scoring is not called again
    monkeypatch.setattr(known_mod, "score_answers", lambda *a, **k: pytest.fail("cache miss"))
    assert filter_known(model, [rec(0), rec(1, "Rome", "Paris")], ["en"], cache=cache).total == 2


def test_missing_true_answer_is_not_available(model, tmp_path):
    r = rec(0, true=None)
    assert is_known(model, r, "en", cache=ArtifactCache(tmp_path)) is None
    res = filter_known(model, [r], ["en", "zh"], require="any", cache=ArtifactCache(tmp_path))
    assert res.records == [] and res.not_available == {"en": 1, "zh": 1} and res.survivors == {"en": 0, "zh": 0}


def test_all_is_a_subset_of_any(model, tmp_path):
    recs = [rec(i, t, n) for i, (t, n) in enumerate([("Paris", "Rome"), ("Rome", "Paris"), ("Oslo", "Lima")])]
    cache = ArtifactCache(tmp_path)
    all_ = filter_known(model, recs, ["en", "zh"], require="all", cache=cache)
    any_ = filter_known(model, recs, ["en", "zh"], require="any", cache=cache)
    assert {r.example_id for r in all_.records} <= {r.example_id for r in any_.records}
    assert len(any_.records) <= 3 and max(any_.survivors.values()) <= len(any_.records)
    with pytest.raises(ValueError, match="require must be"):
        filter_known(model, recs, ["en"], require="most")
