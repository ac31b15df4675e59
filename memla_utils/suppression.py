"""Do the knowledge neurons matter? Suppress (x0) or enhance (x2) them and watch P(true answer).

The knowledge-neurons claim the notebook tests rather than assumes: scaling a fact's neurons changes the
probability of its true answer much more than scaling the same number of random neurons in the same layers.
Neurons are scaled at the positions that predict the answer (the last prompt position and, for multi-token
answers, the teacher-forced positions that predict the later answer tokens), as in knowledge-neurons; the
scaling acts on the down projection's input (the neuron itself) for both attribution methods, including
``memla4mke``, which attributes the gate's pre-activation output of the same neuron index and, for later answer
tokens, greedy-extended rather than teacher-forced prompts.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from .attribution_config import AttributionConfig
from .attribution_records import record_items
from .cache import ArtifactCache, cache_key
from .cpu_workers import single_thread_on_cpu, workers_from_env
from .finite import naming, require_finite, require_finite_tensor
from .mask_compute import language_neurons
from .mkeb.record import Record
from .model_spec import ModelSpec
from .model_workers import pool_size, run_in_workers
from .models import LoadedModel
from .neuron_masks import NeuronMasks, random_masks_like
from .progress import tqdm
from .scoring import answer_logprob
from .seeds import unit_seed
from .text import JOIN_VERSION, build_batch

log = logging.getLogger(__name__)

#: Part of every cached sanity-check entry's key: bump it in the change that alters any effect's value.
SANITY_VERSION = 1


@torch.no_grad()
def _answer_logprobs(lm: LoadedModel, items: Sequence[tuple[str, str, str]], neurons: NeuronMasks | None,
                     factor: float) -> torch.Tensor:
    """Teacher-forced log P(answer) per item, with ``neurons`` scaled by ``factor`` from the last prompt position."""
    out = []
    for prompt, answer, lang in items:
        batch = build_batch(lm.tokenizer, [prompt], [answer], lang)
        start = int(batch.prompt_lengths[0]) - 1
        if neurons is None or neurons.total == 0:
            out.append(answer_logprob(lm.model, batch).float().cpu())
            continue
        sets = {l: torch.nonzero(m).flatten() for l, m in neurons.masks.items() if bool(m.any())}
        with lm.adapter.scale_neurons(sets, factor, positions=slice(start, None)):
            out.append(answer_logprob(lm.model, batch).float().cpu())
    return torch.cat(out)


def suppression_effect(lm: LoadedModel, record: Record, language: str, neurons: NeuronMasks, factor: float, *,
                       config: AttributionConfig | None = None, relative: bool = True,
                       before: torch.Tensor | None = None) -> float:
    """Change in P(true answer) when ``neurons`` are scaled by ``factor`` (0 = suppress, 2 = enhance).

    Averaged over the record's prompts in ``language`` (edit prompt, plus paraphrases when
    ``config.use_paraphrases``; the answer follows ``config.answer``). ``relative=True`` gives
    ``(P_after - P_before) / P_before`` (knowledge-neurons' "change ratio"), otherwise ``P_after - P_before``.
    ``before``: the unscaled log-probabilities of the same prompts (:func:`unscaled_logprobs`), when the caller
    already has them (the sanity check computes them once per record and language instead of once per call).
    """
    if factor < 0:
        raise ValueError(f"factor must be >= 0 (0 = suppress, 2 = enhance), got {factor}")
    items = record_items(record, language, config or AttributionConfig())
    where = f"suppression check: record {record.example_id!r}, language {language!r}, x{factor:g} on {neurons.total} " \
            f"neuron(s)"
    lp_before = require_finite_tensor((before if before is not None else _answer_logprobs(lm, items, None, 1.0))
                                      .double(), f"{where}, log P before")
    lp_after = require_finite_tensor(_answer_logprobs(lm, items, neurons, factor).double(), f"{where}, log P after")
    # (P_after - P_before) / P_before = exp(lp_after - lp_before) - 1: no 0/0 when P_before underflows
    change = torch.expm1(lp_after - lp_before) if relative else lp_after.exp() - lp_before.exp()
    return float(require_finite(float(change.mean()), f"{where}, effect"))


def unscaled_logprobs(lm: LoadedModel, record: Record, language: str,
                      config: AttributionConfig | None = None) -> torch.Tensor:
    """Teacher-forced log P(answer) of the record's prompts in ``language`` with no neuron scaled ``[prompts]``:
    the ``before`` of :func:`suppression_effect` (the same values it computes itself)."""
    return _answer_logprobs(lm, record_items(record, language, config or AttributionConfig()), None, 1.0)


@dataclass
class SanityConfig:
    """The sanity check's knobs: factors from knowledge-neurons (x0 suppress, x2 enhance); 1 random draw per fact."""

    factors: tuple[float, ...] = (0.0, 2.0)  # knowledge-neurons' suppress (x0) and enhance (x2)
    random_draws: int = 1                    # random sets per (record, language); the companion's choice
    seed: int = 0                            # run seed: each random set's seed is derived from it (random_set_seeds)
    relative: bool = True                    # knowledge-neurons' "change ratio"; False: absolute change in P


#: The purpose part of the random sets' per-unit seeds (:func:`memla_utils.seeds.unit_seed`).
RANDOM_SET_PURPOSE = "sanity-random-neurons"


def random_set_seeds(sanity: SanityConfig, example_id: str, language: str) -> list[int]:
    """The seeds of one (record, language)'s ``sanity.random_draws`` random neuron sets: draw ``d`` uses
    ``unit_seed(sanity.seed, "sanity-random-neurons", example_id, language, d)`` (:mod:`memla_utils.seeds`), so
    a record's random sets depend on nothing but the run seed, the record, the language and the draw: not on the
    other records, their order, the other languages or how the records are split across processes.

    Raises ``ValueError`` when ``sanity.random_draws < 1`` (the random control needs at least one set).
    """
    if sanity.random_draws < 1:
        raise ValueError(f"random_draws must be >= 1, got {sanity.random_draws}")
    return [unit_seed(sanity.seed, RANDOM_SET_PURPOSE, example_id, language, d) for d in range(sanity.random_draws)]


def _effects_key(lm: LoadedModel, record: Record, language: str, config: AttributionConfig, sanity: SanityConfig,
                 seeds: Sequence[int]) -> str:
    """Content address of one (record, language)'s effects: everything that decides them (the knowledge neurons'
    attribution and threshold, the prompts, the factors, the random sets' seeds, the tokenisation)."""
    return cache_key("sanity", model=lm.fingerprint, record=record.content_hash(), language=language,
                     scores=config.score_params(), threshold=config.threshold,
                     use_paraphrases=config.use_paraphrases, answer=config.answer, factors=list(sanity.factors),
                     relative=sanity.relative, seeds=list(seeds), join=JOIN_VERSION, version=SANITY_VERSION)


def _language_effects(lm: LoadedModel, record: Record, language: str, kn: NeuronMasks, config: AttributionConfig,
                      sanity: SanityConfig, seeds: Sequence[int]) -> list[dict]:
    """The rows of one (record, language): per factor, the knowledge neurons' effect and the mean effect of
    ``len(seeds)`` random sets of equal counts in the same layers."""
    before = unscaled_logprobs(lm, record, language, config)  # shared by every factor and neuron set
    rows = []
    for factor in sanity.factors:
        with naming("knowledge neurons"):
            eff = suppression_effect(lm, record, language, kn, factor, config=config, relative=sanity.relative,
                                     before=before)
        rows.append({"example_id": record.example_id, "language": language, "factor": factor,
                     "neurons": "knowledge", "n_neurons": kn.total, "effect": eff})
        with naming("random neurons"):
            rand = [suppression_effect(lm, record, language, random_masks_like(kn, seed), factor, config=config,
                                       relative=sanity.relative, before=before) for seed in seeds]
        rows.append({"example_id": record.example_id, "language": language, "factor": factor, "neurons": "random",
                     "n_neurons": kn.total, "effect": sum(rand) / len(rand)})
    return rows


def sanity_effects(lm: LoadedModel, records: Sequence[Record], languages: Sequence[str],
                   config: AttributionConfig | None = None, cache: ArtifactCache | None = None,
                   sanity: SanityConfig | None = None, *, workers: int | None = None,
                   spec: ModelSpec | None = None) -> pd.DataFrame:
    """Tidy per-fact effects: ``example_id, language, factor, neurons (knowledge|random), n_neurons, effect``.

    Each (record, language)'s rows are cached as JSON under :func:`_effects_key` (``cache=None``: the project
    cache), mirrored into a multi-session run's durable cache (:data:`memla_utils.cache.DURABLE_JSON_KINDS`), so
    a later part of the run reads them instead of recomputing; read or computed, the rows are the same values.
    Each (record, language)'s random sets are drawn with its own seeds (:func:`random_set_seeds`), so its rows
    are the same whether the record runs alone, first or after others, and whatever the other languages are.
    (Before, the seeds were ``sanity.seed + 1000 i + 10 j + d`` from the record's position ``i`` in ``records``
    and the language's position ``j``; the seeds are part of the cache key, so no old entry is read for new.)

    On a CPU with several cores the (record, language) pieces not cached are computed in one-thread worker
    processes (:func:`memla_utils.model_workers.run_in_workers`; ``workers`` as
    :func:`memla_utils.attribution_parallel.prefill_attributions`, ``spec`` how a worker gets the model), the
    rest in this process, also on one thread on a CPU: the same values for any number of workers. Raises
    ``ValueError`` naming ``workers`` below 1, and ``RuntimeError`` naming the record and language a worker
    failed on.
    """
    config = config or AttributionConfig()
    sanity = sanity or SanityConfig()
    cache = cache if cache is not None else ArtifactCache()
    workers = workers_from_env(lm) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    plan: list[tuple[Record, str, list[int], str]] = []
    stored: dict[str, list[dict] | None] = {}
    for rec in records:
        for lang in (l for l in languages if l in rec.edit):
            seeds = random_set_seeds(sanity, rec.example_id, lang)
            key = _effects_key(lm, rec, lang, config, sanity, seeds)
            plan.append((rec, lang, seeds, key))
            stored[key] = cache.get_json(key)
    todo = [p for p in plan if stored[p[3]] is None]
    n = pool_size(workers, len(todo), lm.device)
    if n >= 2 and spec is None:
        try:
            spec = ModelSpec.from_loaded(lm)
        except ValueError as err:
            log.info("sanity check in this process: %s", err)
            n = 1
    if n >= 2 and spec is not None:
        pieces = [(rec, lang, language_neurons(lm, rec, [lang], config, cache)[lang], config, sanity, seeds)
                  for rec, lang, seeds, _ in todo]

        def store(i: int, rows: list[dict]) -> None:
            stored[todo[i][3]] = rows
            cache.put_json(todo[i][3], rows)

        run_in_workers(spec, lm.fingerprint, n, _language_effects, pieces, store,
                       lambda i: f"sanity check of record {todo[i][0].example_id!r} [{todo[i][1]}]",
                       desc="sanity check", progress=True)
    rows = []
    for rec, lang, seeds, key in tqdm(plan, desc="sanity check", unit="record-language"):
        if stored[key] is None:
            kn = language_neurons(lm, rec, [lang], config, cache)[lang]
            with single_thread_on_cpu(lm.device):
                stored[key] = _language_effects(lm, rec, lang, kn, config, sanity, seeds)
            cache.put_json(key, stored[key])
        rows.extend(stored[key])
    return pd.DataFrame(rows, columns=["example_id", "language", "factor", "neurons", "n_neurons", "effect"])


def summarize_sanity(effects: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per (language, factor): mean effect of knowledge and random neurons and of their paired difference,
    each with a percentile-bootstrap 95% CI over facts (also pooled over languages as ``language='all'``)."""
    from .report import BootstrapConfig, bootstrap_ci

    boot = BootstrapConfig(n_boot=n_boot, seed=seed)
    wide = effects.pivot_table(index=["example_id", "language", "factor"], columns="neurons", values="effect")
    wide = wide.reset_index()
    wide["difference"] = wide["knowledge"] - wide["random"]
    rows = []
    pooled = wide.assign(language="all")
    for (lang, factor), grp in pd.concat([wide, pooled]).groupby(["language", "factor"], sort=False):
        for what in ("knowledge", "random", "difference"):
            s = bootstrap_ci(grp[what].to_numpy(), boot)
            rows.append({"language": lang, "factor": factor, "neurons": what, "mean": s.mean, "ci_low": s.ci_low,
                         "ci_high": s.ci_high, "n": s.n})
    return pd.DataFrame(rows)


def neuron_sanity_check(lm: LoadedModel, records: Sequence[Record], languages: Sequence[str],
                        config: AttributionConfig | None = None, cache: ArtifactCache | None = None,
                        sanity: SanityConfig | None = None, n_boot: int = 2000) -> pd.DataFrame:
    """Suppress/enhance knowledge vs random neurons over records x languages; bootstrap 95% CIs per language."""
    sanity = sanity or SanityConfig()
    effects = sanity_effects(lm, records, languages, config, cache, sanity)
    return summarize_sanity(effects, n_boot=n_boot, seed=sanity.seed)


__all__ = ["RANDOM_SET_PURPOSE", "SANITY_VERSION", "SanityConfig", "neuron_sanity_check", "random_set_seeds",
           "sanity_effects", "summarize_sanity", "suppression_effect"]
