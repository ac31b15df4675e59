"""The named run configurations (``PRESETS``) and the catalogues they choose from.

``ALL_METHODS`` (every method the companion can run), ``RECORD_SOURCES`` (where a run's records can come from),
the MzsRE run's languages and the methods of the other-benchmark presets. A preset is a dict of notebook
parameters that :meth:`memla_utils.config.RunConfig.from_params` starts from (``preset=...``) and the batch driver
passes to every notebook (``--preset``): ``small`` (the CPU default, minutes), ``medium`` (issue 16, a
multi-session run), ``mzsre`` / ``bizsre`` (the public zsRE benchmarks) and ``full`` (the paper's scale, for a
GPU). Re-exported by :mod:`memla_utils.config`.
"""
from __future__ import annotations

from typing import Any

from .languages import MKEB_LANGUAGES

#: Every method the companion can run, in table order (MEMLA first, then its ablations, then baselines).
ALL_METHODS: tuple[str, ...] = ("memla", "memla-lse", "memla-lie", "memla-unmasked", "memla-random",
                                "memla-zero-hidden",
                                "ft", "ft-l", "lora", "rome", "memit", "pmet", "mend", "ike")


#: Where a run's records come from (``RunConfig.dataset``) -> the name of its entry in
#: :data:`memla_utils.mkeb.importers.DATASETS` (which knows the path under ``shared_data_dir`` and the importer),
#: or ``None`` for the companion's own MKEB file (``RunConfig.mkeb_path``).
RECORD_SOURCES: dict[str, str | None] = {"mkeb": None, "mzsre": "MzsRE", "bizsre": "Bi-ZsRE"}

#: MzsRE's twelve languages (ISO codes; its files say cz for cs and du for nl), MKEB's order first: the ``mzsre``
#: preset evaluates all of them. Every one passes ``languages.validate_languages`` (KNOWN_LANGUAGES); cs, nl, tr
#: and vi have no dataset-build prose (``corpus.ISO639_3`` covers the 12 MKEB languages only), so the parts that
#: need prose -- ROME/MEMIT/PMET key statistics (notebook 05) and general-ability perplexity (notebook 06) -- use
#: :meth:`RunConfig.prose_languages`, and notebook 00's knowledge probe (MKEB languages) does not cover them.
MZSRE_RUN_LANGUAGES: tuple[str, ...] = ("en", "zh", "fr", "de", "es", "pt", "ru", "th", "cs", "nl", "tr", "vi")


#: The methods of the mzsre / bizsre presets: MEMLA, LSE only, LIE only and the three strongest baselines of the
#: medium run (issue 16), by :func:`memla_utils.report.ranking.baseline_ranking` on its complete notebook 05
#: (100 records, cross-lingual ES/PS/NS score, 2026-12-02): IKE 35.3 [31.2, 39.2], FT 30.5 [26.2, 34.7], MEMIT 28.8
#: [24.7, 32.8]; then ROME 26.5, PMET 26.0, MEND 23.8. A test
#: (``test_other_benchmark_presets_run_the_three_strongest_baselines_of_the_medium_run``) checks them against the
#: committed results. (Until then the provisional choice was ft, rome, memit.)
OTHER_BENCHMARK_METHODS: tuple[str, ...] = ("memla", "memla-lse", "memla-lie", "ike", "ft", "memit")

#: The medium run's records and languages (issue 16), shared by ``medium`` and ``medium-paper``: the base-run
#: check of notebook 07 (``report.base_run.MUST_MATCH``) needs both to be the same experiment.
MEDIUM_RECORDS: dict[str, Any] = {"languages": list(MKEB_LANGUAGES), "edit_languages": ["en", "zh"], "n_records": 100,
                                  "record_selection": "stratified"}
#: The paper's baselines of the medium run (issue 16: FT, ROME, MEMIT, PMET, MEND, IKE; FT-L and LoRA stay in the
#: small preset).
MEDIUM_BASELINES: tuple[str, ...] = ("ft", "rome", "memit", "pmet", "mend", "ike")

