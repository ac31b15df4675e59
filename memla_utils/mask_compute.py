"""MEMLA's two masks of a (record, edit language), from the knowledge neurons of each language.

Language-independent neurons = the intersection of the record's neuron sets over the independence languages
(en, zh, fr as in memla4mke); language-specific = the edit language's set minus them. Neuron sets come from
:mod:`memla_utils.attribution` (thresholded scores, union over the prompts); the set type is
:mod:`memla_utils.neuron_masks`.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .attribution_config import METHODS, AttributionConfig
from .attribution_records import record_attributions
from .attribution_scores import neurons_from_attributions
from .cache import ArtifactCache
from .languages import PAPER_INDEPENDENT_LANGUAGES, validate_languages
from .mkeb.record import Record, RecordError
from .neuron_masks import NeuronMasks, RecordMasks, intersection

log = logging.getLogger(__name__)


@dataclass
class MaskConfig:
    """Which languages define language-independent neurons, and how neurons are attributed.

    ``independent_languages`` defaults to en, zh, fr as in memla4mke (the paper's code); ``"all"`` intersects
    over every language the record has. Languages a record lacks are left out of its intersection.
    ``attribution`` defaults to :class:`AttributionConfig` (``method="memla4mke"``, the released locator).
    """

    independent_languages: tuple[str, ...] | str = PAPER_INDEPENDENT_LANGUAGES
    attribution: AttributionConfig = field(default_factory=AttributionConfig)

    def __post_init__(self) -> None:
        if isinstance(self.independent_languages, str) and self.independent_languages.strip() == "all":
            self.independent_languages = "all"
        else:
            self.independent_languages = tuple(validate_languages(self.independent_languages,
                                                                  parameter="MaskConfig.independent_languages"))
        if not isinstance(self.attribution, AttributionConfig):
            raise ValueError(f"MaskConfig.attribution must be an AttributionConfig, got "
                             f"{type(self.attribution).__name__}")

    def params(self) -> dict[str, Any]:
        """Everything that determines a record's masks (for cache keys and saved-mask provenance)."""
        a = self.attribution
        return {"independent_languages": self.independent_languages, "scores": a.score_params(),
                "threshold": a.threshold, "use_paraphrases": a.use_paraphrases, "answer": a.answer}

    def languages_for(self, record: Record) -> list[str]:
        """The independence languages present in ``record`` (in the configured order)."""
        if self.independent_languages == "all":
            return list(record.languages)
        return [l for l in self.independent_languages if l in record.edit]


def notebook_attribution_config(steps: int = 20, baseline: str = "eos_mean", threshold: float = 0.3,
                                attribution_prompts: str = "all", attribution_method: str = "memla4mke",
                                ) -> AttributionConfig:
    """The AttributionConfig that the notebooks' papermill parameters describe (notebook 02; the masks of 03, 04
    and 06 through :func:`notebook_mask_config`). Raises ``ValueError`` naming the parameter for an unknown
    ``attribution_prompts`` or ``attribution_method`` (the other values: :class:`AttributionConfig`'s checks).

    ``attribution_prompts``: ``"all"`` (edit prompt and paraphrases, as memla4mke) or ``"edit"`` (edit prompt
    only: about a third of the attribution cost). ``attribution_method``: ``"memla4mke"`` (the released
    locator's computation, the paper's) or ``"exact"`` (exact IG of the down projection's inputs); see
    :mod:`memla_utils.attribution`.
    """
    if attribution_prompts not in ("edit", "all"):
        raise ValueError(f"attribution_prompts must be 'edit' or 'all', got {attribution_prompts!r}")
    if attribution_method not in METHODS:
        raise ValueError(f"attribution_method must be one of {METHODS}, got {attribution_method!r}")
    return AttributionConfig(method=attribution_method, steps=int(steps), baseline=baseline,
                             threshold=float(threshold), use_paraphrases=attribution_prompts == "all")


def notebook_mask_config(independent_languages: str | Sequence[str] = "en,zh,fr", steps: int = 20,
                         baseline: str = "eos_mean", threshold: float = 0.3, attribution_prompts: str = "all",
                         attribution_method: str = "memla4mke") -> MaskConfig:
    """The MaskConfig that the notebooks' papermill parameters describe (03, 04 and 06 build it the same way):
    the languages whose neurons' intersection is language-independent and :func:`notebook_attribution_config`."""
    attribution = notebook_attribution_config(steps, baseline, threshold, attribution_prompts, attribution_method)
    from .config import coerce_parameter  # a list, a comma string or one code (notebook parameter)

    given = coerce_parameter("independent_languages", independent_languages)
    langs: tuple[str, ...] | str = "all" if given == "all" else tuple(given)
    return MaskConfig(independent_languages=langs, attribution=attribution)


def language_neurons(lm, record: Record, languages: Sequence[str], config: AttributionConfig | None = None,
                     cache: ArtifactCache | None = None, *, progress: bool = False) -> dict[str, NeuronMasks]:
    """Knowledge neurons of ``record`` per language; all uncached prompts of all languages in one batch."""
    config = config or AttributionConfig()
    atts = record_attributions(lm, record, list(languages), config, cache, progress=progress)
    return {lang: neurons_from_attributions(a, config.threshold, lm.adapter.n_neurons) for lang, a in atts.items()}


def masks_from_sets(example_id: str, edit_language: str, sets: dict[str, NeuronMasks],
                    independent_languages: Sequence[str]) -> RecordMasks:
    """Independent = intersection over ``independent_languages``; specific = edit language's set minus it."""
    if edit_language not in sets:
        raise RecordError(f"record {example_id!r}: no neuron set for edit language {edit_language!r}")
    langs = [l for l in independent_languages if l in sets]
    if len(langs) < 2:
        log.warning("record %r: only %s of the independence languages present; the 'independent' set is not a "
                    "cross-lingual intersection", example_id, langs or "none")
    n = sets[edit_language].n_neurons
    independent = intersection([sets[l] for l in langs]) if langs else NeuronMasks(n)
    specific = sets[edit_language] - independent
    specific = NeuronMasks(n, {l: specific.masks[l] for l in specific.layers})
    return RecordMasks(example_id, edit_language, specific=specific, independent=independent)


def compute_record_masks(lm, record: Record, edit_language: str, config: MaskConfig | None = None,
                         cache: ArtifactCache | None = None) -> RecordMasks:
    """MEMLA's two masks for one (record, edit language): language-specific (LSE) and -independent (LIE)."""
    config = config or MaskConfig()
    if edit_language not in record.edit:
        raise RecordError(f"record {record.example_id!r} has no edit language {edit_language!r} "
                          f"(it has: {', '.join(record.edit)})")
    langs = config.languages_for(record)
    needed = list(dict.fromkeys([*langs, edit_language]))
    sets = language_neurons(lm, record, needed, config.attribution, cache)
    return masks_from_sets(record.example_id, edit_language, sets, langs)


__all__ = ["MaskConfig", "compute_record_masks", "language_neurons", "masks_from_sets", "notebook_attribution_config",
           "notebook_mask_config"]
