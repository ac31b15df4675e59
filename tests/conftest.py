"""Shared fixtures: tiny models per architecture (unit tests) and the real default model (integration)."""
from __future__ import annotations

from pathlib import Path

import pytest

from memla_utils.testing import TINY_ARCHITECTURES, tiny_model

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(params=TINY_ARCHITECTURES)
def any_tiny(request):
    """One tiny random model per supported architecture."""
    return tiny_model(request.param)


@pytest.fixture(scope="session")
def default_lm():
    """The embedded default model (Gemma 3 270M), loaded once per test session."""
    from memla_utils.models import load_model

    return load_model("default", device="cpu", dtype="float32")


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """An empty artifact cache for one test."""
    monkeypatch.setenv("MEMLA_CACHE", str(tmp_path / "cache"))
    from memla_utils.cache import ArtifactCache

    return ArtifactCache(tmp_path / "cache")


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    """A fresh artifact cache and cleared in-memory covariances for one test module
    (``pytestmark = pytest.mark.usefixtures("module_cache")``)."""
    from memla_utils.covariance import clear_memory

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEMLA_CACHE", str(tmp_path_factory.mktemp("cache")))
        clear_memory()
        yield


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread per test process: the suite runs as 2 xdist workers on 2 cores, and tiny-model ops
    are far faster without OpenMP oversubscription (observed 30x on a shared machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
