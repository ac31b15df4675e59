"""Mask algebra (independent = intersection, specific = edit set minus it), random controls, saving, sweeps,
and the suppression check on tiny models."""
from __future__ import annotations

import pytest

from memla_utils.attribution import AttributionConfig
from memla_utils.cache import ArtifactCache
from memla_utils.masks import (
    MaskConfig,
    NeuronMasks,
    RecordMasks,
    compute_record_masks,
    compute_run_mask_sets,
    counts_frame,
    independent_share_frame,
    intersection,
    jaccard,
    jaccard_matrix,
    language_neurons,
    load_record_masks,
    mask_path,
    masks_from_sets,
    masks_summary,
    notebook_mask_config,
    random_masks_like,
    run_masks,
    save_record_masks,
    steps_sweep,
    threshold_sweep,
    union,
)
from memla_utils.mkeb.record import EditTarget, Record, RecordError
from memla_utils.seeds import unit_seed
from memla_utils.testing import tiny_model

N = 16



def nm(**layers: list[int]) -> NeuronMasks:
    return NeuronMasks.from_sets({int(k[1:]): v for k, v in layers.items()}, N)


def make_record(languages=("en", "zh", "fr", "es")) -> Record:
    edits = {"en": EditTarget("The capital of {} is", "Japan", "Kyoto", "Tokyo"),
             "zh": EditTarget("{}的首都是", "日本", "京都", "東京"),
             "fr": EditTarget("La capitale du {} est", "Japon", "Kyoto", "Tokyo"),
             "es": EditTarget("La capital de {} es", "Japón", "Kioto", "Tokio")}
    return Record("jp", "capital", {l: edits[l] for l in languages},
                  paraphrase_prompts={"en": ["Japan's capital city is"]})


def test_independent_is_intersection_and_specific_the_rest():
    sets = {"en": nm(l0=[1, 2, 3], l2=[5]), "zh": nm(l0=[2, 3, 4], l2=[5, 6]), "fr": nm(l0=[3, 9], l2=[5]),
            "es": nm(l1=[7])}
    rm = masks_from_sets("r", "zh", sets, ["en", "zh", "fr"])
    assert rm.independent.to_sets() == {0: {3}, 2: {5}}
    assert rm.specific.to_sets() == {0: {2, 4}, 2: {6}}
    assert rm.edit_language == "zh" and rm.example_id == "r"
    # specific and independent are disjoint and together give the edit language's set
    assert (rm.specific & rm.independent).total == 0
    assert (rm.specific | rm.independent).to_sets() == sets["zh"].to_sets()
    # an edit language outside the independence list still loses the independent neurons
    assert masks_from_sets("r", "es", sets, ["en", "zh", "fr"]).specific.to_sets() == {1: {7}}


def test_intersection_union_jaccard():
    a, b = nm(l0=[1, 2], l1=[3]), nm(l0=[2, 5])
    assert intersection([a, b]).to_sets() == {0: {2}}
    assert intersection([a, b]).layers == [0]
    assert union([a, b]).to_sets() == {0: {1, 2, 5}, 1: {3}}
    assert jaccard(a, b) == pytest.approx(1 / 4)
    assert jaccard(NeuronMasks(N), NeuronMasks(N)) == 1.0
    with pytest.raises(ValueError, match="no neuron sets"):
        intersection([])


def test_random_masks_like_keeps_counts_and_is_seeded():
    m = nm(l0=[1, 2, 3], l3=[4])
    r1, r2, r3 = random_masks_like(m, 0), random_masks_like(m, 0), random_masks_like(m, 1)
    assert r1.counts() == m.counts()
    assert r1.to_sets() == r2.to_sets()
    assert r1.to_sets() != r3.to_sets()
    assert random_masks_like(NeuronMasks(N), 0).total == 0


def test_save_and_load_record_masks(tmp_path):
    rm = RecordMasks("capital:JP/x", "en", specific=nm(l0=[1], l2=[3, 4]), independent=nm(l1=[0]))
    path = save_record_masks(rm, tmp_path)
    assert path.parent == tmp_path and path.suffix == ".safetensors" and "/" not in path.name[:-12]
    back = load_record_masks(path)
    assert (back.example_id, back.edit_language) == ("capital:JP/x", "en")
    assert back.specific.to_sets() == rm.specific.to_sets() and back.independent.to_sets() == rm.independent.to_sets()
    assert back.specific.n_neurons == N
    rm.specific.save(tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="not a record-masks file"):
        load_record_masks(tmp_path / "plain.safetensors")


