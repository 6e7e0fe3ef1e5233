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

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure

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


# --------------------------------------------------------------------------
# Basics


def test_fresh_log(tmp_path: Path) -> None:
    """A fresh log is empty, starts at index 1, and creates its first segment (and the directory)."""
    directory = tmp_path / "a" / "wal"
    log = open_log(directory)
    assert (log.first_index, log.last_index, log.durable_index) == (1, 0, 0)
    assert log.entries == []
    assert segment_files(directory) == [segment_name(1)]
    assert segment_name(1) == "wal-00000000000000000001.log"


def test_append_sync_reopen(tmp_path: Path) -> None:
    """Appended entries are visible at once, durable after sync, and recovered on reopen."""
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


def test_append_must_be_contiguous_and_terms_non_decreasing(tmp_path: Path) -> None:
    """A gap, an overlap or a decreasing term raises ValueError and changes nothing."""
    log = open_log(tmp_path)
    log.append(entries(1, 2, term=3))
    with pytest.raises(ValueError):
        log.append(entries(4, 4, term=3))
    with pytest.raises(ValueError):
        log.append(entries(2, 3, term=3))
    with pytest.raises(ValueError):
        log.append([LogEntry(3, 3, b"ok"), LogEntry(4, 2, b"older term")])
    assert log.last_index == 2
    results(log.sync())
    assert open_log(tmp_path).last_index == 2


def test_unsynced_entries_are_not_written(tmp_path: Path) -> None:
    """Append alone does no I/O: entries not yet synced are absent after reopening."""
    log = open_log(tmp_path)
    log.append(entries(1, 2))
    results(log.sync())
    log.append(entries(3, 4))
    assert open_log(tmp_path).last_index == 2


def test_segment_rollover_and_reopen(tmp_path: Path) -> None:
    """With small segments, the log rolls to files named by first index and reopens intact."""
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


def test_oversized_record_gets_its_own_segment(tmp_path: Path) -> None:
    """A record larger than segment_bytes is still written, alone in its segment."""
    log = open_log(tmp_path, segment_bytes=40)
    log.append([LogEntry(1, 1, b"a" * 500), LogEntry(2, 1, b"b"), LogEntry(3, 1, b"c" * 500)])
    results(log.sync())
    assert segment_files(tmp_path) == [segment_name(i) for i in (1, 2, 3)]
    assert [len(e.payload) for e in open_log(tmp_path).entries] == [500, 1, 500]


# --------------------------------------------------------------------------
# Suffix truncation


def test_truncate_suffix_then_append_then_reopen(tmp_path: Path) -> None:
    """Truncating within a segment and appending new entries survives reopening."""
    log = open_log(tmp_path)
    log.append(entries(1, 5))
    results(log.sync())
    log.truncate_suffix(3)
    assert log.last_index == 2 and log.durable_index == 2
    new = [LogEntry(3, 2, b"new3"), LogEntry(4, 2, b"new4")]
    log.append(new)
    assert results(log.sync()) == [4]
    assert open_log(tmp_path).entries == entries(1, 2) + new


def test_truncate_suffix_before_sync_of_truncated_entries(tmp_path: Path) -> None:
    """Entries appended and truncated before any sync never reach the recovered log."""
    log = open_log(tmp_path)
    log.append(entries(1, 5))
    log.truncate_suffix(2)
    log.append([LogEntry(2, 4, b"two")])
    results(log.sync())
    assert open_log(tmp_path).entries == entries(1, 1) + [LogEntry(2, 4, b"two")]


def test_truncate_across_segment_boundary(tmp_path: Path) -> None:
    """Truncating into an earlier segment deletes later segments and reopens contiguous."""
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


def test_truncate_at_segment_start_keeps_empty_segment(tmp_path: Path) -> None:
    """Truncating at a segment's first index leaves that segment empty and reopenable."""
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


def test_truncate_everything(tmp_path: Path) -> None:
    """truncate_suffix(first_index) empties the log; it can then be refilled."""
    log = open_log(tmp_path)
    log.append(entries(1, 3))
    log.truncate_suffix(1)
    assert (log.first_index, log.last_index, log.entries) == (1, 0, [])
    log.append(entries(1, 1, term=5))
    results(log.sync())
    assert open_log(tmp_path).entries == entries(1, 1, term=5)


def test_truncate_beyond_end_is_noop_and_below_start_rejected(tmp_path: Path) -> None:
    """truncate_suffix past last_index does nothing; below first_index raises ValueError."""
    log = open_log(tmp_path, segment_bytes=100)
    log.append(entries(1, 6, size=20))
    log.truncate_suffix(7)
    assert log.last_index == 6
    results(log.sync())
    log.drop_prefix(2)
    assert log.first_index == 3
    with pytest.raises(ValueError):
        log.truncate_suffix(2)


def test_truncate_during_flush_does_not_overclaim_durability(tmp_path: Path) -> None:
    """A flush that started before a truncation never reports the replaced entries as durable."""
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


