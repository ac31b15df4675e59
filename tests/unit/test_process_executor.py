"""The processes executor (issue 15): the grid in spawned local processes, one thread per unit, gives the rows of
the single-process run, resumes across worker counts, reports a failed worker, and is what the notebooks get
on a CPU."""
from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path

import pytest
import torch
from grid_helpers import CONFIG, EDIT, EVAL, METHODS, SPEC, comparable

from memla_utils import cpu_workers
from memla_utils import process_executor as pe
from memla_utils.cache import ArtifactCache
from memla_utils.mkeb.record import EditTarget, Record
from memla_utils.model_spec import ModelSpec
from memla_utils.runner import Unit, run_experiment
from memla_utils.testing import tiny_model


def records() -> list[Record]:
    out = []
    for i, (subj, new, old) in enumerate([("France", "Tokyo", "Paris"), ("Spain", "Rome", "Madrid"),
                                          ("Japan", "Lima", "Tokyo")]):
        out.append(Record(f"r{i}", "capital", {
            "en": EditTarget("The capital of {} is", subj, new, old),
            "zh": EditTarget("{}的首都是", subj, "东京", "巴黎")},
            paraphrase_prompts={"en": [f"{subj}'s capital city is"]},
            neighborhood_prompts={"en": ["The capital of Poland is"], "zh": ["日本的首都是"]},
            neighborhood_answers={"en": ["Warsaw"], "zh": ["东京"]}))
    return out


def done_units(run_dir: Path) -> dict[tuple, int]:
    out: dict[tuple, int] = {}
    for p in sorted(run_dir.glob("results-shard*.jsonl")):
        for line in p.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if r.get("kind") == "done":
                key = (r["record"], r["edit_lang"], r["method"])
                out[key] = out.get(key, 0) + 1
    return out


def done_per_file(run_dir: Path) -> dict[str, int]:
    """``done`` markers in each shard file of ``run_dir``."""
    return {p.name: sum(json.loads(line).get("kind") == "done" for line in p.read_text(encoding="utf-8").splitlines())
            for p in sorted(run_dir.glob("results-shard*.jsonl"))}


@pytest.fixture(scope="module")
def one_thread_run(tmp_path_factory):
    """The reference: the grid in this process, one thread."""
    run_dir = tmp_path_factory.mktemp("single")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_experiment(tiny_model("llama"), records(), METHODS, EDIT, EVAL, run_dir, config=CONFIG,
                       cache=ArtifactCache(run_dir / "cache"))
    finally:
        torch.set_num_threads(before)
    return run_dir


def _after_the_worker_finished_a_unit(real, worker_file: Path):
    """This process's run_experiment, started only once the spawned worker has written a finished unit (the tiny
    units would otherwise all be taken here before the worker has loaded its model)."""
    def run(*args, **kwargs):
        deadline = time.monotonic() + 120
        while not (worker_file.exists() and '"done"' in worker_file.read_text(encoding="utf-8")):
            assert time.monotonic() < deadline, "the spawned worker finished no unit in 120 s"
            time.sleep(0.02)
        return real(*args, **kwargs)
    return run


def test_two_processes_give_the_rows_of_one_process_and_resume_with_any_worker_count(one_thread_run, tmp_path,
                                                                                      monkeypatch):
    run_dir = tmp_path / "two"
    worker_file = run_dir / "results-shard001of002.jsonl"
    monkeypatch.setattr(pe.runner, "run_experiment", _after_the_worker_finished_a_unit(pe.runner.run_experiment,
                                                                                       worker_file))
    out = pe.run_experiment_processes(tiny_model("llama"), records(), METHODS, EDIT, EVAL, run_dir, workers=2,
                                      config=CONFIG, cache=ArtifactCache(tmp_path / "cache"), spec=SPEC)
    assert out.name == "results-shard000of002.jsonl"
    # which process ran which unit depends on timing (one queue), the rows do not; the worker ran some for sure
    assert sum(done_per_file(run_dir).values()) == 9 and done_per_file(run_dir)[worker_file.name] >= 1
    want = comparable(one_thread_run)
    assert len(want) > 30 and comparable(run_dir) == want
    assert done_units(run_dir) == {(r, "en", m): 1 for r in ("r0", "r1", "r2") for m in ("unedited", *METHODS)}
    # the notebook process's threads are restored
    assert torch.get_num_threads() >= 1
    # a rerun with another worker count finds nothing left to do
    pe.run_experiment_processes(tiny_model("llama"), records(), METHODS, EDIT, EVAL, run_dir, workers=3,
                                config=CONFIG, cache=ArtifactCache(tmp_path / "cache"), spec=SPEC)
    assert all(n == 1 for n in done_units(run_dir).values())


