# -*- test-case-name: tests.test_wal_reset -*-
"""
L{WriteAheadLog.reset_after} (and its L{MemoryLog} twin): after a snapshot
is installed the whole log is dropped and continues at the snapshot's index
plus one, durably, and a crash at any step of that leaves the old log, a
prefix of it, an empty log, or the new log: never a mixture.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from kvstore.storage import LogEntry, MemoryLog, StorageFailedError, WriteAheadLog
from kvstore.storage.wal import segment_name
from kvstore.testing.runners import ManualRunner, run_now
from kvstore.testing.sim.fs import SimulatedFileSystem

DIRECTORY = "/data/wal"
_MUTATING = ("create_truncate", "pwrite_all", "fsync", "ftruncate", "close", "replace", "unlink", "fsync_dir")


class Crash(Exception):
    """The process died here."""


class CrashingFileSystem(SimulatedFileSystem):
    """Counts mutating calls once armed and dies before call number C{crash_at}."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.crash_at: int | None = None

    def __getattribute__(self, name: str) -> Any:
        attribute = super().__getattribute__(name)
        if name in _MUTATING:

            def counted(*args: Any) -> Any:
                if self.crash_at is not None:
                    self.calls += 1
                    if self.calls >= self.crash_at:
                        raise Crash(name)
                return attribute(*args)

            return counted
        return attribute


def entries(first: int, last: int, term: int = 1) -> list[LogEntry]:
    return [LogEntry(i, term, b"%d:" % i + b"x" * 40) for i in range(first, last + 1)]


def open_log(fs: SimulatedFileSystem, segment_bytes: int = 400, runner: Any = run_now) -> WriteAheadLog:
    return WriteAheadLog.open(DIRECTORY, segment_bytes=segment_bytes, run_in_thread=runner, fs=fs)


def new_fs() -> CrashingFileSystem:
    fs = CrashingFileSystem()
    fs.makedirs_durable("/data")
    return fs


def synced(log: WriteAheadLog) -> list[object]:
    out: list[object] = []
    d: Deferred[int] = log.sync()
    d.addBoth(out.append)
    return out


class ResetAfterTests(SynchronousTestCase):
    """What reset_after does, in memory and on disk."""

    def test_in_memory_at_once(self) -> None:
        """The log is empty at once, continuing after the index, with the given term last."""
        log = open_log(new_fs())
        log.append(entries(1, 30, term=2))
        log.reset_after(50, 7)
        self.assertEqual((log.first_index, log.last_index, log.last_term), (51, 50, 7))
        self.assertEqual(log.entry_tuples(), [])
        with self.assertRaises(ValueError):
            log.append(entries(51, 51, term=6))  # a term lower than the snapshot's
        with self.assertRaises(ValueError):
            log.append(entries(52, 52, term=7))  # not contiguous
        log.append(entries(51, 53, term=7))
        self.assertEqual(log.last_index, 53)

    def test_durable_after_sync(self) -> None:
        """Once synced, a reopened log starts at the index plus one and holds only what followed."""
        for index in (10, 30, 45):  # inside, at the end of, and beyond the old log
            with self.subTest(index=index):
                fs = new_fs()
                log = open_log(fs)
                log.append(entries(1, 30))
                self.assertEqual(synced(log), [30])
                log.reset_after(index, 3)
                log.append(entries(index + 1, index + 5, term=3))
                self.assertEqual(synced(log), [index + 5])
                self.assertEqual(fs.listdir(DIRECTORY), [segment_name(index + 1)])
                fs.crash()
                reopened = open_log(fs)
                self.assertEqual(reopened.first_index, index + 1)
                self.assertEqual(reopened.entries, entries(index + 1, index + 5, term=3))

    def test_replaces_a_segment_of_the_same_name(self) -> None:
        """An old segment that starts exactly at the index plus one is replaced, not reused."""
        fs = new_fs()
        log = open_log(fs, segment_bytes=100)
        log.append(entries(1, 12))
        synced(log)
        starts = [int(name[4:24]) for name in fs.listdir(DIRECTORY)]
        self.assertIn(7, starts)
        log.reset_after(6, 1)
        synced(log)
        fs.crash()
        reopened = open_log(fs, segment_bytes=100)
        self.assertEqual((reopened.first_index, reopened.entries), (7, []))

    def test_below_the_first_index(self) -> None:
        """A log whose prefix was dropped resets to an index below where it starts."""
        fs = new_fs()
        log = open_log(fs, segment_bytes=100)
        log.append(entries(1, 20))
        synced(log)
        log.drop_prefix(15)
        synced(log)
        self.assertGreater(log.first_index, 5)
        log.reset_after(5, 1)
        synced(log)
        fs.crash()
        self.assertEqual(open_log(fs, segment_bytes=100).first_index, 6)

    def test_waits_for_the_running_flush(self) -> None:
        """Called while a flush runs, the reset goes to the next flush, and the durable index never claims dropped entries."""
        runner = ManualRunner()
        fs = new_fs()
        log = open_log(fs, runner=runner)
        log.append(entries(1, 10))
        first = synced(log)
        log.reset_after(4, 1)
        self.assertLessEqual(log.durable_index, 4)
        second = synced(log)
        runner.release()
        self.assertEqual(first, [4])
        self.assertEqual(second, [])
        runner.release()
        self.assertEqual(second, [4])
        fs.crash()
        self.assertEqual(open_log(fs).first_index, 5)

    def test_refused_after_failure(self) -> None:
        """A negative index is refused, and a closed log refuses to reset."""
        log = open_log(new_fs())
        with self.assertRaises(ValueError):
            log.reset_after(-1, 0)
        log.close()
        with self.assertRaises(StorageFailedError):
            log.reset_after(3, 1)


