# -*- test-case-name: tests.test_storage_wal_inline_flush -*-
"""
Tests for small flushes of the write-ahead log run on the reactor thread
(L{InlineFlushPolicy}, issue 16): which flushes run inline and which still go
to the storage thread, the back-off after a slow disk, and that an inline
flush keeps every rule of a threaded one (order, failure, counting) and runs
only after the leader's batch has been sent.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.node import Node
from kvstore.raft.core import Ready
from kvstore.raft.messages import AppendEntries, AppendEntriesResponse, Message
from kvstore.statemachine import KeyValueStateMachine
from kvstore.storage import LogEntry, StorageFailedError, WriteAheadLog
from kvstore.storage.fs import FileSystem
from kvstore.storage.wal import (
    INLINE_FLUSH_BACKOFF_SECONDS,
    INLINE_FLUSH_MAX_BYTES,
    INLINE_FLUSH_SLOW_SECONDS,
    InlineFlushPolicy,
)
from kvstore.testing.runners import ManualRunner
from tests.test_node_flush_order import _Core as _OneReadyCore

T = TypeVar("T")

AHEAD = 64 * 1024  # preallocate_bytes: room for many small flushes


class _RecordingFileSystem(FileSystem):
    """The real file system, noting each fsync (and failing them on demand)."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.fail_fsync = False

    def fsync(self, fd: int) -> None:
        if self.fail_fsync:
            raise OSError(5, "Input/output error")
        self.calls.append("fsync")
        super().fsync(fd)


class _FakeTimer:
    """Monotonic seconds the test sets; each flush can be made to take a while."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def entries(first: int, last: int, size: int = 10) -> list[LogEntry]:
    return [LogEntry(i, 1, b"%d:" % i + b"x" * size) for i in range(first, last + 1)]


class _Setup:
    """A real log on disk with a manual thread runner and an inline policy on a Clock."""

    def __init__(self, case: SynchronousTestCase, **open_kwargs: Any) -> None:
        self.calls: list[str] = []
        self.fs = _RecordingFileSystem(self.calls)
        self.runner = ManualRunner()
        self.clock = Clock()
        self.timer = _FakeTimer()
        self.policy = InlineFlushPolicy(self.clock, timer=self.timer)
        open_kwargs.setdefault("preallocate_bytes", AHEAD)
        self.log = WriteAheadLog.open(
            case.mktemp(), run_in_thread=self.runner, fs=self.fs, inline_flush=self.policy, **open_kwargs
        )
        case.addCleanup(self._close)
        del self.calls[:]  # the fsyncs of open()

    def _close(self) -> None:
        self.log.close()
        self.clock.advance(0)
        self.runner.release_all()

    def flush_takes(self, seconds: float) -> None:
        """Make every fsync from now on advance the fake timer by C{seconds}."""
        original = self.fs.fsync

        def slow_fsync(fd: int) -> None:
            original(fd)
            self.timer.now += seconds

        self.fs.fsync = slow_fsync  # type: ignore[method-assign]

    def sync_one(self, index: int) -> "Deferred[int]":
        self.log.append(entries(index, index))
        return self.log.sync()


class InlineFlushChoiceTests(SynchronousTestCase):
    def test_small_write_only_flush_runs_inline_at_end_of_turn(self) -> None:
        """A small flush of record writes runs on the calling thread once the
        clock's current turn ends, never as a thread job, and fsyncs once."""
        s = _Setup(self)
        d = s.sync_one(1)
        self.assertNoResult(d)
        self.assertEqual(s.calls, [])  # not synchronously inside sync()
        s.clock.advance(0)
        self.assertEqual(self.successResultOf(d), 1)
        self.assertEqual(s.runner.jobs, [])
        self.assertEqual(s.calls, ["fsync"])
        self.assertEqual(s.policy.inline_flushes, 1)
        self.assertEqual(s.log.fsync_count, 1)

    def test_large_flush_goes_to_the_thread(self) -> None:
        """A flush of more than max_bytes of records is a thread job."""
        s = _Setup(self)
        s.log.append(entries(1, 1, size=INLINE_FLUSH_MAX_BYTES))
        d = s.log.sync()
        s.clock.advance(0)
        self.assertNoResult(d)
        self.assertEqual(len(s.runner.jobs), 1)
        s.runner.release_all()
        self.assertEqual(self.successResultOf(d), 1)
        self.assertEqual(s.policy.inline_flushes, 0)

    def test_segment_creation_goes_to_the_thread(self) -> None:
        """A flush that creates a segment (roll-over) is a thread job."""
        s = _Setup(self, segment_bytes=200)
        self.successResultOf(_settle(s, s.sync_one(1)))
        s.log.append(entries(2, 3, size=150))  # the second record rolls over
        d = s.log.sync()
        s.clock.advance(0)
        self.assertNoResult(d)
        self.assertEqual(len(s.runner.jobs), 1)
        s.runner.release_all()
        self.assertEqual(self.successResultOf(d), 3)

    def test_truncation_goes_to_the_thread(self) -> None:
        """A flush holding a suffix truncation is a thread job."""
        s = _Setup(self)
        s.log.append(entries(1, 3))
        self.successResultOf(_settle(s, s.log.sync()))
        s.log.truncate_suffix(2)
        s.log.append(entries(2, 2))
        d = s.log.sync()
        s.clock.advance(0)
        self.assertNoResult(d)
        self.assertEqual(len(s.runner.jobs), 1)
        s.runner.release_all()
        self.assertEqual(self.successResultOf(d), 2)

    def test_reset_goes_to_the_thread(self) -> None:
        """A flush that unlinks and creates segments (reset_after) is a thread job."""
        s = _Setup(self)
        self.successResultOf(_settle(s, s.sync_one(1)))
        s.log.reset_after(10, 1)
        d = s.log.sync()
        s.clock.advance(0)
        self.assertNoResult(d)
        self.assertEqual(len(s.runner.jobs), 1)
        s.runner.release_all()
        self.successResultOf(d)

    def test_zero_fill_growth_goes_to_the_thread(self) -> None:
        """A write that reaches the end of the zero-filled region (the writer
        zero-fills the next extension) is a thread job; the next small one,
        inside the new zeros, is inline again."""
        s = _Setup(self, preallocate_bytes=300)
        self.successResultOf(_settle(s, s.sync_one(1)))
        self.assertEqual(s.policy.inline_flushes, 1)
        s.log.append(entries(2, 2, size=250))  # ends within a record header of the zeros
        d = s.log.sync()
        s.clock.advance(0)
        self.assertNoResult(d)
        self.assertEqual(len(s.runner.jobs), 1)
        s.runner.release_all()
        self.successResultOf(d)
        d = s.sync_one(3)
        s.clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(s.policy.inline_flushes, 2)

    def test_without_preallocation_every_flush_goes_to_the_thread(self) -> None:
        """Without preallocation every write grows the file (a metadata
        commit in its sync): such flushes are thread jobs."""
        s = _Setup(self, preallocate_bytes=0)
        d = s.sync_one(1)
        s.clock.advance(0)
        self.assertEqual(len(s.runner.jobs), 1)
        s.runner.release_all()
        self.successResultOf(d)