def test_mask_config_validation():
    assert MaskConfig().independent_languages == ("en", "zh", "fr")
    assert MaskConfig(independent_languages="all").languages_for(make_record()) == ["en", "zh", "fr", "es"]
    assert MaskConfig().languages_for(make_record(("en", "zh", "es"))) == ["en", "zh"]
    with pytest.raises(ValueError, match="MaskConfig.independent_languages"):
        MaskConfig(independent_languages=("en", "xx"))
    with pytest.raises(ValueError, match="MaskConfig.attribution"):
        MaskConfig(attribution={"steps": 3})


def test_compute_record_masks_on_a_tiny_model(tmp_path):
    lm = tiny_model("llama")
    cache = ArtifactCache(tmp_path)
    cfg = MaskConfig(attribution=AttributionConfig(steps=3))
    record = make_record()
    rm = compute_record_masks(lm, record, "en", cfg, cache)
    sets = language_neurons(lm, record, ["en", "zh", "fr"], cfg.attribution, cache)
    assert rm.independent.to_sets() == intersection([sets["en"], sets["zh"], sets["fr"]]).to_sets()
    assert rm.specific.to_sets() == (sets["en"] - rm.independent).to_sets()
    assert sets["en"].total > 0 and rm.specific.n_neurons == lm.adapter.n_neurons
    # es was not needed: nothing attributed for it; a second call computes nothing new
    n_files = len(list(tmp_path.rglob("*.safetensors")))
    assert n_files == 4  # en edit + en paraphrase + zh + fr
    compute_record_masks(lm, record, "zh", cfg, cache)
    assert len(list(tmp_path.rglob("*.safetensors"))) == n_files
    with pytest.raises(RecordError, match="'jp'.*'de'"):
        compute_record_masks(lm, record, "de", cfg, cache)


def test_frames_and_sweeps(tmp_path):
    lm = tiny_model("gpt2")
    cache = ArtifactCache(tmp_path)
    cfg = AttributionConfig(steps=3, use_paraphrases=False)
    record = make_record()
    sets = language_neurons(lm, record, ["en", "zh"], cfg, cache)
    counts = counts_frame({("jp", l): s for l, s in sets.items()}, lm.adapter.n_layers)
    assert len(counts) == 2 * lm.adapter.n_layers
    assert counts.groupby("language")["n"].sum().to_dict() == {l: s.total for l, s in sets.items()}
    mat = jaccard_matrix({"jp": sets}, ["en", "zh"])
    assert mat.loc["en", "en"] == 1.0 and mat.loc["en", "zh"] == pytest.approx(jaccard(sets["en"], sets["zh"]))
    rm = masks_from_sets("jp", "en", sets, ["en", "zh"])
    share = independent_share_frame([rm], lm.adapter.n_layers)
    assert share["independent"].sum() == rm.independent.total and share["specific"].sum() == rm.specific.total
    from memla_utils.attribution import record_attributions

    atts = {("jp", "en"): record_attributions(lm, record, "en", cfg, cache)["en"]}
    sweep = threshold_sweep(atts, [0.1, 0.3, 0.9])
    assert sweep.set_index("threshold")["n_neurons"].is_monotonic_decreasing
    assert sweep.set_index("threshold").loc[0.3, "jaccard_vs_reference"] == 1.0
    steps = steps_sweep(lm, record, "en", [2, 3], cfg, cache)
    assert list(steps["steps"]) == [2, 3]
    assert steps.set_index("steps").loc[3, "jaccard_vs_max_steps"] == 1.0


