"""Build the book: stage the notebooks and the run's files into a Sphinx source folder, then run Sphinx.

    <out_dir>/source/   generated: conf.py, index.md, figures.md, tables.md, notebooks/*.ipynb, _run/ (copies)
    <out_dir>/html/     the site (open html/index.html, or serve the folder)

Notebooks are never executed. ``notebooks="executed"`` takes every notebook from ``<run_dir>/notebooks/``
(the copies ``make paper`` wrote; missing ones are an error), ``"source"`` the output-free ``notebooks/``
(what CI has), ``"auto"`` the executed copy where there is one and the source elsewhere (marked on the page).
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from ..batch import NOTEBOOKS_DIR, BatchError, notebooks, plan_runs
from ..cache import PROJECT_ROOT
from .config import BOOK_CSS, conf_py
from .evidence import CLAIM_EVIDENCE, cell_label, evidence_for, find_cell
from .pages import RUN_FILES, PageNotebook, claims_rows, figures_page, landing_page, shown_path, tables_page
from .values import check_html

log = logging.getLogger(__name__)

NOTEBOOK_MODES: tuple[str, ...] = ("executed", "source", "auto")
GENERATED_PAGES: tuple[str, ...] = ("index.md", "figures.md", "tables.md")
TABLE_EXTS: tuple[str, ...] = ("csv", "md", "tex")
FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
           'fill="#2c5d8f"/><text x="8" y="12" font-size="11" text-anchor="middle" fill="#fff" '
           'font-family="sans-serif">M</text></svg>')


class BookError(RuntimeError):
    """The book cannot be built as asked; the message names the file, notebook or claim and what to do."""


@dataclass
class BookConfig:
    """What to build. ``preset``: a batch preset (``memla_utils.config.PRESETS``), which fixes the run folder
    (``runs/<preset>``) and the figures folder (``figures/`` for ``small``, ``runs/<preset>/figures`` otherwise,
    as :func:`memla_utils.batch.plan_runs` resolves them); ``figures_dir``/``run_dir`` override them.
    ``notebooks``: executed | source | auto (module docstring). ``out_dir``: default ``runs/<preset>/book``, in the
    ignored ``runs/`` also for the presets whose run folder is tracked (medium: ``results/medium``).
    ``base_run_dir``: the run whose executed notebooks stand in for those this run does not run; default: the
    preset's notebook-07 parameter ``base_run_dir`` (medium-paper: ``results/medium``; empty: none)."""

    preset: str = "small"
    notebooks: str = "executed"
    out_dir: Path | None = None
    figures_dir: Path | None = None
    run_dir: Path | None = None
    source_notebooks: Path = NOTEBOOKS_DIR
    base_run_dir: Path | None = None

    def _parameters(self) -> dict:
        """The preset's chain parameters (:func:`memla_utils.batch.plan_runs`); a bad preset is a BookError."""
        try:
            return plan_runs(self.preset)[0].parameters
        except BatchError as err:
            raise BookError(str(err)) from None

    def resolved(self) -> tuple[Path, Path, Path]:
        """(figures_dir, run_dir, out_dir), absolute."""
        if self.notebooks not in NOTEBOOK_MODES:
            raise BookError(f"notebooks={self.notebooks!r}: expected one of {', '.join(NOTEBOOK_MODES)}")
        params = self._parameters()
        figures_dir = _absolute(self.figures_dir or params["figures_dir"])
        run_dir = _absolute(self.run_dir or params["run_dir"])
        return figures_dir, run_dir, _absolute(self.out_dir or Path("runs") / self.preset / "book")

    def base_run(self) -> Path | None:
        """The base run's folder, absolute (:attr:`base_run_dir`, else the preset's ``base_run_dir``), or ``None``."""
        base = self.base_run_dir if self.base_run_dir is not None else self._parameters().get("base_run_dir")
        return _absolute(base) if base else None


def _absolute(p: Path | str) -> Path:
    """``p`` as given when absolute, else under the project root."""
    p = Path(p)
    return p if p.is_absolute() else PROJECT_ROOT / p


@dataclass
class BookResult:
    html_dir: Path
    source_dir: Path
    seconds: float
    glued_values: int
    notebooks: list[PageNotebook] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def index(self) -> Path:
        return self.html_dir / "index.html"


