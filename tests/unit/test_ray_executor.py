"""The Ray executor on a local 2-CPU cluster and tiny models: same results as run_experiment, resumable after a
killed unit, retries, and the batch driver's --executor / --address options."""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a local Ray cluster and its worker processes: about a minute per test

from grid_helpers import CONFIG, EDIT, EVAL, METHODS, SPEC, comparable  # noqa: E402

from memla_utils import batch  # noqa: E402
from memla_utils.cache import ArtifactCache  # noqa: E402
from memla_utils.editors import make_editor  # noqa: E402
from memla_utils.executors import RayConfig, RayGridError, init_ray, run_experiment_ray  # noqa: E402
from memla_utils.mkeb.record import EditTarget, Record  # noqa: E402
from memla_utils.runner import merge_results, run_experiment  # noqa: E402
from memla_utils.testing import tiny_model  # noqa: E402


def records() -> list[Record]:
    out = []
    for i, (subj, new, old, fr) in enumerate([("France", "Tokyo", "Paris", "France"),
                                              ("Spain", "Rome", "Madrid", "Espagne")]):
        out.append(Record(f"r{i}", "capital", {
            "en": EditTarget("The capital of {} is", subj, new, old),
            "zh": EditTarget("{}的首都是", subj, "东京", "巴黎"),
            "fr": EditTarget("La capitale de {} est", fr, new, old)},
            paraphrase_prompts={"en": [f"{subj}'s capital city is"]},
            neighborhood_prompts={"en": ["The capital of Poland is"], "zh": ["日本的首都是"]},
            neighborhood_answers={"en": ["Warsaw"], "zh": ["东京"]}))
    return out


class CrashOnce:
    """An editor that kills its worker process the first time it edits ``record`` (a marker file remembers)."""

    def __init__(self, inner, marker: str, record: str) -> None:
        self.inner, self.marker, self.record = inner, Path(marker), record

    def edit(self, lm, record, language, **context):
        if record.example_id == self.record and not self.marker.exists():
            self.marker.write_text("crashed once\n")
            os._exit(1)  # like an OOM kill or a node going away, mid-unit
        return self.inner.edit(lm, record, language, **context)


def crash_factory(marker: str, record: str, method: str, kwargs: dict):
    inner = make_editor(method, **kwargs)
    return CrashOnce(inner, marker, record) if method == "ft" else inner


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    init_ray(RayConfig(num_cpus=2))  # ray.init(num_cpus=2, include_dashboard=False) + this checkout for workers
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    yield ray
    ray.shutdown()


def raw_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(run_dir.glob("results-shard*.jsonl"))
            for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def done_attempts(run_dir: Path) -> dict[tuple, list[str]]:
    out: dict[tuple, list[str]] = {}
    for r in raw_rows(run_dir):
        if r.get("kind") == "done":
            out.setdefault((r["record"], r["edit_lang"], r["method"]), []).append(r["attempt"])
    return out


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """The reference: the same grid in this process (masks computed by MEMLA itself through attribution)."""
    run_dir = tmp_path_factory.mktemp("single")
    run_experiment(tiny_model("llama"), records(), METHODS, EDIT, EVAL, run_dir, config=CONFIG,
                   cache=ArtifactCache(run_dir / "cache"))
    return run_dir


def test_ray_results_equal_the_single_process_run(cluster, single_process, tmp_path):
    run_dir = tmp_path / "ray"
    out = run_experiment_ray(SPEC, records(), METHODS, EDIT, EVAL, run_dir, config=CONFIG,
                             cache=ArtifactCache(tmp_path / "cache"), ray_config=RayConfig(progress=False))
    assert out.name == "results-shard000of001.jsonl"  # the same file layout as run_experiment
    got, want = comparable(run_dir), comparable(single_process)
    assert len(want) > 20 and got == want
    assert {k: len(v) for k, v in done_attempts(run_dir).items()} == {
        (r, "en", m): 1 for r in ("r0", "r1") for m in ("unedited", *METHODS)}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["model_fingerprint"] == json.loads((single_process / "manifest.json").read_text())[
        "model_fingerprint"]
    # masks were computed once per (record, edit language) in the first stage and cached there
    assert len(list((tmp_path / "cache").glob("attribution/*.safetensors"))) > 0


