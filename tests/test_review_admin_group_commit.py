# -*- test-case-name: tests.test_review_admin_group_commit -*-
"""
The group-commit size a log reports (C{on_flush}, the
C{kvstore_wal_group_commit_entries} histogram) counts the entries a flush
wrote, not the jump of the durable index when a snapshot install reset the
log to start after the snapshot's index (found in review): a follower
installing a snapshot 100,000 entries ahead observed one "group commit" of
100,000 entries.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.snapshot_transfer import run_now
from kvstore.storage import MemoryLog, WriteAheadLog


class GroupCommitAfterResetTests(SynchronousTestCase):
    """A flush after reset_after reports only the entries appended since."""

    def check(self, log: Any) -> None:
        flushes: list[int] = []
        log.on_flush = lambda entries, fsyncs: flushes.append(entries)
        log.append([(1, 1, b"a"), (2, 1, b"b")])
        log.sync()
        log.reset_after(100_000, 3)
        log.sync()
        log.append([(100_001, 4, b"c")])
        log.sync()
        self.assertEqual(flushes, [2, 0, 1])

    def test_write_ahead_log(self) -> None:
        """The write-ahead log reports 2, then 0 for the reset, then 1."""
        wal = WriteAheadLog.open(self.mktemp(), run_in_thread=run_now)
        self.addCleanup(wal.close)
        self.check(wal)

    def test_memory_log(self) -> None:
        """The in-memory log reports the same."""
        self.check(MemoryLog())
