"""Open every page of a built book in headless Chromium, the way a reader would, and report what is broken.

For each page (served by a local ``http.server`` on 127.0.0.1): no console error, every image loaded
(``naturalWidth > 0``), every internal link answers 200 and its ``#fragment`` exists on the target page, and no
request leaves the local server (no CDN font, script or math renderer). Driven through the Chrome DevTools
protocol by Selenium with Debian's ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (nothing is downloaded:
both paths are given, so Selenium Manager is not asked for a browser).
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import json
import logging
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urlparse

log = logging.getLogger(__name__)

#: Chromium flags: headless, no sandbox (root in CI), and nothing that phones home on its own.
CHROMIUM_FLAGS: tuple[str, ...] = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                                   "--disable-background-networking", "--disable-component-update",
                                   "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars")
WINDOW = (1280, 1600)


def find_chromium() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when either is missing (``apt-get install chromium
    chromium-driver`` on Debian)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@contextlib.contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 (a free port) for the duration; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def chromium(paths: tuple[str, str] | None = None) -> Iterator[object]:
    """A headless Chromium WebDriver with console and network logging, on a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = paths or find_chromium()
    if paths is None:
        raise RuntimeError("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    profile = tempfile.mkdtemp(prefix="memla-book-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=paths[1]))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("id", "name") and value:
                self.ids.add(value)


@dataclass
class PageReport:
    page: str
    images: int = 0
    links: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class SiteReport:
    pages: list[PageReport] = field(default_factory=list)
    screenshots: list[Path] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [f"{p.page}: {msg}" for p in self.pages for msg in p.problems]


_IMAGES_JS = """
const done = arguments[arguments.length - 1];
const imgs = Array.from(document.images);
imgs.forEach(i => { i.loading = 'eager'; });
Promise.all(imgs.map(i => i.complete ? Promise.resolve() :
    new Promise(r => { i.addEventListener('load', r); i.addEventListener('error', r); setTimeout(r, 10000); })))
  .then(() => done(imgs.map(i => [i.currentSrc || i.src, i.naturalWidth])));
"""


def _fetch(url: str, cache: dict[str, tuple[int, str]]) -> tuple[int, str]:
    if url not in cache:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = resp.read()
                ctype = resp.headers.get("Content-Type", "")
                cache[url] = (resp.status, body.decode("utf-8", "replace") if "html" in ctype else "")
        except urllib.error.HTTPError as err:
            cache[url] = (err.code, "")
    return cache[url]


def _fragment_exists(html: str, fragment: str) -> bool:
    parser = _Ids()
    parser.feed(html)
    return fragment in parser.ids


def check_page(driver: object, base: str, page: str, fetched: dict[str, tuple[int, str]],
               root: Path | None = None) -> PageReport:
    """Load one page and return what is wrong with it (see the module docstring). ``root``: the served folder,
    to tell a link to a folder (which http.server would answer with a listing) from a link to a page."""
    report = PageReport(page)
    driver.get_log("performance")  # drop what earlier pages left
    driver.get(base + page)
    for entry in driver.get_log("browser"):
        if entry.get("level") == "SEVERE":
            report.problems.append(f"console error: {entry.get('message')}")
    images = driver.execute_async_script(_IMAGES_JS)
    report.images = len(images)
    report.problems += [f"image did not load: {src}" for src, width in images if not width]
    hrefs = driver.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    for href in sorted(set(hrefs)):
        if not href.startswith(base):
            continue  # external links (arXiv) are only links: nothing is fetched at view time
        report.links += 1
        url, fragment = urldefrag(href)
        status, body = _fetch(url, fetched)
        local = Path(root) / urlparse(url).path.lstrip("/") if root is not None else None
        if local is not None and local.is_dir() and not (local / "index.html").is_file():
            report.problems.append(f"link {href} -> a folder, not a page")
        elif status != 200:
            report.problems.append(f"link {href} -> HTTP {status}")
        elif fragment and body and not _fragment_exists(body, fragment):
            report.problems.append(f"link {href}: no id {fragment!r} on the target page")
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            url = msg["params"]["request"]["url"]
            if urlparse(url).scheme in ("http", "https", "ws", "wss") and not url.startswith(base):
                report.problems.append(f"request leaves the site: {url}")
    return report


def site_pages(html_dir: Path) -> list[str]:
    """Every HTML page of a built site, relative to its root (``index.html`` first)."""
    pages = sorted(str(p.relative_to(html_dir)) for p in Path(html_dir).rglob("*.html")
                   if not p.relative_to(html_dir).parts[0].startswith("_"))
    return sorted(pages, key=lambda p: (p != "index.html", p))


def check_site(html_dir: Path, *, screenshots: Mapping[str, Path] | None = None,
               pages: Sequence[str] | None = None, paths: tuple[str, str] | None = None) -> SiteReport:
    """Open ``pages`` (default: every page) of the site in ``html_dir``; ``screenshots``: page -> PNG to write."""
    html_dir = Path(html_dir)
    pages = list(pages) if pages is not None else site_pages(html_dir)
    out = SiteReport()
    fetched: dict[str, tuple[int, str]] = {}
    with serve(html_dir) as base, chromium(paths) as driver:
        for page in pages:
            report = check_page(driver, base, page, fetched, html_dir)
            log.info("%s: %d images, %d internal links, %d problems", page, report.images, report.links,
                     len(report.problems))
            out.pages.append(report)
            target = (screenshots or {}).get(page)
            if target is not None:
                target.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(target))
                out.screenshots.append(target)
    return out
