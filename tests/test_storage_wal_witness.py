# -*- test-case-name: tests.test_storage_wal_witness -*-
"""
Recovery's search for a witness of damage in fsynced data (the recovery
rule in L{kvstore.storage.wal}) looks past every damaged spot of the last
segment, not only the first: an intact record of a later flush behind a
second damaged spot still proves that the first one was fsynced.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from kvstore.storage import CorruptLogError, LogEntry, WriteAheadLog
from kvstore.storage.records import SEGMENT_HEADER_SIZE, RecordReader
from kvstore.storage.wal import segment_name
from kvstore.testing.runners import run_now


class SecondDamageTests(SynchronousTestCase):
    """Two damaged spots in fsynced data are refused, not cut as torn."""

    def test_witness_behind_a_second_damaged_spot(self) -> None:
        """Three completed flushes of ten small records; a bit flip in
        record 3 (flush 1) and another in the first record of a later flush:
        the intact records after the second flip claim bytes past the first
        one as fsynced, so opening refuses instead of silently dropping
        entries 3 to 30, which three completed fsyncs covered."""
        for second in (11, 21):
            with self.subTest(second=second):
                directory = self.mktemp()
                log = WriteAheadLog.open(directory, run_in_thread=run_now)
                for first in (1, 11, 21):
                    log.append([LogEntry(i, 1, b"p" * 8) for i in range(first, first + 10)])
                    log.sync()
                log.close()
                path = os.path.join(directory, segment_name(1))
                with open(path, "rb") as f:
                    data = bytearray(f.read())
                offsets = {r.index: r.offset for r in RecordReader(bytes(data), SEGMENT_HEADER_SIZE)}
                for index in (3, second):
                    data[offsets[index] + 20] ^= 0x01  # inside the term field
                with open(path, "wb") as f:
                    f.write(bytes(data))
                with self.assertRaises(CorruptLogError) as caught:
                    WriteAheadLog.open(directory, run_in_thread=run_now)
                self.assertEqual(caught.exception.offset, offsets[3])
