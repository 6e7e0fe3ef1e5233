"""
Tests for C{--log-level}: L{kvstore.daemon.log_format.LevelFilter}, the option
itself, and the text observer kvstore builds so that it can filter
twistd's text log too.
"""

from __future__ import annotations

import io
import sys

from twisted.logger import Logger, LogLevel
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.log_format import LEVELS, LevelFilter, check_twistd_options, kvstore_observes, parse_level, twistd_observer
from kvstore.daemon.options import Options


class LevelFilterTests(SynchronousTestCase):
    """The filter passes events at or above its level, which can change."""

    def test_filters_and_changes(self) -> None:
        """Below the level is dropped, at or above passes; a new level applies to the next event."""
        seen: list[str] = []
        level_filter = LevelFilter(lambda event: seen.append(event["log_format"]), LogLevel.warn)
        log = Logger(observer=level_filter)
        log.info("info 1")
        log.warn("warn 1")
        log.error("error 1")
        level_filter.level = LogLevel.debug
        log.debug("debug 2")
        self.assertEqual(seen, ["warn 1", "error 1", "debug 2"])

    def test_event_without_level_passes(self) -> None:
        """An event with no level is not dropped (the filter only knows levels)."""
        seen: list[object] = []
        LevelFilter(seen.append, LogLevel.critical)({"log_format": "x"})
        self.assertEqual(len(seen), 1)


class LevelOptionTests(SynchronousTestCase):
    """--log-level takes a twisted.logger level name."""

    def test_values(self) -> None:
        """Every level name is accepted (case-insensitively, warning for warn); unset means None (info)."""
        self.assertEqual(LEVELS, ("debug", "info", "warn", "error", "critical"))
        options = Options()
        options.parseOptions([])
        self.assertIsNone(options.log_level)
        for given, expected in (("DEBUG", "debug"), ("warning", "warn"), ("critical", "critical")):
            with self.subTest(given=given):
                options = Options()
                options.parseOptions(["--log-level", given])
                self.assertEqual(options.log_level, expected)
        self.assertIs(parse_level("error"), LogLevel.error)

    def test_unknown_level_refused(self) -> None:
        """An unknown level is refused, naming the levels."""
        with self.assertRaises(UsageError) as e:
            Options().parseOptions(["--log-level", "verbose"])
        self.assertIn("--log-level must be one of debug, info, warn, error, critical", str(e.exception))

    def test_with_syslog_or_logger_refused(self) -> None:
        """twistd's --syslog and --logger observers cannot be filtered, so an explicit --log-level is refused with them."""
        for option in ("syslog", "logger"):
            with self.subTest(option=option):
                with self.assertRaises(UsageError) as e:
                    check_twistd_options("text", {option: True}, "warn")
                self.assertIn(f"--log-level cannot be combined with twistd's --{option}", str(e.exception))
                check_twistd_options("text", {option: True}, None)
                self.assertFalse(kvstore_observes({option: True}))

    def test_kvstore_observes(self) -> None:
        """kvstore makes the observer unless twistd picks its own, or refuses a daemon logging to stdout."""
        self.assertTrue(kvstore_observes({"nodaemon": True, "logfile": "-"}))
        self.assertTrue(kvstore_observes({"nodaemon": False, "logfile": "x.log"}))
        self.assertFalse(kvstore_observes({"nodaemon": False, "logfile": "-"}))


class TextObserverTests(SynchronousTestCase):
    """The text format written by kvstore's observer is twistd's own."""

    def test_text_lines_where_twistd_writes_them(self) -> None:
        """Standard output under -n, else the --logfile file, in twistd's text format."""
        self.assertIs(twistd_observer({"nodaemon": True, "logfile": "-"}, lambda: None, "text")._outFile, sys.stdout)
        path = self.mktemp()
        observer = twistd_observer({"nodaemon": True, "logfile": path}, lambda: None, "text")
        self.addCleanup(observer._outFile.close)
        Logger(namespace="kvstore.test", observer=observer).info("hello {who}", who="there")
        with open(path) as f:
            line = f.read()
        self.assertRegex(line, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[kvstore\.test#info\] hello there\n$")

    def test_json_is_still_the_default_of_the_function(self) -> None:
        """Called without a format, twistd_observer writes JSON, as before."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        Logger(observer=twistd_observer({"nodaemon": True}, lambda: None)).info("x")
        self.assertTrue(out.getvalue().startswith("{"))
