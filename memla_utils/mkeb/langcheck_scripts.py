"""The script test of the language check (:mod:`memla_utils.mkeb.langcheck`): Unicode ranges per script.

:func:`script_counts` counts a text's letters per script; :data:`LANGUAGE_SCRIPT` says which script each language is
written in ("Japanese" = Han + kana); :func:`_script_verdict` decides whether a view's letters fit its language and
:func:`_script_guess` names the language (or script) they point to instead. The rules and their thresholds
(``min_script_share``, ``kana_share`` of :class:`~memla_utils.mkeb.langcheck_types.LangCheckConfig`) are in the
docstring of :mod:`memla_utils.mkeb.langcheck` (test 1, "Script").
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from .langcheck_types import LangCheckConfig

_RANGES: dict[str, str] = {
    "Latin": "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff",
    "Han": "\u3005\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f",
    "Kana": "\u3041-\u309f\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff\uff66-\uff9d",
    "Hangul": "\u1100-\u11ff\u3131-\u318e\uac00-\ud7a3",
    "Thai": "\u0e01-\u0e5b",
    "Cyrillic": "\u0400-\u052f",
    "Greek": "\u0370-\u03ff\u1f00-\u1fff",
    "Arabic": "\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff",
    "Hebrew": "\u0590-\u05ff",
    "Devanagari": "\u0900-\u097f",
}
_LETTER = re.compile(r"[^\W\d_]")
#: Letters only (``\w`` minus digits and underscore), so combining marks never count.
_SCRIPT_RE = {name: re.compile(rf"(?=[^\W\d_])[{chars}]") for name, chars in _RANGES.items()}

_LATIN_LANGUAGES = ("en fr de it es pt pl cs nl tr vi af az ca cy da et eu fi ga gl hr hu id is lt lv ms no ro sk "
                    "sl sq sv sw tl uz").split()
#: The script each language is written in; "Japanese" = Han + kana. Languages not listed are not checked.
LANGUAGE_SCRIPT: dict[str, str] = {
    **{lang: "Latin" for lang in _LATIN_LANGUAGES},
    "zh": "Han", "yue": "Han", "ja": "Japanese", "ko": "Hangul", "th": "Thai",
    **{lang: "Cyrillic" for lang in ("ru", "uk", "bg", "be", "kk", "mk", "mn")},
    "el": "Greek", "ar": "Arabic", "fa": "Arabic", "ur": "Arabic", "he": "Hebrew",
    **{lang: "Devanagari" for lang in ("hi", "mr", "ne")},
}


def script_counts(text: str) -> dict[str, int]:
    """Letters of ``text`` per script (``"letters"``: all letters, whatever the script)."""
    counts = {name: len(rx.findall(text)) for name, rx in _SCRIPT_RE.items()}
    counts["letters"] = len(_LETTER.findall(text))
    return counts


def _script_verdict(counts: dict[str, int], lang: str, cfg: LangCheckConfig) -> bool:
    """Whether the letters' scripts fit ``lang`` (which must be in LANGUAGE_SCRIPT)."""
    total = counts["letters"]
    han, kana = counts["Han"], counts["Kana"]
    kana_frac = kana / (han + kana) if han + kana else 0.0
    script = LANGUAGE_SCRIPT[lang]
    if script == "Japanese":
        return (han + kana) / total >= cfg.min_script_share and kana_frac >= cfg.kana_share
    if script == "Han":
        return han / total >= cfg.min_script_share and kana_frac < cfg.kana_share
    if script == "Latin":
        return all(n / total < cfg.min_script_share for s, n in counts.items() if s not in ("Latin", "letters"))
    return counts[script] / total >= cfg.min_script_share


def _script_guess(counts: dict[str, int], candidates: Sequence[str], cfg: LangCheckConfig) -> str | None:
    """The language a view's non-Latin letters point to (a candidate if one fits, else the script's name);
    None when no non-Latin script reaches ``min_script_share``."""
    total = counts["letters"]
    scripts = [(n, s) for s, n in counts.items() if s not in ("Latin", "letters", "Kana")]
    scripts.append((counts["Han"] + counts["Kana"], "Han"))
    n, script = max(scripts)
    if n / total < cfg.min_script_share:
        return None
    if script == "Han":
        kana_frac = counts["Kana"] / n
        return "ja" if kana_frac >= cfg.kana_share else "zh"
    fits = [c for c in candidates if LANGUAGE_SCRIPT.get(c) == script]
    return fits[0] if len(fits) == 1 else f"{script} script"

