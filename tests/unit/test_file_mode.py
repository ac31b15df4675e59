"""Files written atomically get the mode a plain new file would get (memla_utils/file_mode.py), not mkstemp's 0600."""
from __future__ import annotations

import os
import stat

import pytest

from memla_utils.cache import atomic_path
from memla_utils.file_mode import current_umask, new_file_mode


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_follows_umask_like_open(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        with atomic_path(tmp_path / "a.json") as tmp:
            tmp.write_text("{}")
        (tmp_path / "b.json").write_text("{}")  # what a plain open() gives under the same umask
        assert _mode(tmp_path / "a.json") == _mode(tmp_path / "b.json") == 0o666 & ~umask == new_file_mode()
    finally:
        os.umask(old)


def test_failed_block_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a.json") as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
