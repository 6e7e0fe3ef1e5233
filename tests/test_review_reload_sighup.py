"""
Review tests for SIGHUP under twistd (L{kvstore.daemon.service}): a SIGHUP that
arrives while the node recovers, before its service starts, must not take
the signal's default action (terminating the node); it is a reload, carried
out once the node runs.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Callable

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon import service as service_module
from kvstore.daemon.service import KVStoreService, Options, makeService


class ThreadCalls:
    """A reactor stand-in recording callFromThread calls."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], Any]] = []

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.calls.append(lambda: f(*args))


class SighupDuringRecoveryTests(SynchronousTestCase):
    """makeService under twistd handles SIGHUP from before recovery on."""

    def test_sighup_while_recovering_is_a_later_reload(self) -> None:
        """A SIGHUP during build_service (recovery) finds a handler, not the default action, and becomes a reload queued for the running node."""
        previous = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as twistd leaves it
        self.patch(service_module, "tune_garbage_collector", lambda: None)
        thread_calls = ThreadCalls()
        self.patch(KVStoreService, "clock", thread_calls)
        tmp = Path(self.mktemp()).absolute()
        tmp.mkdir()
        seen: list[Any] = []
        real_build = service_module.build_service

        def recovering(config: Any, reactor: Any = None, pidfile: str | None = None) -> KVStoreService:
            handler = signal.getsignal(signal.SIGHUP)
            seen.append(handler)
            if callable(handler):
                handler(signal.SIGHUP, None)  # what the signal would run; never the real default action here
            return real_build(config, MemoryReactorClock(), pidfile)

        self.patch(service_module, "build_service", recovering)
        reloads: list[str] = []
        self.patch(KVStoreService, "reload", lambda self: reloads.append("reload"))
        options = Options()
        options.parent = {"nodaemon": True, "logfile": str(tmp / "node.log"), "pidfile": ""}  # type: ignore[attr-defined]  # as twistd sets it
        options.parseOptions(["--data-dir", str(tmp / "data"), "--port", "24993"])
        service = makeService(options)
        self.addCleanup(service._lock.release)
        if service.log_filter is not None:
            self.addCleanup(service.log_filter.observer._outFile.close)  # type: ignore[attr-defined]
        self.assertTrue(callable(seen[0]), f"SIGHUP during recovery would take its default action ({seen[0]!r})")
        self.assertEqual(reloads, [], "reloaded before the node runs")
        self.assertEqual(len(thread_calls.calls), 1, "the SIGHUP during recovery was forgotten")
        thread_calls.calls[0]()
        self.assertEqual(reloads, ["reload"])
        self.assertEqual(signal.getsignal(signal.SIGHUP), service._sighup)