# --------------------------------------------------------------------------
# Recovery


def test_torn_tail_at_every_byte_offset(tmp_path: Path) -> None:
    """Cutting the last record at every length recovers all earlier records, warns, and truncates."""
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


def test_torn_tail_in_last_of_several_segments(tmp_path: Path) -> None:
    """A torn tail in the last segment is truncated even when earlier segments exist."""
    log = open_log(tmp_path, segment_bytes=100)
    log.append(entries(1, 5, size=20))
    results(log.sync())
    path = tmp_path / segment_name(5)
    path.write_bytes(path.read_bytes()[:-7])
    with capturedLogs() as events:
        recovered = open_log(tmp_path, segment_bytes=100)
    assert recovered.entries == entries(1, 4, size=20)
    assert len(warnings_in(events)) == 1


def test_zero_filled_tail_is_a_torn_tail(tmp_path: Path) -> None:
    """Zeros after the last record (a crash after the file grew) are truncated with a warning."""
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


def test_checksum_bad_last_record_is_truncated(tmp_path: Path) -> None:
    """A complete last record with a bad checksum is treated as torn and dropped with a warning."""
    log = open_log(tmp_path)
    written = entries(1, 3)
    log.append(written)
    results(log.sync())
    flip_bit(tmp_path / segment_name(1), record_offset(written, 2) + 30)
    with capturedLogs() as events:
        recovered = open_log(tmp_path)
    assert recovered.entries == written[:2]
    assert len(warnings_in(events)) == 1


def test_flipped_bit_in_middle_record_is_fatal(tmp_path: Path) -> None:
    """A damaged record followed by intact ones of a later flush raises
    CorruptLogError naming the file and offset."""
    log = open_log(tmp_path)
    written = entries(1, 6)
    log.append(written[:4])
    results(log.sync())
    log.append(written[4:])
    results(log.sync())
    path = tmp_path / segment_name(1)
    offset = record_offset(written, 2)
    flip_bit(path, offset + 26)  # payload of record 3
    with pytest.raises(CorruptLogError) as caught:
        open_log(tmp_path)
    assert caught.value.path == str(path)
    assert caught.value.offset == offset
    assert str(path) in str(caught.value) and f"offset {offset}" in str(caught.value)


def test_flipped_bit_in_length_of_middle_record_is_fatal(tmp_path: Path) -> None:
    """A length field damaged so the record seems to run past the end is still not taken as torn."""
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
    with pytest.raises(CorruptLogError) as caught:
        open_log(tmp_path)
    assert caught.value.offset == offset


def test_flipped_bit_in_non_last_segment_is_fatal(tmp_path: Path) -> None:
    """Damage to the last record of a segment that is not the last one raises CorruptLogError."""
    log = open_log(tmp_path, segment_bytes=100)
    written = entries(1, 6, size=20)
    log.append(written)
    results(log.sync())
    path = tmp_path / segment_name(3)
    offset = record_offset(written[2:4], 1)
    flip_bit(path, offset + 30)
    with pytest.raises(CorruptLogError) as caught:
        open_log(tmp_path, segment_bytes=100)
    assert (caught.value.path, caught.value.offset) == (str(path), offset)


def test_short_non_last_segment_is_fatal(tmp_path: Path) -> None:
    """A torn-looking end of a non-last segment is corruption, not a torn tail."""
    log = open_log(tmp_path, segment_bytes=100)
    log.append(entries(1, 6, size=20))
    results(log.sync())
    path = tmp_path / segment_name(1)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(CorruptLogError) as caught:
        open_log(tmp_path)
    assert caught.value.path == str(path)


def test_missing_middle_segment_is_fatal(tmp_path: Path) -> None:
    """A gap between segments raises CorruptLogError naming the segment after the gap."""
    log = open_log(tmp_path, segment_bytes=100)
    log.append(entries(1, 6, size=20))
    results(log.sync())
    os.unlink(tmp_path / segment_name(3))
    with pytest.raises(CorruptLogError) as caught:
        open_log(tmp_path)
    assert (caught.value.path, caught.value.offset) == (str(tmp_path / segment_name(5)), 0)


def test_damaged_segment_header_is_fatal(tmp_path: Path) -> None:
    """A bad segment header (even in the last segment) raises CorruptLogError at offset 0."""
    log = open_log(tmp_path)
    log.append(entries(1, 2))
    results(log.sync())
    flip_bit(tmp_path / segment_name(1), 12)
    with pytest.raises(CorruptLogError) as caught:
        open_log(tmp_path)
    assert caught.value.offset == 0 and "header" in caught.value.reason


def test_segment_named_for_wrong_index_is_fatal(tmp_path: Path) -> None:
    """A segment whose header disagrees with its file name raises CorruptLogError."""
    log = open_log(tmp_path)
    log.append(entries(1, 2))
    results(log.sync())
    os.rename(tmp_path / segment_name(1), tmp_path / segment_name(2))
    with pytest.raises(CorruptLogError):
        open_log(tmp_path)