def _settle(s: _Setup, d: "Deferred[T]") -> "Deferred[T]":
    """Run whatever the flush needs (end of turn, thread jobs) until C{d} fires."""
    for _ in range(10):
        if d.called:
            break
        s.clock.advance(0)
        s.runner.release_all()
    return d


class InlineFlushBackoffTests(SynchronousTestCase):
    def test_slow_inline_flush_sends_flushes_to_the_thread_then_probes(self) -> None:
        """After an inline flush slower than the limit, flushes go to the
        thread for the back-off period; then one inline flush probes again,
        and a slow probe doubles the back-off."""
        s = _Setup(self)
        s.flush_takes(INLINE_FLUSH_SLOW_SECONDS * 2)
        self.successResultOf(_settle(s, s.sync_one(1)))
        self.assertEqual((s.policy.inline_flushes, s.policy.slow_flushes), (1, 1))

        d = s.sync_one(2)
        s.clock.advance(0)
        self.assertEqual(len(s.runner.jobs), 1)  # backed off: the thread
        s.runner.release_all()
        self.successResultOf(d)

        s.timer.now += INLINE_FLUSH_BACKOFF_SECONDS
        self.successResultOf(_settle(s, s.sync_one(3)))
        self.assertEqual((s.policy.inline_flushes, s.policy.slow_flushes), (2, 2))  # a slow probe

        s.timer.now += INLINE_FLUSH_BACKOFF_SECONDS
        d = s.sync_one(4)
        s.clock.advance(0)
        self.assertEqual(len(s.runner.jobs), 1)  # the back-off doubled
        s.runner.release_all()
        self.successResultOf(d)

        s.flush_takes(-INLINE_FLUSH_SLOW_SECONDS * 2)  # the disk is fast again
        s.timer.now += INLINE_FLUSH_BACKOFF_SECONDS
        self.successResultOf(_settle(s, s.sync_one(5)))
        self.assertEqual((s.policy.inline_flushes, s.policy.slow_flushes), (3, 2))
        self.successResultOf(_settle(s, s.sync_one(6)))
        self.assertEqual(s.policy.inline_flushes, 4)
        self.assertEqual(s.runner.jobs, [])

    def test_a_slow_average_backs_off_too(self) -> None:
        """Flushes each under the slow limit but averaging above the
        average limit send the following flushes to the thread."""
        s = _Setup(self)
        s.flush_takes(INLINE_FLUSH_SLOW_SECONDS * 0.9)
        self.successResultOf(_settle(s, s.sync_one(1)))
        self.assertEqual(s.policy.slow_flushes, 1)
        d = s.sync_one(2)
        s.clock.advance(0)
        self.assertEqual(len(s.runner.jobs), 1)
        s.runner.release_all()
        self.successResultOf(d)

    def test_fast_flushes_stay_inline(self) -> None:
        """Flushes well under both limits all run inline."""
        s = _Setup(self)
        s.flush_takes(INLINE_FLUSH_SLOW_SECONDS / 10)
        for index in range(1, 21):
            self.successResultOf(_settle(s, s.sync_one(index)))
        self.assertEqual((s.policy.inline_flushes, s.policy.slow_flushes), (20, 0))
        self.assertEqual(s.runner.jobs, [])


