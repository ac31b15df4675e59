"""The book's pieces that need no Sphinx build: claim evidence, glued values, the README table, staging."""
from __future__ import annotations

import csv
import json
import shutil

import nbformat
import pandas as pd
import pytest

from memla_utils.book import readme_table
from memla_utils.book.build import BookConfig, BookError, build_book, stage_notebooks
from memla_utils.book.evidence import CLAIM_EVIDENCE, EvidenceError, cell_label, evidence_for, find_cell
from memla_utils.book.values import GlueError, ValueRef, format_value, matches, read_raw
from memla_utils.cache import PROJECT_ROOT

FIGURES = PROJECT_ROOT / "figures"
NOTEBOOKS = PROJECT_ROOT / "notebooks"


def _claims() -> list[dict[str, str]]:
    with open(FIGURES / "tables" / "claims.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# --- claim -> notebook cell, figure, table ----------------------------------------------------------------------

def test_every_committed_claim_links_to_one_code_cell_and_existing_files():
    for row in _claims():
        ev = evidence_for(row["key"])
        nb = nbformat.read(NOTEBOOKS / f"{ev.notebook}.ipynb", as_version=4)
        assert nb.cells[find_cell(nb, ev.notebook, ev.cell_marker)].cell_type == "code"
        shown = [s for s in ev.figures if (FIGURES / f"{s}.png").is_file()] + \
                [s for s in ev.tables if (FIGURES / "tables" / f"{s}.csv").is_file()]
        assert shown, f"claim {row['key']}: none of its figures/tables is in figures/"


def test_evidence_errors_name_the_claim_and_the_notebook():
    with pytest.raises(EvidenceError, match="'no_such_claim'.*CLAIM_EVIDENCE"):
        evidence_for("no_such_claim")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = f(1)"), nbformat.v4.new_code_cell("f(2)"),
                                         nbformat.v4.new_markdown_cell("f( in prose")])
    with pytest.raises(EvidenceError, match="nbX: 0 code cells contain 'g\\('"):
        find_cell(nb, "nbX", "g(")
    with pytest.raises(EvidenceError, match="nbX: 2 code cells"):
        find_cell(nb, "nbX", "f(")
    assert find_cell(nb, "nbX", "x = f") == 0


def test_cell_labels_are_distinct_per_cell():
    pairs = {(e.notebook, e.cell_marker) for e in CLAIM_EVIDENCE.values()}
    labels = {cell_label(*p) for p in pairs}
    assert len(labels) == len(pairs)
    assert cell_label("04_memla", "report.ablation_stats(") == "cell-04_memla-report-ablation-stats"


# --- glued values ---------------------------------------------------------------------------------------------------

def test_value_references_round_trip_and_reject_bad_input():
    ref = ValueRef.parse("figures:tables/claims.csv#3/effect@pct")
    assert (ref.root, ref.path, ref.locator, ref.fmt) == ("figures", "tables/claims.csv", "3/effect", "pct")
    assert str(ref) == "figures:tables/claims.csv#3/effect@pct"
    assert ValueRef.parse("run:batch_manifest.json#timings.04_memla.ipynb").fmt == "text"
    for bad, why in [("claims.csv#0/effect", "expected root"), ("disk:t.csv#0/x", "root 'disk'"),
                     ("figures:t.csv#0/x@percent", "format 'percent'"), ("figures:t.csv#effect", "<row>/<column>")]:
        with pytest.raises(GlueError, match=why):
            ValueRef.parse(bad)


