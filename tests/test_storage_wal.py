# -*- test-case-name: tests.test_storage_wal -*-
"""
Tests for L{kvstore.storage.wal.WriteAheadLog}: segments, truncation,
recovery, group commit and fail-stop.

Everything is deterministic: file work runs through a synchronous runner, or
through L{ManualRunner}, which holds each flush until the test releases it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.runners import ManualRunner, run_now
from kvstore.storage import (
    CorruptLogError,
    LogEntry,
    StorageFailedError,
    WriteAheadLog,
)
from kvstore.storage.fs import FileSystem
from kvstore.storage.records import SEGMENT_HEADER_SIZE, encode_record
from kvstore.storage.wal import segment_name

from tests.support import slow, temporary_directory

T = TypeVar("T")


def sync_runner(f: Callable[[], T]) -> "Deferred[T]":
    """Run the file work at once, on the calling thread."""
    return succeed(f())


class FailingFileSystem(FileSystem):
    """The real file system, except that fsync fails once C{fail_fsync} is set."""

    fail_fsync = False

    def fsync(self, fd: int) -> None:
        if self.fail_fsync:
            raise OSError(5, "Input/output error (simulated)")
        super().fsync(fd)


def entries(first: int, last: int, term: int = 1, size: int = 10) -> list[LogEntry]:
    return [LogEntry(i, term, b"%d:" % i + b"x" * size) for i in range(first, last + 1)]


def open_log(directory: Path, **kwargs: Any) -> WriteAheadLog:
    kwargs.setdefault("run_in_thread", sync_runner)
    return WriteAheadLog.open(str(directory), **kwargs)


def results(d: "Deferred[T]") -> list[T]:
    out: list[T] = []
    d.addCallback(out.append)
    return out


def segment_files(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".log"))


def record_offset(specs: list[LogEntry], position: int) -> int:
    """Byte offset of C{specs[position]} in a segment holding exactly C{specs}."""
    return SEGMENT_HEADER_SIZE + sum(
        len(encode_record(e.index, e.term, e.payload)) for e in specs[:position]
    )


def flip_bit(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def warnings_in(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["log_level"] == LogLevel.warn]


def write_thirty_kilobyte_records(directory: Path, flushes: int = 1) -> Path:
    """Write 30 records of 1,000 bytes into one segment, in C{flushes}
    equal flushes; return its path."""
    log = WriteAheadLog.open(str(directory), run_in_thread=run_now)
    per_flush = 30 // flushes
    for first in range(1, 31, per_flush):
        log.append([LogEntry(i, 1, b"v" * 1000) for i in range(first, first + per_flush)])
        log.sync()
    log.close()
    return next(p for p in directory.iterdir() if p.name.endswith(".log"))


class WriteAheadLogBasicsTests(SynchronousTestCase):
    """Opening, appending, syncing and segment rollover."""

    def test_fresh_log(self) -> None:
        """A fresh log is empty, starts at index 1, and creates its first segment (and the directory)."""
        tmp_path = temporary_directory(self)
        directory = tmp_path / "a" / "wal"
        log = open_log(directory)
        assert (log.first_index, log.last_index, log.durable_index) == (1, 0, 0)
        assert log.entries == []
        assert segment_files(directory) == [segment_name(1)]
        assert segment_name(1) == "wal-00000000000000000001.log"

    def test_append_sync_reopen(self) -> None:
        """Appended entries are visible at once, durable after sync, and recovered on reopen."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path)
        log.append(entries(1, 3))
        log.append(entries(4, 5, term=2))
        assert log.last_index == 5 and log.durable_index == 0
        assert results(log.sync()) == [5]
        assert log.durable_index == 5
        assert log.entry(4) == LogEntry(4, 2, b"4:" + b"x" * 10)
        reopened = open_log(tmp_path)
        assert reopened.entries == entries(1, 3) + entries(4, 5, term=2)
        assert (reopened.first_index, reopened.last_index, reopened.durable_index) == (1, 5, 5)

    def test_append_must_be_contiguous_and_terms_non_decreasing(self) -> None:
        """A gap, an overlap or a decreasing term raises ValueError and changes nothing."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path)
        log.append(entries(1, 2, term=3))
        with self.assertRaises(ValueError):
            log.append(entries(4, 4, term=3))
        with self.assertRaises(ValueError):
            log.append(entries(2, 3, term=3))
        with self.assertRaises(ValueError):
            log.append([LogEntry(3, 3, b"ok"), LogEntry(4, 2, b"older term")])
        assert log.last_index == 2
        results(log.sync())
        assert open_log(tmp_path).last_index == 2

    def test_unsynced_entries_are_not_written(self) -> None:
        """Append alone does no I/O: entries not yet synced are absent after reopening."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path)
        log.append(entries(1, 2))
        results(log.sync())
        log.append(entries(3, 4))
        assert open_log(tmp_path).last_index == 2

    def test_segment_rollover_and_reopen(self) -> None:
        """With small segments, the log rolls to files named by first index and reopens intact."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path, segment_bytes=100)
        log.append(entries(1, 10, size=20))  # 24 + 23 = 47-byte records
        results(log.sync())
        # Header 24 + 2 records = 118 >= 100, so each segment holds two records.
        assert segment_files(tmp_path) == [segment_name(i) for i in (1, 3, 5, 7, 9)]
        reopened = open_log(tmp_path, segment_bytes=100)
        assert reopened.entries == entries(1, 10, size=20)
        reopened.append(entries(11, 12, size=20))
        results(reopened.sync())
        assert segment_name(11) in segment_files(tmp_path)
        assert open_log(tmp_path).entries == entries(1, 12, size=20)

    def test_oversized_record_gets_its_own_segment(self) -> None:
        """A record larger than segment_bytes is still written, alone in its segment."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path, segment_bytes=40)
        log.append([LogEntry(1, 1, b"a" * 500), LogEntry(2, 1, b"b"), LogEntry(3, 1, b"c" * 500)])
        results(log.sync())
        assert segment_files(tmp_path) == [segment_name(i) for i in (1, 2, 3)]
        assert [len(e.payload) for e in open_log(tmp_path).entries] == [500, 1, 500]


