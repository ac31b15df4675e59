"""Run-level configuration shared by every notebook: the papermill parameters, validated once.

Every notebook's ``parameters`` cell holds the same names; :func:`RunConfig.from_params` turns them into this
dataclass (validating languages, methods, device) so a parameter passed once to the batch driver flows to all
notebooks. ``PRESETS`` holds the named configurations: ``small`` (the CPU default, minutes) and ``full`` (the
paper's scale, for a GPU).

The parameters' declared types and their conversion live in :mod:`memla_utils.notebook_parameters`, the presets
and the method / record-source catalogues in :mod:`memla_utils.presets`; both are re-exported here, so
``memla_utils.config`` stays the one place to import them from.
"""
from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache import PROJECT_ROOT
from .languages import MKEB_LANGUAGES, PAPER_INDEPENDENT_LANGUAGES, validate_languages
from .notebook_parameters import (
    LIST_PARAMETERS,
    NOTEBOOK_PARAMETERS,
    Param,
    ParameterError,
    coerce_parameter,
    coerce_parameters,
)
from .presets import ALL_METHODS, MZSRE_RUN_LANGUAGES, OTHER_BENCHMARK_METHODS, PRESETS, RECORD_SOURCES


def _split(value: str | list[str] | tuple[str, ...]) -> list[str]:
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    return list(value)


