"""The drift check: regenerated data byte for byte, tables numerically (abs 1e-9) with display values exact."""
from __future__ import annotations

import subprocess

import pytest

from memla_utils.drift import (
    ABS_TOL,
    CROSS_CPU_RTOL,
    EXCLUDED_COLUMNS,
    check_drift,
    close_value,
    compare_file,
    format_report,
    main,
    parse_markdown,
    same_value,
    tables_cpus,
)

CSV = ("method,edit_lang,metric,mean,ci_low,n\n"
       "memla,en,ES,0.571429,0.5,3\n"
       "memla,zh,ES,0.25,0.125,3\n"
       "ft,en,ES,0.1234567890123,0,3\n")
MD = ("**Main comparison**\n\n| method | ES |\n|---|---|\n| memla | 57.1 [50.0, 64.3] n=3 |\n"
      "| ft | 12.3 [0.0, 25.0] n=3 |\n\nsource: figures/MANIFEST.json (provenance sha256 0123456789abcdef)\n")


def diffs(path: str, old: str, new: str):
    return compare_file(path, old.encode(), new.encode())


def test_identical_tables_pass():
    assert diffs("figures/tables/main.csv", CSV, CSV) == []
    assert diffs("figures/tables/main.md", MD, MD) == []


def test_a_changed_count_fails_with_file_row_column_old_and_new():
    found = diffs("figures/tables/main.csv", CSV, CSV.replace("0.25,0.125,3", "0.25,0.125,4"))
    assert [(d.key, d.column, d.old, d.new) for d in found] == [("method=memla, edit_lang=zh", "n", "3", "4")]
    assert "figures/tables/main.csv [method=memla, edit_lang=zh] n: '3' -> '4'" in format_report(found)


def test_a_float_change_of_1e12_passes_and_of_1e6_fails():
    assert diffs("figures/tables/main.csv", CSV, CSV.replace("0.1234567890123", "0.1234567890133")) == []
    found = diffs("figures/tables/main.csv", CSV, CSV.replace("0.571429", "0.571430"))
    assert [(d.column, d.old, d.new) for d in found] == [("mean", "0.571429", "0.571430")]
    assert same_value("1e-3", "0.001") and same_value("nan", "NaN") and not same_value("nan", "0")
    assert not same_value("0.5", "0.5000002") and same_value("0.5", f"{0.5 + ABS_TOL / 2!r}")


def test_a_flipped_rounded_display_value_fails():
    found = diffs("figures/tables/main.md", MD, MD.replace("57.1 [50.0", "57.2 [50.0"))
    assert [(d.key, d.column) for d in found] == [("method=memla", "ES")]
    assert found[0].old.startswith("57.1") and found[0].new.startswith("57.2")


def test_a_verdict_or_string_flip_fails():
    old = "claim,effect,verdict\nA,0.5,supported\n"
    found = diffs("figures/tables/claims.csv", old, old.replace("supported", "inconclusive at n=3"))
    assert [(d.key, d.column) for d in found] == [("claim=A", "verdict")]


def test_excluded_run_specific_columns_are_ignored():
    assert "seconds_per_edit" in EXCLUDED_COLUMNS["figures/tables/baselines_cost.*"]
    old = "method,edits,seconds_per_edit,min_s,max_s,eval_seconds\nft,6,1.2002,0.85,1.78,3.21\n"
    new = "method,edits,seconds_per_edit,min_s,max_s,eval_seconds\nft,6,2.5,1.1,3.0,4.0\n"
    assert diffs("figures/tables/baselines_cost.csv", old, new) == []
    assert diffs("figures/tables/other.csv", old, new) != []  # only where listed
    found = diffs("figures/tables/baselines_cost.csv", old, new.replace("ft,6", "ft,7"))
    assert [(d.column, d.old, d.new) for d in found] == [("edits", "6", "7")]


def test_a_new_or_removed_row_fails():
    extra = CSV + "lora,en,ES,0.5,0.25,3\n"
    found = diffs("figures/tables/main.csv", CSV, extra)
    assert [(d.key, d.new) for d in found] == [("method=lora, edit_lang=en", "added")]
    found = diffs("figures/tables/main.csv", extra, CSV)
    assert [(d.key, d.new) for d in found] == [("method=lora, edit_lang=en", "removed")]
    md_found = diffs("figures/tables/main.md", MD, MD.replace("| ft | 12.3 [0.0, 25.0] n=3 |\n", ""))
    assert [(d.key, d.new) for d in md_found] == [("method=ft", "removed")]


def test_changed_columns_and_source_line_fail():
    found = diffs("figures/tables/main.csv", CSV, CSV.replace("ci_low,n", "ci_lo,n"))
    assert found and found[0].key == "columns"
    found = diffs("figures/tables/main.md", MD, MD.replace("0123456789abcdef", "fedcba9876543210"))
    assert len(found) == 1 and "source:" in found[0].old and "fedcba9876543210" in found[0].new


def test_markdown_tables_are_parsed_with_escaped_pipes_and_padding():
    t = parse_markdown("| relation   |   en |\n|:-----------|-----:|\n| a \\| b    |  125 |\n")
    assert t.header == ["relation", "en"] and t.rows == [["a | b", "125"]] and t.text == []


