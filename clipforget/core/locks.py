"""Exclusive locks: between processes on a lock file (POSIX ``flock``; elsewhere a no-op), and between the threads
of one process on a path (:func:`path_lock`: no file is left behind)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) while the block runs; waits for another holder."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


_PATH_LOCKS: dict[str, tuple[threading.Lock, int]] = {}  # path -> (lock, holders and waiters)
_PATH_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def path_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold this process's lock on ``path`` while the block runs; a second thread asking for it waits. Nothing is
    written to disk, and the lock is forgotten once nobody holds or waits for it."""
    key = os.path.abspath(path)
    with _PATH_LOCKS_GUARD:
        lock, count = _PATH_LOCKS.get(key, (None, 0))
        lock = lock or threading.Lock()
        _PATH_LOCKS[key] = (lock, count + 1)
    try:
        with lock:
            yield
    finally:
        with _PATH_LOCKS_GUARD:
            lock, count = _PATH_LOCKS[key]
            if count <= 1:
                del _PATH_LOCKS[key]
            else:
                _PATH_LOCKS[key] = (lock, count - 1)
