"""
Tests for L{kvstore.daemon.log_format}: C{--log-format json} lines, where they go,
and how twistd is made to use them.
"""

from __future__ import annotations

import io
import json
import sys

from twisted.application.service import Application
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.log_format import check_twistd_options, install, json_line, json_observer, twistd_observer
from kvstore.daemon.options import Options


class JsonLineTests(SynchronousTestCase):
    """Each event is one parseable JSON object with time, level, namespace and text."""

    def emit(self, emit: "callable") -> list[dict[str, object]]:  # type: ignore[valid-type]
        out = io.StringIO()
        log = Logger(namespace="kvstore.test", observer=json_observer(out))
        emit(log)
        lines = out.getvalue().splitlines(keepends=True)
        self.assertTrue(all(line.endswith("\n") and "\n" not in line[:-1] for line in lines))
        return [json.loads(line) for line in lines]

    def test_event_keys(self) -> None:
        """A structured event renders its text and keeps its fields."""
        (record,) = self.emit(lambda log: log.warn("node {node} in term {term}", node=2, term=7))
        self.assertEqual(record["level"], "warn")
        self.assertEqual(record["namespace"], "kvstore.test")
        self.assertEqual(record["text"], "node 2 in term 7")
        self.assertEqual(record["fields"], {"node": 2, "term": 7})
        self.assertRegex(record["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
        self.assertNotIn("traceback", record)

    def test_failure_has_traceback(self) -> None:
        """An event with a failure carries its traceback in its own key."""

        def emit(log: Logger) -> None:
            try:
                1 / 0
            except ZeroDivisionError:
                log.failure("apply failed")

        (record,) = self.emit(emit)
        self.assertEqual((record["level"], record["text"]), ("critical", "apply failed"))
        self.assertIn("ZeroDivisionError", record["traceback"])

    def test_unserializable_fields_and_newlines(self) -> None:
        """Fields that are not JSON are rendered with repr; a multi-line message stays one line."""
        (record,) = self.emit(lambda log: log.info("a\nb {obj}", obj=object()))
        self.assertEqual(record["text"][:2], "a\n")
        self.assertTrue(record["fields"]["obj"].startswith("<object object"))

    def test_broken_event_still_yields_a_line(self) -> None:
        """An event that cannot be rendered yields a JSON line saying so, not an exception."""
        line = json_line({"log_time": "not a time", "log_level": LogLevel.info})
        self.assertEqual(json.loads(line)["level"], "error")

    def test_legacy_event_text(self) -> None:
        """An event from twisted.python.log (as twistd's own lines are) has its text, without legacy keys."""
        from twisted.logger._legacy import publishToNewObserver

        out = io.StringIO()
        publishToNewObserver(json_observer(out), {"message": ("twistd starting",), "isError": 0, "system": "-", "time": 1.5}, lambda e: "twistd starting")
        record = json.loads(out.getvalue())
        self.assertEqual(record["text"], "twistd starting")
        self.assertEqual(record["time"], "1970-01-01T00:00:01.500000+00:00")
        self.assertNotIn("fields", record)


class TwistdWiringTests(SynchronousTestCase):
    """How --log-format json reaches twistd."""

    def test_option_values(self) -> None:
        """--log-format takes text (the default) or json; anything else is refused."""
        options = Options()
        options.parseOptions([])
        self.assertEqual(options.log_format, "text")
        options = Options()
        options.parseOptions(["--log-format", "json"])
        self.assertEqual(options.log_format, "json")
        with self.assertRaises(UsageError) as e:
            Options().parseOptions(["--log-format", "xml"])
        self.assertIn("--log-format must be text or json", str(e.exception))

    def test_conflicting_twistd_options_refused(self) -> None:
        """--syslog and --logger choose their own format, and a daemon has no standard output, so json refuses them."""
        for option in ("syslog", "logger"):
            with self.subTest(option=option):
                with self.assertRaises(UsageError) as e:
                    check_twistd_options("json", {option: True})
                self.assertIn(f"--{option}", str(e.exception))
        with self.assertRaises(UsageError) as e:
            check_twistd_options("json", {"logfile": "-", "nodaemon": False})
        self.assertIn("a daemon cannot log to standard output", str(e.exception))
        check_twistd_options("json", {"logfile": "-", "nodaemon": True})
        check_twistd_options("text", {"syslog": True})
        check_twistd_options("json", {"syslog": False, "logger": None})

    def test_destination_follows_twistd(self) -> None:
        """Standard output for -n without --logfile or with --logfile=-; the named file otherwise."""
        for parent in ({"nodaemon": True, "logfile": ""}, {"nodaemon": True, "logfile": "-"}):
            with self.subTest(parent=parent):
                self.assertIs(twistd_observer(parent, lambda: None)._outFile, sys.stdout)
        path = self.mktemp()
        observer = twistd_observer({"nodaemon": True, "logfile": path}, lambda: None)
        self.assertIsNot(observer._outFile, sys.stdout)
        self.addCleanup(observer._outFile.close)
        Logger(observer=observer).info("to the file")
        with open(path) as f:
            self.assertEqual(json.loads(f.read())["text"], "to the file")

    def test_install_sets_the_application_component(self) -> None:
        """install() makes the observer the application's ILogObserver, which twistd's AppLogger uses."""
        application = Application("kvstore")
        observer = json_observer(io.StringIO())
        install(application, observer)
        self.assertIs(application.getComponent(ILogObserver), observer)
