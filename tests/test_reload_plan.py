"""
Tests for L{kvstore.daemon.reload}: which changes a reload applies, which need a
restart, what it logs, and that a bad file changes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.config_file import with_absolute_config
from kvstore.daemon.options import Options
from kvstore.daemon.reload import RELOADABLE, Change, Reloader, RunningConfig, parse_arguments, plan, settings


def running(*arguments: str) -> RunningConfig:
    return parse_arguments(list(arguments))


class CapturedLog:
    """The events logged by kvstore.daemon.reload during a test."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.observe)
        case.addCleanup(globalLogPublisher.removeObserver, self.observe)

    def observe(self, event: dict[str, Any]) -> None:
        if event.get("log_namespace", "").startswith("kvstore.daemon.reload"):
            self.events.append(event)


class PlanTests(SynchronousTestCase):
    """settings() and plan(): the comparison."""

    def test_reloadable_changes(self) -> None:
        """Timeouts, client limits and the log level are applied; nothing needs a restart."""
        old = running()
        new = running("--commit-timeout", "2", "--read-timeout", "3.5", "--max-value-bytes", "1000", "--log-level", "debug")
        result = plan(settings(old), settings(new))
        self.assertEqual(
            [str(c) for c in result.applied],
            [
                "commit-timeout 5s -> 2s",
                "log-level info -> debug",
                "max-line-bytes 66624 -> 2088",
                "max-value-bytes 65536 -> 1000",
                "read-timeout 5s -> 3.5s",
            ],
        )
        self.assertEqual(result.restart, ())

    def test_restart_changes(self) -> None:
        """Raft timers, replication limits, addresses, storage and the log format need a restart."""
        old = running()
        new = running(
            "--heartbeat-interval", "50", "--election-timeout", "500-900", "--max-inflight", "8",
            "--port", "5001", "--segment-bytes", "1MiB", "--log-format", "json", "--unsafe-no-fsync",
        )
        result = plan(settings(old), settings(new))
        self.assertEqual(result.applied, ())
        self.assertEqual(
            {c.name for c in result.restart},
            {
                "heartbeat-interval", "election-timeout-min", "election-timeout-max", "max-inflight",
                "port", "listen", "cluster-id", "segment-bytes", "log-format", "fsync",
            },
        )
        self.assertIn(Change("heartbeat-interval", "0.1s", "0.05s"), result.restart)

    def test_no_change(self) -> None:
        """The same configuration plans nothing."""
        result = plan(settings(running()), settings(running()))
        self.assertEqual((result.applied, result.restart), ((), ()))

    def test_every_reloadable_name_is_a_setting(self) -> None:
        """Each name in RELOADABLE is a setting's name (a typo would make it silently need a restart)."""
        self.assertLessEqual(RELOADABLE, settings(running()).keys())

    def test_narrower_reloadable_set(self) -> None:
        """A setting left out of the reloadable set (log-level under --syslog) needs a restart instead."""
        result = plan(settings(running()), settings(running("--log-level", "error")), RELOADABLE - {"log-level"})
        self.assertEqual([c.name for c in result.restart], ["log-level"])