def recorded_budget(parameters: Mapping[str, Any]) -> str:
    """The baseline budget a run's recorded parameters (``run_identity.json``'s ``parameters``) resolve to, as
    notebook 05 resolves it: ``budget`` (absent or ``None``: ``auto``) on ``device`` (absent: ``cpu``), so ``auto``
    is ``cpu-small`` on a CPU (``baselines.resolve_budget``)."""
    from .baselines import resolve_budget

    return resolve_budget(str(parameters.get("budget") or "auto"), str(parameters.get("device") or "cpu"))


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
    record_selection: str = "first"  # "first" n_records of the file (small) | "stratified": equal counts per
    #                                  relation, seeded by ``seed`` (medium; issue 16) -- mkeb.select.select_records
    dataset: str = "mkeb"  # where the records come from. Default "mkeb": the companion's own MKEB build at
    #                        mkeb_path, as every run before issue 16 (small, medium, full). "mzsre" / "bizsre": the
    #                        public MzsRE / Bi-ZsRE test files under shared_data_dir, read by mkeb.importers
    #                        (RECORD_SOURCES; the mzsre / bizsre presets); mkeb_path is then not read
    shared_data_dir: Path = Path("../shared/data")  # where the public benchmarks lie (not copied into the
    #                        project); relative = to the project root, as mkeb.importers.resolve_shared_dir
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
        if self.record_selection not in ("first", "stratified"):
            raise ValueError(f"record_selection must be 'first' or 'stratified', got {self.record_selection!r}")
        if int(self.n_records) < 1:
            raise ValueError(f"n_records must be >= 1, got {self.n_records}")
        self.n_records = int(self.n_records)
        if self.dataset not in RECORD_SOURCES:
            raise ParameterError(f"parameter dataset must be one of {', '.join(RECORD_SOURCES)}, got {self.dataset!r}")
        self.run_dir, self.figures_dir, self.mkeb_path = (Path(p) if Path(p).is_absolute() else PROJECT_ROOT / p
                                                          for p in (self.run_dir, self.figures_dir, self.mkeb_path))
        shared = Path(self.shared_data_dir)
        self.shared_data_dir = shared if shared.is_absolute() else (PROJECT_ROOT / shared).resolve()

    @classmethod
    def from_params(cls, **params: Any) -> RunConfig:
        """Build from notebook parameters; ``preset`` picks a named preset that the other values override.

        Every parameter is converted to its declared type first (:func:`coerce_parameter`: list-valued ones
        accept a list, a comma string or a single scalar); notebook-specific parameters end up, converted, in
        ``extra`` (e.g. ``cfg.extra["sweep_steps"] == [10]`` for ``-p sweep_steps 10``).
        """
        params = coerce_parameters(params)
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

    def run_records(self, n_train: int = 0) -> tuple[list[Any], list[Any]]:
        """The records this run evaluates and a disjoint training split of ``n_train`` (MEND, IKE), in its languages.

        ``record_selection="first"`` reads only the first ``n_records + n_train`` records of the source (for
        ``dataset="mkeb"``, of ``mkeb_path``); ``"stratified"`` reads all of them and draws equal counts per
        relation (``mkeb.select.split_records``). MzsRE and Bi-ZsRE carry no relation label (every record's
        relation is "zsRE relation"), so for them ``"stratified"`` is one seeded draw from the whole file. Errors
        of the file or of the selection name the file, record or parameter (:meth:`source_records`).
        """
        from .mkeb.select import split_records

        n = self.n_records + int(n_train) if self.record_selection == "first" else None
        records = self.source_records(n)
        try:
            return split_records(records, self.n_records, int(n_train), selection=self.record_selection,
                                 seed=self.seed)
        except ValueError as err:
            if self.dataset == "mkeb":
                raise
            raise ValueError(f"dataset={self.dataset!r} ({self.source_path()}): {err}") from None

    def source_path(self) -> Path:
        """The file or folder the run's records are read from: ``mkeb_path``, or the dataset's path under
        ``shared_data_dir`` (:data:`memla_utils.mkeb.importers.DATASETS`)."""
        name = RECORD_SOURCES[self.dataset]
        if name is None:
            return self.mkeb_path
        from .mkeb.importers import DATASETS

        return self.shared_data_dir / {d.name: d for d in DATASETS}[name].relative_path

    def source_records(self, n: int | None = None) -> list[Any]:
        """The first ``n`` records (all when ``None``) of the run's source, in file order, in its languages.

        ``dataset="mkeb"``: ``mkeb.load_records(mkeb_path, languages, n)``. ``"mzsre"`` / ``"bizsre"``: the
        importer reads the dataset from ``shared_data_dir`` in place (nothing is copied or written) with its
        language check. Raises ``FileNotFoundError`` naming the path and the parameter ``shared_data_dir`` when
        the data is not there, and :class:`ParameterError` naming ``languages`` when the dataset lacks a run
        language.
        """
        name = RECORD_SOURCES[self.dataset]
        if name is None:
            from .mkeb import load_records

            return load_records(self.mkeb_path, languages=self.languages, n=n)
        from .mkeb.importers import DATASETS

        spec = {d.name: d for d in DATASETS}[name]
        if not self.shared_data_dir.is_dir():
            raise FileNotFoundError(f"parameter shared_data_dir: no folder {self.shared_data_dir}; dataset="
                                    f"{self.dataset!r} reads {name} from {spec.relative_path} under it (see "
                                    f"../shared/data/README.md; set -p shared_data_dir=/path/to/data)")
        path = self.source_path()
        if not path.exists():
            raise FileNotFoundError(f"dataset={self.dataset!r}: {name} not found at {path} (parameter "
                                    f"shared_data_dir={self.shared_data_dir}; expected layout: "
                                    f"{spec.relative_path}, see its PROVENANCE.md)")
        records = spec.importer(path, languages=self.languages, **dict(spec.kwargs))
        have = {l for r in records for l in r.edit}
        lacking = [l for l in self.languages if l not in have or any(l not in r.edit for r in records)]
        if lacking:
            raise ParameterError(f"parameter languages: dataset={self.dataset!r} ({path}) has no records in "
                                 f"{lacking}; its records have {sorted(have)}")
        return list(records) if n is None else list(records[: int(n)])

    @property
    def shows_record_text(self) -> bool:
        """Whether notebooks may show the records' text (prompts, answers). Not for MzsRE / Bi-ZsRE: their
        records are never copied into the project, and their runs' executed notebooks (``results/<preset>/
        notebooks``) and tables (``figures/<preset>``) are tracked, so those show record ids and counts only."""
        return self.dataset == "mkeb"

    def public(self, frame: Any, columns: Sequence[str] = ("prompt", "answer")) -> Any:
        """``frame`` (a pandas DataFrame) as a notebook may show and save it: without the record-text ``columns``
        when :attr:`shows_record_text` is false (MzsRE / Bi-ZsRE runs), unchanged otherwise."""
        return frame if self.shows_record_text else frame.drop(columns=list(columns), errors="ignore")

    def prose_languages(self) -> list[str]:
        """The run's languages that have real prose (the ``dataset-build`` text of :mod:`memla_utils.corpus`,
        the 12 MKEB languages): ROME/MEMIT/PMET key statistics (notebook 05) and general-ability perplexity
        (notebook 06) use these. Equal to ``languages`` for every MKEB run; the ``mzsre`` preset's cs, nl, tr
        and vi are left out of those two measurements only (they are still edited/evaluated languages).
        Raises :class:`ParameterError` when no run language has prose."""
        from .corpus import ISO639_3

        out = [l for l in self.languages if l in ISO639_3]
        if not out:
            raise ParameterError(f"parameter languages: none of {self.languages} has dataset-build prose (it covers "
                                 f"{', '.join(ISO639_3)}); ROME/MEMIT/PMET statistics and general ability need one")
        return out

    def attribution_languages(self) -> list[str]:
        """The languages notebooks 02 and 03 attribute for their per-language neuron analyses.

        From the notebook parameter ``attribution_languages`` (in ``extra``): ``"run"`` (default) = the run's
        ``languages``; ``"masks"`` = the languages MEMLA's masks are built from, i.e. the edit languages and the
        independence languages (``extra["independent_languages"]``, default en, zh, fr as memla4mke, which
        located neurons in those three languages only: ``neurons/neurons_llama3/{en,zh,fr}_neurons.json``;
        ``"all"`` there means every run language); or a list of run languages. In the run's language order.
        Raises :class:`ParameterError` naming the parameter for a language the run does not evaluate.
        """
        value = self.extra.get("attribution_languages", "run")
        if value == "run":
            return list(self.languages)
        if value == "masks":
            indep = self.extra.get("independent_languages", list(PAPER_INDEPENDENT_LANGUAGES))
            indep = list(self.languages) if indep == "all" else _split(indep) if isinstance(indep, str) else indep
            wanted = {*self.edit_languages, *indep}
        else:
            wanted = set(validate_languages(_split(value) if isinstance(value, str) else value,
                                            parameter="attribution_languages"))
            outside = sorted(wanted - set(self.languages))
            if outside:
                raise ParameterError(f"parameter attribution_languages: {outside} are not run languages "
                                     f"(languages={self.languages})")
        return [l for l in self.languages if l in wanted]

    def seed_everything(self, offset: int = 0) -> None:
        """Seed python, numpy and torch for this run (never at import)."""
        import numpy as np
        import torch

        random.seed(self.seed + offset)
        np.random.seed(self.seed + offset)
        torch.manual_seed(self.seed + offset)

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-able values, paths relative to the project root where they can be.

        ``dataset`` and ``shared_data_dir`` are left out for ``dataset="mkeb"`` (they change nothing there), so
        the manifests and provenance digests of MKEB runs (small, medium, full) are the same as before the
        fields existed.
        """
        d = dataclasses.asdict(self)
        for k in ("run_dir", "figures_dir", "mkeb_path"):
            d[k] = str(Path(d[k]).relative_to(PROJECT_ROOT)) if Path(d[k]).is_relative_to(PROJECT_ROOT) else str(d[k])
        if self.dataset == "mkeb":
            d.pop("dataset")
            d.pop("shared_data_dir")
        else:
            d["shared_data_dir"] = Path(os.path.relpath(self.shared_data_dir, PROJECT_ROOT)).as_posix()
        return d


__all__ = ["ALL_METHODS", "LIST_PARAMETERS", "MZSRE_RUN_LANGUAGES", "NOTEBOOK_PARAMETERS", "OTHER_BENCHMARK_METHODS",
           "PRESETS", "Param", "ParameterError", "RECORD_SOURCES", "RunConfig", "coerce_parameter", "coerce_parameters",
           "recorded_budget"]
