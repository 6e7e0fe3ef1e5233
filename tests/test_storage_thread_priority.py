# -*- test-case-name: tests.test_storage_thread_priority -*-
"""
Tests for L{kvstore.storage.thread_priority} and its use: the snapshots'
thread lowers its own CPU priority when it starts, the log's thread does
not, and wherever the system cannot or will not, nothing fails.
"""

from __future__ import annotations

import os
import queue
import sys
import types
from typing import Any, Callable

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

import kvstore.daemon.service
from kvstore.daemon.options import parse_config
from kvstore.storage import thread_priority
from kvstore.storage.thread_priority import BACKGROUND_NICE_INCREMENT, MAX_NICE, lower_thread_priority
from kvstore.storage.wal import StorageThread


class _Priorities:
    """A stand-in for C{os.getpriority}/C{os.setpriority}: per-id nice values."""

    def __init__(self, nice: int = 0, refuse: BaseException | None = None) -> None:
        self.nice: dict[int, int] = {}
        self.default = nice
        self.refuse = refuse
        self.calls: list[tuple[int, int, int]] = []

    def get(self, which: int, who: int) -> int:
        return self.nice.get(who, self.default)

    def set(self, which: int, who: int, value: int) -> None:
        self.calls.append((which, who, value))
        if self.refuse is not None:
            raise self.refuse
        self.nice[who] = value


class LowerThreadPriorityTests(SynchronousTestCase):
    def _lower(self, priorities: _Priorities, increment: int = 10, platform: str = "linux") -> int | None:
        return lower_thread_priority(
            increment, platform=platform, native_id=lambda: 4242, getpriority=priorities.get, setpriority=priorities.set
        )

    def test_adds_the_increment_to_the_calling_threads_nice_value(self) -> None:
        """On Linux the calling thread's own id (not the process's) gets its
        nice value plus the increment, which is returned."""
        priorities = _Priorities(nice=2)
        self.assertEqual(self._lower(priorities, 10), 12)
        self.assertEqual(priorities.calls, [(getattr(os, "PRIO_PROCESS", 0), 4242, 12)])

    def test_never_goes_past_the_highest_nice_value(self) -> None:
        """The result is capped at 19, which a process already niced by 10 reaches."""
        priorities = _Priorities(nice=10)
        self.assertEqual(self._lower(priorities, 10), MAX_NICE)
        self.assertEqual(priorities.nice[4242], MAX_NICE)

    def test_does_nothing_where_thread_ids_are_not_pids(self) -> None:
        """Off Linux a thread id may be another process's pid: nothing is
        asked of the system and None is returned."""
        for platform in ("darwin", "win32", "freebsd14"):
            with self.subTest(platform=platform):
                priorities = _Priorities()
                self.assertIsNone(self._lower(priorities, platform=platform))
                self.assertEqual(priorities.calls, [])

    def test_a_refusal_is_silent(self) -> None:
        """A system that refuses (EPERM, EACCES, ...) leaves the thread as it
        was, and the call returns None without raising."""
        for error in (PermissionError(1, "Operation not permitted"), OSError(13, "Permission denied")):
            with self.subTest(error=error):
                priorities = _Priorities(refuse=error)
                self.assertIsNone(self._lower(priorities))
                self.assertEqual(priorities.nice, {})

    def test_without_setpriority_it_does_nothing(self) -> None:
        """A Python without C{os.setpriority} (or C{os.getpriority}) gets None."""
        self.patch(thread_priority, "os", types.SimpleNamespace(PRIO_PROCESS=0))
        self.assertIsNone(lower_thread_priority(platform="linux", native_id=lambda: 4242))


class _QueueingReactor:
    """callFromThread queues calls; the test runs them on its own thread."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.Queue()

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.calls.put((f, args))

    def run_calls(self, count: int) -> None:
        for _ in range(count):
            f, args = self.calls.get(timeout=30)
            f(*args)


def _own_nice() -> int:
    # PRIO_PROCESS with id 0 is the calling thread on Linux.
    return os.getpriority(os.PRIO_PROCESS, 0)


class StorageThreadPriorityTests(SynchronousTestCase):
    def setUp(self) -> None:
        if not sys.platform.startswith("linux"):
            self.skipTest("per-thread nice values are Linux's")

    def _nice_on(self, runner: StorageThread, reactor: _QueueingReactor) -> int:
        d = runner(_own_nice)
        reactor.run_calls(1)
        return self.successResultOf(d)

    def test_a_background_thread_lowers_its_own_priority_only(self) -> None:
        """A thread asked to lower its priority runs its jobs at its nice
        value plus the increment; the thread that started it keeps its own."""
        reactor = _QueueingReactor()
        runner = StorageThread(reactor, name="kvstore-snapshot", lower_priority_by=3)
        self.addCleanup(runner.stop)
        before = _own_nice()
        self.assertEqual(self._nice_on(runner, reactor), min(MAX_NICE, before + 3))
        self.assertEqual(runner.lowered_to, min(MAX_NICE, before + 3))
        self.assertEqual(_own_nice(), before)

    def test_the_logs_thread_keeps_its_priority(self) -> None:
        """By default (the log's flush thread) the thread runs at the nice
        value of the thread that started it."""
        reactor = _QueueingReactor()
        runner = StorageThread(reactor)
        self.addCleanup(runner.stop)
        self.assertEqual(self._nice_on(runner, reactor), _own_nice())
        self.assertIsNone(runner.lowered_to)

    def test_a_refused_lowering_still_runs_the_jobs(self) -> None:
        """If the system refuses, the thread runs its jobs all the same."""

        def refuse(which: int, who: int, value: int) -> None:
            raise PermissionError(1, "Operation not permitted")

        self.patch(os, "setpriority", refuse)
        reactor = _QueueingReactor()
        runner = StorageThread(reactor, lower_priority_by=BACKGROUND_NICE_INCREMENT)
        self.addCleanup(runner.stop)
        d = runner(lambda: 7)
        reactor.run_calls(1)
        self.assertEqual(self.successResultOf(d), 7)
        self.assertIsNone(runner.lowered_to)


class ServiceWiringTests(SynchronousTestCase):
    def test_the_snapshot_thread_is_a_background_thread_and_the_logs_is_not(self) -> None:
        """The production node's snapshot thread lowers its priority by
        BACKGROUND_NICE_INCREMENT; the log's flush thread does not."""
        config = parse_config(["--data-dir", self.mktemp(), "--port", "20999"])
        service = kvstore.daemon.service.build_service(config, MemoryReactorClock())
        self.addCleanup(service._lock.release)
        snapshot_thread = service.snapshot_thread
        assert snapshot_thread is not None
        self.assertEqual(snapshot_thread.name, "kvstore-snapshot")
        self.assertEqual(snapshot_thread._lower_priority_by, BACKGROUND_NICE_INCREMENT)
        wal_thread = service.wal._run_in_thread
        self.assertIsInstance(wal_thread, StorageThread)
        self.assertEqual(wal_thread._lower_priority_by, 0)
