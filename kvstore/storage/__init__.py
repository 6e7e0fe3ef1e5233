# -*- test-case-name: tests.test_storage_wal -*-
"""
Durable storage: the write-ahead log (the Raft log) and the metadata file.

Storage knows nothing of Raft rules beyond the shape of a log (contiguous
indexes, non-decreasing terms); it makes things durable and says when.
L{WriteAheadLog} and L{MetadataStore} do blocking file work only through an
injected thread runner; L{MemoryLog} and L{MemoryMetadata} are in-memory
twins for unit tests and the simulator.
"""

from kvstore.storage.errors import (
    CorruptLogError,
    CorruptMetadataError,
    StorageError,
    StorageFailedError,
)
from kvstore.storage.memory import MemoryLog, MemoryMetadata
from kvstore.storage.metadata import MetadataRecord, MetadataStore
from kvstore.storage.records import FORMAT_VERSION, LogEntry
from kvstore.storage.wal import ThreadRunner, WriteAheadLog, default_thread_runner

__all__ = [
    "FORMAT_VERSION",
    "LogEntry",
    "WriteAheadLog",
    "MetadataStore",
    "MetadataRecord",
    "MemoryLog",
    "MemoryMetadata",
    "ThreadRunner",
    "default_thread_runner",
    "StorageError",
    "CorruptLogError",
    "CorruptMetadataError",
    "StorageFailedError",
]
