# -*- test-case-name: tests.test_storage_wal_format -*-
"""
Format version 2 of the write-ahead log (records carry C{synced}) and the
upgrade from version 1: a node upgraded in place reads its version-1
segments and appends only version-2 records, in a new segment.
"""

from __future__ import annotations

import os
import struct
import zlib

from twisted.trial.unittest import SynchronousTestCase

from kvstore.storage import LogEntry, WriteAheadLog
from kvstore.storage.records import SEGMENT_HEADER_SIZE, decode_segment_header, encode_segment_header
from kvstore.storage.wal import segment_name
from kvstore.testing.runners import run_now


def v1_record(index: int, term: int, payload: bytes) -> bytes:
    """A record as format version 1 wrote it (24-byte header, no synced)."""
    length = struct.pack(">I", len(payload))
    index_term = struct.pack(">QQ", index, term)
    crc = zlib.crc32(payload, zlib.crc32(index_term, zlib.crc32(length)))
    return length + struct.pack(">I", crc) + index_term + payload


def write_v1_segment(directory: str, first: int, entries: list[LogEntry], tail: bytes = b"") -> None:
    with open(os.path.join(directory, segment_name(first)), "wb") as f:
        f.write(encode_segment_header(first, version=1))
        f.write(b"".join(v1_record(*e) for e in entries) + tail)


class UpgradeFromVersionOneTests(SynchronousTestCase):
    """A version-1 log opens and keeps working."""

    def test_version_one_segments_are_read_and_a_new_segment_follows(self) -> None:
        """Version-1 segments are read; the next record goes into a new,
        version-2 segment; everything survives a reopen."""
        directory = self.mktemp()
        os.makedirs(directory)
        old = [LogEntry(i, 1, b"old %d" % i) for i in range(1, 6)]
        write_v1_segment(directory, 1, old[:3])
        write_v1_segment(directory, 4, old[3:], tail=v1_record(6, 1, b"torn")[:-2])
        log = WriteAheadLog.open(directory, run_in_thread=run_now)
        self.assertEqual(log.entries, old)
        log.append([LogEntry(6, 2, b"new")])
        log.sync()
        log.close()
        with open(os.path.join(directory, segment_name(6)), "rb") as f:
            header, _ = decode_segment_header(f.read(SEGMENT_HEADER_SIZE))
        self.assertEqual((header.version, header.first_index), (2, 6))  # type: ignore[union-attr]
        self.assertEqual(WriteAheadLog.open(directory, run_in_thread=run_now).entries, old + [LogEntry(6, 2, b"new")])

    def test_empty_version_one_segment_is_replaced(self) -> None:
        """A last version-1 segment with no record is replaced by a
        version-2 one of the same name."""
        directory = self.mktemp()
        os.makedirs(directory)
        write_v1_segment(directory, 1, [])
        log = WriteAheadLog.open(directory, run_in_thread=run_now)
        log.append([LogEntry(1, 1, b"x")])
        log.sync()
        log.close()
        self.assertEqual(sorted(os.listdir(directory)), [segment_name(1)])
        with open(os.path.join(directory, segment_name(1)), "rb") as f:
            self.assertEqual(decode_segment_header(f.read())[0].version, 2)  # type: ignore[union-attr]
        self.assertEqual(WriteAheadLog.open(directory, run_in_thread=run_now).entries, [LogEntry(1, 1, b"x")])


class SyncedClaimTests(SynchronousTestCase):
    """What each record claims as fsynced before it was written."""

    def test_claims_follow_completed_flushes_and_truncations(self) -> None:
        """A record claims the end of the last completed flush of its
        segment, never more; after a truncation, at most the truncation
        point; the first record of a new segment, its header."""
        from kvstore.storage.records import RecordReader

        directory = self.mktemp()
        log = WriteAheadLog.open(directory, segment_bytes=10_000, run_in_thread=run_now)
        log.append([LogEntry(i, 1, b"a" * 100) for i in range(1, 4)])
        log.sync()
        log.append([LogEntry(4, 1, b"b" * 100)])
        log.append([LogEntry(5, 1, b"b" * 100)])
        log.sync()
        log.truncate_suffix(2)
        log.append([LogEntry(2, 2, b"c" * 100)])
        log.sync()
        log.close()
        with open(os.path.join(directory, segment_name(1)), "rb") as f:
            records = list(RecordReader(f.read(), SEGMENT_HEADER_SIZE))
        record = 32 + 100
        self.assertEqual(
            [(r.index, r.synced) for r in records],
            [(1, SEGMENT_HEADER_SIZE), (2, SEGMENT_HEADER_SIZE + record)],
        )
        # Before the truncation, records 4 and 5 claimed the first flush's end.
        log = WriteAheadLog.open(self.mktemp(), segment_bytes=10_000, run_in_thread=run_now)
        log.append([LogEntry(i, 1, b"a" * 100) for i in range(1, 4)])
        log.sync()
        log.append([LogEntry(4, 1, b"b" * 100), LogEntry(5, 1, b"b" * 100)])
        log.sync()
        log.close()
        with open(os.path.join(log.directory, segment_name(1)), "rb") as f:
            claims = [r.synced for r in RecordReader(f.read(), SEGMENT_HEADER_SIZE)]
        self.assertEqual(claims, [SEGMENT_HEADER_SIZE] * 3 + [SEGMENT_HEADER_SIZE + 3 * record] * 2)


class FindNextRecordTests(SynchronousTestCase):
    """L{find_next_record} looks past damage of any size."""

    def test_finds_a_record_any_number_of_indexes_past_damage(self) -> None:
        """Behind zeros or garbage covering hundreds of records, the first
        intact record is found, whatever its offset."""
        import random

        from kvstore.storage.records import encode_record, find_next_record

        records = [encode_record(i, 1, b"", 0) for i in range(10, 1010)]
        data = b"".join(records)
        for damaged, fill in ((300, bytes), (500, random.Random(1).randbytes)):
            broken = fill(32 * damaged) + data[32 * damaged :]
            found = find_next_record(broken, 0, 10)
            self.assertIsNotNone(found)
            self.assertEqual((found.index, found.offset), (10 + damaged, 32 * damaged))  # type: ignore[union-attr]
        self.assertIsNone(find_next_record(bytes(10_000), 0, 1))
