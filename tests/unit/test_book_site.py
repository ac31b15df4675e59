"""The book built as CI can build it: from the output-free notebooks/ and the committed figures/ (nothing is
executed), then read back: every glued value against its file, every figure and table on a page, every link
resolving, and (when Debian's chromium is installed) every page opened in headless Chromium."""
from __future__ import annotations

import csv
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin

import pytest

from memla_utils.book.browser import check_site, find_chromium, site_pages
from memla_utils.book.build import BookConfig, build_book
from memla_utils.book.values import check_html, glued_spans
from memla_utils.cache import PROJECT_ROOT, file_lock

FIGURES = PROJECT_ROOT / "figures"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def book(request, tmp_path_factory) -> dict:
    """Build once per test session, shared by the xdist workers (file lock, as pytest-xdist documents)."""
    worker = getattr(request.config, "workerinput", None)
    root = tmp_path_factory.getbasetemp() if worker is None else tmp_path_factory.getbasetemp().parent
    out = root / "book-from-sources"
    with file_lock(root / "book-from-sources.lock"):
        marker = out / "built.json"
        if not marker.is_file():
            res = build_book(BookConfig(notebooks="source", out_dir=out))
            marker.write_text(json.dumps({"html": str(res.html_dir), "source": str(res.source_dir),
                                          "glued": res.glued_values, "seconds": res.seconds,
                                          "executed": [p.stem for p in res.notebooks if p.executed]}))
    return json.loads(marker.read_text())


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.imgs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
        if tag == "img" and a.get("src"):
            self.imgs.append(a["src"])