class InlineFlushSemanticsTests(SynchronousTestCase):
    def test_failure_fails_waiters_and_the_log(self) -> None:
        """A failed inline flush errbacks its waiters with the error, those
        queued behind it with StorageFailedError, and the log refuses writes."""
        s = _Setup(self)
        s.fs.fail_fsync = True
        first = s.sync_one(1)
        behind = s.sync_one(2)  # joins the next flush
        s.clock.advance(0)
        self.assertEqual(s.runner.jobs, [])
        self.assertIsInstance(self.failureResultOf(first, OSError).value, OSError)
        self.failureResultOf(behind, StorageFailedError)
        self.assertRaises(StorageFailedError, s.log.append, entries(3, 3))
        self.failureResultOf(s.log.sync(), StorageFailedError)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        s.fs.fail_fsync = False

    def test_deferreds_fire_in_order_one_flush_at_a_time(self) -> None:
        """Syncs requested while an inline flush is pending join the next
        flush; every Deferred fires in the order of the calls, each with
        the durable index its flush reached."""
        s = _Setup(self)
        fired: list[tuple[str, int]] = []
        s.log.append(entries(1, 1))
        s.log.sync().addCallback(lambda i: fired.append(("a", i)))
        s.log.append(entries(2, 2))
        s.log.sync().addCallback(lambda i: fired.append(("b", i)))
        s.log.sync().addCallback(lambda i: fired.append(("c", i)))
        self.assertEqual(fired, [])
        s.clock.advance(0)  # both flushes: the first took only entry 1
        self.assertEqual(fired, [("a", 1), ("b", 2), ("c", 2)])
        self.assertEqual(s.calls, ["fsync", "fsync"])
        self.assertEqual(s.runner.jobs, [])

    def test_on_flush_counts_like_a_threaded_flush(self) -> None:
        """The monitoring hook hears of each inline flush with its entries and fsyncs."""
        s = _Setup(self)
        heard: list[tuple[int, int]] = []
        s.log.on_flush = lambda n, fsyncs: heard.append((n, fsyncs))
        s.log.append(entries(1, 3))
        self.successResultOf(_settle(s, s.log.sync()))
        self.assertEqual(heard, [(3, 1)])

    def test_trace_points_on_the_inline_path(self) -> None:
        """flush.start, flush.end and wal.durable are traced for an inline flush."""
        from kvstore import trace

        self.patch(trace, "ENABLED", True)
        seen: list[str] = []
        self.patch(trace, "record", lambda stage, index=None: seen.append(stage))
        s = _Setup(self)
        self.successResultOf(_settle(s, s.sync_one(1)))
        self.assertEqual(seen, ["flush.start", "flush.end", "wal.durable"])
        self.assertEqual(s.runner.jobs, [])


class _Peers:
    def __init__(self, calls: list[str]) -> None:
        self._calls = calls

    def send(self, message: Message) -> None:
        self._calls.append(f"send {type(message.body).__name__}")


