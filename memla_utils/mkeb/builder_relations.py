"""The relations of MKEB and how the MKEB builder turns the facts of one relation into records.

:data:`RELATIONS` are the five relations (Wikidata ids as in MQuAKE/CounterFact); :class:`BuildConfig` says what
to build and :class:`BuildStats` what was kept and dropped. :class:`_RelationBuilder` does one relation: it drops
facts whose prompts give the true answer away, draws ``target_new`` with a seeded RNG from the same relation's
objects (never a true object), samples neighbours (other subjects of the relation) and fills the two-hop
questions whose answer follows the edit. No I/O: :func:`memla_utils.mkeb.builder.build_records` loads the facts
and templates and runs it per relation.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..languages import MKEB_LANGUAGES
from .builder_templates import LanguageTemplates, RelationTemplates, fill, leaks
from .facts import Entity, Fact, FactTables
from .record import EditTarget, Record


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