def test_suppression_effect_and_sanity_table(tmp_path):
    from memla_utils.suppression import SanityConfig, neuron_sanity_check, sanity_effects, suppression_effect

    lm = tiny_model("llama")
    cache = ArtifactCache(tmp_path)
    cfg = AttributionConfig(steps=3)
    record = make_record(("en", "zh"))
    kn = language_neurons(lm, record, ["en"], cfg, cache)["en"]
    assert suppression_effect(lm, record, "en", kn, 1.0, config=cfg) == pytest.approx(0.0, abs=1e-6)
    assert suppression_effect(lm, record, "en", NeuronMasks(lm.adapter.n_neurons), 0.0, config=cfg) == 0.0
    down = suppression_effect(lm, record, "en", kn, 0.0, config=cfg)
    assert down != 0.0 and down >= -1.0
    absolute = suppression_effect(lm, record, "en", kn, 0.0, config=cfg, relative=False)
    assert (absolute < 0) == (down < 0)
    with pytest.raises(ValueError, match="factor"):
        suppression_effect(lm, record, "en", kn, -1.0)
    # the sanity check hands in the unscaled log-probabilities it computed once: the same effect, bit for bit
    from memla_utils.suppression import unscaled_logprobs

    before = unscaled_logprobs(lm, record, "en", cfg)
    for factor in (0.0, 2.0):
        assert suppression_effect(lm, record, "en", kn, factor, config=cfg, before=before) == \
            suppression_effect(lm, record, "en", kn, factor, config=cfg)
    effects = sanity_effects(lm, [record], ["en", "zh"], cfg, cache, SanityConfig(factors=(0.0, 2.0)))
    for row in effects[effects["neurons"] == "knowledge"].itertuples():
        sets = language_neurons(lm, record, [row.language], cfg, cache)
        assert row.effect == suppression_effect(lm, record, row.language, sets[row.language], row.factor, config=cfg)
    assert len(effects) == 2 * 2 * 2  # languages x factors x {knowledge, random}
    assert set(effects["neurons"]) == {"knowledge", "random"}
    summary = neuron_sanity_check(lm, [record, make_record(("en", "zh"))], ["en"], cfg, cache, n_boot=200)
    assert set(summary["language"]) == {"en", "all"}
    assert set(summary["neurons"]) == {"knowledge", "random", "difference"}
    ok = summary.dropna()
    assert ((ok["ci_low"] <= ok["mean"] + 1e-12) & (ok["mean"] <= ok["ci_high"] + 1e-12)).all()


