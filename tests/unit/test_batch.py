"""The batch driver: parameter parsing, run planning, and running a chain of (tiny) notebooks with papermill."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from memla_utils import batch
from memla_utils.batch import BatchError, parse_assignments, parse_matrix, plan_runs


def test_parse_values_and_assignments():
    assert parse_assignments(["n_records=5", "languages=en,zh", "seed=2", "flag=true", "x=0.5"]) == {
        "n_records": 5, "languages": "en,zh", "seed": 2, "flag": True, "x": 0.5}
    with pytest.raises(BatchError, match="n_records must be an integer"):
        parse_assignments(["n_records=many"])
    with pytest.raises(BatchError, match="name=value"):
        parse_assignments(["n_records"])
    assert parse_matrix(["languages=en,zh,fr;en,de", "seed=0;1"]) == {"languages": ["en,zh,fr", "en,de"],
                                                                       "seed": ["0", "1"]}


def test_default_plan_is_the_small_preset_with_committed_figures():
    (plan,) = plan_runs()
    p = plan.parameters
    assert p["run_dir"] == "runs/small" and p["figures_dir"] == "figures" and p["n_records"] == 3
    assert p["languages"] == "en,zh,fr,es" and p["methods"].startswith("memla,")
    assert set(batch.SHARED_PARAMETERS) <= set(p)


def test_full_preset_and_overrides():
    (plan,) = plan_runs("full", {"n_records": 20})
    p = plan.parameters
    assert p["n_records"] == 20 and p["device"] == "auto" and p["run_dir"] == "runs/full"
    assert p["figures_dir"] == "runs/full/figures"  # the committed figures/ belong to the default run only
    (own,) = plan_runs(None, {"run_dir": "runs/x", "figures_dir": "figs"})
    assert own.parameters["figures_dir"] == "figs"
    assert p["languages"].split(",") == ["en", "zh", "fr", "de", "it", "es", "pt", "pl", "ru", "ja", "ko", "th"]
    with pytest.raises(BatchError, match="unknown preset"):
        plan_runs("huge")


def test_matrix_and_models_give_one_run_dir_each():
    plans = plan_runs(None, {}, parse_matrix(["languages=en,zh,fr;en,de"]), ["default", "org/other-model"])
    assert len(plans) == 4
    dirs = {p.parameters["run_dir"] for p in plans}
    assert len(dirs) == 4 and all(d.startswith("runs/small/") for d in dirs)
    for p in plans:
        assert p.parameters["figures_dir"] == p.parameters["run_dir"] + "/figures"
    de = [p for p in plans if p.parameters["languages"] == "en,de"][0]
    assert de.parameters["edit_languages"] == "en"  # zh is not evaluated in that set, so it is not edited
    assert {p.parameters["model"] for p in plans} == {"default", "org/other-model"}


def test_invalid_parameters_are_reported_before_running():
    with pytest.raises(BatchError, match="unknown language code 'xx'"):
        plan_runs(None, {"languages": "en,xx"})
    with pytest.raises(BatchError, match="unknown method"):
        plan_runs(None, {"methods": "memla,nope"})


def _notebook(path: Path, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('run_dir = "runs/small"\nn_records = 3\nlanguages = "en,zh,fr,es"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "memla", "display_name": "Python (memla)", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def test_chain_runs_in_order_passes_parameters_and_stops_at_the_failed_notebook(tmp_path, capsys):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    record = ("import pathlib, json\n"
              "p = pathlib.Path(run_dir); p.mkdir(parents=True, exist_ok=True)\n"
              "with open(p / 'order.txt', 'a') as f: f.write('{name} ' + str(n_records) + ' ' + languages + '\\n')")
    _notebook(nbs / "00_first.ipynb", record.format(name="00"))
    _notebook(nbs / "01_second.ipynb", record.format(name="01"))
    run_dir = tmp_path / "run"
    rc = batch.main(["--notebooks-dir", str(nbs), "-p", f"run_dir={run_dir}", "-p", "n_records=2",
                     "-p", "languages=en,zh"])
    assert rc == 0
    assert (run_dir / "order.txt").read_text().splitlines() == ["00 2 en,zh", "01 2 en,zh"]
    assert (run_dir / "notebooks" / "00_first.ipynb").exists() and (run_dir / "notebooks" / "01_second.ipynb").exists()
    manifest = json.loads((run_dir / "batch_manifest.json").read_text())
    assert set(manifest["timings"]) == {"00_first.ipynb", "01_second.ipynb"}
    assert manifest["parameters"]["n_records"] == 2

    _notebook(nbs / "01_second.ipynb", "raise RuntimeError('boom in the second notebook')")
    _notebook(nbs / "02_third.ipynb", record.format(name="02"))
    run2 = tmp_path / "run2"
    rc = batch.main(["--notebooks-dir", str(nbs), "-p", f"run_dir={run2}"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "notebook 01_second.ipynb failed" in err and "boom in the second notebook" in err
    assert (run2 / "order.txt").read_text().splitlines() == ["00 3 en,zh,fr,es"]  # 02 never ran
    assert json.loads((run2 / "batch_manifest.json").read_text())["inputs"]["failed"] == "01_second.ipynb"


def test_only_selects_notebooks_and_missing_notebooks_are_an_error(tmp_path):
    for name in ("00_a", "06_b", "07_c"):
        _notebook(tmp_path / f"{name}.ipynb", "pass")
    assert [p.name for p in batch.notebooks(tmp_path, ["06", "07"])] == ["06_b.ipynb", "07_c.ipynb"]
    with pytest.raises(BatchError, match="no notebooks"):
        batch.notebooks(tmp_path, ["99"])


def test_every_committed_notebook_takes_the_shared_parameters():
    """The batch passes the shared parameters to every notebook: each must declare them in its parameters cell."""
    import ast

    paths = batch.notebooks()
    assert paths, "no notebooks found"
    for path in paths:
        nb = nbformat.read(str(path), as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and "parameters" in code[0].metadata.get("tags", []), f"{path.name}: first code cell not tagged"
        names = {t.id for node in ast.parse(code[0].source).body if isinstance(node, ast.Assign)
                 for t in node.targets if isinstance(t, ast.Name)}
        missing = set(batch.SHARED_PARAMETERS) - names
        assert not missing, f"{path.name}: parameters cell lacks {sorted(missing)}"
        assert nb.metadata.get("kernelspec", {}).get("name") == "memla", f"{path.name}: kernel is not memla"


def test_a_part_ends_cleanly_at_its_deadline_and_is_recorded(tmp_path):
    """--hours hands the deadline to the kernels; DeadlineReached ends the part (exit 0), parts.json says so."""
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "00_first.ipynb",
              "import os, pathlib\n"
              "p = pathlib.Path(run_dir); p.mkdir(parents=True, exist_ok=True)\n"
              "(p / 'deadline.txt').write_text(os.environ.get('MEMLA_DEADLINE', 'none'))\n"
              "from memla_utils.run_parts import DeadlineReached\n"
              "if os.environ.get('MEMLA_DEADLINE'): raise DeadlineReached('time is up')")
    _notebook(nbs / "01_second.ipynb",
              "import pathlib\n(pathlib.Path(run_dir) / 'second.txt').write_text('ran')")
    run_dir = tmp_path / "run"
    rc = batch.main(["--notebooks-dir", str(nbs), "-p", f"run_dir={run_dir}", "--hours", "0.5"])
    assert rc == 0
    assert float((run_dir / "deadline.txt").read_text()) > 0
    assert not (run_dir / "second.txt").exists()  # the part stopped at the deadline
    parts = json.loads((run_dir / "parts.json").read_text())
    assert [p["outcome"] for p in parts] == ["deadline"] and parts[0]["hours"] >= 0
    # the next part (no deadline) runs to the end and is recorded as part 2
    rc = batch.main(["--notebooks-dir", str(nbs), "-p", f"run_dir={run_dir}"])
    assert rc == 0 and (run_dir / "second.txt").read_text() == "ran"
    assert (run_dir / "deadline.txt").read_text() == "none"
    parts = json.loads((run_dir / "parts.json").read_text())
    assert [(p["part"], p["outcome"]) for p in parts] == [(1, "deadline"), (2, "complete")]
    manifest = json.loads((run_dir / "batch_manifest.json").read_text())
    assert manifest["inputs"]["parts"]["parts"] == 2


def _tamper_identity(run_dir):
    ident = json.loads((run_dir / "run_identity.json").read_text())
    ident["code"]["editing"] = "0" * 16
    (run_dir / "run_identity.json").write_text(json.dumps(ident))


def test_changed_inputs_restart_a_run_or_are_refused_for_multi_session_presets(tmp_path, capsys):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "00_first.ipynb", "import pathlib\n(pathlib.Path(run_dir) / 'out.txt').write_text('x')")
    run_dir = tmp_path / "run"
    args = ["--notebooks-dir", str(nbs), "-p", f"run_dir={run_dir}", "-p", "n_records=5", "-p", "languages=en,zh"]
    assert batch.main(args) == 0 and (run_dir / "run_identity.json").exists()
    assert batch.main(args) == 0 and not list(run_dir.glob("superseded-*"))  # same inputs: extended in place
    _tamper_identity(run_dir)  # as if the editing code had changed since the run started
    assert batch.main(args) == 0
    aside = list(run_dir.glob("superseded-*"))
    assert len(aside) == 1 and (aside[0] / "out.txt").exists()  # earlier results moved aside, not mixed
    # a multi-session preset refuses instead, naming what changed; --restart-run starts over
    run_m = tmp_path / "medium"
    medium = ["--notebooks-dir", str(nbs), "--preset", "medium", "-p", f"run_dir={run_m}", "-p", "n_records=5",
              "-p", "languages=en,zh"]
    assert batch.main(medium) == 0
    _tamper_identity(run_m)
    assert batch.main(medium) == 1
    err = capsys.readouterr().err
    assert "code of stage 'editing'" in err and "--restart-run" in err
    assert (run_m / "out.txt").exists()  # nothing moved or lost
    assert batch.main(medium + ["--restart-run"]) == 0
    assert len(list(run_m.glob("superseded-*"))) == 1


def _writes(path, name: str, value: str = "'ran'") -> None:
    """A notebook that writes ``value`` (a Python expression) to ``<run_dir>/<name>``, making the folder."""
    _notebook(path, "import pathlib\np = pathlib.Path(run_dir); p.mkdir(parents=True, exist_ok=True)\n"
                    f"(p / {name!r}).write_text(str({value}))")


def test_report_only_recomputes_the_report_of_a_run_made_on_other_code_and_refuses_another_run(tmp_path, capsys,
                                                                                               caplog):
    """--report-only runs notebook 07 alone on a run whose code differs (logged), records no part and leaves the
    identity as recorded; other parameters, or a folder with no run, are refused."""
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _writes(nbs / "05_units.ipynb", "units.txt")
    _writes(nbs / "07_report.ipynb", "report.txt", "n_records")
    run_m = tmp_path / "medium"
    medium = ["--notebooks-dir", str(nbs), "--preset", "medium", "-p", f"run_dir={run_m}", "-p", "n_records=5",
              "-p", "languages=en,zh"]
    assert batch.main(medium) == 0
    (run_m / "report.txt").unlink()
    (run_m / "units.txt").unlink()
    capsys.readouterr()
    assert batch.main(medium + ["--report-only"]) == 1  # nothing finished yet: no blank tables over committed ones
    assert "has no finished unit" in capsys.readouterr().err and not (run_m / "report.txt").exists()
    (run_m / "results-shard000of001.jsonl").write_text(json.dumps(  # one finished unit
        {"record": "r0", "method": "ft", "edit_lang": "en", "kind": "done", "attempt": "a"}) + "\n")
    _tamper_identity(run_m)  # the run was made on other editing code than this checkout's
    recorded = (run_m / "run_identity.json").read_text()
    parts = json.loads((run_m / "parts.json").read_text())
    assert batch.main(medium) == 1  # a part on changed code is still refused
    with caplog.at_level("WARNING", logger="memla_utils.batch"):
        assert batch.main(medium + ["--report-only"]) == 0
    assert (run_m / "report.txt").read_text() == "5" and not (run_m / "units.txt").exists()  # 07 only
    assert "code of stage 'editing'" in caplog.text and "report only" in caplog.text
    assert (run_m / "run_identity.json").read_text() == recorded  # the identity is the run's, not this checkout's
    assert json.loads((run_m / "parts.json").read_text()) == parts  # no part recorded
    assert json.loads((run_m / "report_manifest.json").read_text())["inputs"]["report_only"] is True
    capsys.readouterr()
    assert batch.main([*medium[:-4], "-p", "n_records=10", "-p", "languages=en,zh", "--report-only"]) == 1
    assert "parameter 'n_records'" in capsys.readouterr().err
    assert batch.main(["--notebooks-dir", str(nbs), "-p", f"run_dir={tmp_path / 'none'}", "--report-only"]) == 1
    assert "holds no run to report on" in capsys.readouterr().err
    assert batch.main(medium + ["--report-only", "--only", "05"]) == 1  # a notebook that computes units
    assert "runs only notebooks" in capsys.readouterr().err and not (run_m / "units.txt").exists()


def test_a_notebook_that_cannot_stop_at_the_deadline_waits_for_a_part_with_time_for_it(tmp_path, capsys):
    """batch.NOT_RESUMABLE (notebook 06) is not started with fewer than --reserve-hours left: the part ends as at a
    deadline, and a part with enough time (or no deadline) runs it."""
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _writes(nbs / "05_before.ipynb", "before.txt")
    _writes(nbs / "06_multihop_general.ipynb", "general.txt")
    run_dir = tmp_path / "run"
    args = ["--notebooks-dir", str(nbs), "-p", f"run_dir={run_dir}"]
    assert batch.main([*args, "--hours", "1", "--reserve-hours", "1.5"]) == 0
    assert (run_dir / "before.txt").exists() and not (run_dir / "general.txt").exists()
    assert json.loads((run_dir / "parts.json").read_text())[-1]["outcome"] == "deadline"
    assert batch.main([*args, "--hours", "2", "--reserve-hours", "1.5"]) == 0
    assert (run_dir / "general.txt").read_text() == "ran"
    assert json.loads((run_dir / "parts.json").read_text())[-1]["outcome"] == "complete"
    assert batch.main([*args, "--reserve-hours", "-1"]) == 1
    assert "--reserve-hours must be >= 0, got -1.0" in capsys.readouterr().err


def test_the_default_reserve_is_the_preset_s(tmp_path, monkeypatch):
    """Without --reserve-hours a part reserves its preset's hours for notebook 06 (batch.RESERVE_HOURS_BY_PRESET:
    the MzsRE / Bi-ZsRE runs' notebook 06 is small), else batch.RESERVE_HOURS (the medium run's)."""
    assert batch.reserve_hours_for("mzsre") == batch.reserve_hours_for("bizsre") == 0.5
    assert batch.reserve_hours_for("medium") == batch.reserve_hours_for(None) == batch.RESERVE_HOURS == 2.0
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _writes(nbs / "06_multihop_general.ipynb", "general.txt")
    run_dir = tmp_path / "run"
    args = ["--notebooks-dir", str(nbs), "-p", f"run_dir={run_dir}", "--preset", "small", "--hours", "1"]
    assert batch.main(args) == 0 and not (run_dir / "general.txt").exists()  # 1 h left < 2.0
    monkeypatch.setitem(batch.RESERVE_HOURS_BY_PRESET, "small", 0.5)
    assert batch.main(args) == 0 and (run_dir / "general.txt").read_text() == "ran"


def test_a_parameter_no_notebook_declares_is_refused_with_the_nearest_name():
    """papermill only warns about an undeclared parameter and the notebooks run their defaults: a typo such as
    n_recrods=5 would silently run 3 records. The plan refuses it before anything runs."""
    with pytest.raises(BatchError, match=r"unknown parameter\(s\) 'n_recrods' \(did you mean 'n_records'\?\)"):
        plan_runs(None, {"n_recrods": 5})
    with pytest.raises(BatchError, match="'no_such_param'"):
        plan_runs("medium", {"no_such_param": 1})
    with pytest.raises(BatchError, match="unknown parameter"):
        plan_runs(None, {}, parse_matrix(["n_recrods=1;2"]))


@pytest.mark.parametrize("name,value,message", [
    ("device", "tpu", "parameter device"),
    ("dtype", "float8", "parameter dtype"),
    ("budget", "bogus", "parameter budget"),
    ("attribution_method", "magic", "attribution_method"),
    ("attribution_prompts", "some", "attribution_prompts"),
    ("threshold", 1.5, "threshold"),
    ("steps", 1, "steps"),
    ("baseline", "ones", "baseline"),
    ("n_boot", 0, "n_boot"),
    ("parallel_edits", 0, "parallel_edits"),
    ("general_records", "lots", "general_records"),
    ("attribution_languages", "ru", "attribution_languages"),  # not a run language (en, zh, fr, es)
    ("probe_languages", "xx", "probe_languages"),
    ("sweep_thresholds", "0.2,1.5", "threshold"),
    ("sweep_steps", "0,5", "steps"),
    ("base_run_dir", "results/no-such-run", "base_run_dir"),
])
def test_values_the_notebooks_would_refuse_are_refused_before_any_notebook_runs(name, value, message):
    with pytest.raises(BatchError, match=message):
        plan_runs(None, {name: value})


def test_values_the_notebooks_accept_pass_the_plan():
    for params in ({"device": "cuda:1", "dtype": "bf16"}, {"device": "auto", "dtype": "auto"},
                   {"budget": "paper"}, {"attribution_method": "exact", "threshold": 0.2, "steps": 10},
                   {"general_records": 2, "sequential_steps": "1,2"}, {"n_boot": 10, "torch_threads": 0}):
        (plan,) = plan_runs(None, params)
        assert all(plan.parameters[k] == v for k, v in params.items())


def test_a_refused_option_leaves_the_run_folder_as_it_was(tmp_path, capsys):
    """--hours / --reserve-hours are checked before the run's identity: a refused command with other parameters
    must not move the earlier results aside (it did: the restart ran first, then --hours -1 was refused)."""
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _writes(nbs / "05_units.ipynb", "units.txt")
    run_dir = tmp_path / "run"
    args = ["--notebooks-dir", str(nbs), "-p", f"run_dir={run_dir}"]
    assert batch.main(args) == 0
    before = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*"))
    identity = (run_dir / "run_identity.json").read_text()
    for bad in (["--hours", "-1"], ["--hours", "nan"], ["--reserve-hours", "-2"], ["--hours", "1", "--report-only"]):
        assert batch.main([*args, "-p", "n_records=2", *bad]) == 1
        assert "hours" in capsys.readouterr().err
        assert sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")) == before  # nothing moved
        assert (run_dir / "run_identity.json").read_text() == identity
    assert batch.main([*args, "--dry-run", "--hours", "0"]) == 1  # a dry run checks them too


def test_a_dry_run_fails_when_the_records_are_not_there(tmp_path, capsys):
    assert batch.main(["--dry-run", "--preset", "mzsre", "-p", f"shared_data_dir={tmp_path / 'none'}"]) == 1
    err = capsys.readouterr()
    assert "NOT FOUND" in err.out and "shared_data_dir" in err.err


def test_each_notebook_is_passed_only_the_parameters_it_declares_and_every_notebook_declares_the_run_config():
    """papermill warned "Passed unknown parameter" for every chain parameter a notebook does not declare; the batch
    now passes each notebook its own. Nothing a notebook reads is lost: start_notebook reads the RunConfig fields,
    which every notebook declares, and the names it lists, which must be declared."""
    import papermill as pm

    from memla_utils.notebook_setup import RUN_PARAMETERS

    (plan,) = plan_runs("medium-paper")
    for nb in batch.notebooks():
        declared = pm.inspect_notebook(str(nb))
        assert set(RUN_PARAMETERS) <= set(declared), nb.name
        passed = batch.declared_parameters(nb, plan.parameters)
        assert passed == {k: v for k, v in plan.parameters.items() if k in declared}
    report = batch.declared_parameters(batch.notebooks(only=["07"])[0], plan.parameters)
    assert report["base_run_dir"] == "results/medium" and "budget" not in report  # 07 has no budget



def test_the_executed_notebook_gets_only_its_declared_parameters_and_one_without_a_parameters_cell_is_refused(
        tmp_path, capsys):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _writes(nbs / "05_units.ipynb", "units.txt", "n_records")  # declares run_dir, n_records, languages
    run_dir = tmp_path / "run"
    assert batch.main(["--notebooks-dir", str(nbs), "-p", f"run_dir={run_dir}", "-p", "n_records=2",
                       "-p", "seed=7"]) == 0
    assert (run_dir / "units.txt").read_text() == "2"
    executed = nbformat.read(str(run_dir / "notebooks" / "05_units.ipynb"), as_version=4)
    injected = "".join(c.source for c in executed.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "n_records = 2" in injected and "seed" not in injected  # seed: not declared by this notebook
    bare = nbformat.v4.new_notebook()
    bare.cells = [nbformat.v4.new_code_cell("x = 1")]
    bare.metadata["kernelspec"] = {"name": "memla", "display_name": "Python (memla)", "language": "python"}
    nbformat.write(bare, str(nbs / "06_bare.ipynb"))
    assert batch.main(["--notebooks-dir", str(nbs), "-p", f"run_dir={run_dir}", "--only", "06"]) == 1
    assert "no cell tagged 'parameters'" in capsys.readouterr().err


def test_papermill_is_given_paths_relative_to_the_working_directory_when_they_lie_below_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert batch._shown(tmp_path / "notebooks" / "05_x.ipynb") == "notebooks/05_x.ipynb"
    outside = tmp_path.parent / "elsewhere.ipynb"
    assert batch._shown(outside) == str(outside)