class LeaderOrderTests(SynchronousTestCase):
    def test_leader_sends_its_batch_before_the_inline_fsync(self) -> None:
        """A leader's AppendEntries leave before its inline flush's fsync,
        and the messages that need durability only after it."""
        s = _Setup(self)
        ready = Ready(
            entries=[(1, 1, b"x")],
            persist_through=(1, 1),
            messages=[Message(0, 1, AppendEntries(1, 0, 0, ((1, 1, b"x"),), 0))],
            messages_after_persist=[Message(0, 2, AppendEntriesResponse(1, True, 1))],
        )
        node = Node(
            _OneReadyCore(ready, s.calls),  # type: ignore[arg-type]
            s.log,
            None,  # type: ignore[arg-type]
            KeyValueStateMachine(),
            _Peers(s.calls),
            s.clock,
            member_addresses={},
        )
        node.wake()
        s.clock.advance(0)
        self.assertEqual(
            s.calls, ["send AppendEntries", "fsync", "send AppendEntriesResponse", "persisted"]
        )
        self.assertEqual(s.runner.jobs, [])
        self.assertEqual(s.policy.inline_flushes, 1)


class AtOnceTests(SynchronousTestCase):
    """C{sync(at_once=True)}: the caller has nothing to send before the
    flush, so an inline flush runs now, not at the end of the turn."""

    def test_small_flush_runs_now(self) -> None:
        """An inline flush asked for at once has fsynced and fired before sync() returns."""
        s = _Setup(self)
        s.log.append(entries(1, 1))
        d = s.log.sync(at_once=True)
        self.assertEqual(self.successResultOf(d), 1)
        self.assertEqual(s.calls, ["fsync"])
        self.assertEqual((s.policy.inline_flushes, s.runner.jobs), (1, []))

    def test_large_flush_still_goes_to_the_thread(self) -> None:
        """At once changes where an inline flush waits, not which flushes are inline."""
        s = _Setup(self)
        s.log.append(entries(1, 1, size=INLINE_FLUSH_MAX_BYTES))
        d = s.log.sync(at_once=True)
        self.assertNoResult(d)
        self.assertEqual(len(s.runner.jobs), 1)
        s.runner.release_all()
        self.assertEqual(self.successResultOf(d), 1)

    def test_during_back_off_goes_to_the_thread(self) -> None:
        """While the policy has backed off, an at-once flush is a thread job like any other."""
        s = _Setup(self)
        s.flush_takes(1.0)
        s.log.append(entries(1, 1))
        self.successResultOf(s.log.sync(at_once=True))
        s.log.append(entries(2, 2))
        d = s.log.sync(at_once=True)
        self.assertNoResult(d)
        self.assertEqual(len(s.runner.jobs), 1)
        s.runner.release_all()
        self.assertEqual(self.successResultOf(d), 2)

    def test_follower_batch_acknowledges_within_the_same_pass(self) -> None:
        """A batch with nothing to send first (a follower's) fsyncs and sends
        its acknowledgement inside the node's pass, before any later turn."""
        s = _Setup(self)
        ready = Ready(
            entries=[(1, 1, b"x")],
            persist_through=(1, 1),
            messages_after_persist=[Message(0, 2, AppendEntriesResponse(1, True, 1))],
        )
        node = Node(
            _OneReadyCore(ready, s.calls),  # type: ignore[arg-type]
            s.log,
            None,  # type: ignore[arg-type]
            KeyValueStateMachine(),
            _Peers(s.calls),
            s.clock,
            member_addresses={},
        )
        node._process()  # type: ignore[attr-defined]
        self.assertEqual(s.calls, ["fsync", "send AppendEntriesResponse", "persisted"])
        self.assertEqual(s.runner.jobs, [])


class ServiceWiringTests(SynchronousTestCase):
    def _open(self, *extra: str) -> Any:
        from kvstore.daemon.options import parse_config
        from kvstore.daemon.service import _open_storage

        config = parse_config(["--data-dir", self.mktemp(), "--port", "20999", *extra])
        lock, wal, _metadata, _snapshots = _open_storage(config)
        self.addCleanup(lock.release)
        self.addCleanup(wal.close)
        return wal

    def test_fsync_log_may_flush_inline(self) -> None:
        """A node with fsync on opens its log with an inline flush policy."""
        self.assertIsInstance(self._open()._inline, InlineFlushPolicy)

    def test_no_fsync_log_has_no_inline_policy(self) -> None:
        """With --unsafe-no-fsync the log already flushes synchronously: no policy."""
        self.assertIsNone(self._open("--unsafe-no-fsync")._inline)
