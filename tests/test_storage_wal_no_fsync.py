# -*- test-case-name: tests.test_storage_wal_no_fsync -*-
"""
Tests that a node started with C{--unsafe-no-fsync} flushes its log on
the calling thread (L{run_inline}), with no storage thread hand-off, and
that a node with fsync on keeps its storage thread.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.options import parse_config
from kvstore.daemon.service import _open_storage
from kvstore.storage.wal import LogEntry, StorageThread, run_inline


class RunInlineTests(SynchronousTestCase):
    def test_result_is_a_fired_deferred(self) -> None:
        """run_inline runs the callable at once and returns its result in
        a Deferred that has already fired."""
        self.assertEqual(self.successResultOf(run_inline(lambda: 7)), 7)

    def test_exception_is_a_failed_deferred(self) -> None:
        """An exception of the callable becomes a failed Deferred, not a
        raise (the log's error handling expects a Deferred)."""
        self.failureResultOf(run_inline(lambda: 1 / 0), ZeroDivisionError)


class NoFsyncNodeStorageTests(SynchronousTestCase):
    def _open(self, *extra: str) -> object:
        config = parse_config(["--data-dir", self.mktemp(), "--port", "20999", *extra])
        lock, wal, _metadata, _snapshots = _open_storage(config)
        self.addCleanup(lock.release)
        self.addCleanup(wal.close)
        return wal

    def test_no_fsync_log_flushes_inline(self) -> None:
        """With --unsafe-no-fsync, sync() after an append has fired when it
        returns: the flush ran on the calling thread."""
        wal = self._open("--unsafe-no-fsync")
        self.assertIs(wal._run_in_thread, run_inline)  # type: ignore[attr-defined]
        wal.append([LogEntry(1, 1, b"P k v")])  # type: ignore[attr-defined]
        self.assertEqual(self.successResultOf(wal.sync()), 1)  # type: ignore[attr-defined]

    def test_fsync_log_keeps_its_storage_thread(self) -> None:
        """With fsync on, the log keeps its storage thread: the reactor waits
        for the disk only in small flushes while the disk is fast
        (L{kvstore.storage.wal.InlineFlushPolicy})."""
        wal = self._open()
        self.assertIsInstance(wal._run_in_thread, StorageThread)  # type: ignore[attr-defined]
