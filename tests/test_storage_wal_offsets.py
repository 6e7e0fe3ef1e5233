# -*- test-case-name: tests.test_storage_wal_offsets -*-
"""
The WAL's per-segment record offsets are one buffer of machine integers
(C{array('q')}), kept so through appends, recovery and truncation: as a list
of int objects, dropping a whole segment of ~500,000 records after a
snapshot freed one object per record, 5-12 ms of the reactor's CPU in one
compaction step (issue 12, figure 6).
"""

from __future__ import annotations

from array import array

from twisted.trial.unittest import SynchronousTestCase

from kvstore.storage import LogEntry, WriteAheadLog
from kvstore.storage.wal import run_inline


class OffsetsTests(SynchronousTestCase):
    def _open(self, directory: str) -> WriteAheadLog:
        return WriteAheadLog.open(directory, run_in_thread=run_inline)

    def _assert_compact(self, wal: WriteAheadLog, records: int) -> None:
        segments = wal._segments  # type: ignore[attr-defined]
        for segment in segments:
            self.assertIsInstance(segment.offsets, array)
            self.assertEqual(segment.offsets.typecode, "q")
        self.assertEqual(sum(len(s.offsets) for s in segments), records)

    def test_appended_recovered_and_truncated_offsets_stay_an_array(self) -> None:
        """Offsets are an array('q') after appends, after recovery from disk, and after a suffix truncation."""
        directory = self.mktemp()
        wal = self._open(directory)
        wal.append([LogEntry(i, 1, b"P k%d v" % i) for i in range(1, 101)])
        self.successResultOf(wal.sync())
        self._assert_compact(wal, 100)
        self.successResultOf(wal.close())
        wal = self._open(directory)
        self._assert_compact(wal, 100)
        wal.truncate_suffix(51)
        self.successResultOf(wal.sync())
        self._assert_compact(wal, 50)
        self.successResultOf(wal.close())
