# -*- test-case-name: tests.test_storage_wal_flush_guards -*-
"""
A failure outside the flush itself must not wedge the write-ahead log: an
observer (C{on_flush}, the metrics hook) that raises, or an inline runner
that cannot schedule, leaves later syncs working (or failing) rather than
waiting forever behind a flush that never ends.
"""

from __future__ import annotations

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.test_storage_wal_inline_flush import _Setup, _settle, entries


class _Broken(Exception):
    pass


class FlushGuardTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_raising_observer_does_not_strand_later_syncs(self) -> None:
        """on_flush raising: the sync still fires with the durable index, the
        failure is logged, and the next append and sync complete too."""
        s = _Setup(self)

        def observer(entries_: int, fsyncs: int) -> None:
            raise _Broken("observer bug")

        s.log.on_flush = observer
        s.log.append(entries(1, 2))
        self.assertEqual(self.successResultOf(_settle(s, s.log.sync())), 2)
        s.log.append(entries(3, 3))
        self.assertEqual(self.successResultOf(_settle(s, s.log.sync())), 3)
        self.assertEqual(len(self.flushLoggedErrors(_Broken)), 2)
        self.assertTrue(any("observer failed" in e.get("log_format", "") for e in self.events))

    def test_inline_runner_that_raises_fails_the_sync(self) -> None:
        """If the inline flush cannot even be scheduled, the waiting sync fails
        (and the log refuses further writes) instead of never firing."""
        s = _Setup(self)

        def cannot_schedule(work: object) -> object:
            raise _Broken("no reactor")

        s.policy.run_soon = cannot_schedule  # type: ignore[method-assign]
        s.log.append(entries(1, 1))
        d = _settle(s, s.log.sync())
        self.failureResultOf(d, _Broken)
        self.flushLoggedErrors(_Broken)