class ReloaderTests(SynchronousTestCase):
    """The Reloader: parse, compare, log, apply."""

    def setUp(self) -> None:
        self.log = CapturedLog(self)
        self.applied: list[RunningConfig] = []
        self.next: Any = running()
        self.reloader = Reloader(running(), self.parse, self.applied.append, source="/etc/kvstore/kvstore.toml")

    def parse(self) -> RunningConfig:
        if isinstance(self.next, Exception):
            raise self.next
        return self.next  # type: ignore[no-any-return]

    def test_applies_and_reports(self) -> None:
        """A reloadable change is applied and logged with its old and new value; restart-only changes are logged, not applied."""
        self.next = running("--commit-timeout", "1", "--heartbeat-interval", "50")
        result = self.reloader.reload()
        assert result is not None
        (applied,) = self.applied
        self.assertEqual(applied.config.commit_timeout, 1.0)
        self.assertEqual(applied.config.raft.heartbeat_interval, 0.1, "a restart-only change was applied")
        self.assertIs(self.reloader.running, applied)
        (event,) = self.log.events
        self.assertEqual(event["log_level"], LogLevel.info)
        self.assertEqual(event["changed"], ["commit-timeout 5s -> 1s"])
        self.assertEqual(event["needs_restart"], ["heartbeat-interval 0.1s -> 0.05s"])
        from twisted.logger import formatEvent

        self.assertEqual(
            formatEvent(event),
            "configuration reloaded from /etc/kvstore/kvstore.toml: applied commit-timeout 5s -> 1s; "
            "needs a restart to take effect: heartbeat-interval 0.1s -> 0.05s",
        )

    def test_restart_changes_are_reported_again(self) -> None:
        """A change that needs a restart is reported by every reload until the node restarts; applied ones only once."""
        self.next = running("--commit-timeout", "1", "--heartbeat-interval", "50")
        self.reloader.reload()
        second = self.reloader.reload()
        assert second is not None
        self.assertEqual(second.applied, ())
        self.assertEqual([c.name for c in second.restart], ["heartbeat-interval"])
        self.assertEqual(len(self.applied), 1, "nothing to apply, yet apply was called")

    def test_invalid_file_refused(self) -> None:
        """A configuration that does not parse is logged as an error and changes nothing."""
        self.next = UsageError("kvstore.toml, line 3: bogus: unknown option")
        self.assertIsNone(self.reloader.reload())
        self.assertEqual(self.applied, [])
        (event,) = self.log.events
        self.assertEqual(event["log_level"], LogLevel.error)
        self.assertIn("kvstore.toml, line 3: bogus: unknown option", event["error"])
        self.assertEqual(settings(self.reloader.running), settings(running()))

    def test_unexpected_error_changes_nothing(self) -> None:
        """An unexpected exception while parsing or applying is logged and keeps the running configuration."""
        self.next = RuntimeError("boom")
        self.assertIsNone(self.reloader.reload())
        self.next = running("--read-timeout", "1")

        def failing_apply(new: RunningConfig) -> None:
            raise RuntimeError("apply failed")

        before = self.reloader.running
        self.reloader._apply = failing_apply
        self.assertIsNone(self.reloader.reload())
        self.assertIs(self.reloader.running, before)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def record_order(self) -> list[str]:
        order: list[str] = []
        self.log.observe = lambda event: order.append("log")  # type: ignore[method-assign]
        globalLogPublisher.addObserver(self.log.observe)
        self.addCleanup(globalLogPublisher.removeObserver, self.log.observe)
        self.reloader._apply = lambda new: order.append("apply")
        return order

    def test_raised_level_logs_before_applying(self) -> None:
        """Raising the level, the summary is logged before the change takes effect, so the new level cannot hide it."""
        order = self.record_order()
        self.next = running("--log-level", "error")
        self.reloader.reload()
        self.assertEqual(order, ["log", "apply"])

    def test_lowered_level_logs_after_applying(self) -> None:
        """Lowering the level (from warn), the summary is logged after the change, so the old level cannot hide it."""
        self.reloader.running = running("--log-level", "warn")
        order = self.record_order()
        self.next = running("--log-level", "debug")
        self.reloader.reload()
        self.assertEqual(order, ["apply", "log"])


class ReparseTests(SynchronousTestCase):
    """A reload parses the same command line with the file as it is now."""

    def test_file_reread_command_line_still_wins(self) -> None:
        """The file's new values are read; an option given on the command line still overrides the file."""
        path = Path(self.mktemp())
        path.write_text("commit-timeout = 4\nread-timeout = 4\n")
        options = Options()
        options.parseOptions(["--config", str(path), "--read-timeout", "9"])
        path.write_text("commit-timeout = 2\nread-timeout = 2\n")
        new = parse_arguments(options.arguments)
        self.assertEqual((new.config.commit_timeout, new.config.read_timeout), (2.0, 9.0))

    def test_config_path_made_absolute(self) -> None:
        """The saved command line names the file by its absolute path, so a later change of directory does not lose it."""
        options = Options()
        self.assertEqual(
            with_absolute_config(["--conf", "kv.toml", "--port=5001", "--unsafe-no-fsync"], options.shortOpt, options.longOpt),
            [f"--config={os.path.abspath('kv.toml')}", "--port=5001", "--unsafe-no-fsync"],
        )
