"""The companion as a static website (a "book"), built with Sphinx + myst-nb from a run's notebooks and files.

``python -m memla_utils.book`` (``make book``) builds ``runs/<preset>/book/html`` from the executed notebooks of
the last ``make paper`` of a preset (never re-executing them), every figure and table of its figures folder, and
a landing page whose numbers are all read from the run's files (:mod:`.values`). Modules: :mod:`.evidence`
(claim -> notebook cell, figure, table), :mod:`.pages` (generated pages), :mod:`.config` (``conf.py``),
:mod:`.sphinx_ext` (the ``{run-value}`` role), :mod:`.build`, :mod:`.browser` (headless Chromium check),
:mod:`.readme_table` (the README's results table).
"""
from .build import BookConfig, BookError, BookResult, build_book

__all__ = ["BookConfig", "BookError", "BookResult", "build_book"]
