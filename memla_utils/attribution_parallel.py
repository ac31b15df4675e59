"""Attribution of many records' prompts in one-thread worker processes, written to the cache as they arrive
(issue 15).

:func:`memla_utils.attribution_records.record_attributions` computes the prompts its cache lacks one after the
other in the notebook's process. :func:`prefill_attributions` computes the same prompts beforehand in a pool of
spawned one-thread processes (:class:`memla_utils.model_workers.ModelWorkers`, one per core) and stores each as
it arrives (:func:`~memla_utils.attribution_records.store_attribution`), so that ``record_attributions`` then
reads them all. Each prompt is computed by the same function with the same thread count in either place
(:func:`~memla_utils.attribution_records.attribute_item`: alone in its batch, one thread on a CPU), so the scores
are the same bits for any number of workers (``tests/unit/test_attribution_parallel.py``).

Nothing is computed twice: a prompt already in the cache is not planned (:func:`plan_prefill`, which checks
file existence only), and every prompt that arrived is in the cache before an error or a part's deadline
(:class:`~memla_utils.run_parts.DeadlineReached`) is raised, so a rerun computes only the rest.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from .attribution_config import AttributionConfig
from .attribution_records import attribute_item, is_cached, item_key, record_items, store_attribution
from .attribution_scores import PromptAttribution
from .cache import ArtifactCache
from .cpu_workers import workers_from_env
from .mkeb.record import Record
from .model_spec import ModelSpec
from .model_workers import pool_size, run_in_workers
from .models import LoadedModel
from .run_parts import check_deadline

log = logging.getLogger(__name__)

#: one planned piece of work: a record and one of its ``(prompt, answer, language)`` items
Piece = tuple[Record, tuple[str, str, str]]


def plan_prefill(lm: LoadedModel, records: Sequence[Record], languages: Sequence[str], config: AttributionConfig,
                 cache: ArtifactCache, *, dense: bool = False) -> list[Piece]:
    """The prompts that ``record_attributions(lm, record, <languages the record has>, config, cache, dense=dense)``
    would compute for each record: not in the cache (:func:`~memla_utils.attribution_records.is_cached`), in
    record and language order, each once. Empty when caching is disabled (nothing could be handed over)."""
    if not cache.enabled:
        return []
    compact = cache.durable_root is not None and not dense
    out: list[Piece] = []
    seen: set[str] = set()
    for record in records:
        for lang in (l for l in languages if l in record.edit):
            for item in record_items(record, lang, config):
                key = item_key(lm, record, item, config)
                if key not in seen and not is_cached(cache, key, compact=compact):
                    seen.add(key)
                    out.append((record, item))
    return out


def _attribute_tensors(lm: LoadedModel, item: tuple[str, str, str], config: AttributionConfig) -> dict:
    """In a worker: one item's scores as tensors (sent back through the pool's pipe, never stored pickled)."""
    return attribute_item(lm, item, config).to_tensors()


def prefill_attributions(lm: LoadedModel, records: Sequence[Record], languages: Sequence[str],
                         config: AttributionConfig, cache: ArtifactCache | None = None, *,
                         workers: int | None = None, spec: ModelSpec | None = None, dense: bool = False,
                         progress: bool = False) -> int:
    """Compute the prompts the cache lacks (:func:`plan_prefill`) in ``workers`` one-thread processes and store
    each as it arrives; returns how many were computed (0 when the pool cannot help, below).

    ``workers``: default :func:`memla_utils.cpu_workers.workers_from_env` (``$MEMLA_WORKERS``, else the cores);
    the pool gets :func:`~memla_utils.model_workers.pool_size` processes. Nothing is done, and the notebook's
    process computes the prompts itself, when that is fewer than 2 (one prompt, one core, a GPU), when caching is
    disabled, or when the model was built in memory and no ``spec`` says how a worker gets it. ``spec``: how each
    worker loads the model (default: reload ``lm`` by name, fingerprint checked).

    Raises ``ValueError`` naming ``workers`` when it is below 1; :class:`~memla_utils.run_parts.DeadlineReached`
    before starting when a part's deadline has passed, or after the prompts in flight have arrived and been
    stored when it passes meanwhile; ``RuntimeError`` naming the record, language and prompt a worker failed on
    (after the other prompts in flight are stored).
    """
    cache = cache if cache is not None else ArtifactCache()
    workers = workers_from_env(lm) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    todo = plan_prefill(lm, records, languages, config, cache, dense=dense)
    n = pool_size(workers, len(todo), lm.device)
    if n < 2:
        return 0
    if spec is None:
        try:
            spec = ModelSpec.from_loaded(lm)
        except ValueError as err:
            log.info("attribution in this process: %s", err)
            return 0
    check_deadline(f"attribution of {len(todo)} prompt(s) not cached")
    log.info("attributing %d prompt(s) in %d one-thread processes", len(todo), n)

    def store(i: int, tensors: dict) -> None:
        record, item = todo[i]
        store_attribution(cache, lm, record, item, config, PromptAttribution.from_tensors(tensors, *item))

    def name(i: int) -> str:
        record, (prompt, _, lang) = todo[i]
        return f"attribution of record {record.example_id!r} [{lang}] prompt {prompt!r}"

    return run_in_workers(spec, lm.fingerprint, n, _attribute_tensors, [(item, config) for _, item in todo], store,
                          name, desc="attribution", progress=progress)


__all__ = ["plan_prefill", "prefill_attributions"]
