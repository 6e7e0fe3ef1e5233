# -*- test-case-name: tests.test_storage_wal_claims -*-
"""
The C{synced} claim of a record written after a truncation that was
queued while a flush was running: the flush made the segment durable up
to its size when it started, but the truncation will rewrite bytes below
that, so later records may claim only the truncation point.  A higher
claim would make recovery refuse an ordinary torn write of the rewrite.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.sim.fs import SECTOR, Fate, SimulatedFileSystem, TearPlan
from kvstore.storage import CorruptLogError, LogEntry, WriteAheadLog
from kvstore.storage.wal import segment_name
from kvstore.testing.runners import run_now

T = TypeVar("T")

DIRECTORY = "/d/wal"


class LateRunner:
    """
    Runs each job at once, but fires its Deferred only on L{finish}, so
    the log's reactor side keeps working while a flush is in flight.  While
    C{holding}, a job's fsyncs are captured in C{effects} instead of taking
    effect, and its Deferred never fires.
    """

    def __init__(self, fs: SimulatedFileSystem) -> None:
        self.fs = fs
        self.running: list[tuple[Deferred[object], object]] = []
        self.holding = False
        self.effects: list[Callable[[], None]] = []

    def __call__(self, f: Callable[[], T]) -> "Deferred[T]":
        d: Deferred[T] = Deferred()
        if self.holding:
            self.fs.durability_sink = self.effects.append
            try:
                f()
            finally:
                self.fs.durability_sink = None
            return d
        self.running.append((d, f()))  # type: ignore[arg-type]
        return d

    def finish(self) -> None:
        d, result = self.running.pop(0)
        d.callback(result)


class TruncationDuringFlushTests(SynchronousTestCase):
    """A truncation queued during a flush lowers what later records claim."""

    def test_rewrite_after_truncation_during_flush_tears_as_a_torn_tail(self) -> None:
        """Records 4 and 5 are being flushed when a conflict truncates from
        4 and appends a large 4'; then 5' is appended and a flush that
        truncates and writes 4', 5' is cut short, losing the sector at the
        truncation point but keeping 5'.  Recovery cuts the torn tail at 4
        (5' claims no byte past the truncation point) and keeps 1..3."""
        fs = SimulatedFileSystem()
        fs.makedirs_durable("/d")
        runner = LateRunner(fs)
        log = WriteAheadLog.open(DIRECTORY, run_in_thread=runner, fs=fs)
        log.append([LogEntry(i, 1, b"a" * 50) for i in range(1, 4)])
        log.sync()
        runner.finish()
        log.append([LogEntry(i, 1, b"b" * 50) for i in (4, 5)])
        log.sync()  # in flight: durable up to record 5 once it finishes
        log.truncate_suffix(4)
        log.append([LogEntry(4, 2, b"c" * 2000)])
        runner.finish()
        log.append([LogEntry(5, 2, b"d" * 50)])
        runner.holding = True
        log.sync()  # truncate to 4 (fsynced), write 4' and 5', fsync: cut short
        self.assertEqual(len(runner.effects), 2)
        runner.effects[0]()  # only the truncation reached the disk
        path = f"{DIRECTORY}/{segment_name(1)}"
        fs.crash(plans={path: TearPlan(len(fs.read_file(path)), SECTOR, (Fate.GARBLE,))})
        try:
            recovered = WriteAheadLog.open(DIRECTORY, run_in_thread=run_now, fs=fs)
        except CorruptLogError as e:
            self.fail(f"refused to open after a torn unsynced flush: {e}")
        self.assertEqual(recovered.entries, [LogEntry(i, 1, b"a" * 50) for i in range(1, 4)])
