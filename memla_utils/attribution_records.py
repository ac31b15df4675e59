"""Attribution of records: the prompts attributed for a record and language (:func:`record_items`), their scores
read from or written to the content-addressed cache (:func:`record_attributions`), and the record's knowledge
neurons (:func:`knowledge_neurons`).

Source: memla4mke attributes the edit prompt and its paraphrases (``identify_kn/locate_kn.py``) and keeps, per
prompt, the neurons above ``threshold`` x its maximum score, then the union over the prompts
(``garns.get_coarse_neurons``, ``garns.get_refined_neurons``). Cache keys (:func:`item_key`) name the model, its
dtype, the record's content, the item, :meth:`AttributionConfig.score_params` (with
:data:`~memla_utils.attribution_config.SCORES_VERSION`) and the join version.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from .attribution_config import AttributionConfig
from .attribution_ig import attribute_batch
from .attribution_scores import PromptAttribution, neurons_from_attributions
from .cache import ArtifactCache, cache_key
from .cpu_workers import single_thread_on_cpu
from .mkeb.record import Record, RecordError
from .models import LoadedModel
from .neuron_masks import NeuronMasks
from .run_parts import check_deadline
from .text import JOIN_VERSION

#: the public entry point's logger, so that log lines and their filters keep the name they had before the split
log = logging.getLogger("memla_utils.attribution")


def record_items(record: Record, language: str, config: AttributionConfig) -> list[tuple[str, str, str]]:
    """The ``(prompt, answer, language)`` items attributed for one record and language."""
    view = record.for_language(language)
    answer = view.target_true if config.answer == "true" else view.target_new
    if answer is None or not answer.strip():
        if config.answer == "true":
            log.warning("record %r [%s] has no target_true: attributing target_new instead", record.example_id,
                        language)
            answer = view.target_new
        if answer is None or not answer.strip():
            raise RecordError(f"record {record.example_id!r}: field 'edit.{language}.target_"
                              f"{'new' if config.answer == 'new' else 'true'}' is empty; nothing to attribute")
    prompts = [view.prompt] + (view.paraphrase_prompts if config.use_paraphrases else [])
    seen: list[str] = []
    for p in prompts:
        if p and p.strip() and p not in seen:
            seen.append(p)
    return [(p, answer, language) for p in seen]


def item_key(lm: LoadedModel, record: Record, item: tuple[str, str, str], config: AttributionConfig) -> str:
    """The cache key of one ``(prompt, answer, language)`` item of ``record`` (module docstring)."""
    prompt, answer, language = item
    return cache_key("attribution", model=lm.fingerprint, dtype=str(lm.dtype), record=record.content_hash(),
                     language=language, prompt=prompt, answer=answer, params=config.score_params(), join=JOIN_VERSION)


def attribute_item(lm: LoadedModel, item: tuple[str, str, str], config: AttributionConfig, *,
                   progress: bool = False) -> PromptAttribution:
    """One item's scores, alone in its :func:`attribute_batch` call and, on a CPU, on one torch thread.

    Alone: its rows, padding and chunking then depend on the prompt alone, so its scores are the same bits
    whatever else is cached, in whichever order or run they were computed (``attribute_batch`` over several
    prompts pads them to the longest and mixes their rows: equal only to ~1e-6). One thread: the same bits
    whether the notebook's process or a one-thread worker (:mod:`memla_utils.attribution_parallel`) computed it.
    """
    with single_thread_on_cpu(lm.device):
        return attribute_batch(lm, [item], config, progress=progress)[0]


def is_cached(cache: ArtifactCache, key: str, *, compact: bool) -> bool:
    """Whether :func:`record_attributions` would read ``key`` rather than compute it (file existence only: the
    local cache, or the durable one when ``compact``)."""
    if not cache.enabled:
        return False
    if cache.path(key, ".safetensors").exists():
        return True
    durable = cache.durable_path(key, ".safetensors")
    return compact and durable is not None and durable.exists()


def store_attribution(cache: ArtifactCache, lm: LoadedModel, record: Record, item: tuple[str, str, str],
                      config: AttributionConfig, att: PromptAttribution) -> None:
    """Write one item's scores to the local cache and, with a durable cache, their compact form there too."""
    key = item_key(lm, record, item, config)
    cache.put_tensors(key, att.to_tensors(), metadata=_metadata(record, item))
    if cache.durable_root is not None and cache.enabled:
        cache.put_durable_tensors(key, att.compact_tensors(), metadata=_metadata(record, item))