def _parse(path: Path) -> _Links:
    p = _Links()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def _claims() -> list[dict[str, str]]:
    with open(FIGURES / "tables" / "claims.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_every_glued_value_equals_its_source_file(book):
    html = Path(book["html"])
    n, problems = check_html(html, {"figures": FIGURES, "run": PROJECT_ROOT / "runs" / "small"})
    assert problems == []
    assert n == book["glued"]
    refs = {s.ref for s in glued_spans(html) if s.page == "index.html"}
    for i in range(len(_claims())):  # every claim's verdict, effect, interval and n is glued, none typed
        for field in ("verdict", "effect@pct", "ci_low@pct", "ci_high@pct", "n@int"):
            assert f"figures:tables/claims.csv#{i}/{field}" in refs
    assert "figures:MANIFEST.json#model.fingerprint" in refs and "figures:MANIFEST.json#git.commit" in refs


def test_the_glue_check_catches_a_drifted_value(book, tmp_path):
    """Change the file under a built page (and, separately, the page): the check names the value."""
    figures = tmp_path / "figures"
    shutil.copytree(FIGURES / "tables", figures / "tables")
    shutil.copy2(FIGURES / "MANIFEST.json", figures / "MANIFEST.json")
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy2(Path(book["html"]) / "index.html", site / "index.html")
    roots = {"figures": figures, "run": PROJECT_ROOT / "runs" / "small"}  # a local run's batch manifest, if any
    assert check_html(site, roots)[1] == []
    rows = _claims()
    shown = rows[2]["n"]
    rows[2]["n"] = str(int(shown) + 1)
    with open(figures / "tables" / "claims.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    problems = check_html(site, roots)[1]
    assert problems == [f"index.html: figures:tables/claims.csv#2/n@int shows '{shown}' but the file holds "
                        f"'{int(shown) + 1}'"]
    shutil.copy2(FIGURES / "tables" / "claims.csv", figures / "tables" / "claims.csv")
    page = (site / "index.html").read_text(encoding="utf-8")
    tampered = re.sub(r'(data-ref="figures:tables/claims.csv#0/effect(?:@|&#64;)pct">)[^<]*', r"\g<1>-7.6", page, count=1)
    assert tampered != page
    (site / "index.html").write_text(tampered, encoding="utf-8")
    assert check_html(site, roots)[1] == ["index.html: figures:tables/claims.csv#0/effect@pct shows '-7.6' but "
                                          f"the file holds '{rows[0]['effect']}'"]


def test_notebooks_are_shown_not_executed(book):
    html = Path(book["html"])
    assert book["executed"] == []
    for nb in sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        page = (html / "notebooks" / f"{nb.stem}.html").read_text(encoding="utf-8")
        assert "cell_output" not in page, f"{nb.stem}: outputs on a page built from the source notebook"
        assert "without outputs" in page


def test_every_figure_and_table_is_on_a_page_with_its_downloads(book):
    html = Path(book["html"])
    imgs = {Path(unquote(s)).name for s in _parse(html / "figures.html").imgs}
    for png in FIGURES.glob("*.png"):
        assert png.name in imgs, f"{png.name} is on no page"
    hrefs = [unquote(h) for h in _parse(html / "tables.html").hrefs]
    for csv_file in (FIGURES / "tables").glob("*.csv"):
        for ext in ("csv", "tex"):
            name = f"{csv_file.stem}.{ext}"
            if (FIGURES / "tables" / name).is_file():
                links = [h for h in hrefs if h.endswith("/" + name)]
                assert links, f"no download link for {name}"
                assert (html / links[0]).read_bytes() == (FIGURES / "tables" / name).read_bytes()


def test_every_internal_link_resolves_to_a_page_and_anchor(book):
    """The static counterpart of the browser check (runs without Chromium): files and #fragments exist."""
    html = Path(book["html"])
    ids: dict[Path, set[str]] = {}
    checked = 0
    for page in site_pages(html):
        for href in _parse(html / page).hrefs:
            if re.match(r"^[a-z]+:", href):
                continue
            url, fragment = urldefrag(urljoin(page, href))
            target = html / unquote(url) if url else html / page
            assert target.is_file(), f"{page}: link {href} -> missing {target}"
            if fragment and target.suffix == ".html":
                if target not in ids:
                    ids[target] = _parse(target).ids
                assert fragment in ids[target], f"{page}: link {href}: no id {fragment!r}"
            checked += 1
    assert checked > 100
    index_links = _parse(html / "index.html").hrefs
    assert any(h.startswith("notebooks/04_memla.html#cell-04-memla-report-ablation-stats") for h in index_links)
    assert any(h.startswith("figures.html#fig-methods-bars") for h in index_links)


def test_the_landing_page_types_no_number(book):
    """Every digit of the generated landing page's source sits in a glued value, a link target, code or a
    fenced block (the toctree), except the paper's arXiv id and the ×100 scale."""
    text = (Path(book["source"]) / "index.md").read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"\{[a-z-]+\}`[^`]*`", "", text)
    text = re.sub(r"`[^`]*`", "", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = text.replace("arXiv 2406.11566", "").replace("×100", "")
    assert re.findall(r".{0,30}\d.{0,30}", text) == []


@pytest.mark.skipif(find_chromium() is None, reason="chromium/chromedriver not installed (apt-get install "
                                                    "chromium chromium-driver)")
def test_every_page_opens_in_headless_chromium(book, tmp_path):
    html = Path(book["html"])
    shots = {"index.html": tmp_path / "landing.png", "notebooks/04_memla.html": tmp_path / "nb.png"}
    report = check_site(html, screenshots=shots)
    assert report.problems == []
    assert [p.page for p in report.pages] == site_pages(html) and len(report.pages) >= 12
    figures = next(p for p in report.pages if p.page == "figures.html")
    assert figures.images == len(list(FIGURES.glob("*.png")))
    assert next(p for p in report.pages if p.page == "index.html").links > 30
    for png in shots.values():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


@pytest.mark.skipif(find_chromium() is None, reason="chromium/chromedriver not installed")
def test_the_browser_check_reports_what_a_reader_would_hit(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "ok.html").write_text("<html><body><p id='here'>ok</p></body></html>")
    (site / "folder").mkdir()
    (site / "index.html").write_text(
        "<html><head><link rel='icon' href='data:,'></head><body>"
        "<img src='missing.png'><a href='nope.html'>x</a><a href='ok.html#gone'>y</a><a href='ok.html#here'>z</a><a href='folder/'>f</a>"
        "<img src='http://127.0.0.2:9/outside.png'><script>console.error('boom')</script></body></html>")
    problems = check_site(site, pages=["index.html"]).problems
    assert any("console error" in p and "boom" in p for p in problems)
    assert any("image did not load" in p and "missing.png" in p for p in problems)
    assert any("nope.html -> HTTP 404" in p for p in problems)
    assert any("no id 'gone'" in p for p in problems)
    assert any("request leaves the site: http://127.0.0.2:9/outside.png" in p for p in problems)
    assert any("folder/ -> a folder" in p for p in problems)
    assert not any("#here" in p for p in problems)