def test_a_killed_unit_is_left_unfinished_and_a_rerun_does_only_it(cluster, single_process, tmp_path):
    run_dir, marker = tmp_path / "ray", tmp_path / "marker"
    factory = functools.partial(crash_factory, str(marker), "r1")
    kwargs = dict(config=CONFIG, cache=ArtifactCache(tmp_path / "cache"), editor_factory=factory)
    with pytest.raises(RayGridError, match=r"1 unit\(s\) failed.*'r1', 'en', 'ft'") as info:
        run_experiment_ray(SPEC, records(), METHODS, EDIT, EVAL, run_dir,
                           ray_config=RayConfig(max_retries=0, progress=False), **kwargs)
    assert [u.as_tuple() for u, _ in info.value.failed] == [("r1", "en", "ft")]
    assert marker.exists()
    first = done_attempts(run_dir)
    assert len(first) == 5 and ("r1", "en", "ft") not in first
    with pytest.raises(ValueError, match="1 of 6 units not finished"):
        merge_results(run_dir)

    run_experiment_ray(SPEC, records(), METHODS, EDIT, EVAL, run_dir,  # the same command again
                       ray_config=RayConfig(max_retries=0, progress=False), **kwargs)
    second = done_attempts(run_dir)
    assert all(len(v) == 1 for v in second.values()) and len(second) == 6
    assert {k: v for k, v in second.items() if k in first} == first  # finished units were not redone
    merge_results(run_dir)
    assert comparable(run_dir) == comparable(single_process)


def test_a_killed_unit_is_retried_within_the_run(cluster, single_process, tmp_path):
    run_dir, marker = tmp_path / "ray", tmp_path / "marker"
    run_experiment_ray(SPEC, records(), METHODS, EDIT, EVAL, run_dir, config=CONFIG,
                       cache=ArtifactCache(tmp_path / "cache"),
                       editor_factory=functools.partial(crash_factory, str(marker), "r0"),
                       ray_config=RayConfig(max_retries=1, progress=False))
    assert marker.exists()  # it did crash once
    assert len(done_attempts(run_dir)) == 6
    assert comparable(run_dir) == comparable(single_process)


# ------------------------------------------------------------------------------------------------ wiring
def test_run_experiment_hands_over_to_ray_by_environment(monkeypatch, tmp_path):
    """The notebooks' run_experiment (executors) picks the executor; the runner's runs locally whatever is set."""
    from memla_utils.executors import run_experiment as run_on_executor

    monkeypatch.setenv("MEMLA_EXECUTOR", "ray")
    with pytest.raises(ValueError, match="built in memory; pass a ModelSpec"):
        run_on_executor(tiny_model("llama"), records(), METHODS, EDIT, EVAL, tmp_path, config=CONFIG)
    monkeypatch.setenv("MEMLA_EXECUTOR", "rya")
    with pytest.raises(ValueError, match="MEMLA_EXECUTOR='rya'"):
        run_on_executor(tiny_model("llama"), records(), METHODS, EDIT, EVAL, tmp_path, config=CONFIG)
    monkeypatch.setenv("MEMLA_EXECUTOR", "local")
    out = run_on_executor(tiny_model("llama"), records()[:1], ["ft"], EDIT, EVAL, tmp_path / "local", config=CONFIG)
    assert out.is_file() and out.parent == tmp_path / "local"


def test_batch_passes_executor_and_address_to_the_notebooks(monkeypatch, capsys):
    for name in ("MEMLA_EXECUTOR", "MEMLA_RAY_ADDRESS"):  # set first, so that monkeypatch restores what batch sets
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    assert batch.main(["--executor", "ray", "--address", "auto", "--dry-run"]) == 0
    assert os.environ["MEMLA_EXECUTOR"] == "ray" and os.environ["MEMLA_RAY_ADDRESS"] == "auto"
    assert batch.main(["--executor", "local", "--dry-run"]) == 0
    assert os.environ["MEMLA_EXECUTOR"] == "local" and "MEMLA_RAY_ADDRESS" not in os.environ
    with pytest.raises(SystemExit):
        batch.main(["--address", "auto", "--dry-run"])
    assert "--address needs --executor ray" in capsys.readouterr().err