def record_attributions(lm: LoadedModel, record: Record, languages: str | Sequence[str],
                        config: AttributionConfig | None = None, cache: ArtifactCache | None = None,
                        *, progress: bool = False, dense: bool = False) -> dict[str, list[PromptAttribution]]:
    """Scores of every prompt of ``record`` in each language; cached items are read, the rest computed.

    ``cache=None`` uses the project cache (:class:`ArtifactCache` default root); pass
    ``ArtifactCache(enabled=False)`` to disable caching. Each prompt is attributed on its own (one
    :func:`attribute_batch` call) and written as soon as it finishes, so an interrupted run resumes where it
    stopped and a prompt's scores do not depend on which other prompts were cached. Raises
    :class:`~memla_utils.run_parts.DeadlineReached` before computing anything when a part of a multi-session run
    (``batch --hours``) has passed its deadline.

    With a durable cache (``cache.durable_root``: a multi-session run's tracked ``<run_dir>/cache``) every prompt's
    compact form (:meth:`PromptAttribution.compact`) is written there too, read when the local cache lacks the
    prompt (a part on a fresh machine), and returned whatever its source, so that a run's numbers never depend
    on which machine computed what. ``dense=True`` returns the dense scores (computed again where only the compact
    form is stored): for rank statistics over all scores. Each prompt is computed by :func:`attribute_item` (on a
    CPU, one torch thread), so :func:`memla_utils.attribution_parallel.prefill_attributions`, which computes the
    prompts in one-thread processes beforehand, gives the same bits.
    """
    config = config or AttributionConfig()
    cache = cache if cache is not None else ArtifactCache()
    compact = cache.durable_root is not None and cache.enabled and not dense
    langs = [languages] if isinstance(languages, str) else list(languages)
    items = {lang: record_items(record, lang, config) for lang in langs}
    found: dict[tuple[str, str, str], PromptAttribution] = {}
    missing: list[tuple[str, str, str]] = []
    for lang in langs:
        for item in items[lang]:
            key = item_key(lm, record, item, config)
            t = cache.get_tensors(key)
            if t is not None:
                found[item] = PromptAttribution.from_tensors(t, *item)
                if compact and cache.get_durable_tensors(key) is None:
                    cache.put_durable_tensors(key, found[item].compact_tensors(), metadata=_metadata(record, item))
            elif compact and (c := cache.get_durable_tensors(key)) is not None:
                found[item] = PromptAttribution.from_compact_tensors(c, *item)
            elif item not in missing:
                missing.append(item)
    if missing:
        # a part of a multi-session run (batch --hours) stops here, before new work; what is cached stays
        check_deadline(f"attribution of record {record.example_id!r} ({len(missing)} prompt(s) not cached)")
        log.info("attributing %d prompt(s) of record %r (%d cached)", len(missing), record.example_id, len(found))
        for item in missing:
            found[item] = attribute_item(lm, item, config, progress=progress)
            store_attribution(cache, lm, record, item, config, found[item])
    if compact:
        found = {item: att.compact() for item, att in found.items()}
    return {lang: [found[item] for item in items[lang]] for lang in langs}


def _metadata(record: Record, item: tuple[str, str, str]) -> dict[str, str]:
    return {"prompt": item[0], "answer": item[1], "language": item[2], "example_id": str(record.example_id)}


def knowledge_neurons(lm: LoadedModel, record: Record, language: str, config: AttributionConfig | None = None,
                      cache: ArtifactCache | None = None) -> NeuronMasks:
    """The knowledge neurons of ``record`` in ``language``: union over its prompts after thresholding (cached)."""
    config = config or AttributionConfig()
    atts = record_attributions(lm, record, language, config, cache)[language]
    return neurons_from_attributions(atts, config.threshold, lm.adapter.n_neurons)