def _git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "data" / "mkeb").mkdir(parents=True)
    (tmp_path / "figures" / "tables").mkdir(parents=True)
    (tmp_path / "figures" / "medium" / "tables").mkdir(parents=True)
    (tmp_path / "data" / "mkeb" / "mkeb.jsonl").write_text('{"example_id": "a", "x": 1}\n{"example_id": "b"}\n')
    (tmp_path / "figures" / "tables" / "main.csv").write_text(CSV)
    (tmp_path / "figures" / "tables" / "main.md").write_text(MD)
    (tmp_path / "figures" / "tables" / "main.tex").write_text("tex\n")
    (tmp_path / "figures" / "MANIFEST.json").write_text('{"created": "2026-01-01"}\n')
    (tmp_path / "figures" / "plot.png").write_bytes(b"png")
    (tmp_path / "figures" / "medium" / "tables" / "main.csv").write_text(CSV)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    return tmp_path


def test_check_drift_against_a_commit(repo):
    assert check_drift(repo) == []
    # run-specific and not-regenerated files are out of the check
    (repo / "figures" / "MANIFEST.json").write_text('{"created": "2026-02-02"}\n')
    (repo / "figures" / "plot.png").write_bytes(b"other png")
    (repo / "figures" / "tables" / "main.tex").write_text("other\n")
    (repo / "figures" / "medium" / "tables" / "main.csv").write_text("changed\n")
    assert check_drift(repo) == []
    # the benchmark byte for byte, with the records that changed named
    (repo / "data" / "mkeb" / "mkeb.jsonl").write_text('{"example_id": "a", "x": 2}\n{"example_id": "b"}\n')
    (repo / "figures" / "tables" / "new_table.csv").write_text("a\n1\n")
    found = check_drift(repo)
    text = format_report(found)
    assert "data/mkeb/mkeb.jsonl" in text and "changed a: x: 1 -> 2" in text
    assert any(d.file == "figures/tables/new_table.csv" and d.new == "new file (not in the commit)" for d in found)
    (repo / "figures" / "tables" / "main.csv").unlink()
    assert any(d.file == "figures/tables/main.csv" and d.new == "missing after the run (in the commit)" for d in check_drift(repo))


def test_cli_exit_codes(repo, capsys):
    assert main(["--root", str(repo)]) == 0
    (repo / "figures" / "tables" / "main.csv").write_text(CSV.replace("0.25,0.125,3", "0.25,0.125,5"))
    assert main(["--root", str(repo)]) == 1
    out = capsys.readouterr().out
    assert "main.csv [method=memla, edit_lang=zh] n: '3' -> '5'" in out
    assert main(["--root", str(repo), "--against", "no-such-rev"]) == 2


def test_cross_cpu_comparison_absorbs_float_noise_but_not_real_changes():
    # measured between an AMD EPYC and an Intel Xeon, same code and inputs (notebook 06, attribution)
    assert close_value("95.6787", "95.6663", CROSS_CPU_RTOL) and close_value("26.411", "26.4113", CROSS_CPU_RTOL)
    assert close_value("0.006737802144311938", "0.006721017019936286", CROSS_CPU_RTOL)  # absolute floor
    assert close_value("+0.490 [+0.382, +0.599]", "+0.491 [+0.382, +0.599]", CROSS_CPU_RTOL)  # one displayed digit
    # what a code change moved (notebook 02's random sets, seeded per unit), integers, strings: still differences
    assert not close_value("+78.3 [+55.0, +100.6]", "+87.9 [+52.2, +107.7]", CROSS_CPU_RTOL)
    assert not close_value("0.783302", "0.878824", CROSS_CPU_RTOL) and not close_value("-0.019", "-0.013", 1e-3)
    assert not close_value("3", "4", 0.5) and not close_value("supported", "refuted", 0.5)
    assert not close_value("57.1 [50.0", "57.1 (50.0", 0.5)  # the text around the numbers stays exact


def _manifest(cpu: str) -> str:
    return '{"created": "2026-01-01", "device": {"cpu_model": "%s"}}\n' % cpu


def test_check_drift_is_exact_on_the_same_cpu_model_and_tolerant_across_models(repo):
    (repo / "figures" / "MANIFEST.json").write_text(_manifest("AMD EPYC"))
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "cpu")
    noisy = CSV.replace("0.571429", "0.571431")  # 3.5e-6 relative: float noise of another CPU's kernels
    (repo / "figures" / "tables" / "main.csv").write_text(noisy)
    assert [d.column for d in check_drift(repo)] == ["mean"]  # same CPU model: exact as ever
    (repo / "figures" / "MANIFEST.json").write_text(_manifest("Intel(R) Xeon(R) Processor"))
    assert tables_cpus(repo, "HEAD") == ("AMD EPYC", "Intel(R) Xeon(R) Processor")
    assert check_drift(repo) == []
    (repo / "figures" / "tables" / "main.csv").write_text(CSV.replace("0.571429", "0.60"))
    assert [d.column for d in check_drift(repo)] == ["mean"]  # a real change is still found across CPUs
    (repo / "figures" / "MANIFEST.json").write_text("{}\n")  # no CPU model: exact
    (repo / "figures" / "tables" / "main.csv").write_text(noisy)
    assert [d.column for d in check_drift(repo)] == ["mean"]
