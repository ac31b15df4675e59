"""What the language check of :mod:`memla_utils.mkeb.langcheck` is told and what it returns.

:class:`LangCheckConfig` holds its thresholds (measured on the real MzsRE, MLaKE and Bi-ZsRE files and the committed
MKEB file); :class:`LanguageCheck` is the verdict for one language of a record set, :class:`LanguageReport` the
verdicts for all of them, :class:`CheckedRecords` the records with their report attached, and
:class:`LanguageMismatchError` is raised when most views of a language are written in another language.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .record import Record, RecordError

if TYPE_CHECKING:
    import pandas as pd


class LanguageMismatchError(RecordError):
    """Most views of a language are written in another language; the message names the file and language."""


@dataclass(frozen=True)
class LangCheckConfig:
    """Thresholds of the language check (measured on the real data in ``shared/data``, 2026)."""

    #: Least share of a view's letters in its language's script. Lowest share in any real view: 0.29 (MLaKE zh,
    #: Latin names), 0.34 (MLaKE ja), 0.37 (MzsRE/Bi-ZsRE zh), 0.57 (MzsRE th), 0.74 (MzsRE ru); English text: 0.
    min_script_share: float = 0.2
    #: Kana share of the Han+kana letters that separates ja from zh. Real ja views: at least 0.23; real zh: 0.
    kana_share: float = 0.05
    #: Least lingua confidence (among the candidates, letter-weighted over the view's lines) for the labelled
    #: language when another one is on top. At 0.4: at most 2 false flags per language on MzsRE/MLaKE/MKEB, and
    #: 86% of MKEB's short Portuguese templates read as Spanish are caught (0.5 gives 93 false flags on MKEB pt).
    min_confidence: float = 0.4
    #: A line with fewer letters is not given to lingua; a view with fewer letters (after the subjects are cut)
    #: is undecided and counts neither way.
    min_letters: int = 3
    #: A language with more than this fraction of its decided views wrong raises LanguageMismatchError.
    max_wrong_fraction: float = 0.5
    #: Wrong views quoted per language in the report and the error.
    n_examples: int = 3
    #: How lingua is run. "screen": its low-accuracy models (trigrams; about 3x faster) look at every view and
    #: its high-accuracy models re-judge only the views the screen flags, so a view is wrong only if both say so.
    #: "high": high accuracy on every view. "low": low accuracy only (more false flags: MLaKE en 12 and fr 8 of
    #: 1,072 views instead of 1 and 4).
    lingua_mode: str = "screen"

    def __post_init__(self) -> None:
        if self.lingua_mode not in ("screen", "high", "low"):
            raise ValueError(f"lingua_mode must be 'screen', 'high' or 'low', got {self.lingua_mode!r}")


@dataclass
class LanguageCheck:
    """The verdict for one language of a record set."""

    language: str
    source: str
    method: str
    n_views: int = 0
    n_checked: int = 0
    n_wrong: int = 0
    looks_like: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    @property
    def fraction_wrong(self) -> float:
        """Wrong views over decided views (0.0 when none could be decided)."""
        return self.n_wrong / self.n_checked if self.n_checked else 0.0

    def describe(self) -> str:
        looks = ", ".join(f"{k} {v}" for k, v in self.looks_like.most_common(3))
        head = f"{self.source}: language {self.language!r}: {self.n_wrong} of {self.n_checked} views"
        text = f"{head} do not look like {self.language!r}" + (f" (they look like: {looks})" if looks else "")
        return text + (f"; e.g. {self.examples[0]}" if self.examples else "")


@dataclass
class LanguageReport:
    """What :func:`check_languages` found for a record set: one :class:`LanguageCheck` per language."""

    dataset: str
    languages: dict[str, LanguageCheck]
    candidates: tuple[str, ...]
    seconds: float = 0.0
    n_skipped_views: int = 0
    n_dropped_records: int = 0

    @property
    def n_views(self) -> int:
        return sum(c.n_views for c in self.languages.values())

    @property
    def n_wrong(self) -> int:
        return sum(c.n_wrong for c in self.languages.values())

    def table(self) -> pd.DataFrame:
        """One row per language: views, decided, wrong, fraction wrong, what the wrong ones look like, method."""
        import pandas as pd

        rows = [{"language": c.language, "source": c.source, "views": c.n_views, "checked": c.n_checked,
                 "wrong": c.n_wrong, "fraction_wrong": round(c.fraction_wrong, 4),
                 "looks_like": ", ".join(f"{k} {v}" for k, v in c.looks_like.most_common(3)), "method": c.method}
                for c in self.languages.values()]
        return pd.DataFrame(rows).set_index("language") if rows else pd.DataFrame()

    def summary(self) -> str:
        wrong = {l: c.n_wrong for l, c in self.languages.items() if c.n_wrong}
        unchecked = [l for l, c in self.languages.items() if c.method.startswith("not checked")]
        text = (f"{self.dataset}: language check: {self.n_wrong} of {self.n_views} views look like another "
                f"language{' ' + str(wrong) if wrong else ''} ({self.seconds:.1f} s)")
        if unchecked:
            text += f"; not checked (no rule): {', '.join(unchecked)}"
        if self.n_skipped_views:
            text += f"; skipped {self.n_skipped_views} view(s), dropped {self.n_dropped_records} empty record(s)"
        return text


class CheckedRecords(list):
    """A list of records with the :class:`LanguageReport` of the check that produced it (None if not checked)."""

    language_report: LanguageReport | None

    def __init__(self, records: Iterable[Record] = (), language_report: LanguageReport | None = None) -> None:
        super().__init__(records)
        self.language_report = language_report

