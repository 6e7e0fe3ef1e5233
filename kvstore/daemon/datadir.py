# -*- test-case-name: tests.test_datadir -*-
"""
A node's data directory: creating it durably and locking it.  Describing a
stopped one is the C{kvstore-inspect} tool's job (L{kvstore.tools.inspect}).

Layout::

    <data-dir>/LOCK            held (flock) while a node runs on this directory
    <data-dir>/metadata.json   term, vote and cluster id (atomic replace)
    <data-dir>/wal/            write-ahead log segments (the Raft log)
    <data-dir>/snapshots/      state machine snapshots (kvstore.storage.snapshots)
"""

from __future__ import annotations

import errno
import fcntl
import os

from twisted.python.usage import UsageError


def make_directory_durably(path: str) -> None:
    """
    Create C{path} and any missing parents, fsyncing each new directory's
    parent, so that a power cut right after a node's first start cannot
    lose the data directory (and a vote already cast in it).
    """
    path = os.path.abspath(path)
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for directory in reversed(missing):
        os.mkdir(directory)
        fd = os.open(os.path.dirname(directory), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class DataDirectoryLock:
    """An exclusive C{flock} on C{<data-dir>/LOCK}, so that two processes can
    never run on one data directory (they would corrupt each other's log)."""

    def __init__(self, data_dir: str) -> None:
        self.path = os.path.join(data_dir, "LOCK")
        self._fd: int | None = None

    def acquire(self, create: bool = True) -> None:
        """
        Take the lock, or raise L{UsageError} if another process holds it.
        With C{create} false, the lock file must exist already and is not
        written (for tools that only look at a stopped node's directory).
        """
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        fd = os.open(self.path, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise UsageError(f"data directory {os.path.dirname(self.path)} is in use by another process") from None
            raise
        if create:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
