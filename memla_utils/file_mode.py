"""The permission bits a new file gets: what ``open(path, "w")`` would give, honouring the process's umask.

``tempfile.mkstemp`` creates its file with mode 0600 whatever the umask, and an atomic write renames that file onto
its target, so every cache entry, run manifest and ``parts.json`` written through a temporary file was readable by
its owner only (on a shared machine, a second account could not read a run's results). Writers that rename a
``mkstemp`` file into place (:func:`memla_utils.cache.atomic_path`, :func:`memla_utils.lockfile.compile_lock`) set
:func:`new_file_mode` on it first. Standard library only: the lock-file check imports it before the environment is
installed.
"""
from __future__ import annotations

import os
from pathlib import Path

#: The umask assumed where the process's own cannot be read (the usual default).
DEFAULT_UMASK = 0o022


def current_umask() -> int:
    """The process's umask, read from ``/proc/self/status`` (Linux) without changing it; :data:`DEFAULT_UMASK`
    elsewhere. (``os.umask`` can only be read by setting it, which races with other threads creating files.)"""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return DEFAULT_UMASK


def new_file_mode() -> int:
    """Mode bits of a new regular file: ``0o666`` less the umask (``0o644`` under the default umask)."""
    return 0o666 & ~current_umask()


def set_new_file_mode(path: str | os.PathLike[str]) -> None:
    """Give ``path`` (a ``mkstemp`` file about to be renamed into place) the mode a plain new file would have."""
    os.chmod(path, new_file_mode())
