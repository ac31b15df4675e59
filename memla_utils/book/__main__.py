"""``python -m memla_utils.book``: build the book of a preset's last run, then check it in headless Chromium.

    python -m memla_utils.book                        # runs/small/notebooks (executed) -> runs/small/book/html
    python -m memla_utils.book --preset full
    python -m memla_utils.book --notebooks source     # the output-free notebooks/ (what CI has)
    python -m memla_utils.book --no-browser           # skip the Chromium check and the screenshots
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ..config import PRESETS
from .build import NOTEBOOK_MODES, BookConfig, BookError, build_book

log = logging.getLogger("memla_utils.book")

#: The pages photographed after the build (into <out_dir>/screenshots/): the landing page and one notebook.
SCREENSHOT_PAGES: dict[str, str] = {"index.html": "landing.png", "notebooks/04_memla.html": "notebook_04_memla.png"}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m memla_utils.book", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small", help="whose run to show (default small)")
    ap.add_argument("--notebooks", choices=NOTEBOOK_MODES, default="executed",
                    help="executed: the run's executed copies (default); source: notebooks/ without outputs; "
                         "auto: executed where there is a copy")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default runs/<preset>/book)")
    ap.add_argument("--no-browser", action="store_true", help="skip the headless Chromium check and screenshots")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        result = build_book(BookConfig(preset=args.preset, notebooks=args.notebooks, out_dir=args.out))
    except BookError as err:
        print(f"book: {err}", file=sys.stderr)
        return 1
    print(f"book: {result.index} ({result.seconds:.1f} s, {result.glued_values} glued values match their files)")
    if args.no_browser:
        return 0
    from .browser import check_site, find_chromium

    if find_chromium() is None:
        log.warning("chromium/chromedriver not installed: the browser check and screenshots are skipped "
                    "(apt-get install chromium chromium-driver)")
        return 0
    shots_dir = result.html_dir.parent / "screenshots"
    report = check_site(result.html_dir, screenshots={p: shots_dir / n for p, n in SCREENSHOT_PAGES.items()})
    if report.problems:
        print("book: the browser check found problems:\n  " + "\n  ".join(report.problems), file=sys.stderr)
        return 1
    print(f"book: {len(report.pages)} pages open in Chromium with no console error, every image and internal "
          f"link loading; screenshots: {', '.join(str(p) for p in report.screenshots)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