class ResetCrashTests(SynchronousTestCase):
    """A crash before any file-system call of a reset (and the appends around it) leaves old or new, never a mix."""

    def check_every_crash_point(self, tear: bool) -> None:
        old = entries(1, 24, term=1)
        new = entries(17, 22, term=4)
        outcomes = set()
        crash_at = 1
        while True:
            fs = new_fs()
            log = open_log(fs, segment_bytes=300)
            log.append(old[:20])
            synced(log)
            fs.crash_at, fs.calls = crash_at, 0
            # Unsynced appends before the reset, then the reset and new entries, all in one flush.
            log.append(old[20:])
            log.reset_after(16, 4)
            log.append(new)
            with capturedLogs():
                result = synced(log)
            self.flushLoggedErrors(Crash)
            finished = result == [22]
            fs.crash_at = None
            fs.crash(random.Random(crash_at), tear=tear)
            reopened = open_log(fs, segment_bytes=300)
            recovered = reopened.entries
            with self.subTest(crash_at=crash_at):
                if reopened.first_index == 17:
                    self.assertEqual(recovered, new[: len(recovered)])
                    outcomes.add("new")
                else:
                    # The old log or a prefix of it (possibly nothing at all).
                    self.assertEqual(recovered, old[reopened.first_index - 1 : reopened.first_index - 1 + len(recovered)])
                    self.assertTrue(reopened.first_index == 1 or not recovered, reopened.first_index)
                    outcomes.add("old" if recovered else "empty")
                if finished:
                    self.assertEqual((reopened.first_index, recovered), (17, new))
            if finished:
                break
            crash_at += 1
        self.assertEqual(outcomes, {"old", "empty", "new"})

    def test_every_crash_point(self) -> None:
        """Every crash point, without torn writes."""
        self.check_every_crash_point(tear=False)

    def test_every_crash_point_torn(self) -> None:
        """Every crash point, with unsynced appends torn in pages or sectors."""
        self.check_every_crash_point(tear=True)


class MemoryLogResetTests(SynchronousTestCase):
    """The in-memory twin keeps the same contract."""

    def test_reset(self) -> None:
        """Empty at once, continuing after the index; durable after sync."""
        log = MemoryLog(entries(1, 5))
        log.reset_after(9, 2)
        self.assertEqual((log.first_index, log.last_index, log.last_term, log.entries), (10, 9, 2, []))
        with self.assertRaises(ValueError):
            log.append(entries(10, 10, term=1))
        log.append(entries(10, 11, term=2))
        self.assertEqual(log.sync().result, 11)  # type: ignore[attr-defined]


class DropPrefixInMemoryTests(SynchronousTestCase):
    """drop_prefix forgets the dropped entries in memory even where their segment stays on disk."""

    def test_inside_a_segment(self) -> None:
        """Entries up to the index leave memory at once; the segment stays whole on disk until a later one passes it."""
        fs = new_fs()
        log = open_log(fs, segment_bytes=1 << 20)
        log.append(entries(1, 30))
        synced(log)
        log.drop_prefix(20)
        self.assertEqual((log.first_index, log.last_index), (21, 30))
        self.assertEqual(log.entries, entries(21, 30))
        with self.assertRaises(IndexError):
            log.entry(20)
        with self.assertRaises(ValueError):
            log.truncate_suffix(20)
        log.truncate_suffix(25)
        log.append(entries(25, 26, term=2))
        self.assertEqual(synced(log), [26])
        fs.crash()
        reopened = open_log(fs, segment_bytes=1 << 20)
        # On disk the segment is whole: a reopened log starts where it does.
        self.assertEqual((reopened.first_index, reopened.last_index), (1, 26))
        self.assertEqual(reopened.entries, entries(1, 24) + entries(25, 26, term=2))

    def test_keeps_the_last_entry(self) -> None:
        """Dropping past the end keeps the last entry, so the log's last term is still known."""
        log = open_log(new_fs(), segment_bytes=1 << 20)
        log.append(entries(1, 5, term=3))
        log.drop_prefix(50)
        self.assertEqual((log.first_index, log.last_index, log.last_term), (5, 5, 3))
