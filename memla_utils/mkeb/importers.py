"""Read public multilingual knowledge-editing benchmarks into MKEB records.

Each importer maps a dataset's own fields onto the schema and leaves what the dataset lacks explicitly empty
(``target_true=None`` for zsRE-derived sets, no neighbourhood in MLaKE, ...) so the metrics that need it are
reported as not available. Language codes are normalized (MzsRE ``cz``/``du`` → ``cs``/``nl``).

Every importer reads each language's side of a row by that language's key (never by position), and by default
checks its output with :func:`memla_utils.mkeb.langcheck.check_languages`: a language whose views are mostly in
another language raises :class:`LanguageMismatchError` naming the file and language; the report is attached to
the returned list (``records.language_report``); ``skip_bad=True`` also drops single wrong views.

Datasets: MzsRE (ReMaKE), Bi-ZsRE, MLaKE, BMIKE-53, and the official MKEB file ``MLiKE_v2.json``.

Modules: :mod:`.importers_common` (reading files and fields, the zsRE-style side, skipping bad records),
:mod:`.importers_zsre` (MzsRE, Bi-ZsRE, BMIKE-53), :mod:`.importers_mlake` (MLaKE), :mod:`.importers_mlike` (the
official MKEB file); this module is the entry point: it lists the datasets (:data:`DATASETS`), imports every one
present (:func:`import_all`) and re-exports the importers.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cache import PROJECT_ROOT
from .importers_mlake import MLAKE_LANGUAGES, import_mlake
from .importers_mlike import import_mlike, read_test_ids
from .importers_zsre import BMIKE_SETS, MZSRE_LANGUAGES, import_bizsre, import_bmike53, import_mzsre
from .io import LoadReport, read_records
from .langcheck import CheckedRecords, LanguageMismatchError
from .record import Record
from .subjects import slot_prompt  # whole-word subject search (re-exported)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dataset:
    """Where a dataset sits under ``shared/data`` and how to import it."""

    name: str
    relative_path: str
    importer: Callable[..., list[Record]]
    kwargs: tuple[tuple[str, Any], ...] = ()


#: Every importable dataset, by the folder layout documented in each ``PROVENANCE.md``.
DATASETS: tuple[Dataset, ...] = (
    Dataset("MzsRE", "mzsre/test", import_mzsre),
    Dataset("Bi-ZsRE", "bi-zsre/bizsre_test.json", import_bizsre),
    Dataset("MLaKE", "mlake", import_mlake),
    *(Dataset(f"BMIKE-53/{s}", "bmike53", import_bmike53, (("set_name", s),)) for s in BMIKE_SETS),
    Dataset("MKEB (official)", "mkeb/MLiKE_v2.json", import_mlike),
)


def resolve_shared_dir(shared_data_dir: str | Path = "../shared/data") -> Path:
    """A relative ``shared_data_dir`` is taken relative to the project root (the notebook parameter)."""
    p = Path(shared_data_dir)
    return p if p.is_absolute() else (PROJECT_ROOT / p).resolve()


def import_all(shared_data_dir: str | Path = "../shared/data", languages: str | Sequence[str] | None = None, *,
               skip_bad: bool = False, language_check: bool = True) -> dict[str, CheckedRecords]:
    """Import every dataset present under ``shared_data_dir``; absent ones are logged and left out. Each
    list carries its ``language_report`` (a mislabelled language raises LanguageMismatchError)."""
    root = resolve_shared_dir(shared_data_dir)
    found: dict[str, list[Record]] = {}
    for ds in DATASETS:
        p = root / ds.relative_path
        if not p.exists():
            log.info("%s: not found at %s, skipped", ds.name, p)
            continue
        try:
            found[ds.name] = ds.importer(p, languages=languages, skip_bad=skip_bad, language_check=language_check,
                                         **dict(ds.kwargs))
        except FileNotFoundError as exc:
            log.info("%s: %s, skipped", ds.name, exc)
    return found


__all__ = ["BMIKE_SETS", "DATASETS", "MLAKE_LANGUAGES", "MZSRE_LANGUAGES", "CheckedRecords", "Dataset", "LanguageMismatchError", "LoadReport", "import_all", "import_bizsre", "import_bmike53",
           "import_mlake", "import_mlike", "import_mzsre", "read_records", "read_test_ids", "resolve_shared_dir",
           "slot_prompt"]
