"""The book's generated pages (MyST Markdown): the landing page, every figure, every table.

No number is written into these pages: each is a ``{run-value}`` reference to the run file it comes from
(see :mod:`memla_utils.book.values`), resolved when Sphinx builds the page.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cache import PROJECT_ROOT
from .evidence import cell_label, evidence_for

CLAIMS_TABLE = "tables/claims.csv"
REPORT_MANIFEST = "MANIFEST.json"
BATCH_MANIFEST = "batch_manifest.json"
#: Where the builder copies the run's figures and tables inside the book's source folder.
RUN_FILES = "_run"


@dataclass(frozen=True)
class PageNotebook:
    """A notebook page of the book: its file stem, title, whether it is an executed copy, the file it was taken
    from, and the base run it was taken from when it is not this run's (``None``: this run's, or the source)."""

    stem: str
    title: str
    executed: bool
    origin: Path
    base_run: Path | None = None


def glue(ref: str) -> str:
    """The MyST role that pastes the value ``ref`` names (e.g. ``figures:tables/claims.csv#0/verdict``)."""
    return f"{{run-value}}`{ref}`"


def shown_path(path: Path) -> str:
    """A path as the reader knows it: relative to the project when inside it."""
    path = Path(path)
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _has(data: Mapping[str, Any], dotted: str) -> bool:
    node: Any = data
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


def claims_rows(figures_dir: Path) -> list[dict[str, str]]:
    """The claims table's rows (raises FileNotFoundError naming the file when the run has none)."""
    path = Path(figures_dir) / CLAIMS_TABLE
    if not path.is_file():
        raise FileNotFoundError(f"the run has no claims table {path} (run `make paper`, notebook 07 writes it)")
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _claims_section(figures_dir: Path, figures: set[str], tables: set[str], report: Mapping[str, Any]) -> list[str]:
    rows = claims_rows(figures_dir)
    src = f"figures:{CLAIMS_TABLE}"
    level = (glue(f"figures:{REPORT_MANIFEST}#parameters.bootstrap.level@level") + "%"
             if _has(report, "parameters.bootstrap.level") else "bootstrap")
    out = ["## The paper's claims, checked on this run", "",
            f"Effect ×100 (points of ES/PS/NS/QS; relative change in % for perplexity), its {level} interval "
            "over records and n (records), from "
            f"{{ref}}`claims.csv <table-claims>`. A verdict is *supported* only when the interval excludes zero "
            "in the claimed direction (or lies inside the stated tolerance). Each row links the notebook cell "
            "that measures it, and its figure and table.", "",
            f"| claim | verdict | effect ×100 | {level} interval | n | measured in | figures, tables |",
            "|---|---|---|---|---|---|---|"]
    for i, row in enumerate(rows):
        ev = evidence_for(row["key"])
        cell = f"{{ref}}`{ev.notebook} · {ev.what} <{cell_label(ev.notebook, ev.cell_marker)}>`"
        shown = ([f"{{ref}}`{f}.png <fig-{f}>`" for f in ev.figures if f in figures]
                 + [f"{{ref}}`{t}.csv <table-{t}>`" for t in ev.tables if t in tables])
        out.append(f"| {glue(f'{src}#{i}/claim')} | {glue(f'{src}#{i}/verdict')} "
                   f"| {glue(f'{src}#{i}/effect@pct')} "
                   f"| [{glue(f'{src}#{i}/ci_low@pct')}, {glue(f'{src}#{i}/ci_high@pct')}] "
                   f"| {glue(f'{src}#{i}/n@int')} | {cell} | {', '.join(shown) or 'none in this run'} |")
    out += ["", "## What the paper claims, and how each claim is measured", ""]
    for i in range(len(rows)):
        out.append(f"- **{glue(f'{src}#{i}/claim')}** — the paper: {glue(f'{src}#{i}/paper')}; "
                   f"measured as: {glue(f'{src}#{i}/measured as')}")
    notes = [i for i, row in enumerate(rows) if row.get("note", "").strip()]
    if notes:
        out += ["", "Notes:", ""]
        out += [f"- {glue(f'{src}#{i}/claim')}: {glue(f'{src}#{i}/note')}" for i in notes]
    return out


def _manifest_lines(root: str, name: str, data: Mapping[str, Any]) -> list[str]:
    ref = f"{root}:{name}"
    fields = [("created", "created"), ("git.commit", "commit"), ("git.dirty", "uncommitted changes"),
              ("model.name", "model"), ("model.fingerprint", "model fingerprint"),
              ("parameters.model", "model parameter"), ("parameters.n_records", "records"),
              ("parameters.languages", "evaluation languages"), ("parameters.edit_languages", "edit languages"),
              ("parameters.methods", "methods"), ("parameters.device", "device"), ("parameters.dtype", "dtype"),
              ("parameters.seed", "seed"), ("device.platform", "platform"), ("device.machine", "machine"),
              ("device.cpu_count", "CPU cores"), ("device.torch_threads", "torch threads"),
              ("device.cuda", "GPU"), ("device.python", "Python")]
    out = ["| field | value |", "|---|---|"]
    for key, label in fields:
        if _has(data, key):
            out.append(f"| {label} | {glue(f'{ref}#{key}')} |")
    return out


def _run_section(preset: str, figures_dir: Path, run_dir: Path, report: Mapping[str, Any],
                 notebooks: Sequence[PageNotebook]) -> list[str]:
    out = ["## The run", "",
           f"Preset `{preset}`: figures and tables from `{shown_path(figures_dir)}`, executed notebooks from "
           f"`{shown_path(run_dir / 'notebooks')}`.", ""]
    if report:
        out += ["### Report manifest (`MANIFEST.json` of the figures)", "",
                *_manifest_lines("figures", REPORT_MANIFEST, report), ""]
        packages = sorted((report.get("packages") or {}).keys())
        if packages:
            out += ["Package versions:", "", "| package | version |", "|---|---|"]
            out += [f"| `{p}` | {glue(f'figures:{REPORT_MANIFEST}#packages.{p}')} |" for p in packages]
            out.append("")
    else:
        out += [f"The figures folder has no `{REPORT_MANIFEST}`.", ""]
    batch = _json(run_dir / BATCH_MANIFEST)
    if batch:
        out += [f"### Batch manifest (`{shown_path(run_dir / BATCH_MANIFEST)}`)", "",
                *_manifest_lines("run", BATCH_MANIFEST, batch), ""]
        timings = batch.get("timings") or {}
        if timings:
            out += ["Seconds per notebook:", "", "| notebook | seconds |", "|---|---|"]
            out += [f"| `{name}` | {glue(f'run:{BATCH_MANIFEST}#timings.{name}@seconds')} |" for name in timings]
            out.append("")
    else:
        out += [f"No batch manifest `{shown_path(run_dir / BATCH_MANIFEST)}` (the notebooks were not run by `make paper` "
                "for this preset).", ""]
    executed = [nb for nb in notebooks if nb.executed and nb.base_run is None]
    borrowed = [nb for nb in notebooks if nb.executed and nb.base_run is not None]
    sources = [nb for nb in notebooks if not nb.executed]
    if sources:
        out += ["Shown without outputs (no executed copy in this run): "
                + ", ".join(f"{{doc}}`{nb.stem} <notebooks/{nb.stem}>`" for nb in sources) + ".", ""]
    if executed:
        out += ["Executed copies of this run: "
                + ", ".join(f"{{doc}}`{nb.stem} <notebooks/{nb.stem}>`" for nb in executed) + ".", ""]
    for base in dict.fromkeys(nb.base_run for nb in borrowed):
        out += [f"Executed copies of the base run `{shown_path(base)}` (this preset does not run them; its report "
                "takes those results from the base run): "
                + ", ".join(f"{{doc}}`{nb.stem} <notebooks/{nb.stem}>`" for nb in borrowed if nb.base_run == base)
                + ".", ""]
    return out


def landing_page(preset: str, figures_dir: Path, run_dir: Path, notebooks: Sequence[PageNotebook],
                 figures: set[str], tables: set[str]) -> str:
    """``index.md``: what the paper claims, the claims table with links, the run's manifests, the contents."""
    report = _json(Path(figures_dir) / REPORT_MANIFEST)
    lines = ["# MEMLA companion: the results of one run", "",
             "A static, read-only view of the companion to *MEMLA: Enhancing Multilingual Knowledge Editing with "
             "Neuron-Masked Low-Rank Adaptation* ([arXiv 2406.11566](https://arxiv.org/abs/2406.11566)): the "
             "notebooks as the run left them, every figure and table it wrote, and the paper's claims checked on "
             "it. Every number on this page is read from the run's files when the book is built.", "",
             "The paper claims that editing a fact with two LoRA editors, each masked to a set of knowledge "
             "neurons (language-specific: LSE; language-independent: LIE), carries the edit into other languages "
             "better than existing editors, helps multi-hop questions about the edited fact, and leaves the "
             "model's general ability nearly untouched. The table below checks each claim on this run.", "",
             *_claims_section(figures_dir, figures, tables, report), "",
             *_run_section(preset, figures_dir, run_dir, report, notebooks), "",
             "## Contents", "",
             "```{toctree}", ":maxdepth: 1", ":caption: Notebooks", "",
             *[f"notebooks/{nb.stem}" for nb in notebooks], "```", "",
             "```{toctree}", ":maxdepth: 1", ":caption: Results", "", "figures", "tables", "```", ""]
    return "\n".join(lines)


def figures_page(figures: Sequence[str], pdfs: set[str]) -> str:
    """``figures.md``: every PNG of the figures folder, with its PDF for download when there is one."""
    out = ["# Figures", "", "Every figure the run wrote, as PNG (and PDF to download).", ""]
    for stem in figures:
        out += [f"(fig-{stem})=", f"## {stem}", "", f"```{{image}} {RUN_FILES}/{stem}.png", f":alt: {stem}",
                "```", ""]
        if stem in pdfs:
            out += [f"{{download}}`{stem}.pdf <{RUN_FILES}/{stem}.pdf>`", ""]
    return "\n".join(out)


def tables_page(tables: Mapping[str, set[str]]) -> str:
    """``tables.md``: every table, shown from its Markdown (else CSV) file, downloadable as CSV, LaTeX, Markdown."""
    out = ["# Tables", "", "Every table the run wrote: shown as the run formatted it, and the files to download "
           "(CSV holds the unrounded values).", ""]
    names = {"csv": "CSV", "tex": "LaTeX", "md": "Markdown"}
    for stem, exts in tables.items():
        out += [f"(table-{stem})=", f"## {stem}", ""]
        links = [f"{{download}}`{names[e]} <{RUN_FILES}/tables/{stem}.{e}>`" for e in ("csv", "tex", "md") if e in exts]
        out += ["Download: " + " · ".join(links), ""]
        if "md" in exts:
            out += [f"```{{include}} {RUN_FILES}/tables/{stem}.md", "```", ""]
        else:
            out += ["```{csv-table}", f":file: {RUN_FILES}/tables/{stem}.csv", ":header-rows: 1", "```", ""]
    return "\n".join(out)
