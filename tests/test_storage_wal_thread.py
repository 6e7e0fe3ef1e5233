# -*- test-case-name: tests.test_storage_wal_thread -*-
"""
Tests for the write-ahead log's own flush thread (L{StorageThread}).

The thread is real; the reactor is a stand-in whose C{callFromThread}
queues the call for the test to run, so no reactor needs to spin.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

from twisted.trial.unittest import SynchronousTestCase

from kvstore.storage.records import LogEntry
from kvstore.storage.wal import StorageThread, WriteAheadLog


class _QueueingReactor:
    """callFromThread queues calls; the test runs them on its own thread."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.Queue()

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.calls.put((f, args))

    def run_calls(self, count: int) -> None:
        """Run the next C{count} calls, waiting (with a deadline) for each."""
        for _ in range(count):
            f, args = self.calls.get(timeout=30)
            f(*args)


class StorageThreadTests(SynchronousTestCase):
    def _runner(self) -> tuple[StorageThread, _QueueingReactor]:
        reactor = _QueueingReactor()
        runner = StorageThread(reactor)
        self.addCleanup(runner.stop)
        return runner, reactor

    def test_runs_jobs_on_another_thread_in_order(self) -> None:
        """Jobs run one after another on one other thread; their results are
        handed back through callFromThread, in order."""
        runner, reactor = self._runner()
        where: list[int] = []

        def job(n: int) -> int:
            where.append(threading.get_ident())
            return n

        results = [runner(lambda n=n: job(n)) for n in range(3)]
        reactor.run_calls(3)
        self.assertEqual([self.successResultOf(d) for d in results], [0, 1, 2])
        self.assertEqual(len(set(where)), 1)
        self.assertNotIn(threading.get_ident(), where)

    def test_an_exception_becomes_a_failure(self) -> None:
        """A job's exception fails its Deferred and later jobs still run."""
        runner, reactor = self._runner()

        def boom() -> int:
            raise OSError(5, "I/O error")

        failed = runner(boom)
        later = runner(lambda: 7)
        reactor.run_calls(2)
        self.failureResultOf(failed, OSError)
        self.assertEqual(self.successResultOf(later), 7)

    def test_closing_the_log_ends_its_thread(self) -> None:
        """The log's flush thread ends when the log closes."""
        reactor = _QueueingReactor()
        runner = StorageThread(reactor)
        log = WriteAheadLog.open(self.mktemp(), run_in_thread=runner)
        before = {t.ident for t in threading.enumerate() if t.name == "kvstore-wal"}
        log.append([LogEntry(1, 1, b"x")])
        synced = log.sync()
        reactor.run_calls(1)
        self.assertEqual(self.successResultOf(synced), 1)
        threads = [t for t in threading.enumerate() if t.name == "kvstore-wal" and t.ident not in before]
        self.assertEqual(len(threads), 1)
        closed = log.close()
        self.successResultOf(closed)
        threads[0].join(30)
        self.assertFalse(threads[0].is_alive())

    def test_a_log_opened_without_a_runner_has_its_own_thread(self) -> None:
        """By default a log flushes on a StorageThread of its own."""
        log = WriteAheadLog.open(self.mktemp())
        self.addCleanup(log.close)
        self.assertIsInstance(log._run_in_thread, StorageThread)
