"""Run-level configuration shared by every notebook: the papermill parameters, validated once.

Every notebook's ``parameters`` cell holds the same names; :func:`RunConfig.from_params` turns them into this
dataclass (validating languages, methods, device) so a parameter passed once to the batch driver flows to all
notebooks. ``PRESETS`` holds the named configurations: ``small`` (the CPU default, minutes) and ``full`` (the
paper's scale, for a GPU).
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache import PROJECT_ROOT
from .languages import MKEB_LANGUAGES, validate_languages

#: Every method the companion can run, in table order (MEMLA first, then its ablations, then baselines).
ALL_METHODS: tuple[str, ...] = ("memla", "memla-lse", "memla-lie", "memla-unmasked", "memla-random",
                                "memla-zero-hidden",
                                "ft", "ft-l", "lora", "rome", "memit", "pmet", "mend", "ike")


def _split(value: str | list[str] | tuple[str, ...]) -> list[str]:
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    return list(value)


@dataclass
class RunConfig:
    """What one run of the notebook chain uses. Defaults = the ``small`` CPU preset."""

    model: str = "default"
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    languages: list[str] = field(default_factory=lambda: ["en", "zh", "fr", "es"])
    edit_languages: list[str] = field(default_factory=lambda: ["en", "zh"])
    n_records: int = 3
    methods: list[str] = field(default_factory=lambda: list(ALL_METHODS))
    run_dir: Path = PROJECT_ROOT / "runs" / "small"
    figures_dir: Path = PROJECT_ROOT / "figures"
    mkeb_path: Path = PROJECT_ROOT / "data" / "mkeb" / "mkeb.jsonl"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.languages = validate_languages(self.languages, parameter="languages")
        self.edit_languages = validate_languages(self.edit_languages, parameter="edit_languages")
        missing = [l for l in self.edit_languages if l not in self.languages]
        if missing:
            raise ValueError(f"edit_languages {missing} must also be evaluation languages (languages={self.languages})")
        self.methods = _split(self.methods) if isinstance(self.methods, str) else list(self.methods)
        unknown = [m for m in self.methods if m not in ALL_METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown} in methods; available: {', '.join(ALL_METHODS)}")
        if int(self.n_records) < 1:
            raise ValueError(f"n_records must be >= 1, got {self.n_records}")
        self.n_records = int(self.n_records)
        self.run_dir, self.figures_dir, self.mkeb_path = (Path(p) if Path(p).is_absolute() else PROJECT_ROOT / p
                                                          for p in (self.run_dir, self.figures_dir, self.mkeb_path))

    @classmethod
    def from_params(cls, **params: Any) -> RunConfig:
        """Build from notebook parameters; ``preset`` picks a named preset that the other values override."""
        preset = params.pop("preset", None)
        base = dict(PRESETS[preset]) if preset else {}
        base.update({k: v for k, v in params.items() if v is not None})
        names = {f.name for f in dataclasses.fields(cls)}
        extra = {k: base.pop(k) for k in [k for k in base if k not in names]}  # notebook-specific parameters
        for key in ("languages", "edit_languages"):
            if isinstance(base.get(key), str):
                base[key] = list(MKEB_LANGUAGES) if base[key] == "all" else _split(base[key])
        if base.get("methods") == "all":
            base["methods"] = list(ALL_METHODS)
        cfg = cls(**base)
        cfg.extra.update(extra)
        return cfg

    def seed_everything(self, offset: int = 0) -> None:
        """Seed python, numpy and torch for this run (never at import)."""
        import numpy as np
        import torch

        random.seed(self.seed + offset)
        np.random.seed(self.seed + offset)
        torch.manual_seed(self.seed + offset)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("run_dir", "figures_dir", "mkeb_path"):
            d[k] = str(Path(d[k]).relative_to(PROJECT_ROOT)) if Path(d[k]).is_relative_to(PROJECT_ROOT) else str(d[k])
        return d


PRESETS: dict[str, dict[str, Any]] = {
    "small": {},
    "full": {"device": "auto", "dtype": "auto", "languages": list(MKEB_LANGUAGES), "edit_languages": ["en", "zh"],
             "n_records": 1000, "methods": list(ALL_METHODS), "run_dir": "runs/full"},
}
