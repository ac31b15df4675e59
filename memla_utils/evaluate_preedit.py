"""The unedited model's evaluations, computed once per (model, record, language, config) and cached.

The evaluation of an edit compares its NS continuations with the unedited model's (``NS_vs_unedited``, a labelled
variant, :mod:`memla_utils.evaluate_metrics`). :class:`PreEditCache` computes a record's unedited evaluations
(all its languages together, :func:`memla_utils.evaluate_metrics.evaluate_record`) and keeps them in memory and,
with an :class:`memla_utils.cache.ArtifactCache`, on disk as JSON, so that every edit unit of the record reuses them.
"""
from __future__ import annotations

from collections.abc import Sequence

from .cache import ArtifactCache, cache_key
from .evaluate_metrics import EvalConfig, LanguageEvaluation, _mean, evaluate_record
from .mkeb.record import Record
from .models import LoadedModel
from .text import JOIN_VERSION


class PreEditCache:
    """Unedited-model evaluations, computed once per (model fingerprint, record, language, config).

    Kept in memory and, with an :class:`ArtifactCache`, on disk as JSON. Call :meth:`get` / :meth:`get_many` only
    while the model is unedited (the runner asks before every edit unit: a record's languages are computed together
    at its first unit and every later unit, whatever its method or edit language, reuses them).
    """

    def __init__(self, cache: ArtifactCache | None = None) -> None:
        self.cache = cache
        self._memory: dict[str, LanguageEvaluation] = {}

    def key(self, lm: LoadedModel, record: Record, language: str, config: EvalConfig) -> str:
        return cache_key("preedit", model=lm.fingerprint, record=record.content_hash(), language=language,
                         config=config, join=JOIN_VERSION, continuation="stop-at-eos")

    def get(self, lm: LoadedModel, record: Record, language: str, config: EvalConfig | None = None
            ) -> LanguageEvaluation:
        """The unedited evaluation of ``record`` in ``language`` (:meth:`get_many` of one language)."""
        return self.get_many(lm, record, [language], config)[language]

    def get_many(self, lm: LoadedModel, record: Record, languages: Sequence[str],
                 config: EvalConfig | None = None) -> dict[str, LanguageEvaluation]:
        """``{language: unedited evaluation}`` for every one of ``languages``: from memory, else from disk, else
        computed, all missing languages of the record together (:func:`evaluate_record`)."""
        config = config or EvalConfig()
        out: dict[str, LanguageEvaluation] = {}
        missing: dict[str, str] = {}  # language -> key
        for lang in dict.fromkeys(languages):
            key = self.key(lm, record, lang, config)
            stored = self.cache.get_json(key) if key not in self._memory and self.cache is not None else None
            if stored is not None:
                self._memory[key] = LanguageEvaluation.from_json(stored)
            if key in self._memory:
                out[lang] = self._memory[key]
            else:
                missing[lang] = key
        if missing:
            computed = evaluate_record(lm, record, list(missing), config=config)
            for lang, key in missing.items():
                value = computed[lang]
                if config.variants:  # the unedited model agrees with itself wherever there is a continuation
                    value.metrics["NS_vs_unedited"] = _mean([1.0 for c in value.continuations["NS"] if c])
                if self.cache is not None:
                    self.cache.put_json(key, value.to_json())
                self._memory[key] = out[lang] = value
        return {lang: out[lang] for lang in dict.fromkeys(languages)}


__all__ = ["PreEditCache"]
