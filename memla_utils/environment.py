"""Versions, device and git commit of the running environment (for notebook 00 and run manifests)."""
from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

import torch

from .cache import PROJECT_ROOT

PACKAGES = ("torch", "transformers", "peft", "accelerate", "gguf", "numpy", "pandas", "matplotlib", "seaborn",
            "babel", "papermill", "nbval", "memla-utils")


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    out = {}
    for p in packages:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def git_commit() -> str:
    """The project's commit (with ``-dirty`` when its source has uncommitted changes: :func:`manifest.git_state`,
    the same paths as every manifest), or ``unknown`` outside a checkout."""
    from .manifest import git_state

    state = git_state(PROJECT_ROOT)
    if not state["commit"]:
        return "unknown"
    return state["commit"] + ("-dirty" if state["dirty"] else "")


def device_description() -> str:
    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def environment_report() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(), "device": device_description(),
            "git_commit": git_commit(), **{f"version:{k}": v for k, v in package_versions().items()}}