def _title(nb: nbformat.NotebookNode, stem: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, flags=re.M)
            if m:
                return m.group(1).strip()
    return stem


def _executed_copy(name: str, executed_dir: Path, base_dir: Path | None) -> Path | None:
    """The executed copy of notebook ``name``: this run's, else the base run's (``base_dir``), else ``None``."""
    for folder in (executed_dir, base_dir):
        if folder is not None and (folder / name).is_file():
            return folder / name
    return None


def stage_notebooks(cfg: BookConfig, run_dir: Path, dest: Path, base_run_dir: Path | None = None
                    ) -> list[PageNotebook]:
    """Copy the notebooks into ``dest`` with a label before every cell a claim links to (and a note on pages
    shown without outputs, or taken from the base run). A notebook this run has no executed copy of is taken
    from ``base_run_dir``'s executed copies when there is one (a run such as medium-paper runs notebooks 00, 01,
    05 and 07 only, and its report reads the rest of its results from its base run: the book shows those pages as
    the base run executed them). Raises :class:`BookError` naming missing executed copies or a stale claim link."""
    sources = notebooks(cfg.source_notebooks)
    executed_dir = run_dir / "notebooks"
    base_dir = base_run_dir / "notebooks" if base_run_dir is not None else None
    copies = {p.name: _executed_copy(p.name, executed_dir, base_dir) for p in sources}
    missing = [name for name, copy in copies.items() if copy is None]
    if cfg.notebooks == "executed" and missing:
        where = executed_dir if base_dir is None else f"{executed_dir} or the base run's {base_dir}"
        raise BookError(f"no executed copy of {', '.join(missing)} in {where}: run `make paper "
                        f"PRESET={cfg.preset}` first, or build from the sources (--notebooks source|auto)")
    anchors: dict[str, list[str]] = {}
    for ev in CLAIM_EVIDENCE.values():
        anchors.setdefault(ev.notebook, [])
        if ev.cell_marker not in anchors[ev.notebook]:
            anchors[ev.notebook].append(ev.cell_marker)
    dest.mkdir(parents=True, exist_ok=True)
    pages = []
    for src in sources:
        executed = cfg.notebooks != "source" and src.name not in missing
        origin = copies[src.name] if executed else src
        borrowed = executed and base_dir is not None and origin.parent == base_dir
        try:
            nb = nbformat.read(origin, as_version=4)
        except Exception as err:  # nbformat raises several kinds on a broken file
            raise BookError(f"notebook {origin} cannot be read: {type(err).__name__}: {err}") from err
        # insert from the last cell up so earlier indices stay valid
        targets = sorted(((find_cell(nb, src.stem, m), m) for m in anchors.get(src.stem, [])), reverse=True)
        for index, marker in targets:
            nb.cells.insert(index, nbformat.v4.new_markdown_cell(f"({cell_label(src.stem, marker)})="))
        note = None
        if not executed:
            note = ("This page shows the notebook's source without outputs: the run has no executed copy of it in "
                    f"`{shown_path(executed_dir)}` (`make paper PRESET={cfg.preset}` writes one).")
        elif borrowed:
            note = (f"This page is the executed notebook of the base run `{shown_path(base_run_dir)}`: preset "
                    f"`{cfg.preset}` does not run it, and its report (notebook 07, parameter `base_run_dir`) takes "
                    "these results from that run after checking that both runs are the same experiment.")
        if note:  # below the title
            nb.cells.insert(1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0,
                            nbformat.v4.new_markdown_cell(f"```{{note}}\n{note}\n```"))
        nbformat.write(nb, dest / src.name)
        pages.append(PageNotebook(src.stem, _title(nb, src.stem), executed, origin,
                                  base_run_dir if borrowed else None))
    return pages