def test_read_raw_names_the_missing_file_row_column_or_key(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,x\n", encoding="utf-8")
    (tmp_path / "m.json").write_text(json.dumps({"git": {"commit": "abc"}, "timings": {"01_x.ipynb": 2.5}}))
    roots = {"figures": tmp_path, "run": tmp_path}
    assert read_raw(ValueRef.parse("figures:t.csv#0/b"), roots) == "x"
    assert read_raw(ValueRef.parse("run:m.json#git.commit"), roots) == "abc"
    assert read_raw(ValueRef.parse("run:m.json#timings.01_x.ipynb@seconds"), roots) == 2.5
    for ref, why in [("figures:t.csv#1/a", "1 data rows, no row 1"), ("figures:t.csv#0/c", "no column 'c'"),
                     ("figures:u.csv#0/a", "does not exist"), ("run:m.json#git.branch", "no key 'branch'")]:
        with pytest.raises(GlueError, match=why):
            read_raw(ValueRef.parse(ref), roots)


def test_formats_and_their_independent_check():
    assert format_value("-0.0771605", "pct") == "-7.7"
    assert format_value("0.674393", "pct") == "+67.4"
    assert format_value("", "pct") == format_value(None, "int") == format_value("nan", "pct") == "—"
    assert format_value("3", "int") == "3" and format_value(0.95, "level") == "95"
    assert format_value(["en", "zh"], "text") == "en, zh" and format_value(123.4, "seconds") == "123"
    assert matches("-7.7", "-0.0771605", "pct") and matches("−7.7", "-0.0771605", "pct")
    assert not matches("-7.8", "-0.0771605", "pct")      # off by one rounding step
    assert not matches("+7.7", "-0.0771605", "pct")      # wrong sign
    assert not matches("0.0", "", "pct") and matches("—", "", "pct")  # a missing value never shows as a number
    assert not matches("4", "3", "int") and matches("en, zh", ["en", "zh"], "text")
    assert not matches("abc", "abd", "text")


# --- staging: executed copies vs sources --------------------------------------------------------------------------

def test_executed_mode_names_the_missing_copies(tmp_path):
    cfg = BookConfig(notebooks="executed", run_dir=tmp_path / "run", out_dir=tmp_path / "book")
    with pytest.raises(BookError, match=r"no executed copy of 00_environment_and_model.ipynb.*make paper"):
        build_book(cfg)
    with pytest.raises(BookError, match="notebooks='nope'"):
        build_book(BookConfig(notebooks="nope", out_dir=tmp_path / "book"))


def test_auto_mode_takes_the_executed_copy_where_there_is_one_and_marks_the_others(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "notebooks").mkdir(parents=True)
    nb = nbformat.read(NOTEBOOKS / "04_memla.ipynb", as_version=4)
    cell = nb.cells[find_cell(nb, "04_memla", "report.ablation_stats(")]
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="executed output\n")]
    nbformat.write(nb, run_dir / "notebooks" / "04_memla.ipynb")
    pages = stage_notebooks(BookConfig(notebooks="auto"), run_dir, tmp_path / "staged")
    assert {p.stem: p.executed for p in pages}["04_memla"] is True
    assert sum(p.executed for p in pages) == 1 and len(pages) == len(list(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")))
    staged = nbformat.read(tmp_path / "staged" / "04_memla.ipynb", as_version=4)
    i = find_cell(staged, "04_memla", "report.ablation_stats(")
    assert staged.cells[i].outputs[0]["text"] == "executed output\n"          # outputs kept, nothing re-run
    assert staged.cells[i - 1].source == "(cell-04_memla-report-ablation-stats)="  # the claim's anchor
    source_page = nbformat.read(tmp_path / "staged" / "05_baselines.ipynb", as_version=4)
    assert "without outputs" in source_page.cells[1].source


def test_a_run_with_a_base_run_takes_the_notebooks_it_does_not_run_from_the_base_run(tmp_path):
    """medium-paper runs notebooks 00, 01, 05 and 07; its book shows 02-04 and 06 as the base run executed them,
    marked as the base run's, and still refuses when neither run has an executed copy."""
    run_dir, base = tmp_path / "run", tmp_path / "base"
    stems = [p.stem for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))]
    own = [s for s in stems if s[:2] in ("00", "01", "05", "07")]
    for folder, names in ((run_dir, own), (base, stems)):
        (folder / "notebooks").mkdir(parents=True)
        for stem in names:
            nb = nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4)
            nb.cells[-1].outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"{folder.name} output\n")]
            nbformat.write(nb, folder / "notebooks" / f"{stem}.ipynb")
    pages = stage_notebooks(BookConfig(notebooks="executed"), run_dir, tmp_path / "staged", base)
    by_stem = {p.stem: p for p in pages}
    assert all(p.executed for p in pages) and len(pages) == len(stems)
    assert {s for s, p in by_stem.items() if p.base_run == base} == set(stems) - set(own)
    assert all(by_stem[s].base_run is None and by_stem[s].origin.parent == run_dir / "notebooks" for s in own)
    staged = nbformat.read(tmp_path / "staged" / "04_memla.ipynb", as_version=4)
    assert staged.cells[-1].outputs[0]["text"] == "base output\n"
    assert any("executed notebook of the base run" in c.source for c in staged.cells if c.cell_type == "markdown")
    mine = nbformat.read(tmp_path / "staged" / "05_baselines.ipynb", as_version=4)
    assert mine.cells[-1].outputs[0]["text"] == "run output\n"
    assert not any("base run" in c.source for c in mine.cells if c.cell_type == "markdown")
    (base / "notebooks" / "04_memla.ipynb").unlink()
    with pytest.raises(BookError, match=r"no executed copy of 04_memla.ipynb in .*or the base run's"):
        stage_notebooks(BookConfig(notebooks="executed"), run_dir, tmp_path / "staged2", base)