PRESETS: dict[str, dict[str, Any]] = {
    "small": {},
    # issue 16: >= 100 records stratified over the builder's 5 relations, edit languages en and zh, evaluated in all
    # 12; MEMLA, LSE, LIE and the paper's baselines (FT-L, LoRA, unmasked/random masks stay in the small preset);
    # a multi-session run whose results live in the tracked results/medium/ (figures in figures/medium/)
    "medium": {**MEDIUM_RECORDS, "methods": ["memla", "memla-lse", "memla-lie", *MEDIUM_BASELINES],
               # notebooks 02/03 attribute only the languages the masks use (edit + independence languages, as
               # memla4mke): all 12 would quadruple the run's largest stage (benchmarks/bench_roofline.py)
               "attribution_languages": "masks",
               # notebook 06: the claims table's general-ability claim reads MEMLA's single edits. "auto" would be
               # every method on 100 single edits, each probed in 12 languages, plus 10/50/100 sequential edits:
               # about 30 h on 2 cores, in a notebook that cannot stop at a part's deadline (batch.NOT_RESUMABLE).
               # 20 MEMLA single edits (the claims' minimum n) and 10/20 sequential edits: one part of about 1.3 h.
               # Measured in part 10 (2026-12-02): 212 s per single edit (12 languages of prose through the 262k
               # head, before and after), so the earlier 40 / "10,40" (estimated 1.5 h) needed about 2.8 h, more
               # than a part; recorded apart from the run's identity (run_identity.SCOPED_PARAMETERS)
               "general_methods": "memla", "general_records": 20, "sequential_steps": "10,20",
               "run_dir": "results/medium", "figures_dir": "figures/medium"},
    # The medium run's baselines again at the paper's budget (notebook 05's "paper": every method's defaults, from
    # its paper), since the medium run's preset set no budget and "auto" is "cpu-small" on a CPU (README, medium
    # results). Only notebooks 00, 01, 05 and 07 run (batch.PRESET_NOTEBOOKS): MEMLA, LSE, LIE, general ability and
    # the neuron statistics are the medium run's, which notebook 07 reads from base_run_dir after checking that it
    # is the same experiment (model, seed, records, languages: report.base_run). A multi-session run.
    "medium-paper": {**MEDIUM_RECORDS, "methods": list(MEDIUM_BASELINES), "budget": "paper",
                     "base_run_dir": "results/medium", "run_dir": "results/medium-paper",
                     "figures_dir": "figures/medium-paper"},
    # budget "paper" (notebook 05's baseline hyperparameters, baselines.baseline_overrides): issue 16 asks for the
    # paper's; without it a CPU run resolves "auto" to "cpu-small", as the medium run did (README, medium results).
    # issue 16, "other benchmarks, same methods": MEMLA, LSE, LIE (+ the unedited model, always run) and three
    # baselines on >= 50 records of the public MzsRE / Bi-ZsRE test sets, read in place from shared_data_dir by
    # mkeb.importers; attribution and masks per record as for MKEB; multi-session runs like medium
    # (batch.MULTI_SESSION_PRESETS), results in the tracked results/<preset>/. The baselines are the three strongest
    # of the medium run (OTHER_BENCHMARK_METHODS, decided on its complete notebook 05). record_selection "stratified" = one draw seeded by `seed` from the whole file (zsRE files carry no
    # relation label: one stratum), not the file's first records.
    # MzsRE: English edits evaluated in en + its 11 other languages. All 12 pass languages.validate_languages;
    # cs, nl, tr, vi have no dataset-build prose, so ROME/MEMIT key statistics and general-ability perplexity use
    # the other 8 (RunConfig.prose_languages). Independence languages en, zh, fr (memla4mke), all in MzsRE.
    "mzsre": {"dataset": "mzsre", "languages": list(MZSRE_RUN_LANGUAGES), "edit_languages": ["en"],
              "n_records": 50, "record_selection": "stratified", "methods": list(OTHER_BENCHMARK_METHODS),
              "attribution_languages": "masks", "budget": "paper",
              "run_dir": "results/mzsre", "figures_dir": "figures/mzsre"},
    # Bi-ZsRE: edits in en and in zh, each evaluated in en and zh. It has no fr, so the independence languages are
    # en and zh (said here rather than left to MaskConfig.languages_for, which would drop fr from en,zh,fr
    # silently): LIE's neurons are those shared by en and zh only, a larger set than MKEB's en ∩ zh ∩ fr.
    "bizsre": {"dataset": "bizsre", "languages": ["en", "zh"], "edit_languages": ["en", "zh"], "n_records": 50,
               "record_selection": "stratified", "methods": list(OTHER_BENCHMARK_METHODS),
               "independent_languages": ["en", "zh"], "attribution_languages": "masks", "budget": "paper",
               "run_dir": "results/bizsre", "figures_dir": "figures/bizsre"},
    "full": {"device": "auto", "dtype": "auto", "languages": list(MKEB_LANGUAGES), "edit_languages": ["en", "zh"],
             "n_records": 1000, "methods": list(ALL_METHODS), "run_dir": "runs/full"},
}


__all__ = ["ALL_METHODS", "MEDIUM_BASELINES", "MEDIUM_RECORDS", "MZSRE_RUN_LANGUAGES", "OTHER_BENCHMARK_METHODS", "PRESETS", "RECORD_SOURCES"]
