"""A run built in parts refuses to mix code, lock file, model or records; restart moves results aside."""
from __future__ import annotations

import json

import pytest

from memla_utils.mkeb.record import EditTarget, Record
from memla_utils.run_identity import (
    IDENTITY_FILE,
    RunIdentityError,
    check_run_identity,
    code_hashes,
    run_identity,
)


def recs(target: str = "Tokyo") -> list[Record]:
    return [Record("r0", "capital", {"en": EditTarget("The capital of {} is", "France", target, "Paris")})]


def test_identity_covers_every_stage_and_is_stable():
    a, b = code_hashes(), code_hashes()
    assert a == b and set(a) == {"foundation", "attribution", "editing", "evaluation"}
    assert run_identity("m", recs()) == run_identity("m", recs())


def test_a_run_refuses_other_inputs_and_says_what_changed(tmp_path):
    ident = run_identity("model-a", recs(), {"preset": "medium"})
    check_run_identity(tmp_path, ident)
    (tmp_path / "results-shard000of001.jsonl").write_text('{"x": 1}\n')
    check_run_identity(tmp_path, ident)  # same identity: appending is fine
    changed = run_identity("model-b", recs("Rome"), {"preset": "medium"})
    with pytest.raises(RunIdentityError, match=r"model: model-a -> model-b.*records:"):
        check_run_identity(tmp_path, changed)
    code = json.loads((tmp_path / IDENTITY_FILE).read_text())
    code["code"]["editing"] = "0" * 16  # as if the editors had changed since the run started
    (tmp_path / IDENTITY_FILE).write_text(json.dumps(code))
    with pytest.raises(RunIdentityError, match=r"code of stage 'editing'"):
        check_run_identity(tmp_path, ident)
    assert (tmp_path / "results-shard000of001.jsonl").is_file()  # nothing lost by refusing


def test_restart_moves_earlier_results_aside(tmp_path):
    check_run_identity(tmp_path, run_identity("model-a", recs()))
    (tmp_path / "results-shard000of001.jsonl").write_text('{"x": 1}\n')
    check_run_identity(tmp_path, run_identity("model-b", recs()), restart=True)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("superseded-")]
    assert len(aside) == 1 and (aside[0] / "results-shard000of001.jsonl").read_text() == '{"x": 1}\n'
    assert not (tmp_path / "results-shard000of001.jsonl").exists()
    assert json.loads((tmp_path / IDENTITY_FILE).read_text())["model"] == "model-b"