def test_the_base_run_of_a_book_is_the_presets_base_run_dir():
    assert BookConfig(preset="medium-paper").base_run() == PROJECT_ROOT / "results" / "medium"
    assert BookConfig(preset="medium").base_run() is None
    assert BookConfig(preset="medium", base_run_dir=PROJECT_ROOT / "x").base_run() == PROJECT_ROOT / "x"


# --- README table ---------------------------------------------------------------------------------------------------

def test_readme_results_table_matches_the_committed_claims_csv():
    diff = readme_table.stale_diff(PROJECT_ROOT / "README.md", FIGURES)
    assert diff == "", f"README.md is stale; run python -m memla_utils.book.readme_table --write\n{diff}"


def test_readme_check_fails_when_the_claims_csv_changes(tmp_path):
    figures = tmp_path / "figures"
    shutil.copytree(FIGURES / "tables", figures / "tables")
    for which in readme_table.BLOCKS[1:]:  # every other block of the README reads its own run's table
        if (FIGURES / which.subdir / "tables").is_dir():
            shutil.copytree(FIGURES / which.subdir / "tables", figures / which.subdir / "tables")
    readme = tmp_path / "README.md"
    shutil.copy2(PROJECT_ROOT / "README.md", readme)
    assert readme_table.stale_diff(readme, figures) == ""
    rows = _claims()
    rows[0]["effect"] = str(float(rows[0]["effect"]) + 0.01)  # one claim's effect moves by a point
    with open(figures / "tables" / "claims.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    diff = readme_table.stale_diff(readme, figures)
    # the changed claim's row leaves the README's table and comes back with its effect one point higher
    removed = [l for l in diff.splitlines() if l.startswith("-| MEMLA beats the baselines on cross-lingual editing |")]
    added = [l for l in diff.splitlines() if l.startswith("+| MEMLA beats the baselines on cross-lingual editing |")]
    assert len(removed) == 1 and len(added) == 1, diff
    effect = float(_claims()[0]["effect"]) * 100
    assert f"| {effect:+.1f} [" in removed[0] and f"| {effect + 1:+.1f} [" in added[0]
    assert readme_table.main(["--readme", str(readme), "--figures", str(figures)]) == 1
    assert readme_table.main(["--readme", str(readme), "--figures", str(figures), "--write"]) == 0
    assert readme_table.stale_diff(readme, figures) == ""
    text = readme.read_text(encoding="utf-8")
    small = text[text.index(readme_table.START):text.index(readme_table.END)]
    assert small.count("| MEMLA beats the baselines on cross-lingual editing |") == 1  # one row per block


def test_readme_markers_must_be_there_once():
    with pytest.raises(readme_table.ReadmeTableError, match="found 0 and 0"):
        readme_table.replace_block("# no markers\n", "x", where="R.md")
    twice = f"{readme_table.START}\n{readme_table.END}\n{readme_table.START}\n{readme_table.END}\n"
    with pytest.raises(readme_table.ReadmeTableError, match="found 2 and 2"):
        readme_table.replace_block(twice, "x")
    with pytest.raises(readme_table.ReadmeTableError, match="comes before"):
        readme_table.replace_block(f"{readme_table.END}\n{readme_table.START}\n", "x")


def _readme_with_block(tmp_path, which, body: str = ""):
    """A README with the small preset's block and ``which``'s under ``## <preset>``, and a figures root holding the
    small preset's committed tables."""
    figures = tmp_path / "figures"
    shutil.copytree(FIGURES / "tables", figures / "tables")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{readme_table.START}\n{readme_table.END}\n\n## {which.preset}\n{which.start}\n"
                      + (f"{body}\n" if body else "") + f"{which.end}\n", encoding="utf-8")
    return readme, figures


