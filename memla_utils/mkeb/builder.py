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
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from itertools import zip_longest
from pathlib import Path

from ..cache import PROJECT_ROOT
from ..languages import MKEB_LANGUAGES, validate_languages
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


@dataclass
class BuildResult:
    records: list[Record]
    stats: BuildStats
    records_path: Path
    card_path: Path


def build_mkeb(seed: int = 0, out_dir: str | Path = DEFAULT_OUT_DIR, *,
               languages: Sequence[str] = MKEB_LANGUAGES, n_neighbors: int = BuildConfig.n_neighbors,
               records_name: str = "mkeb.jsonl") -> BuildResult:
    """Build MKEB and write ``out_dir/<records_name>`` and ``out_dir/CARD.md`` (the entry point of notebook 01
    and ``python -m memla_utils.mkeb.builder``)."""
    from .card import write_card
    from .io import save_records

    out = Path(out_dir)
    out = out if out.is_absolute() else PROJECT_ROOT / out
    config = BuildConfig(seed=seed, languages=tuple(languages), n_neighbors=n_neighbors)
    stats = BuildStats()
    records = build_records(config, stats=stats)
    records_path = save_records(records, out / records_name)
    card_path = write_card(records, stats, config, out / "CARD.md")
    return BuildResult(records, stats, records_path, card_path)


if __name__ == "__main__":  # pragma: no cover - ``python -m memla_utils.mkeb.builder`` (used by the Makefile)
    logging.basicConfig(level=logging.INFO)
    res = build_mkeb()
    log.info("wrote %s (%d records) and %s", res.records_path, len(res.records), res.card_path)