class WriteAheadLogTruncationTests(SynchronousTestCase):
    """Truncating a suffix of the log, before and after it is durable."""

    def test_truncate_suffix_then_append_then_reopen(self) -> None:
        """Truncating within a segment and appending new entries survives reopening."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path)
        log.append(entries(1, 5))
        results(log.sync())
        log.truncate_suffix(3)
        assert log.last_index == 2 and log.durable_index == 2
        new = [LogEntry(3, 2, b"new3"), LogEntry(4, 2, b"new4")]
        log.append(new)
        assert results(log.sync()) == [4]
        assert open_log(tmp_path).entries == entries(1, 2) + new

    def test_truncate_suffix_before_sync_of_truncated_entries(self) -> None:
        """Entries appended and truncated before any sync never reach the recovered log."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path)
        log.append(entries(1, 5))
        log.truncate_suffix(2)
        log.append([LogEntry(2, 4, b"two")])
        results(log.sync())
        assert open_log(tmp_path).entries == entries(1, 1) + [LogEntry(2, 4, b"two")]

    def test_truncate_across_segment_boundary(self) -> None:
        """Truncating into an earlier segment deletes later segments and reopens contiguous."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path, segment_bytes=100)
        log.append(entries(1, 10, size=20))
        results(log.sync())
        log.truncate_suffix(4)  # segment 3 holds 3..4
        assert segment_files(tmp_path) == [segment_name(i) for i in (1, 3, 5, 7, 9)]  # not yet
        new = entries(4, 7, term=2, size=20)
        log.append(new)
        results(log.sync())
        reopened = open_log(tmp_path, segment_bytes=100)
        assert reopened.entries == entries(1, 3, size=20) + new
        assert segment_files(tmp_path) == [segment_name(i) for i in (1, 3, 5, 7)]
        assert [reopened.entry(i).term for i in (3, 4, 7)] == [1, 2, 2]

    def test_truncate_at_segment_start_keeps_empty_segment(self) -> None:
        """Truncating at a segment's first index leaves that segment empty and reopenable."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path, segment_bytes=100)
        log.append(entries(1, 6, size=20))
        results(log.sync())
        log.truncate_suffix(5)
        results(log.sync())
        assert segment_files(tmp_path) == [segment_name(i) for i in (1, 3, 5)]
        assert (tmp_path / segment_name(5)).stat().st_size == SEGMENT_HEADER_SIZE
        reopened = open_log(tmp_path, segment_bytes=100)
        assert reopened.last_index == 4
        reopened.append(entries(5, 5, term=3))
        results(reopened.sync())
        assert open_log(tmp_path).entry(5).term == 3

    def test_truncate_everything(self) -> None:
        """truncate_suffix(first_index) empties the log; it can then be refilled."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path)
        log.append(entries(1, 3))
        log.truncate_suffix(1)
        assert (log.first_index, log.last_index, log.entries) == (1, 0, [])
        log.append(entries(1, 1, term=5))
        results(log.sync())
        assert open_log(tmp_path).entries == entries(1, 1, term=5)

    def test_truncate_beyond_end_is_noop_and_below_start_rejected(self) -> None:
        """truncate_suffix past last_index does nothing; below first_index raises ValueError."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path, segment_bytes=100)
        log.append(entries(1, 6, size=20))
        log.truncate_suffix(7)
        assert log.last_index == 6
        results(log.sync())
        log.drop_prefix(2)
        assert log.first_index == 3
        with self.assertRaises(ValueError):
            log.truncate_suffix(2)

    def test_truncate_during_flush_does_not_overclaim_durability(self) -> None:
        """A flush that started before a truncation never reports the replaced entries as durable."""
        tmp_path = temporary_directory(self)
        runner = ManualRunner()
        log = open_log(tmp_path, run_in_thread=runner)
        log.append(entries(1, 5))
        first = results(log.sync())
        log.truncate_suffix(3)
        log.append([LogEntry(3, 2, b"new")])
        second = results(log.sync())
        runner.release()
        assert first == [2] and log.durable_index == 2
        runner.release()
        assert second == [3] and log.durable_index == 3
        assert open_log(tmp_path).entries == entries(1, 2) + [LogEntry(3, 2, b"new")]


