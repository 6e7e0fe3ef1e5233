# -*- test-case-name: tests.test_storage_wal_at_once_reentry -*-
"""
An inline flush asked for at once (C{sync(at_once=True)}) has fired its
Deferred when C{sync()} returns (issue 16): what the caller's callbacks then
do with the log (append and sync again, fail) must find its bookkeeping
done and keep the rules of any other flush.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.storage import WriteAheadLog
from tests.test_storage_wal_inline_flush import _Setup, entries


class AtOnceReentryTests(SynchronousTestCase):
    def test_a_callback_that_appends_and_syncs_again_gets_a_flush_of_its_own(self) -> None:
        """An at-once flush's Deferred has fired when sync() returns, with the
        flush's bookkeeping done: a callback added then that appends and
        syncs at once again gets a second inline flush of its own, and the
        log is durable through both."""
        s = _Setup(self)
        order: list[str] = []

        def again(index: int) -> int:
            order.append(f"first fired {index}")
            s.log.append(entries(2, 2))
            s.log.sync(at_once=True).addCallback(lambda i: order.append(f"second fired {i}"))
            order.append("first callback done")
            return index

        s.log.append(entries(1, 1))
        first = s.log.sync(at_once=True).addCallback(again)
        self.assertEqual(self.successResultOf(first), 1)
        self.assertEqual(order, ["first fired 1", "second fired 2", "first callback done"])
        self.assertEqual(s.calls, ["fsync", "fsync"])
        self.assertEqual(s.runner.jobs, [])
        self.assertEqual(s.log.durable_index, 2)
        self.assertFalse(s.log._flushing)
        reopened = WriteAheadLog.open(s.log._directory, run_in_thread=s.runner, fs=s.fs)
        self.addCleanup(reopened.close)
        self.assertEqual(reopened.last_index, 2)

    def test_a_waiter_callback_that_raises_leaves_the_log_flushing_on(self) -> None:
        """An exception in a callback of an at-once flush's waiter stays in
        that Deferred: sync() returns, and later syncs still flush."""
        s = _Setup(self)

        class _Boom(Exception):
            pass

        def boom(index: int) -> None:
            raise _Boom()

        s.log.append(entries(1, 1))
        d = s.log.sync(at_once=True).addCallback(boom)
        self.failureResultOf(d, _Boom)
        s.log.append(entries(2, 2))
        self.assertEqual(self.successResultOf(s.log.sync(at_once=True)), 2)
        self.assertEqual(s.calls, ["fsync", "fsync"])
