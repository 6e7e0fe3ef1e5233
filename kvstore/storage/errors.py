# -*- test-case-name: tests.test_storage_wal -*-
"""
Errors raised by the storage layer.

They are split by what the operator must do: L{CorruptLogError} and
L{CorruptMetadataError} mean the data on disk is damaged and the node must not
start (a human decides what to do, because silently dropping acknowledged
entries or a recorded vote could break Raft's safety); L{StorageFailedError}
means a write or fsync failed at run time, after which the store refuses all
further writes (fail-stop: after a failed fsync the kernel may have dropped
dirty pages, so nothing we believe about the file is trustworthy any more).
"""

from __future__ import annotations

__all__ = [
    "StorageError",
    "CorruptLogError",
    "CorruptMetadataError",
    "StorageFailedError",
]


class StorageError(Exception):
    """Base class of all storage errors."""


class CorruptLogError(StorageError):
    """
    A write-ahead log segment is damaged somewhere other than a torn tail.

    @ivar path: the segment file.
    @ivar offset: the byte offset in that file where the damage starts.
    @ivar reason: a short description of what is wrong.
    """

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt write-ahead log at byte offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class CorruptMetadataError(StorageError):
    """
    The metadata file (term, vote) exists but cannot be trusted.

    @ivar path: the metadata file.
    @ivar reason: a short description of what is wrong.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: corrupt metadata file: {reason}")
        self.path = path
        self.reason = reason


class StorageFailedError(StorageError):
    """
    An earlier write or fsync failed (or the store was closed), so this store
    refuses further writes.  The original exception is the C{__cause__}.
    """