def test_leftover_tmp_segment_is_removed(tmp_path: Path) -> None:
    """An incomplete segment left as .tmp by a crash during creation is deleted on open."""
    log = open_log(tmp_path)
    log.append(entries(1, 2))
    results(log.sync())
    leftover = tmp_path / (segment_name(3) + ".tmp")
    leftover.write_bytes(b"KVW")
    recovered = open_log(tmp_path)
    assert recovered.last_index == 2
    assert not leftover.exists()


# --------------------------------------------------------------------------
# Group commit


def test_group_commit_batches_concurrent_syncs(tmp_path: Path) -> None:
    """While one flush is held, 99 more append+sync pairs go out in one more flush, in order."""
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


def test_sync_with_nothing_pending_fires_at_once(tmp_path: Path) -> None:
    """sync() with no pending work and no flush running fires immediately without an fsync."""
    runner = ManualRunner()
    log = open_log(tmp_path, run_in_thread=runner)
    assert results(log.sync()) == [0]
    assert runner.jobs == [] and log.fsync_count == 0


def test_sync_during_flush_waits_for_it(tmp_path: Path) -> None:
    """A sync with nothing new, requested while a flush runs, fires only after that flush."""
    runner = ManualRunner()
    log = open_log(tmp_path, run_in_thread=runner)
    log.append(entries(1, 1))
    first = results(log.sync())
    second = results(log.sync())
    assert first == second == []
    runner.release()
    assert first == [1] and second == [1]
    assert runner.jobs == []


def test_sync_from_a_callback_does_not_overtake(tmp_path: Path) -> None:
    """A sync issued inside a sync callback fires after the other waiters of the same flush."""
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


def test_fsync_failure_is_fail_stop(tmp_path: Path) -> None:
    """A failed fsync errbacks the sync Deferreds and every later write is refused."""
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
    assert log.durable_index == 0
    with pytest.raises(StorageFailedError):
        log.append(entries(3, 3))
    with pytest.raises(StorageFailedError):
        log.truncate_suffix(1)
    later: list[Failure] = []
    log.sync().addErrback(later.append)
    assert later[0].check(StorageFailedError)
    assert runner.jobs == []


# --------------------------------------------------------------------------
# Prefix deletion, close, import hygiene


def test_drop_prefix_deletes_whole_segments(tmp_path: Path) -> None:
    """drop_prefix removes only segments entirely at or below the index, and reopen agrees."""
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


def test_close_flushes_and_refuses_later_writes(tmp_path: Path) -> None:
    """close() makes pending entries durable, then appends and syncs are refused."""
    log = open_log(tmp_path)
    log.append(entries(1, 3))
    assert results(log.close()) == [None]
    with pytest.raises(StorageFailedError):
        log.append(entries(4, 4))
    assert open_log(tmp_path).last_index == 3


def test_importing_storage_does_not_install_a_reactor() -> None:
    """Importing kvstore.storage leaves twisted.internet.reactor unimported (it is imported lazily)."""
    code = (
        "import sys, kvstore.storage, kvstore.storage.wal, kvstore.storage.metadata\n"
        "sys.exit('twisted.internet.reactor' in sys.modules)\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    completed = subprocess.run([sys.executable, "-c", code], cwd=root, timeout=60)
    assert completed.returncode == 0


def test_open_makes_recovered_records_durable(tmp_path: Path) -> None:
    """Opening fsyncs every segment and the directory: records that a crashed
    process wrote but never fsynced, read back from the page cache, must be
    durable before the log reports them durable."""
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


def test_segments_do_not_each_keep_a_file_descriptor(tmp_path: Path) -> None:
    """Rolling over to a new segment closes the older ones' descriptors, so a
    long log cannot exhaust the process's file descriptors."""
    log = WriteAheadLog.open(str(tmp_path), segment_bytes=4096, run_in_thread=lambda f: succeed(f()))
    before = len(os.listdir("/proc/self/fd"))
    for i in range(1, 200):
        log.append([LogEntry(i, 1, b"x" * 500)])
        log.sync()
    assert len([p for p in os.listdir(tmp_path) if p.endswith(".log")]) > 20
    assert len(os.listdir("/proc/self/fd")) - before <= 2
    log.close()


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


def test_zeroed_page_in_an_unsynced_tail_is_a_torn_tail(tmp_path: Path) -> None:
    """Writes of an unsynced flush may reach the disk out of order, leaving a
    zero-filled page before intact later records: recovery truncates there
    with a warning instead of refusing to start."""
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


def test_flipped_bit_before_intact_records_still_refuses(tmp_path: Path) -> None:
    """Damage followed by intact records of a later flush is corruption of
    durable data: recovery refuses, naming file and offset."""
    segment = write_thirty_kilobyte_records(tmp_path, flushes=2)
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x10
    segment.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError):
        WriteAheadLog.open(str(tmp_path), run_in_thread=run_now)
