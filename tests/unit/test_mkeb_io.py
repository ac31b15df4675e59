"""Reading, writing and validating MKEB records: round trips and errors that name file, record and field."""
from __future__ import annotations

import json
import logging

import pytest

from memla_utils.mkeb import Record, RecordError, load_records, read_records, save_records, validate_record

#: Each language's own text: load_records checks that a language's views are written in it.
TEXT = {
    "en": ("The capital of {} is", "{}'s capital city is", "The capital of Peru is", "In which country is {}?"),
    "fr": ("La capitale de {} est", "La ville capitale de {} est", "La capitale du Pérou est",
           "Dans quel pays se trouve {} ?"),
    "zh": ("{}的首都是", "{}的首都城市是", "秘鲁的首都是", "{}位于哪个国家？"),
}


def make(i: int, langs=("en", "fr")) -> dict:
    return {
        "example_id": f"r{i}", "relation_description": "country → capital",
        "edit": {l: {"prompt": TEXT[l][0], "subject": f"Land{i}", "target_new": "Paris",
                     "target_true": f"City{i}"} for l in langs},
        "paraphrase_prompts": {l: [TEXT[l][1].format(f"Land{i}")] for l in langs},
        "neighborhood_prompts": {l: [TEXT[l][2]] for l in langs},
        "neighborhood_answers": {l: ["Lima"] for l in langs},
        "multi_hop_questions": {l: [TEXT[l][3].format(f"Land{i}")] for l in langs},
        "multi_hop_new_answer": {l: "France" for l in langs},
    }


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_round_trip(tmp_path, suffix):
    recs = [Record.from_dict(make(i)) for i in range(3)]
    path = save_records(recs, tmp_path / f"x{suffix}")
    back = read_records(path).records
    assert [r.to_dict() for r in back] == [r.to_dict() for r in recs]
    if suffix == ".jsonl":
        assert len(path.read_text(encoding="utf-8").splitlines()) == 3


def test_error_names_file_record_and_field(tmp_path):
    rows = [make(0), make(1), make(2)]
    del rows[2]["edit"]["fr"]["target_new"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    with pytest.raises(RecordError) as err:
        read_records(path)
    msg = str(err.value)
    assert str(path) in msg and "record 2" in msg and "edit.fr.target_new" in msg


def test_skip_bad_keeps_good_records_and_counts(tmp_path, caplog):
    lines = [json.dumps(make(0)), "{not json", json.dumps(make(2)), json.dumps({"example_id": "x"})]
    path = tmp_path / "part.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(RecordError, match=r"record 1 \(line 2\): invalid JSON"):
        read_records(path)
    with caplog.at_level(logging.WARNING):
        rep = read_records(path, skip_bad=True)
    assert [r.example_id for r in rep.records] == ["r0", "r2"]
    assert rep.n_skipped == 2
    assert "skipped 2 bad record(s) of 4" in caplog.text
    assert "missing field 'edit'" in rep.skipped[1]


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["neighborhood_answers"]["en"].append("extra"), "neighborhood_answers.en"),
    (lambda d: d["multi_hop_new_answer"].update(fr=None), "multi_hop_new_answer.fr"),
    (lambda d: d["paraphrase_prompts"].update(de=["x"]), "paraphrase_prompts"),
    (lambda d: d["edit"]["en"].update(prompt="{} and {}"), "edit.en.prompt"),
    (lambda d: d["edit"].update(xx=d["edit"]["en"]), "edit.xx"),
    (lambda d: d["edit"]["fr"].update(target_new="  "), "edit.fr.target_new"),
])
def test_validation_names_the_field(mutate, field):
    d = make(0)
    mutate(d)
    with pytest.raises(RecordError, match=field.replace(".", r"\.")):
        validate_record(Record.from_dict(d), where="rec")


def test_duplicate_ids_are_rejected(tmp_path):
    path = tmp_path / "dup.json"
    path.write_text(json.dumps([make(0), make(0)]), encoding="utf-8")
    with pytest.raises(RecordError, match="record 1.*duplicate id 'r0'"):
        read_records(path)


def test_load_records_languages_n_and_errors(tmp_path):
    path = save_records([Record.from_dict(make(i, ("en", "fr", "zh"))) for i in range(4)] +
                        [Record.from_dict(make(9, ("en",)))], tmp_path / "m.jsonl")
    recs = load_records(path, languages="zh,en", n=2)
    assert len(recs) == 2 and recs[0].languages == ["zh", "en"]
    assert set(recs[0].paraphrase_prompts) == {"zh", "en"}
    with pytest.raises(ValueError, match="unknown language code 'xx'.*supported: .*en.*th"):
        load_records(path, languages=["en", "xx"])
    with pytest.raises(RecordError, match=r"record 4 \(r9\): field 'edit' lacks language\(s\) \['fr'\]"):
        load_records(path, languages=["en", "fr"])
    assert len(load_records(path, languages=["en", "fr"], skip_bad=True)) == 4
    assert len(load_records(path, languages=["en"])) == 5
    with pytest.raises(ValueError, match="n must be >= 1"):
        load_records(path, n=0)
    with pytest.raises(FileNotFoundError, match="build_mkeb"):
        load_records(tmp_path / "missing.jsonl")


def test_top_level_must_be_a_list(tmp_path):
    path = tmp_path / "obj.json"
    path.write_text(json.dumps({"a": 1}), encoding="utf-8")
    with pytest.raises(RecordError, match="expected a list of records"):
        read_records(path)
    path.write_text(json.dumps({"records": [make(0)]}), encoding="utf-8")
    assert len(read_records(path).records) == 1