def test_a_worker_with_other_weights_fails_loudly_and_finished_units_stay(tmp_path):
    run_dir = tmp_path / "bad"
    other = ModelSpec("tiny-llama", factory=functools.partial(tiny_model, "llama", seed=7))
    with pytest.raises(pe.ProcessGridError, match=r"shard 1/2 \(exit code 1"):
        pe.run_experiment_processes(tiny_model("llama"), records(), ["ft"], EDIT, EVAL, run_dir, workers=2,
                                    config=CONFIG, spec=other)
    done = done_units(run_dir)
    assert done and all(n == 1 for n in done.values())  # the notebook process's shard finished
    # the same command with sound workers does only what is missing
    pe.run_experiment_processes(tiny_model("llama"), records(), ["ft"], EDIT, EVAL, run_dir, workers=2,
                                config=CONFIG, spec=SPEC)
    after = done_units(run_dir)
    assert len(after) == 6 and all(n == 1 for n in after.values())


def test_workers_setting_and_defaults(monkeypatch):
    lm = tiny_model("llama")
    assert pe.default_workers(lm) == 1  # built in memory: workers could not reload it by name
    monkeypatch.setenv(pe.WORKERS_ENV, "3")
    assert pe.workers_from_env(lm) == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(pe.WORKERS_ENV, bad)
        with pytest.raises(ValueError, match="MEMLA_WORKERS"):
            pe.workers_from_env(lm)
    monkeypatch.setenv(pe.WORKERS_ENV, "auto")
    assert pe.workers_from_env(lm) == 1
    with pytest.raises(ValueError, match="shard"):
        pe.run_experiment_processes(lm, records(), ["ft"], EDIT, EVAL, "unused", "1/2", workers=2)


def test_one_worker_runs_here_on_one_thread_and_restores_the_threads(tmp_path, monkeypatch):
    seen: list[int] = []
    real = pe.runner.run_experiment

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(pe.runner, "run_experiment", spy)
    before = torch.get_num_threads()
    pe.run_experiment_processes(tiny_model("llama"), records()[:1], ["ft"], EDIT, EVAL, tmp_path, workers=1,
                                config=CONFIG)
    assert seen == [1] and torch.get_num_threads() == before


def test_the_notebooks_get_processes_on_a_cpu_and_local_when_asked(monkeypatch, tmp_path):
    from memla_utils import executors

    calls: list[str] = []
    monkeypatch.setattr(executors, "run_experiment_processes", lambda *a, **k: calls.append("processes"))
    monkeypatch.setattr(executors.runner, "run_experiment", lambda *a, **k: calls.append("local"))
    lm = tiny_model("llama")
    monkeypatch.delenv(executors.EXECUTOR_ENV, raising=False)
    executors.run_experiment(lm, records(), ["ft"], EDIT, EVAL, tmp_path)
    executors.run_experiment(lm, records(), ["ft"], EDIT, EVAL, tmp_path, "1/2")  # a launcher's shard: local
    monkeypatch.setenv(executors.EXECUTOR_ENV, "local")
    executors.run_experiment(lm, records(), ["ft"], EDIT, EVAL, tmp_path)
    monkeypatch.setenv(executors.EXECUTOR_ENV, "processes")
    executors.run_experiment(lm, records(), ["ft"], EDIT, EVAL, tmp_path)
    assert calls == ["processes", "local", "local", "processes"]


def test_a_parts_deadline_stops_every_process_as_a_deadline_not_a_failure(tmp_path, monkeypatch):
    import time

    from memla_utils.run_parts import DEADLINE_ENV, DeadlineReached

    monkeypatch.setenv(DEADLINE_ENV, str(time.time() - 1))
    with pytest.raises(DeadlineReached):
        pe.run_experiment_processes(tiny_model("llama"), records(), ["ft"], EDIT, EVAL, tmp_path, workers=2,
                                    config=CONFIG, spec=SPEC)
    assert done_units(tmp_path) == {}


