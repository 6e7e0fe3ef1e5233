# -*- test-case-name: tests.test_storage_thread_names -*-
"""
The storage threads' names: a profiler (py-spy, C{top -H}) or the figure-6
probe tells the write-ahead log's thread (C{kvstore-wal}) from the one that
writes snapshot files (C{kvstore-snapshots}) by them.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon import service
from kvstore.storage.wal import StorageThread
from tests.test_service import options


class _Reactor:
    """Runs what a thread hands back at once (the job's result is not awaited here)."""

    def callFromThread(self, f, *args):  # type: ignore[no-untyped-def]
        f(*args)


class StorageThreadNameTests(SynchronousTestCase):
    """The names the storage threads run under."""

    def _name_of_thread_running(self, runner: StorageThread) -> str:
        name: list[str] = []
        done = threading.Event()

        def job() -> None:
            name.append(threading.current_thread().name)
            done.set()

        d: Deferred[None] = runner(job)
        self.addCleanup(runner.stop)
        self.assertTrue(done.wait(30))
        del d
        return name[0]

    def test_the_log_thread_is_named_kvstore_wal(self) -> None:
        """A storage thread made without a name is the log's: kvstore-wal."""
        self.assertEqual(self._name_of_thread_running(StorageThread(_Reactor())), "kvstore-wal")

    def test_a_named_storage_thread_runs_under_its_name(self) -> None:
        """A storage thread given a name runs its jobs on a thread of that name."""
        runner = StorageThread(_Reactor(), name="kvstore-snapshots")
        self.assertEqual(self._name_of_thread_running(runner), "kvstore-snapshots")

    def test_the_service_names_its_snapshot_thread(self) -> None:
        """The service builds its snapshot thread as kvstore-snapshots."""
        made: list[StorageThread] = []

        def recording(*args: Any, **kwargs: Any) -> StorageThread:
            runner = StorageThread(*args, **kwargs)
            made.append(runner)
            return runner

        self.patch(service, "StorageThread", recording)
        path = Path(self.mktemp())
        built = service.build_service(options(path).config, MemoryReactorClock())
        self.addCleanup(built._lock.release)  # type: ignore[attr-defined]
        self.assertEqual([runner.name for runner in made], ["kvstore-snapshots"])