def test_the_medium_run_s_block_is_generated_from_its_own_claims_table(tmp_path):
    """A README that holds the medium block too: each block comes from its own run's claims.csv, and a medium block
    without its claims table is an error naming the file."""
    readme, figures = _readme_with_block(tmp_path, readme_table.BLOCKS[1], "old")
    with pytest.raises(readme_table.ReadmeTableError, match="medium/tables/claims.csv"):
        readme_table.stale_diff(readme, figures)
    (figures / "medium" / "tables").mkdir(parents=True)
    rows = _claims()
    rows[0]["effect"] = "0.4242"  # the medium run's claim differs from the small preset's
    with open(figures / "medium" / "tables" / "claims.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert readme_table.stale_diff(readme, figures) != ""
    assert readme_table.write(readme, figures) and readme_table.stale_diff(readme, figures) == ""
    text = readme.read_text(encoding="utf-8")
    small_part, medium_part = text.split("## medium")
    assert "| +42.4 [" in medium_part and "| +42.4 [" not in small_part
    assert "figures/medium/tables/claims.csv" in medium_part and "make book PRESET=medium" in medium_part
    assert "figures/tables/claims.csv" in small_part and "old" not in medium_part


def test_the_book_of_a_tracked_run_folder_is_built_in_the_ignored_runs_folder():
    """The medium run lives in the tracked results/medium; its book goes to runs/medium/book, not beside it."""
    from memla_utils.book.build import BookConfig

    figures, run_dir, out = BookConfig(preset="medium").resolved()
    assert run_dir == PROJECT_ROOT / "results" / "medium" and figures == PROJECT_ROOT / "figures" / "medium"
    assert out == PROJECT_ROOT / "runs" / "medium" / "book"
    assert BookConfig().resolved()[2] == PROJECT_ROOT / "runs" / "small" / "book"


def test_a_benchmark_block_is_the_compact_main_comparison_of_its_run(tmp_path):
    """The MzsRE / Bi-ZsRE blocks: one row per method, one column per (edit language, same/cross, metric) that the
    run's main_comparison_token_acc.csv has, mean ×100 with its interval, n (a range when cells differ); a missing
    cell says so; the table's absence is an error naming the file."""
    readme, figures = _readme_with_block(tmp_path, next(b for b in readme_table.BLOCKS if b.preset == "mzsre"))
    with pytest.raises(readme_table.ReadmeTableError, match="mzsre/tables/main_comparison_token_acc.csv"):
        readme_table.stale_diff(readme, figures)
    rows = [("memla", "cross", "ES_token_acc", 0.4321, 0.40, 0.46, 50), ("memla", "same", "ES_token_acc", 0.9, 0.85, 0.95, 50),
            ("memla", "same", "NS", 0.25, 0.2, 0.3, 48), ("ike", "same", "ES_token_acc", 0.7, 0.6, 0.8, 50)]
    (figures / "mzsre" / "tables").mkdir(parents=True)
    pd.DataFrame(rows, columns=["method", "scope", "metric", "mean", "ci_low", "ci_high", "n"]).assign(
        edit_lang="en").to_csv(figures / "mzsre" / "tables" / "main_comparison_token_acc.csv", index=False)
    assert readme_table.write(readme, figures) and readme_table.stale_diff(readme, figures) == ""
    part = readme.read_text(encoding="utf-8").split("## mzsre")[1]
    lines = [line for line in part.splitlines() if line.startswith("| ")]
    assert lines[0] == "| method | en same ES (tok) | en same NS | en cross ES (tok) | n |"
    assert lines[1] == "| memla | 90.0 [85.0, 95.0] | 25.0 [20.0, 30.0] | 43.2 [40.0, 46.0] | 48-50 |"
    assert lines[2] == "| ike | 70.0 [60.0, 80.0] | missing | missing | 50 |"
    assert "figures/mzsre/tables/main_comparison_token_acc.csv" in part and "make book PRESET=mzsre" in part


def test_readme_table_names_an_unreadable_readme_instead_of_a_traceback(tmp_path, capsys):
    from memla_utils.book import readme_table

    missing = tmp_path / "nope.md"
    assert readme_table.main(["--readme", str(missing)]) == 1
    assert readme_table.main(["--readme", str(missing), "--write"]) == 1
    assert str(missing) in capsys.readouterr().err


def test_every_claim_marker_finds_its_cell_in_the_source_and_in_every_committed_run():
    """The book of a committed multi-session run shows that run's executed notebooks, made on earlier code: each
    claim's cell marker must match exactly one code cell there as well as in today's notebook (a notebook edit
    that drops the marker breaks `make book PRESET=<preset>`)."""
    from memla_utils.cache import PROJECT_ROOT

    folders = [PROJECT_ROOT / "notebooks", *sorted((PROJECT_ROOT / "results").glob("*/notebooks"))]
    checked = 0
    for folder in folders:
        for key, ev in CLAIM_EVIDENCE.items():
            path = folder / f"{ev.notebook}.ipynb"
            if path.is_file():
                find_cell(nbformat.read(str(path), as_version=4), f"{folder}/{ev.notebook} ({key})", ev.cell_marker)
                checked += 1
    assert checked >= len(CLAIM_EVIDENCE)
