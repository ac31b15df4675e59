"""Progress bars: the one place that chooses tqdm's flavour for the package.

Text bars (``tqdm.std.tqdm``, written to stderr) in every context, notebooks included. ``tqdm.auto`` would draw
ipywidgets bars inside Jupyter; ipywidgets is not in the lock file, so every bar in an executed notebook began with
tqdm's "IProgress not found" warning, and a widget bar saved by papermill shows nothing in a static view of the
notebook (GitHub, nbviewer, the book). A text bar shows the same rate and time-left estimate in a terminal, a
Jupyter front end and a saved notebook alike. Import ``tqdm`` from here, never from ``tqdm.auto``
(``tests/unit/test_progress.py`` checks the package).
"""
from __future__ import annotations

from tqdm.std import tqdm

__all__ = ["tqdm"]
