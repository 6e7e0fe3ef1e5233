# -*- test-case-name: tests.test_storage_memory -*-
"""
Tests for L{kvstore.storage.memory}: the in-memory twins follow the same rules
as the real log and metadata store.
"""

from __future__ import annotations

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.storage import (
    MetadataRecord,
    LogEntry,
    MemoryLog,
    MemoryMetadata,
    StorageFailedError,
)


class MemoryStorageTests(SynchronousTestCase):
    """
    The in-memory log and metadata used by the simulator and the unit tests.
    """

    def test_memory_log_append_sync_truncate(self) -> None:
        """Appends show at once, become durable at sync, and truncation lowers durable_index."""
        log = MemoryLog()
        assert (log.first_index, log.last_index, log.durable_index) == (1, 0, 0)
        log.append([LogEntry(1, 1, b"a"), LogEntry(2, 1, b"b"), LogEntry(3, 2, b"c")])
        assert log.last_index == 3 and log.durable_index == 0
        fired: list[int] = []
        log.sync().addCallback(fired.append)
        assert fired == [3] and log.fsync_count == 1
        log.truncate_suffix(2)
        assert log.entries == [LogEntry(1, 1, b"a")] and log.durable_index == 1
        log.sync()
        log.sync()
        assert log.fsync_count == 2
        assert log.entry(1) == LogEntry(1, 1, b"a")
        with self.assertRaises(IndexError):
            log.entry(2)

    def test_memory_log_enforces_contiguity(self) -> None:
        """MemoryLog rejects gaps and decreasing terms like the real log."""
        log = MemoryLog([LogEntry(1, 2, b"")])
        assert log.durable_index == 1
        with self.assertRaises(ValueError):
            log.append([LogEntry(3, 2, b"")])
        with self.assertRaises(ValueError):
            log.append([LogEntry(2, 1, b"")])

    def test_memory_log_drop_prefix_and_fail(self) -> None:
        """drop_prefix moves first_index, and after fail() writes and syncs are refused."""
        log = MemoryLog([LogEntry(i, 1, b"") for i in range(1, 6)])
        log.drop_prefix(3)
        assert (log.first_index, log.last_index) == (4, 5)
        log.fail()
        with self.assertRaises(StorageFailedError):
            log.append([LogEntry(6, 1, b"")])
        errors: list[Failure] = []
        log.sync().addErrback(errors.append)
        assert errors[0].check(StorageFailedError)

    def test_memory_metadata(self) -> None:
        """MemoryMetadata saves synchronously and refuses after fail()."""
        meta = MemoryMetadata()
        assert meta.state == MetadataRecord()
        fired: list[None] = []
        meta.save(MetadataRecord(term=2, voted_for=1)).addCallback(fired.append)
        assert fired == [None] and meta.durable_state == MetadataRecord(term=2, voted_for=1)
        meta.fail()
        errors: list[Failure] = []
        meta.save(MetadataRecord(term=3)).addErrback(errors.append)
        assert errors[0].check(StorageFailedError) and meta.state == MetadataRecord(term=2, voted_for=1)
