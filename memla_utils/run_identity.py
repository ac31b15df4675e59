"""What a run was computed with, so that a run built in parts (sessions, shards) never mixes two versions.

A multi-session run (the medium preset) appends results part by part. Every part must use the same code for
attribution, editing and evaluation, the same pinned environment (lock file), the same model and the same
records; otherwise its numbers are not one experiment. :func:`run_identity` hashes each of those;
:func:`check_run_identity` records the identity in ``<run_dir>/run_identity.json`` when a run starts and
refuses to append to a run whose recorded identity differs, saying what changed, unless told to start over
(then the earlier results are moved aside, never deleted).

Parameters that only one notebook reads, and whose notebook writes its whole output anew every time it runs
(:data:`SCOPED_PARAMETERS`: notebook 06's general-ability study), are recorded apart: changing them re-runs that
notebook alone (its earlier output moves aside, :data:`SCOPED_OUTPUTS`), not the run. Nothing is appended to
results computed with other values, since that notebook never appends.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .cache import PROJECT_ROOT, write_json_atomic

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
IDENTITY_FILE = "run_identity.json"

#: The package files whose code decides each stage's numbers (paths relative to ``memla_utils/``; a folder
#: means every ``*.py`` in it). Shared foundations (models, text, scoring, languages) count for every stage.
STAGE_FILES: dict[str, tuple[str, ...]] = {
    "foundation": ("models.py", "models_adapter.py", "models_gguf.py", "text.py", "scoring.py", "languages.py",
                   "seeds.py", "cache.py", "finite.py", "head_logprob.py", "notebook_setup.py", "cpu_workers.py", "model_workers.py"),
    "attribution": ("attribution.py", "attribution_config.py", "attribution_prep.py", "attribution_ig.py",
                    "attribution_reference.py", "attribution_records.py", "attribution_scores.py",
                    "attribution_stair.py", "attribution_parallel.py", "neuron_masks.py", "mask_compute.py", "masks.py",
                    "mask_files.py",
                    "suppression.py"),
    "editing": ("editors", "covariance.py", "corpus.py", "baselines.py"),
    "evaluation": ("evaluate.py", "evaluate_metrics.py", "evaluate_f1.py", "evaluate_greedy.py",
                   "evaluate_preedit.py", "prefix_scoring.py", "head_projection.py", "runner.py", "results_files.py",
                   "executors.py", "executors_ray.py", "executors_ray_pool.py", "process_executor.py", "unit_queue.py",
                   "model_spec.py", "general.py", "general_scoring.py", "general_probe.py", "general_edits.py",
                   "general_plan.py"),
}

#: Package modules that stage files import but that cannot change a stage's numbers, and why (a test checks that
#: every module a stage file imports, directly or through another stage file, is in :data:`STAGE_FILES` or here).
NOT_STAGE_FILES: dict[str, str] = {
    "config.py": "run parameters: recorded separately in the identity's parameters",
    "notebook_parameters.py": "the notebook parameters' declared types (config.py's): the converted values are "
                              "recorded in the identity's parameters",
    "presets.py": "named run parameters (config.py's presets): the values a preset sets are recorded in the "
                  "identity's parameters",
    "batch_plan.py": "the batch driver's parameter parsing and run planning: the chain's parameters are recorded "
                     "in the identity's parameters",
    "mkeb": "record parsing: the run's records are hashed by content in the identity",
    "manifest.py": "bookkeeping of what ran (environment, timings), read by no computation",
    "run_parts.py": "bookkeeping of a run's parts and deadlines, read by no computation",
    "run_identity.py": "this check itself",
    "report": "tables, statistics and figures: recomputed from all of a run's results after every part",
    "file_mode.py": "the permission bits of written files, never their content",
    "progress.py": "progress bars: what a run shows while it works, never what it computes",
    "mask_tables.py": "notebook 03's tables of neuron sets and sweeps: recomputed in full from the cached "
                      "attributions at every part, never accumulated into a run's results",
}

#: Parameters that only one notebook reads (notebook file stem -> parameter names); a test parses the notebooks to
#: check that no other notebook reads them. Recorded apart from the run's parameters (:class:`RunIdentity`).
SCOPED_PARAMETERS: dict[str, tuple[str, ...]] = {
    "06_multihop_general": ("general_methods", "general_records", "sequential_steps", "probe_records"),
}
#: What each scoped notebook writes into the run folder, each time whole (``general_edits.save_rows`` replaces
#: ``general/general.jsonl``): moved aside when the notebook's scoped parameters change.
SCOPED_OUTPUTS: dict[str, tuple[str, ...]] = {"06_multihop_general": ("general",)}

#: Lock files searched for in the project root, first found wins.
LOCK_FILES: tuple[str, ...] = ("requirements.lock", "requirements-lock.txt", "requirements.txt")


class RunIdentityError(RuntimeError):
    """A run folder holds results computed with other code, environment, model or records."""


def _files(entry: str) -> list[Path]:
    path = PACKAGE_DIR / entry
    if path.is_dir():
        return sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
    return [path] if path.is_file() else []


def hash_files(paths: Iterable[Path], root: Path = PACKAGE_DIR) -> str:
    """SHA-256 (first 16 hex digits) over the files' relative paths and bytes, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        h.update(str(p.relative_to(root)).encode("utf-8") + b"\0")
        h.update(p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def notebooks_hash(directory: Path | None = None) -> str:
    """SHA-256 (first 16 hex digits) of the notebooks' code cells, in file-name order: the chain's own code (thin,
    but it passes parameters and picks functions). Outputs, metadata and markdown do not count, so an executed
    copy committed with its outputs has the hash of its source. Raises ``ValueError`` naming an unreadable
    notebook."""
    directory = directory if directory is not None else PROJECT_ROOT / "notebooks"
    h = hashlib.sha256()
    for path in sorted(directory.glob("*.ipynb")):
        try:
            cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a readable notebook ({err})") from err
        h.update(path.name.encode("utf-8") + b"\0")
        for cell in cells:
            if cell.get("cell_type") == "code":
                src = cell.get("source", "")
                h.update(("".join(src) if isinstance(src, list) else str(src)).encode("utf-8") + b"\0")
    return h.hexdigest()[:16]


def code_hashes() -> dict[str, str]:
    """One hash per stage of :data:`STAGE_FILES`, plus ``"notebooks"`` (:func:`notebooks_hash`)."""
    hashes = {stage: hash_files([f for e in entries for f in _files(e)]) for stage, entries in STAGE_FILES.items()}
    hashes["notebooks"] = notebooks_hash()
    return hashes


def lock_hash(root: Path = PROJECT_ROOT) -> str | None:
    """Hash of the project's lock file (``None`` when there is none: then nothing pins the environment)."""
    for name in LOCK_FILES:
        p = root / name
        if p.is_file():
            return f"{name}:{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}"
    return None


@dataclass(frozen=True)
class RunIdentity:
    """Hashes of what decides a run's numbers (code per stage, lock file, model, records, run parameters)."""

    code: dict[str, str]
    lock: str | None
    model: str
    records: str
    parameters: dict[str, Any] = field(default_factory=dict)
    #: notebook -> its :data:`SCOPED_PARAMETERS` (absent from ``parameters``); older identity files lack it
    scoped: dict[str, dict[str, Any]] = field(default_factory=dict)

    def scoped_differences(self, other: RunIdentity) -> dict[str, list[str]]:
        """Notebook -> what differs in its scoped parameters from ``other`` (only notebooks with a difference)."""
        out: dict[str, list[str]] = {}
        for nb in sorted(set(self.scoped) | set(other.scoped)):
            a, b = other.scoped.get(nb, {}), self.scoped.get(nb, {})
            diff = [f"parameter {k!r}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
                    if a.get(k) != b.get(k)]
            if diff:
                out[nb] = diff
        return out

    def differences(self, other: RunIdentity) -> list[str]:
        """Human-readable list of what differs from ``other`` (empty when identical)."""
        out = []
        for stage in sorted(set(self.code) | set(other.code)):
            a, b = other.code.get(stage), self.code.get(stage)
            if a != b:
                out.append(f"code of stage {stage!r}: {a} -> {b}")
        for name in ("lock", "model", "records"):
            a, b = getattr(other, name), getattr(self, name)
            if a != b:
                out.append(f"{name}: {a} -> {b}")
        for key in sorted(set(self.parameters) | set(other.parameters)):
            a, b = other.parameters.get(key), self.parameters.get(key)
            if a != b:
                out.append(f"parameter {key!r}: {a!r} -> {b!r}")
        return out


def records_hash(records: Sequence[Any]) -> str:
    """Hash of the records' contents, in order (``Record.content_hash`` of each)."""
    h = hashlib.sha256()
    for r in records:
        h.update(str(r.content_hash()).encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


def run_identity(model_fingerprint: str, records: Sequence[Any], parameters: dict[str, Any] | None = None,
                 ) -> RunIdentity:
    """The identity of a run on these records with this model and the checked-out code and lock file; the
    parameters of :data:`SCOPED_PARAMETERS` go to ``scoped`` (those given only), the rest to ``parameters``."""
    params = json.loads(json.dumps(parameters or {}, sort_keys=True, default=str))
    scoped_names = {k for names in SCOPED_PARAMETERS.values() for k in names}
    scoped = {nb: {k: params[k] for k in names if k in params} for nb, names in SCOPED_PARAMETERS.items()}
    return RunIdentity(code_hashes(), lock_hash(), model_fingerprint, records_hash(records),
                       {k: v for k, v in params.items() if k not in scoped_names},
                       {nb: v for nb, v in scoped.items() if v})


#: What a restarted run keeps in place: its durable cache (``cache.DURABLE_ENV``; ``batch`` points it there).
KEPT_ON_RESTART: tuple[str, ...] = ("cache",)


def _move_scoped_outputs(run_dir: Path, changed: dict[str, list[str]]) -> None:
    """Move the outputs of every notebook whose scoped parameters changed to ``superseded-<UTC>-<notebook>/``."""
    for nb, diff in changed.items():
        present = [run_dir / name for name in SCOPED_OUTPUTS.get(nb, ()) if (run_dir / name).exists()]
        aside = None
        if present:
            stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            aside = run_dir / f"superseded-{stamp}-{nb}"
            aside.mkdir(parents=True)
            for item in present:
                shutil.move(str(item), str(aside / item.name))
        log.warning("%s: notebook %s runs with other parameters (%s)%s", run_dir, nb, "; ".join(diff),
                    f"; its earlier output moved to {aside}" if aside else "")


def check_run_identity(run_dir: str | Path, identity: RunIdentity, *, restart: bool = False) -> Path:
    """Record ``identity`` in a new run; refuse an existing run made with anything else.

    Raises :class:`RunIdentityError` naming every difference (code per stage, lock file, model, records,
    parameters) when ``run_dir`` was started with another identity and holds results. With ``restart=True``
    the earlier contents are moved to ``<run_dir>/superseded-<UTC time>/`` and the run starts over, except the
    durable cache (:data:`KEPT_ON_RESTART`): it is content-addressed like the local cache (every key names the
    model, record, prompt, parameters and score/join versions), so the new run reuses what still applies.
    When only a notebook's scoped parameters differ (:data:`SCOPED_PARAMETERS`), that notebook's earlier output
    moves aside (:data:`SCOPED_OUTPUTS`) and the run goes on. Returns the identity file's path.
    """
    run_dir = Path(run_dir)
    path = run_dir / IDENTITY_FILE
    if path.is_file():
        try:
            old = RunIdentity(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as err:
            raise RunIdentityError(f"{path}: unreadable run identity ({err}); move the run folder aside or "
                                   "pass restart=True") from err
        diff = identity.differences(old)
        if not diff:
            changed = identity.scoped_differences(old)
            if changed or old != identity:  # a scoped change, or a file written before ``scoped`` existed
                _move_scoped_outputs(run_dir, changed)
                write_json_atomic(path, asdict(identity))
            return path
        if not restart:
            raise RunIdentityError(
                f"{run_dir} was started with other inputs, so its results cannot be extended: "
                + "; ".join(diff) + ". Start over with restart=True (make paper ARGS=--restart-run), which moves "
                "the earlier results aside, or check out the code and lock file the run was started with.")
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = run_dir / f"superseded-{stamp}"
        aside.mkdir(parents=True)
        for item in list(run_dir.iterdir()):
            if item != aside and not item.name.startswith("superseded-") and item.name not in KEPT_ON_RESTART:
                shutil.move(str(item), str(aside / item.name))
        log.warning("%s: inputs changed (%s); earlier results moved to %s", run_dir, "; ".join(diff), aside)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, asdict(identity))
    return path


#: What a report-only pass (notebook 07 alone, ``batch --report-only``) lets differ from the run's identity: the
#: report (``report``, outside every stage) is recomputed from all of the run's results, which were computed with
#: the code and lock file the identity records; the model, records and parameters must still be the run's, or the
#: report would describe another run.
REPORT_MAY_DIFFER: tuple[str, ...] = ("code", "lock")


def check_report_identity(run_dir: str | Path, identity: RunIdentity) -> list[str]:
    """Check that ``run_dir`` is the run ``identity`` describes, for a report-only pass; return what differs in
    code and lock file (:data:`REPORT_MAY_DIFFER`), for the caller to log. The identity file is left as it is.

    Raises :class:`RunIdentityError` when ``run_dir`` has no identity (no run to report on) or its model, records or
    parameters differ (naming each).
    """
    run_dir = Path(run_dir)
    path = run_dir / IDENTITY_FILE
    if not path.is_file():
        raise RunIdentityError(f"{path} is missing: {run_dir} holds no run to report on (run its notebooks "
                               "first: `make paper PRESET=<preset>`, or `python -m memla_utils.batch` without "
                               "--report-only)")
    try:
        old = RunIdentity(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as err:
        raise RunIdentityError(f"{path}: unreadable run identity ({err})") from err
    same_inputs = replace(identity, **{k: getattr(old, k) for k in REPORT_MAY_DIFFER})
    refused = same_inputs.differences(old)
    if refused:
        raise RunIdentityError(f"{run_dir} was run with other inputs than this report-only pass names: "
                               + "; ".join(refused) + ". Pass the run's own preset and parameters.")
    return identity.differences(old)


__all__ = ["IDENTITY_FILE", "KEPT_ON_RESTART", "REPORT_MAY_DIFFER", "SCOPED_OUTPUTS", "SCOPED_PARAMETERS", "RunIdentity",
           "RunIdentityError", "STAGE_FILES", "check_report_identity", "check_run_identity",
           "code_hashes", "hash_files", "lock_hash", "notebooks_hash", "records_hash", "run_identity"]
