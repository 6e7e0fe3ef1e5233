# -*- test-case-name: tests.test_storage_wal_inline_neighbours -*-
"""
Tests that no write-ahead log flush runs on the reactor while other blocking
disk work (the snapshot thread's writes and fsyncs) is in flight: such a
flush's C{fdatasync} waits for the device behind that work (measured at
57-67 ms behind a 130 MB snapshot's fsync), a reactor stall that issue 12's
figure 6 bounds at 20 ms, and the policy's back-off only reacts after one.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from kvstore.storage.wal import InlineFlushPolicy

from tests.test_storage_wal_inline_flush import _Setup


class NeighbourRunnerTests(SynchronousTestCase):
    def test_no_inline_flush_while_a_neighbour_job_is_in_flight(self) -> None:
        """While a job of a runner wrapped by sharing_the_disk is in flight,
        small flushes go to the storage thread; once it is done, inline again."""
        s = _Setup(self)
        neighbour_jobs: list[Deferred[Any]] = []

        def snapshot_thread(f: Any) -> "Deferred[Any]":
            d: Deferred[Any] = Deferred()
            neighbour_jobs.append(d)
            return d

        runner = s.policy.sharing_the_disk(snapshot_thread)
        job = runner(lambda: None)
        self.assertFalse(s.policy.allows())

        d = s.sync_one(1)
        s.clock.advance(0)
        self.assertEqual(len(s.runner.jobs), 1)  # the thread, not the reactor
        self.assertEqual(s.policy.inline_flushes, 0)
        s.runner.release_all()
        self.successResultOf(d)

        neighbour_jobs[0].callback("done")
        self.assertEqual(self.successResultOf(job), "done")
        self.assertTrue(s.policy.allows())
        d = s.sync_one(2)
        s.clock.advance(0)
        self.assertEqual(s.runner.jobs, [])
        self.assertEqual(s.policy.inline_flushes, 1)
        self.successResultOf(d)

    def test_failed_and_refused_neighbour_jobs_end_too(self) -> None:
        """A neighbour job that fails, or a runner that raises, does not
        keep flushes off the reactor for ever; failures pass through."""
        policy = InlineFlushPolicy(object(), timer=lambda: 0.0)

        def failing(f: Any) -> "Deferred[Any]":
            d: Deferred[Any] = Deferred()
            d.errback(OSError(5, "Input/output error"))
            return d

        def refusing(f: Any) -> "Deferred[Any]":
            raise RuntimeError("stopped")

        self.failureResultOf(policy.sharing_the_disk(failing)(lambda: None), OSError)
        self.assertRaises(RuntimeError, policy.sharing_the_disk(refusing), lambda: None)
        self.assertTrue(policy.allows())
        self.assertEqual(self.successResultOf(policy.sharing_the_disk(lambda f: succeed(f()))(lambda: 7)), 7)
        self.assertTrue(policy.allows())


class ServiceNeighbourWiringTests(SynchronousTestCase):
    def _open(self, *extra: str) -> Any:
        from kvstore.daemon.options import parse_config
        from kvstore.daemon.service import _open_storage

        config = parse_config(["--data-dir", self.mktemp(), "--port", "20999", *extra])
        lock, wal, _metadata, _snapshots = _open_storage(config)
        self.addCleanup(lock.release)
        self.addCleanup(wal.close)
        return wal

    def test_snapshot_thread_shares_the_disk_with_the_inline_policy(self) -> None:
        """The service hands the node a snapshot runner that keeps the log's
        flushes off the reactor while its jobs run."""
        from kvstore.daemon.service import snapshot_runner_for

        wal = self._open()
        held: Deferred[Any] = Deferred()
        runner = snapshot_runner_for(wal, lambda f: held)
        policy = wal.inline_flush
        assert policy is not None
        runner(lambda: None)
        self.assertFalse(policy.allows())
        held.callback(None)
        self.assertTrue(policy.allows())

    def test_no_fsync_snapshot_runner_is_the_thread_itself(self) -> None:
        """Without an inline policy (--unsafe-no-fsync) the snapshot thread is used as it is."""
        from kvstore.daemon.service import snapshot_runner_for

        def thread(f: Any) -> "Deferred[Any]":
            return succeed(f())

        self.assertIs(snapshot_runner_for(self._open("--unsafe-no-fsync"), thread), thread)