def test_sanity_effects_are_cached_per_record_and_language_and_mirrored_durably(tmp_path, monkeypatch):
    """A later part of a multi-session run reads a (record, language)'s effects instead of recomputing them: the
    same rows, from the local cache or (on a fresh machine) from the durable one; other settings are other keys."""
    import memla_utils.suppression as sup

    lm = tiny_model("llama")
    cfg = AttributionConfig(steps=3)
    records = [make_record(("en", "zh")), make_record(("en", "zh"))]
    records[1] = type(records[1])(**{**records[1].__dict__, "example_id": "jp2"})
    first_cache = ArtifactCache(tmp_path / "local", durable=tmp_path / "durable")
    first = sup.sanity_effects(lm, records, ["en", "zh"], cfg, first_cache, sup.SanityConfig())
    assert len(list((tmp_path / "durable" / "sanity").glob("*.json"))) == 2 * 2  # records x languages
    calls = []
    real = sup._language_effects
    monkeypatch.setattr(sup, "_language_effects", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    fresh = ArtifactCache(tmp_path / "other-machine", durable=tmp_path / "durable")  # empty local cache
    again = sup.sanity_effects(lm, records, ["en", "zh"], cfg, fresh, sup.SanityConfig())
    assert calls == [] and again.equals(first)
    # another seed draws other random sets: computed, not read
    sup.sanity_effects(lm, records[:1], ["en"], cfg, fresh, sup.SanityConfig(seed=5))
    assert calls == ["en"]


def test_sanity_random_sets_are_per_unit_not_per_position():
    """A (record, language)'s rows (its random sets' effects included) are the same whether the record runs
    alone, first or after another record, and whatever the other languages are: its random sets are seeded from
    the run seed, the record, the language and the draw (seeds.unit_seed), not from positions in the lists. (The
    old seeds, ``seed + 1000 i + 10 j + d``, gave the second record and the second language other random sets.)"""
    import memla_utils.suppression as sup

    lm = tiny_model("llama")
    cfg = AttributionConfig(steps=3)
    first = make_record(("en", "zh"))
    second = type(first)(**{**first.__dict__, "example_id": "jp2"})
    sanity = sup.SanityConfig(random_draws=2)

    def rows(records, languages, example_id="jp2"):  # every row computed: a disabled cache reads nothing
        eff = sup.sanity_effects(lm, records, languages, cfg, ArtifactCache(enabled=False), sanity)
        return eff[eff["example_id"] == example_id].reset_index(drop=True)

    alone = rows([second], ["en", "zh"])
    assert len(alone) == 2 * 2 * 2 and (alone["n_neurons"] > 0).all()  # languages x factors x {knowledge, random}
    assert rows([second, first], ["en", "zh"]).equals(alone)
    assert rows([first, second], ["en", "zh"]).equals(alone)
    zh_alone = rows([second], ["zh"])
    assert zh_alone.equals(alone[alone["language"] == "zh"].reset_index(drop=True))
    # the seeds are the documented per-unit ones; other records, languages, draws and run seeds get other seeds
    seeds = sup.random_set_seeds(sanity, "jp2", "zh")
    assert seeds == [unit_seed(0, sup.RANDOM_SET_PURPOSE, "jp2", "zh", d) for d in (0, 1)]
    assert len({*seeds, *sup.random_set_seeds(sanity, "jp", "zh"), *sup.random_set_seeds(sanity, "jp2", "en"),
                *sup.random_set_seeds(sup.SanityConfig(seed=1, random_draws=2), "jp2", "zh")}) == 8
    with pytest.raises(ValueError, match="random_draws"):
        sup.random_set_seeds(sup.SanityConfig(random_draws=0), "jp2", "zh")


def test_run_masks_reuses_saved_masks_only_when_made_the_same_way(tmp_path, monkeypatch):
    import memla_utils.mask_files as masks_mod  # where run_masks looks compute_record_masks up

    lm = tiny_model("llama")
    cache = ArtifactCache(tmp_path / "cache")
    record = make_record()
    cfg = notebook_mask_config("en,zh,fr", steps=3, attribution_prompts="edit")
    first = run_masks(lm, [record], ["en", "zh"], tmp_path / "masks", cfg, cache)
    assert mask_path(tmp_path / "masks", "jp", "zh").is_file()
    calls = []
    real = masks_mod.compute_record_masks
    monkeypatch.setattr(masks_mod, "compute_record_masks", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    again = run_masks(lm, [record], ["en", "zh"], tmp_path / "masks", cfg, cache)
    assert calls == [] and again[("jp", "en")].specific.to_sets() == first[("jp", "en")].specific.to_sets()
    summary = masks_summary(again, [record])
    assert list(summary["edit language"]) == ["en", "zh"] and summary["prompt"][1] == "日本的首都是"
    assert summary["specific neurons"][0] == again[("jp", "en")].specific.total
    other = notebook_mask_config("en,zh,fr", steps=3, attribution_prompts="all")  # + paraphrases: other masks
    run_masks(lm, [record], ["en"], tmp_path / "masks", other, cache)
    assert calls == ["en"]
    assert cfg.attribution.use_paraphrases is False and other.attribution.use_paraphrases is True
    assert notebook_mask_config("all").independent_languages == "all"
    with pytest.raises(ValueError, match="attribution_prompts"):
        notebook_mask_config(attribution_prompts="some")


def test_notebook_03_masks_are_the_ones_04_reuses(tmp_path, monkeypatch):
    import memla_utils.mask_files as masks_mod  # where run_masks looks compute_record_masks up

    lm = tiny_model("llama")
    cache = ArtifactCache(tmp_path / "cache")
    record = make_record()
    cfg = notebook_mask_config("en,zh,fr", steps=3)
    run = compute_run_mask_sets(lm, [record], ["en", "zh"], ["en", "zh", "fr", "es"], cfg, tmp_path / "m", cache)
    assert set(run.sets["jp"]) == {"en", "zh", "fr", "es"} and len(run.masks) == len(run.paths) == 2
    direct = compute_record_masks(lm, record, "zh", cfg, cache)
    assert run.masks[1].independent.to_sets() == direct.independent.to_sets()
    assert run.masks[1].specific.to_sets() == direct.specific.to_sets()
    monkeypatch.setattr(masks_mod, "compute_record_masks", lambda *a, **k: pytest.fail("recomputed"))
    reused = run_masks(lm, [record], ["en", "zh"], tmp_path / "m", cfg, cache)
    assert reused[("jp", "en")].specific.to_sets() == run.masks[0].specific.to_sets()


def test_saved_masks_carry_the_attribution_method_and_are_not_reused_across_methods(tmp_path, monkeypatch):
    import memla_utils.mask_files as masks_mod
    from memla_utils.masks import mask_source, saved_method

    lm = tiny_model("gpt2")
    cache = ArtifactCache(tmp_path / "cache")
    record = make_record(("en", "zh"))
    m4m = notebook_mask_config("en,zh", steps=3, attribution_prompts="edit")
    exact = notebook_mask_config("en,zh", steps=3, attribution_prompts="edit", attribution_method="exact")
    assert mask_source(lm, m4m) != mask_source(lm, exact)
    run_masks(lm, [record], ["en"], tmp_path / "masks", exact, cache)
    path = mask_path(tmp_path / "masks", "jp", "en")
    assert saved_method(path) == "exact"
    calls = []
    real = masks_mod.compute_record_masks
    monkeypatch.setattr(masks_mod, "compute_record_masks", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    run_masks(lm, [record], ["en"], tmp_path / "masks", m4m, cache)  # made by the other method: recomputed
    assert [c.attribution.method for c in calls] == ["memla4mke"] and saved_method(path) == "memla4mke"
    run_masks(lm, [record], ["en"], tmp_path / "masks", m4m, cache)
    assert len(calls) == 1


def test_method_overlap_compares_the_two_variants(tmp_path):
    from memla_utils.attribution import record_attributions
    from memla_utils.masks import method_overlap

    lm = tiny_model("qwen2")
    cache = ArtifactCache(tmp_path)
    cfg = AttributionConfig(steps=3, use_paraphrases=False)
    records = [make_record(("en", "zh")), make_record(("en",))]
    table = method_overlap(lm, records, ["en", "zh", "fr"], cfg, cache)
    assert list(zip(table["example_id"], table["language"])) == [("jp", "en"), ("jp", "zh"), ("jp", "en")]
    sets = {m: language_neurons(lm, records[0], ["en"], AttributionConfig(method=m, steps=3, use_paraphrases=False),
                                cache)["en"] for m in ("memla4mke", "exact")}
    row = table.iloc[0]
    assert row["n_memla4mke"] == sets["memla4mke"].total > 0 and row["n_exact"] == sets["exact"].total > 0
    assert row["n_shared"] == (sets["memla4mke"] & sets["exact"]).total
    assert row["jaccard"] == pytest.approx(jaccard(sets["memla4mke"], sets["exact"]))
    assert ((table["jaccard"] >= 0) & (table["jaccard"] <= 1)).all() and table["spearman"].between(-1, 1).all()
    # nothing recomputed: both methods' scores were cached by the table
    n_files = len(list(tmp_path.rglob("*.safetensors")))
    record_attributions(lm, records[0], ["en", "zh"], AttributionConfig(method="exact", steps=3,
                                                                        use_paraphrases=False), cache)
    assert len(list(tmp_path.rglob("*.safetensors"))) == n_files == 6  # (2 + 1 prompts) x 2 methods


def test_mask_sets_attribute_the_independence_languages_even_when_not_asked(tmp_path):
    lm = tiny_model("llama")
    cache = ArtifactCache(tmp_path / "cache")
    record = make_record()
    cfg = notebook_mask_config("en,zh,fr", steps=3)
    run = compute_run_mask_sets(lm, [record], ["en"], ["en"], cfg, tmp_path / "m", cache)  # fr, zh: for the masks
    assert set(run.sets["jp"]) == {"en", "zh", "fr"}
    direct = compute_record_masks(lm, record, "en", cfg, cache)
    assert run.masks[0].independent.to_sets() == direct.independent.to_sets()
    assert run.masks[0].specific.to_sets() == direct.specific.to_sets()
