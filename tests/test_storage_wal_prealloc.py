# -*- test-case-name: tests.test_storage_wal_prealloc -*-
"""
The write-ahead log's preallocated segments (issue 16): a log opened with
C{preallocate_bytes} keeps its segment files zero-filled ahead of their
records, so that a flush overwrites zeros instead of growing the file (its
C{fdatasync} then has no metadata to commit); recovery reads those zeros as
a clean end, and still tells a torn last flush from damage in fsynced data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from kvstore.storage import CorruptLogError, LogEntry, WriteAheadLog
from kvstore.storage import fs as fs_module
from kvstore.storage.fs import FileSystem
from kvstore.storage.records import RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE, encode_record
from kvstore.storage.wal import PREALLOCATE_BYTES, segment_name

from tests.support import temporary_directory

T = TypeVar("T")

AHEAD = 1000  # preallocate_bytes for most tests: small files, same rules


def run_now(f: Callable[[], T]) -> "Deferred[T]":
    return succeed(f())


def entries(first: int, last: int, term: int = 1, size: int = 10) -> list[LogEntry]:
    return [LogEntry(i, term, b"%d:" % i + b"x" * size) for i in range(first, last + 1)]


def open_log(directory: Path, **kwargs: Any) -> WriteAheadLog:
    kwargs.setdefault("run_in_thread", run_now)
    kwargs.setdefault("preallocate_bytes", AHEAD)
    return WriteAheadLog.open(str(directory), **kwargs)


def records_end(specs: list[LogEntry]) -> int:
    """The offset just past C{specs}, in a segment holding exactly them."""
    return SEGMENT_HEADER_SIZE + sum(len(encode_record(e.index, e.term, e.payload)) for e in specs)


def write_flushes(directory: Path, *flushes: list[LogEntry], **kwargs: Any) -> WriteAheadLog:
    log = open_log(directory, **kwargs)
    for batch in flushes:
        log.append(batch)
        log.sync()
    return log


def warnings_in(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["log_level"] == LogLevel.warn]


def zero_bytes(path: Path, start: int, end: int) -> None:
    data = bytearray(path.read_bytes())
    data[start:end] = bytes(end - start)
    path.write_bytes(bytes(data))


class PreallocatedSegmentTests(SynchronousTestCase):
    def test_segment_is_zero_filled_ahead_of_its_records(self) -> None:
        """A new segment is zero-filled preallocate_bytes past its header, and its records are written over the zeros."""
        directory = temporary_directory(self)
        written = entries(1, 3)
        write_flushes(directory, written).close()
        data = (directory / segment_name(1)).read_bytes()
        end = records_end(written)
        self.assertEqual(len(data), SEGMENT_HEADER_SIZE + AHEAD)
        self.assertEqual(data[end:], bytes(len(data) - end))

    def test_reopening_keeps_the_zeros_without_a_warning(self) -> None:
        """A preallocating log reopens with its entries, no torn-tail warning, and its zeros in place."""
        directory = temporary_directory(self)
        write_flushes(directory, entries(1, 3), entries(4, 5)).close()
        path = directory / segment_name(1)
        before = path.read_bytes()
        with capturedLogs() as events:
            log = open_log(directory)
        self.assertEqual(log.entries, entries(1, 5))
        self.assertEqual(warnings_in(events), [])
        self.assertEqual(path.read_bytes(), before)
        log.append(entries(6, 6))
        log.sync()
        log.close()
        self.assertEqual(open_log(directory).entries, entries(1, 6))

    def test_flushes_inside_the_zeros_do_not_grow_the_file(self) -> None:
        """Records are written over the zeros; the file grows only when a record comes within a record header of its end."""
        directory = temporary_directory(self)
        log = open_log(directory)
        path = directory / segment_name(1)
        sizes = []
        written: list[LogEntry] = []
        for index in range(1, 40):
            batch = entries(index, index)
            written += batch
            log.append(batch)
            log.sync()
            sizes.append((records_end(written), os.path.getsize(path)))
        grown = [i for i in range(1, len(sizes)) if sizes[i][1] != sizes[i - 1][1]]
        self.assertTrue(grown, sizes)
        for i in grown:
            end, size = sizes[i]
            self.assertGreater(end + RECORD_HEADER_SIZE, sizes[i - 1][1])
            self.assertEqual(size, end + AHEAD)
        for end, size in sizes:
            self.assertGreaterEqual(size - end, RECORD_HEADER_SIZE)

    def test_fsyncs_per_flush_are_those_of_a_growing_log(self) -> None:
        """Preallocation costs no fsync: the same appends and syncs make as many fsyncs as without it."""
        counts = []
        for ahead in (0, AHEAD):
            directory = temporary_directory(self)
            log = open_log(directory, preallocate_bytes=ahead, segment_bytes=600)
            for index in range(1, 60):
                log.append(entries(index, index))
                log.sync()
            counts.append(log.fsync_count)
        self.assertEqual(counts[0], counts[1])

    def test_segments_that_are_not_the_last_keep_their_zeros_and_reopen(self) -> None:
        """A log of many preallocated segments reopens whole: zeros after an earlier segment's records are its end."""
        directory = temporary_directory(self)
        log = open_log(directory, segment_bytes=300)
        for index in range(1, 30):
            log.append(entries(index, index))
            log.sync()
        log.close()
        names = sorted(n for n in os.listdir(directory) if n.endswith(".log"))
        self.assertGreater(len(names), 3)
        self.assertEqual((directory / names[0]).read_bytes()[-RECORD_HEADER_SIZE:], bytes(RECORD_HEADER_SIZE))
        with capturedLogs() as events:
            reopened = open_log(directory, segment_bytes=300)
        self.assertEqual(reopened.entries, entries(1, 29))
        self.assertEqual(warnings_in(events), [])

    def test_a_record_lost_to_zeros_in_an_earlier_segment_is_refused(self) -> None:
        """Zeros where an earlier segment's last record was leave a gap before the next segment, which is refused."""
        directory = temporary_directory(self)
        log = open_log(directory, segment_bytes=300)
        for index in range(1, 30):
            log.append(entries(index, index))
            log.sync()
        log.close()
        first = directory / segment_name(1)
        second_start = int(sorted(n for n in os.listdir(directory) if n.endswith(".log"))[1][4:24])
        held = entries(1, second_start - 1)
        zero_bytes(first, records_end(held[:-1]), records_end(held))
        self.assertRaises(CorruptLogError, open_log, directory, segment_bytes=300)

    def test_a_torn_last_flush_over_zeros_is_truncated(self) -> None:
        """A lost first record of the last flush (its zeros still there) with later records intact is a torn tail: cut with a warning, earlier flushes kept."""
        directory = temporary_directory(self)
        first, last = entries(1, 3), entries(4, 6)
        write_flushes(directory, first, last).close()
        path = directory / segment_name(1)
        zero_bytes(path, records_end(first), records_end(first + last[:1]))
        with capturedLogs() as events:
            log = open_log(directory)
        self.assertEqual(log.entries, first)
        self.assertEqual(len(warnings_in(events)), 1)
        log.append(entries(4, 5, term=2))
        log.sync()
        log.close()
        self.assertEqual(open_log(directory).entries, first + entries(4, 5, term=2))

    def test_damage_in_an_fsynced_flush_is_still_refused(self) -> None:
        """Zeros over a record of an earlier flush, with a later flush's records after it, are damage in durable data."""
        directory = temporary_directory(self)
        first, second = entries(1, 3), entries(4, 6)
        write_flushes(directory, first, second).close()
        zero_bytes(directory / segment_name(1), records_end(first[:1]), records_end(first[:2]))
        self.assertRaises(CorruptLogError, open_log, directory)

    def test_fewer_zeros_than_a_record_header_are_a_torn_record(self) -> None:
        """A last segment ending in fewer zeros than a record header (a torn record's first bytes) is truncated with a warning."""
        directory = temporary_directory(self)
        written = entries(1, 3)
        write_flushes(directory, written).close()
        path = directory / segment_name(1)
        end = records_end(written)
        with open(path, "r+b") as f:
            f.truncate(end + RECORD_HEADER_SIZE - 1)
        with capturedLogs() as events:
            log = open_log(directory)
        self.assertEqual(log.entries, written)
        self.assertEqual(len(warnings_in(events)), 1)
        self.assertEqual(os.path.getsize(path), end)

    def test_truncate_suffix_then_append_zero_fills_again(self) -> None:
        """After a suffix truncation (which cuts the file), the next records get zeros ahead again and reopen correctly."""
        directory = temporary_directory(self)
        log = write_flushes(directory, entries(1, 5))
        log.truncate_suffix(3)
        log.sync()
        path = directory / segment_name(1)
        self.assertEqual(os.path.getsize(path), records_end(entries(1, 2)))
        replacement = entries(3, 4, term=2)
        log.append(replacement)
        log.sync()
        kept = entries(1, 2) + replacement
        self.assertEqual(os.path.getsize(path), records_end(kept) + AHEAD)
        log.close()
        self.assertEqual(open_log(directory).entries, kept)

    def test_zeros_stop_at_segment_bytes(self) -> None:
        """The zeros reach at most segment_bytes (but always a record header past the last record)."""
        directory = temporary_directory(self)
        written = entries(1, 2)
        write_flushes(directory, written, segment_bytes=200).close()
        size = os.path.getsize(directory / segment_name(1))
        self.assertEqual(size, max(200, records_end(written) + RECORD_HEADER_SIZE))

    def test_the_node_default_is_one_mebibyte(self) -> None:
        """PREALLOCATE_BYTES, what the node passes, zero-fills a mebibyte ahead."""
        directory = temporary_directory(self)
        write_flushes(directory, entries(1, 1), preallocate_bytes=PREALLOCATE_BYTES).close()
        self.assertEqual(os.path.getsize(directory / segment_name(1)), SEGMENT_HEADER_SIZE + 1024 * 1024)


class FileSystemSyncTests(SynchronousTestCase):
    def test_fsync_is_fdatasync(self) -> None:
        """FileSystem.fsync calls fdatasync (data plus the metadata needed to read it back), not fsync."""
        if not hasattr(os, "fdatasync"):
            self.skipTest("no fdatasync on this platform")
        calls = []
        self.patch(fs_module.os, "fdatasync", lambda fd: calls.append(("fdatasync", fd)))
        self.patch(fs_module.os, "fsync", lambda fd: calls.append(("fsync", fd)))
        FileSystem().fsync(7)
        self.assertEqual(calls, [("fdatasync", 7)])