def test_a_resumed_run_runs_only_the_units_left_and_any_worker_may_take_them(tmp_path):
    """An earlier call's shard 0/2 finished its share of the 8 units and shard 1/2 none (as part 3 of the medium run
    ended): a rerun on 2 workers runs the 4 units left, each once, whichever process takes them (dealing the whole
    grid and skipping what was done once gave shard 0/2 nothing and shard 1/2 all 4, one core idle). Same rows as
    one process."""
    recs, edit, methods = records()[:2], ["en", "zh"], ["ft"]
    reference, run_dir = tmp_path / "reference", tmp_path / "resumed"
    with pe.torch_threads(1):
        run_experiment(tiny_model("llama"), recs, methods, edit, EVAL, reference, config=CONFIG)
        run_experiment(tiny_model("llama"), recs, methods, edit, EVAL, run_dir, "0/2", config=CONFIG)
    names = ["results-shard000of002.jsonl", "results-shard001of002.jsonl"]
    before = done_per_file(run_dir)
    assert before == {names[0]: 4}
    pe.run_experiment_processes(tiny_model("llama"), recs, methods, edit, EVAL, run_dir, workers=2, config=CONFIG,
                                spec=SPEC)
    after = done_per_file(run_dir)
    assert sum(after.get(n, 0) - before.get(n, 0) for n in names) == 4
    assert done_units(run_dir) == {(r, e, m): 1 for r in ("r0", "r1") for e in edit for m in ("unedited", "ft")}
    assert comparable(run_dir) == comparable(reference)  # who runs a unit moves no number (seeds per unit)


def test_units_outside_the_grid_are_refused_by_name(tmp_path):
    lm = tiny_model("llama")
    outside = [Unit("r9", "en", "ft"), Unit("r1", "zh", "ft"), Unit("r1", "en", "rome")]
    with pytest.raises(ValueError, match="not in the run's grid") as err:
        run_experiment(lm, records(), ["ft"], EDIT, EVAL, tmp_path, units=[Unit("r0", "en", "ft"), *outside],
                       config=CONFIG)
    for unit in outside:
        assert str(unit.as_tuple()) in str(err.value)
    assert str(("r0", "en", "ft")) not in str(err.value)
    assert not list(tmp_path.glob("results-shard*.jsonl"))  # refused before any unit ran
    # units of the grid: exactly those run, in the shard's file whatever its round-robin share would be
    given = [Unit("r2", "en", "ft"), Unit("r0", "en", "unedited"), Unit("r2", "en", "ft")]
    out = run_experiment(lm, records(), ["ft"], EDIT, EVAL, tmp_path, "1/3", units=given, config=CONFIG)
    assert out.name == "results-shard001of003.jsonl"
    assert done_units(tmp_path) == {("r2", "en", "ft"): 1, ("r0", "en", "unedited"): 1}


def test_deal_is_round_robin_over_the_units_given():
    units = [Unit(f"r{i}", "en", "ft") for i in range(5)]
    assert pe.deal(units, 2) == [units[0::2], units[1::2]]
    assert pe.deal(units[:1], 3) == [units[:1], [], []]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="n "):
            pe.deal(units, bad)


def _tiny_model_noting_affinity(path: str):
    """A worker's model factory that first writes the cores of each of the worker's threads to ``path``."""
    cores = sorted({tuple(sorted(os.sched_getaffinity(int(t)))) for t in os.listdir("/proc/self/task")})
    Path(path).write_text(json.dumps(cores), encoding="utf-8")
    return tiny_model("llama")


@pytest.mark.skipif(len(cpu_workers.allowed_cores()) < 2, reason="needs a process allowed on 2 cores or more")
def test_each_worker_runs_pinned_to_its_own_core(tmp_path, monkeypatch):
    """Left to the load balancer, both one-thread workers sat on CPU 0 whenever a third process ran: the spawned
    worker pins itself to core 1, the notebook's process to core 0 for the grid and gets its cores back after."""
    cores = cpu_workers.allowed_cores()
    noted = tmp_path / "worker-cores.json"
    spec = ModelSpec("tiny-llama", factory=functools.partial(_tiny_model_noting_affinity, str(noted)))
    here: list[list[int]] = []
    real = pe.runner.run_experiment

    def spy(*args, **kwargs):  # in this process only (the spawned worker imports the real one)
        here.append(cpu_workers.allowed_cores())
        return real(*args, **kwargs)

    monkeypatch.setattr(pe.runner, "run_experiment", spy)
    pe.run_experiment_processes(tiny_model("llama"), records()[:1], ["ft"], EDIT, EVAL, tmp_path / "run",
                                workers=2, config=CONFIG, spec=spec)
    assert json.loads(noted.read_text(encoding="utf-8")) == [[cores[1]]]  # every thread of worker 1
    assert here == [[cores[0]]]
    assert cpu_workers.allowed_cores() == cores
    assert len(done_units(tmp_path / "run")) == 2
