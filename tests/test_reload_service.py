"""
Tests for the reload wiring of L{kvstore.daemon.service}: SIGHUP asks the reactor
to reload, and a reload changes the node's timeouts, the client limits of
new connections and the log level, and nothing when the file is invalid.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Callable

from twisted.internet.defer import succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon import log_format
from kvstore.daemon import service as service_module
from kvstore.daemon.options import Options
from kvstore.daemon.service import KVStoreService, attach_log_and_reload, build_service


class ThreadCalls:
    """A reactor stand-in recording callFromThread calls."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], Any]] = []

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.calls.append(lambda: f(*args))


class ReloadWiringTests(SynchronousTestCase):
    """A node built from a --config file, reloaded after the file changes."""

    def setUp(self) -> None:
        self.patch(service_module, "tune_garbage_collector", lambda: None)
        self.tmp = Path(self.mktemp()).absolute()
        self.tmp.mkdir()
        self.config = self.tmp / "kvstore.toml"
        self.config.write_text('commit-timeout = 5\nmax-value-bytes = 1000\nlog-level = "info"\n')
        self.log = self.tmp / "node.log"

    def make(self, parent: dict[str, Any] | None = None) -> KVStoreService:
        options = Options()
        options.parseOptions(["--config", str(self.config), "--data-dir", str(self.tmp / "data"), "--port", "24997"])
        if parent is not None:
            options.parent = parent  # type: ignore[attr-defined]  # as twistd sets it
        service = build_service(options.config, MemoryReactorClock())
        self.addCleanup(service._lock.release)
        self.addCleanup(signal.signal, signal.SIGHUP, signal.getsignal(signal.SIGHUP))  # a twistd parent installs the handler
        attach_log_and_reload(service, options)
        if service.log_filter is not None:
            self.addCleanup(service.log_filter.observer._outFile.close)  # type: ignore[attr-defined]
        return service

    def test_reload_applies_timeouts_limits_and_level(self) -> None:
        """After the file changes, a reload gives the node the new timeouts, new connections the new limits, and the log the new level."""
        service = self.make({"nodaemon": True, "logfile": str(self.log)})
        assert service.reloader is not None and service.log_filter is not None
        self.assertEqual(service.log_filter.level, LogLevel.info)
        self.assertEqual(service.client_factory.limits.max_value_bytes, 1000)
        self.config.write_text('commit-timeout = 2\nread-timeout = 3\nmax-value-bytes = 500\nlog-level = "warn"\n')
        service.running = True
        service.reload()
        self.assertEqual((service.node._commit_timeout, service.node._read_timeout), (2.0, 3.0))
        limits = service.client_factory.limits
        self.assertEqual((limits.max_value_bytes, limits.max_line_bytes), (500, 1024 + 500 + 64))
        self.assertIs(service.client_factory.buildProtocol(None)._limits, limits)
        self.assertEqual(service.log_filter.level, LogLevel.warn)
        self.assertEqual(service.config.commit_timeout, 2.0)

    def test_invalid_file_keeps_running_configuration(self) -> None:
        """A file that became invalid changes nothing."""
        service = self.make({"nodaemon": True, "logfile": str(self.log)})
        limits = service.client_factory.limits
        self.config.write_text("commit-timeout = -1\n")
        service.running = True
        service.reload()
        self.assertEqual(service.node._commit_timeout, 5.0)
        self.assertIs(service.client_factory.limits, limits)

    def test_log_observer_for_each_format(self) -> None:
        """Under twistd the observer is kvstore's level filter for text and json; with --syslog twistd's own stays and log-level needs a restart."""
        for parent in ({"nodaemon": True, "logfile": str(self.log)}, {"nodaemon": True, "logfile": str(self.log), "syslog": True}):
            with self.subTest(parent=parent):
                service = self.make(parent)
                assert service.reloader is not None
                if parent.get("syslog"):
                    self.assertIsNone(service.log_observer)
                    self.assertNotIn("log-level", service.reloader.reloadable)
                else:
                    self.assertIsInstance(service.log_observer, log_format.LevelFilter)
                    self.assertIn("log-level", service.reloader.reloadable)
                self.assertTrue(service.reload_on_sighup)
                service._lock.release()  # the next subtest opens the same data directory (release is idempotent)

    def test_no_sighup_handler_outside_twistd(self) -> None:
        """Without twistd (no parent), the service does not take SIGHUP over."""
        self.assertFalse(self.make(None).reload_on_sighup)


class SighupTests(SynchronousTestCase):
    """SIGHUP's handler, installed while the service runs."""

    def test_handler_installed_and_restored(self) -> None:
        """Starting installs a SIGHUP handler that asks the reactor to reload; stopping restores the previous handler."""
        self.patch(service_module, "tune_garbage_collector", lambda: None)
        previous = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        options = Options()
        options.parseOptions(["--data-dir", self.mktemp(), "--port", "24996"])
        service = build_service(options.config, MemoryReactorClock())
        attach_log_and_reload(service, options)
        service.reload_on_sighup = True
        thread_calls = ThreadCalls()
        service.clock = thread_calls
        reloads: list[str] = []
        self.patch(service, "reload", lambda: reloads.append("reload"))
        service.startService()
        handler = signal.getsignal(signal.SIGHUP)
        self.assertTrue(callable(handler))
        handler(signal.SIGHUP, None)  # type: ignore[operator]  # checked callable above
        self.assertEqual(reloads, [], "reloaded inside the signal handler")
        (call,) = thread_calls.calls
        call()
        self.assertEqual(reloads, ["reload"])
        self.patch(service.wal, "close", lambda: succeed(None))
        self.successResultOf(service.stopService())
        self.assertEqual(signal.getsignal(signal.SIGHUP), previous)