class WriteAheadLogRecoveryTests(SynchronousTestCase):
    """Reopening after a crash: a torn tail is cut, any other damage refuses to open."""

    @slow
    def test_torn_tail_at_every_byte_offset(self) -> None:
        """Cutting the last record at every length recovers all earlier records, warns, and truncates."""
        tmp_path = temporary_directory(self)
        original = tmp_path / "original"
        log = open_log(original)
        written = entries(1, 4, size=30)
        log.append(written)
        results(log.sync())
        path = original / segment_name(1)
        full = path.read_bytes()
        last_start = record_offset(written, 3)
        assert last_start < len(full)
        for cut in range(last_start, len(full)):
            copy = tmp_path / f"cut-{cut}"
            shutil.copytree(original, copy)
            with open(copy / segment_name(1), "r+b") as f:
                f.truncate(cut)
            with capturedLogs() as events:
                recovered = open_log(copy)
            assert recovered.entries == written[:3], cut
            assert recovered.durable_index == 3
            if cut > last_start:
                assert len(warnings_in(events)) == 1, cut
                assert str(last_start) in warnings_in(events)[0]["log_format"].format(
                    **warnings_in(events)[0]
                )
            else:
                assert warnings_in(events) == []
            assert (copy / segment_name(1)).stat().st_size == last_start
            recovered.append([LogEntry(4, 2, b"after recovery")])
            results(recovered.sync())
            assert open_log(copy).entries == written[:3] + [LogEntry(4, 2, b"after recovery")]
            shutil.rmtree(copy)

    def test_torn_tail_in_last_of_several_segments(self) -> None:
        """A torn tail in the last segment is truncated even when earlier segments exist."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path, segment_bytes=100)
        log.append(entries(1, 5, size=20))
        results(log.sync())
        path = tmp_path / segment_name(5)
        path.write_bytes(path.read_bytes()[:-7])
        with capturedLogs() as events:
            recovered = open_log(tmp_path, segment_bytes=100)
        assert recovered.entries == entries(1, 4, size=20)
        assert len(warnings_in(events)) == 1

    def test_zero_filled_tail_is_a_torn_tail(self) -> None:
        """Zeros after the last record (a crash after the file grew) are truncated with a warning."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path)
        log.append(entries(1, 3))
        results(log.sync())
        path = tmp_path / segment_name(1)
        good = path.read_bytes()
        path.write_bytes(good + b"\x00" * 4096)
        with capturedLogs() as events:
            recovered = open_log(tmp_path)
        assert recovered.entries == entries(1, 3)
        assert len(warnings_in(events)) == 1
        assert path.read_bytes() == good

    def test_checksum_bad_last_record_is_truncated(self) -> None:
        """A complete last record with a bad checksum is treated as torn and dropped with a warning."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path)
        written = entries(1, 3)
        log.append(written)
        results(log.sync())
        flip_bit(tmp_path / segment_name(1), record_offset(written, 2) + 30)
        with capturedLogs() as events:
            recovered = open_log(tmp_path)
        assert recovered.entries == written[:2]
        assert len(warnings_in(events)) == 1

    def test_flipped_bit_in_middle_record_is_fatal(self) -> None:
        """A damaged record followed by intact ones of a later flush raises
        CorruptLogError naming the file and offset."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path)
        written = entries(1, 6)
        log.append(written[:4])
        results(log.sync())
        log.append(written[4:])
        results(log.sync())
        path = tmp_path / segment_name(1)
        offset = record_offset(written, 2)
        flip_bit(path, offset + 26)  # payload of record 3
        with self.assertRaises(CorruptLogError) as caught:
            open_log(tmp_path)
        assert caught.exception.path == str(path)
        assert caught.exception.offset == offset
        assert str(path) in str(caught.exception) and f"offset {offset}" in str(caught.exception)

    def test_flipped_bit_in_length_of_middle_record_is_fatal(self) -> None:
        """A length field damaged so the record seems to run past the end is still not taken as torn."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path)
        written = entries(1, 6)
        log.append(written[:3])
        results(log.sync())
        log.append(written[3:])
        results(log.sync())
        path = tmp_path / segment_name(1)
        offset = record_offset(written, 1)
        data = bytearray(path.read_bytes())
        data[offset] ^= 0x80  # top bit of record 2's length: ~2 GiB
        path.write_bytes(bytes(data))
        with self.assertRaises(CorruptLogError) as caught:
            open_log(tmp_path)
        assert caught.exception.offset == offset

    def test_flipped_bit_in_non_last_segment_is_fatal(self) -> None:
        """Damage to the last record of a segment that is not the last one raises CorruptLogError."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path, segment_bytes=100)
        written = entries(1, 6, size=20)
        log.append(written)
        results(log.sync())
        path = tmp_path / segment_name(3)
        offset = record_offset(written[2:4], 1)
        flip_bit(path, offset + 30)
        with self.assertRaises(CorruptLogError) as caught:
            open_log(tmp_path, segment_bytes=100)
        assert (caught.exception.path, caught.exception.offset) == (str(path), offset)

    def test_short_non_last_segment_is_fatal(self) -> None:
        """A torn-looking end of a non-last segment is corruption, not a torn tail."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path, segment_bytes=100)
        log.append(entries(1, 6, size=20))
        results(log.sync())
        path = tmp_path / segment_name(1)
        path.write_bytes(path.read_bytes()[:-1])
        with self.assertRaises(CorruptLogError) as caught:
            open_log(tmp_path)
        assert caught.exception.path == str(path)

    def test_missing_middle_segment_is_fatal(self) -> None:
        """A gap between segments raises CorruptLogError naming the segment after the gap."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path, segment_bytes=100)
        log.append(entries(1, 6, size=20))
        results(log.sync())
        os.unlink(tmp_path / segment_name(3))
        with self.assertRaises(CorruptLogError) as caught:
            open_log(tmp_path)
        assert (caught.exception.path, caught.exception.offset) == (str(tmp_path / segment_name(5)), 0)

    def test_damaged_segment_header_is_fatal(self) -> None:
        """A bad segment header (even in the last segment) raises CorruptLogError at offset 0."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path)
        log.append(entries(1, 2))
        results(log.sync())
        flip_bit(tmp_path / segment_name(1), 12)
        with self.assertRaises(CorruptLogError) as caught:
            open_log(tmp_path)
        assert caught.exception.offset == 0 and "header" in caught.exception.reason

    def test_segment_named_for_wrong_index_is_fatal(self) -> None:
        """A segment whose header disagrees with its file name raises CorruptLogError."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path)
        log.append(entries(1, 2))
        results(log.sync())
        os.rename(tmp_path / segment_name(1), tmp_path / segment_name(2))
        with self.assertRaises(CorruptLogError):
            open_log(tmp_path)

    def test_leftover_tmp_segment_is_removed(self) -> None:
        """An incomplete segment left as .tmp by a crash during creation is deleted on open."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path)
        log.append(entries(1, 2))
        results(log.sync())
        leftover = tmp_path / (segment_name(3) + ".tmp")
        leftover.write_bytes(b"KVW")
        recovered = open_log(tmp_path)
        assert recovered.last_index == 2
        assert not leftover.exists()

    def test_zeroed_page_in_an_unsynced_tail_is_a_torn_tail(self) -> None:
        """Writes of an unsynced flush may reach the disk out of order, leaving a
        zero-filled page before intact later records: recovery truncates there
        with a warning instead of refusing to start."""
        tmp_path = temporary_directory(self)
        segment = write_thirty_kilobyte_records(tmp_path)
        data = bytearray(segment.read_bytes())
        page = (len(data) // 2) // 4096 * 4096
        data[page : page + 4096] = bytes(4096)
        segment.write_bytes(bytes(data))
        with capturedLogs() as events:
            reopened = WriteAheadLog.open(str(tmp_path), run_in_thread=run_now)
        assert 0 < reopened.last_index < 30
        assert all(e.payload == b"v" * 1000 for e in reopened.entries)
        assert any(e["log_level"] == LogLevel.warn for e in events)

    def test_flipped_bit_before_intact_records_still_refuses(self) -> None:
        """Damage followed by intact records of a later flush is corruption of
        durable data: recovery refuses, naming file and offset."""
        tmp_path = temporary_directory(self)
        segment = write_thirty_kilobyte_records(tmp_path, flushes=2)
        data = bytearray(segment.read_bytes())
        data[len(data) // 2] ^= 0x10
        segment.write_bytes(bytes(data))
        with self.assertRaises(CorruptLogError):
            WriteAheadLog.open(str(tmp_path), run_in_thread=run_now)


class WriteAheadLogGroupCommitTests(SynchronousTestCase):
    """Concurrent syncs share fsyncs and fire in order; a failed fsync is fail-stop."""

    def test_group_commit_batches_concurrent_syncs(self) -> None:
        """While one flush is held, 99 more append+sync pairs go out in one more flush, in order."""
        tmp_path = temporary_directory(self)
        runner = ManualRunner()
        log = open_log(tmp_path, run_in_thread=runner)
        fired: list[tuple[int, int]] = []
        for i in range(1, 101):
            log.append([LogEntry(i, 1, b"cmd %d" % i)])
            log.sync().addCallback(lambda durable, i=i: fired.append((i, durable)))
        assert fired == [] and len(runner.jobs) == 1
        runner.release()
        assert fired == [(1, 1)]
        assert len(runner.jobs) == 1
        runner.release()
        assert [i for i, _ in fired] == list(range(1, 101))
        assert all(durable == 100 for _, durable in fired[1:])
        assert log.fsync_count == 2
        assert runner.jobs == []
        assert len(open_log(tmp_path).entries) == 100

    def test_sync_with_nothing_pending_fires_at_once(self) -> None:
        """sync() with no pending work and no flush running fires immediately without an fsync."""
        tmp_path = temporary_directory(self)
        runner = ManualRunner()
        log = open_log(tmp_path, run_in_thread=runner)
        assert results(log.sync()) == [0]
        assert runner.jobs == [] and log.fsync_count == 0

    def test_sync_during_flush_waits_for_it(self) -> None:
        """A sync with nothing new, requested while a flush runs, fires only after that flush."""
        tmp_path = temporary_directory(self)
        runner = ManualRunner()
        log = open_log(tmp_path, run_in_thread=runner)
        log.append(entries(1, 1))
        first = results(log.sync())
        second = results(log.sync())
        assert first == second == []
        runner.release()
        assert first == [1] and second == [1]
        assert runner.jobs == []

    def test_sync_from_a_callback_does_not_overtake(self) -> None:
        """A sync issued inside a sync callback fires after the other waiters of the same flush."""
        tmp_path = temporary_directory(self)
        runner = ManualRunner()
        log = open_log(tmp_path, run_in_thread=runner)
        order: list[str] = []

        def first_fired(_: int) -> None:
            order.append("first")
            log.append(entries(3, 3))
            log.sync().addCallback(lambda _: order.append("nested"))

        log.append(entries(1, 1))
        log.sync()  # flush A, held
        log.append(entries(2, 2))
        log.sync().addCallback(first_fired)  # both join flush B
        log.sync().addCallback(lambda _: order.append("second"))
        runner.release()
        assert order == []
        runner.immediate = True  # the nested flush would complete at once if started early
        runner.release()
        assert order == ["first", "second", "nested"]
        assert log.durable_index == 3

    def test_fsync_failure_is_fail_stop(self) -> None:
        """A failed fsync errbacks the sync Deferreds and every later write is refused."""
        tmp_path = temporary_directory(self)
        fs = FailingFileSystem()
        runner = ManualRunner()
        log = open_log(tmp_path, run_in_thread=runner, fs=fs)
        log.append(entries(1, 1))
        failing = log.sync()
        log.append(entries(2, 2))
        behind = log.sync()
        fs.fail_fsync = True
        with capturedLogs() as events:
            runner.release()
        errors: list[Failure] = []
        failing.addErrback(errors.append)
        behind.addErrback(errors.append)
        assert errors[0].check(OSError) and errors[1].check(StorageFailedError)
        assert any(e.get("log_failure") for e in events)
        self.flushLoggedErrors(OSError)
        assert log.durable_index == 0
        with self.assertRaises(StorageFailedError):
            log.append(entries(3, 3))
        with self.assertRaises(StorageFailedError):
            log.truncate_suffix(1)
        later: list[Failure] = []
        log.sync().addErrback(later.append)
        assert later[0].check(StorageFailedError)
        assert runner.jobs == []


class WriteAheadLogLifecycleTests(SynchronousTestCase):
    """Prefix deletion, closing, and what opening and importing the log do."""

    def test_drop_prefix_deletes_whole_segments(self) -> None:
        """drop_prefix removes only segments entirely at or below the index, and reopen agrees."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path, segment_bytes=100)
        log.append(entries(1, 8, size=20))
        results(log.sync())
        log.drop_prefix(4)  # segments 1..2 and 3..4 go; 5..6 stays
        assert log.first_index == 5 and log.entries == entries(5, 8, size=20)
        results(log.sync())
        assert segment_files(tmp_path) == [segment_name(5), segment_name(7)]
        log.drop_prefix(100)  # never deletes the last segment
        results(log.sync())
        reopened = open_log(tmp_path, segment_bytes=100)
        assert (reopened.first_index, reopened.last_index) == (7, 8)

    def test_close_flushes_and_refuses_later_writes(self) -> None:
        """close() makes pending entries durable, then appends and syncs are refused."""
        tmp_path = temporary_directory(self)
        log = open_log(tmp_path)
        log.append(entries(1, 3))
        assert results(log.close()) == [None]
        with self.assertRaises(StorageFailedError):
            log.append(entries(4, 4))
        assert open_log(tmp_path).last_index == 3

    def test_importing_storage_does_not_install_a_reactor(self) -> None:
        """Importing kvstore.storage leaves twisted.internet.reactor unimported (it is imported lazily)."""
        code = (
            "import sys, kvstore.storage, kvstore.storage.wal, kvstore.storage.metadata\n"
            "sys.exit('twisted.internet.reactor' in sys.modules)\n"
        )
        root = str(Path(__file__).resolve().parent.parent)
        completed = subprocess.run([sys.executable, "-c", code], cwd=root, timeout=60)
        assert completed.returncode == 0

    def test_open_makes_recovered_records_durable(self) -> None:
        """Opening fsyncs every segment and the directory: records that a crashed
        process wrote but never fsynced, read back from the page cache, must be
        durable before the log reports them durable."""
        tmp_path = temporary_directory(self)
        from kvstore.storage.fs import FileSystem as RealFileSystem

        class CountingFileSystem(RealFileSystem):
            def __init__(self) -> None:
                self.fsynced: list[int] = []
                self.dir_fsyncs = 0

            def fsync(self, fd: int) -> None:
                self.fsynced.append(fd)
                super().fsync(fd)

            def fsync_dir(self, path: str) -> None:
                self.dir_fsyncs += 1
                super().fsync_dir(path)

        log = WriteAheadLog.open(str(tmp_path), segment_bytes=4096, run_in_thread=lambda f: succeed(f()))
        log.append([LogEntry(i, 1, b"x" * 500) for i in range(1, 30)])
        log.sync()
        log.close()
        segments = [p for p in os.listdir(tmp_path) if p.endswith(".log")]
        assert len(segments) > 2
        fs = CountingFileSystem()
        reopened = WriteAheadLog.open(str(tmp_path), run_in_thread=lambda f: succeed(f()), fs=fs)
        assert len(fs.fsynced) >= len(segments) and fs.dir_fsyncs >= 1
        assert reopened.durable_index == 29

    def test_segments_do_not_each_keep_a_file_descriptor(self) -> None:
        """Rolling over to a new segment closes the older ones' descriptors, so a
        long log cannot exhaust the process's file descriptors."""
        tmp_path = temporary_directory(self)
        log = WriteAheadLog.open(str(tmp_path), segment_bytes=4096, run_in_thread=lambda f: succeed(f()))
        before = len(os.listdir("/proc/self/fd"))
        for i in range(1, 200):
            log.append([LogEntry(i, 1, b"x" * 500)])
            log.sync()
        assert len([p for p in os.listdir(tmp_path) if p.endswith(".log")]) > 20
        assert len(os.listdir("/proc/self/fd")) - before <= 2
        log.close()
