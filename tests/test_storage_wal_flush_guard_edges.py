# -*- test-case-name: tests.test_storage_wal_flush_guard_edges -*-
"""
Edges of the write-ahead log's flush guards (review of the on_flush and
inline-runner guards): every way a flush can start, end or be observed
either completes the waiting syncs or fails them and the log, exactly once;
none leaves the log flushing forever.
"""

from __future__ import annotations

from typing import Callable

from twisted.trial.unittest import SynchronousTestCase

from kvstore.storage import StorageFailedError, WriteAheadLog
from kvstore.storage.wal import INLINE_FLUSH_MAX_BYTES
from tests.test_storage_wal_inline_flush import _Setup, _settle, entries


class _Broken(Exception):
    pass


class _Interrupt(BaseException):
    """Not an Exception (as KeyboardInterrupt or SystemExit are not)."""


def _raising(error: BaseException) -> Callable[..., None]:
    def raise_it(*args: object) -> None:
        raise error

    return raise_it


class _FailingAfter:
    """A monotonic timer that raises from its C{calls}th call on."""

    def __init__(self, calls: int) -> None:
        self.calls = calls
        self.now = 100.0

    def __call__(self) -> float:
        self.calls -= 1
        if self.calls <= 0:
            raise _Broken("timer")
        return self.now


class ObserverGuardTests(SynchronousTestCase):
    def _sync_each_path(self, s: _Setup, first: int) -> None:
        """Append and sync one entry per flush path (inline at the end of
        the turn, inline at once, storage thread); each sync must fire."""
        for index, (size, at_once) in enumerate(
            [(10, False), (10, True), (INLINE_FLUSH_MAX_BYTES, False)], start=first
        ):
            with self.subTest(size=size, at_once=at_once):
                s.log.append(entries(index, index, size=size))
                self.assertEqual(self.successResultOf(_settle(s, s.log.sync(at_once=at_once))), index)

    def test_raising_observer_on_every_flush_path(self) -> None:
        """An observer raising an Exception leaves syncs firing whether the
        flush ran inline at the end of the turn, inline at once, or on the
        storage thread."""
        s = _Setup(self)
        s.log.on_flush = _raising(_Broken("observer"))
        self._sync_each_path(s, 1)
        self.assertEqual(s.policy.inline_flushes, 2)
        self.assertEqual(len(self.flushLoggedErrors(_Broken)), 3)

    def test_observer_raising_a_base_exception_does_not_strand_syncs(self) -> None:
        """An observer raising a BaseException that is no Exception (as
        KeyboardInterrupt, which the flush's Deferred would swallow anyway)
        is logged and the syncs still fire on every flush path."""
        s = _Setup(self)
        s.log.on_flush = _raising(_Interrupt())
        self._sync_each_path(s, 1)
        self.assertEqual(len(self.flushLoggedErrors(_Interrupt)), 3)


class InlineTimerGuardTests(SynchronousTestCase):
    def _assert_failed_once(self, s: _Setup, d: object) -> None:
        self.failureResultOf(d, _Broken)  # type: ignore[arg-type]
        self.assertEqual(len(self.flushLoggedErrors(_Broken)), 1)
        self.assertRaises(StorageFailedError, s.log.append, entries(3, 3))
        self.failureResultOf(s.log.sync(), StorageFailedError)

    def test_policy_failing_before_the_flush_fails_the_sync(self) -> None:
        """If asking the inline policy whether it allows the flush raises,
        the sync fails and the log refuses further writes, instead of the
        error escaping sync() with the log left flushing."""
        s = _Setup(self)
        s.policy._timer = _FailingAfter(1)
        s.log.append(entries(1, 2))
        d = _settle(s, s.log.sync())
        self._assert_failed_once(s, d)
        self.assertEqual(s.calls, [])

    def test_timing_failing_after_inline_work_fails_once(self) -> None:
        """If timing an inline flush (at the end of the turn, or at once)
        raises after its work ran, the sync fails exactly once and the log
        fail-stops, though reopening finds the records it did write (the
        safe direction)."""
        for at_once in (False, True):
            with self.subTest(at_once=at_once):
                s = _Setup(self)
                # Calls: allows(), the start of the flush, then its end.
                s.policy._timer = _FailingAfter(3)
                s.log.append(entries(1, 2))
                d = _settle(s, s.log.sync(at_once=at_once))
                self.assertEqual(s.calls, ["fsync"])
                self.assertEqual(s.policy.inline_flushes, 1)
                self._assert_failed_once(s, d)
                directory = s.log._directory
                reopened = WriteAheadLog.open(directory, run_in_thread=s.runner, fs=s.fs)
                self.addCleanup(reopened.close)
                self.assertEqual(reopened.last_index, 2)