def stage_run_files(figures_dir: Path, dest: Path) -> tuple[list[str], set[str], dict[str, set[str]]]:
    """Copy every figure (PNG, PDF) and table (CSV, Markdown, LaTeX) into ``dest``.

    Returns (PNG stems, PDF stems, table stem -> extensions present)."""
    if not figures_dir.is_dir():
        raise BookError(f"figures folder {figures_dir} does not exist (run `make paper` first)")
    (dest / "tables").mkdir(parents=True, exist_ok=True)
    pngs = sorted(p.stem for p in figures_dir.glob("*.png"))
    pdfs = {p.stem for p in figures_dir.glob("*.pdf")}
    for stem in pngs:
        shutil.copy2(figures_dir / f"{stem}.png", dest / f"{stem}.png")
    for stem in pdfs:
        shutil.copy2(figures_dir / f"{stem}.pdf", dest / f"{stem}.pdf")
    tables: dict[str, set[str]] = {}
    for path in sorted((figures_dir / "tables").glob("*")):
        ext = path.suffix.lstrip(".")
        if path.is_file() and ext in TABLE_EXTS:
            tables.setdefault(path.stem, set()).add(ext)
            shutil.copy2(path, dest / "tables" / path.name)
    return pngs, pdfs, tables


def _sphinx(source: Path, html: Path, doctrees: Path, warnings_file: Path) -> None:
    env = dict(os.environ)
    # this checkout's package (the extension), whatever an editable install elsewhere points to
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-E", "-a", "-q", "-w", str(warnings_file),
           "-d", str(doctrees), str(source), str(html)]
    proc = subprocess.run(cmd, cwd=source, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BookError(f"sphinx-build failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def build_book(cfg: BookConfig | None = None) -> BookResult:
    """Stage, build with Sphinx, then check every glued value against its file.

    Raises :class:`BookError` when a notebook, the claims table or a claim link is missing, when Sphinx warns
    about a generated page (index, figures, tables: e.g. a link to a label that does not exist), or when a
    glued value in the built site differs from its file."""
    cfg = cfg or BookConfig()
    figures_dir, run_dir, out_dir = cfg.resolved()
    start = time.perf_counter()
    source, html, doctrees = out_dir / "source", out_dir / "html", out_dir / "_doctrees"
    for d in (source, html, doctrees, out_dir / "jupyter_execute"):  # the last: myst-nb's output files
        if d.exists():
            shutil.rmtree(d)
    source.mkdir(parents=True)
    try:
        rows = claims_rows(figures_dir)
    except FileNotFoundError as err:
        raise BookError(str(err)) from None
    for row in rows:  # every claim must say where it is measured, before anything is built
        try:
            evidence_for(row.get("key", ""))
        except ValueError as err:
            raise BookError(str(err)) from None
    pages = stage_notebooks(cfg, run_dir, source / "notebooks", cfg.base_run())
    pngs, pdfs, tables = stage_run_files(figures_dir, source / RUN_FILES)
    roots = {"figures": figures_dir, "run": run_dir}
    (source / "favicon.svg").write_text(FAVICON, encoding="utf-8")
    (source / "_static").mkdir()
    (source / "_static" / "book.css").write_text(BOOK_CSS, encoding="utf-8")
    (source / "conf.py").write_text(conf_py(cfg.preset, roots), encoding="utf-8")
    (source / "index.md").write_text(landing_page(cfg.preset, figures_dir, run_dir, pages, set(pngs),
                                                  set(tables)), encoding="utf-8")
    (source / "figures.md").write_text(figures_page(pngs, pdfs), encoding="utf-8")
    (source / "tables.md").write_text(tables_page(tables), encoding="utf-8")
    log.info("building the book of preset %s (%d notebooks, %d executed) into %s", cfg.preset, len(pages),
             sum(p.executed for p in pages), html)
    warnings_file = out_dir / "sphinx-warnings.log"
    _sphinx(source, html, doctrees, warnings_file)
    warnings = [w for w in warnings_file.read_text(encoding="utf-8").splitlines() if w.strip()]
    own = [w for w in warnings if any(w.startswith(str(source / page)) for page in GENERATED_PAGES)]
    if own:
        raise BookError("Sphinx warned about the generated pages:\n" + "\n".join(own))
    if warnings:
        log.warning("%d Sphinx warnings on notebook pages (see %s)", len(warnings), warnings_file)
    n, problems = check_html(html, roots)
    if problems:
        raise BookError(f"{len(problems)} glued values differ from their files:\n" + "\n".join(problems[:20]))
    if n == 0:
        raise BookError(f"no glued value in {html}: the landing page lost its run values")
    seconds = time.perf_counter() - start
    log.info("book built in %.1f s: %s (%d glued values checked)", seconds, html / "index.html", n)
    return BookResult(html, source, seconds, n, pages, warnings)
