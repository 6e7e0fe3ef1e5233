# -*- test-case-name: tests.test_storage_wal -*-
"""
The small file-system API that the WAL and the metadata store use.

Every durable operation goes through one L{FileSystem} object instead of
calling C{os} directly, so that tests (and, later, the cluster simulator in
C{kvstore.testing}) can substitute a file system that fails an fsync, counts
calls, or simulates a crash, without monkeypatching C{os}.  The methods are
deliberately thin and blocking: they run in the storage thread (or at
start-up, before the reactor runs), never on the reactor thread.
"""

from __future__ import annotations

import os

__all__ = ["FileSystem"]


class FileSystem:
    """Blocking file operations on the real file system (POSIX)."""

    def makedirs(self, path: str) -> bool:
        """Create C{path} and missing parents; return True if it was created."""
        if os.path.isdir(path):
            return False
        os.makedirs(path, exist_ok=True)
        return True

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def read_file(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def open_rw(self, path: str) -> int:
        """Open an existing file for reading and writing; return the fd."""
        return os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))

    def create_truncate(self, path: str) -> int:
        """Create a new file (truncating any leftover) for writing; return the fd."""
        return os.open(
            path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644
        )

    def pwrite_all(self, fd: int, data: bytes, offset: int) -> None:
        """Write all of C{data} at C{offset}, looping over short writes."""
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            view = view[written:]
            offset += written

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        """Up to C{length} bytes at C{offset} (fewer only at the end of the file)."""
        parts = []
        while length > 0:
            data = os.pread(fd, length, offset)
            if not data:
                break
            parts.append(data)
            length -= len(data)
            offset += len(data)
        return b"".join(parts)

    def file_size(self, fd: int) -> int:
        """The current size of the open file C{fd}."""
        return os.fstat(fd).st_size

    def fsync(self, fd: int) -> None:
        """
        Make the file's data durable, with the metadata needed to read it
        back (its size, its block map): C{fdatasync} where the platform has
        it, else C{fsync}.

        Why not C{fsync}: it also writes the inode's timestamps, so every
        call commits the file system's journal even when only data changed.
        The write-ahead log overwrites zero-filled, preallocated bytes
        (L{kvstore.storage.wal}), so its C{fdatasync}s need no journal
        commit; a call that did change the size or the block map (an append,
        an C{ftruncate}) still makes that change durable (fdatasync(2)).
        """
        if hasattr(os, "fdatasync"):  # not on macOS
            os.fdatasync(fd)
        else:
            os.fsync(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def close(self, fd: int) -> None:
        os.close(fd)

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def fsync_dir(self, path: str) -> None:
        """Make creations, renames and deletions in directory C{path} durable."""
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
