"""Per-unit seeds: every (record, edit language, method) draws its randomness from its own seed.

A seed derived from the run seed and the unit's names (never from one sequential random stream) makes every
number independent of the order in which units run, of resuming an interrupted run, of sharding the work
across processes, and of training several edits in parallel. The brief of this companion requires it; the
paper's code (memla4mke ``memla/main.py``) instead seeds the global torch RNG once per run, so its k-th edit's
LoRA initialisation depends on how many edits ran before it.
"""
from __future__ import annotations

import hashlib
import json

#: Seeds fit in a signed 63-bit integer (``torch.Generator.manual_seed`` and ``numpy`` both accept it).
_SEED_BITS = 63


def unit_seed(run_seed: int, *parts: str | int) -> int:
    """A 63-bit seed from the run seed and the unit's names (e.g. ``"memla-lora-init", record, lang, method``).

    Deterministic across processes, machines and Python versions (SHA-256 of a canonical JSON array; Python's
    ``hash`` is salted per process and is not used). Different parts give unrelated seeds.

    Raises ``TypeError`` when ``run_seed`` is not an int (a float or string seed is a configuration mistake).
    """
    if isinstance(run_seed, bool) or not isinstance(run_seed, int):
        raise TypeError(f"run seed must be an int, got {run_seed!r} ({type(run_seed).__name__})")
    payload = json.dumps([run_seed, *[str(p) for p in parts]], ensure_ascii=False, separators=(",", ":"))
    digest = hashlib.sha256(payload.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - _SEED_BITS)


__all__ = ["unit_seed"]
