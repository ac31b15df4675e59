"""Sphinx extension of the book: the ``{run-value}`` role that pastes a value from a run file.

``{run-value}`figures:tables/claims.csv#0/effect@pct``` reads the file when the page is built (the roots come
from the config value ``memla_roots``, set by the generated ``conf.py``) and writes
``<span class="run-value" data-ref="figures:tables/claims.csv#0/effect@pct">-7.7</span>``, so the built page
names the source of every number it shows (see :func:`memla_utils.book.values.check_html`). A reference that
cannot be resolved is a build error naming the page and the reference, never a silent blank.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

from .values import GlueError, ValueRef, format_value, read_raw


class run_value(nodes.inline):  # noqa: N801 - docutils node classes are lower case
    """A glued value; ``ref`` holds its reference string."""


def _visit_html(self: Any, node: run_value) -> None:
    self.body.append(self.starttag(node, "span", "", CLASS="run-value", **{"data-ref": node["ref"]}))


def _depart_html(self: Any, node: run_value) -> None:
    self.body.append("</span>")


def _visit_plain(self: Any, node: run_value) -> None:  # text/latex/... builders: just the text
    pass


def _depart_plain(self: Any, node: run_value) -> None:
    pass


def run_value_role(name: str, rawtext: str, text: str, lineno: int, inliner: Any,
                   options: dict | None = None, content: list | None = None):
    env = inliner.document.settings.env
    roots = {k: Path(v) for k, v in env.config.memla_roots.items()}
    try:
        ref = ValueRef.parse(text)
        shown = format_value(read_raw(ref, roots), ref.fmt)
    except GlueError as err:
        raise ExtensionError(f"{env.docname}:{lineno}: {err}") from None
    node = run_value(rawtext, shown, ref=str(ref))
    return [node], []


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("memla_roots", {}, "env", types=[dict])
    app.add_node(run_value, html=(_visit_html, _depart_html), text=(_visit_plain, _depart_plain),
                 latex=(_visit_plain, _depart_plain))
    app.add_role("run-value", run_value_role)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
