"""
Tests for L{kvstore.daemon.log_format.json_line} on events too long for one
journald record: every line stays one strict JSON object of at most
L{MAX_LINE_BYTES} bytes (its newline included), marked as truncated.
"""

from __future__ import annotations

import io
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.log_format import MAX_LINE_BYTES, json_line, json_observer

#: journald's default LineMax (journald.conf(5)): a line this long or longer
#: (without its newline) is split into several records.
JOURNALD_LINE_MAX = 48 * 1024


def _event(**fields: Any) -> dict[str, Any]:
    return {"log_format": "stored {key}", "log_level": LogLevel.info, "log_time": 1.0, "log_namespace": "kvstore.test", **fields}


def _strict_loads(line: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(line, parse_constant=refuse)


class LongLineTests(SynchronousTestCase):
    """Long events are cut to fit, and say so."""

    def check_line(self, line: str, max_bytes: int = MAX_LINE_BYTES) -> dict[str, Any]:
        """C{line} is one newline-terminated JSON object within C{max_bytes}."""
        self.assertTrue(line.endswith("\n"))
        self.assertNotIn("\n", line[:-1])
        self.assertLessEqual(len(line.encode("utf-8")), max_bytes)
        record = _strict_loads(line)
        self.assertIsInstance(record, dict)
        return record  # type: ignore[no-any-return]

    def test_limit_is_under_journald_line_max(self) -> None:
        """The default limit keeps every line, newline included, shorter than journald's default LineMax."""
        self.assertLess(MAX_LINE_BYTES, JOURNALD_LINE_MAX)

    def test_short_event_is_untouched(self) -> None:
        """An event that fits is written as before: no truncated key, values whole."""
        record = self.check_line(json_line(_event(key="k" * 1000)))
        self.assertNotIn("truncated", record)
        self.assertEqual(record["fields"]["key"], "k" * 1000)

    def test_huge_field_is_cut_with_a_marker(self) -> None:
        """A 1 MB value (in the text and in a field) yields one line within the limit, each cut string ending in the marker."""
        value = "v" * 1_000_000
        record = self.check_line(json_line(_event(key=value, small=7)))
        self.assertIs(record["truncated"], True)
        self.assertEqual(record["fields"]["small"], 7)
        for text in (record["text"], record["fields"]["key"]):
            self.assertRegex(text, r"\.\.\. \[truncated \d+ more characters\]$")
        kept = record["fields"]["key"].split("...")[0]
        removed = int(record["fields"]["key"].rsplit(" ", 3)[1])
        self.assertEqual(len(kept) + removed, len(value))
        self.assertTrue(record["text"].startswith("stored vvv"))

    def test_uses_most_of_the_room(self) -> None:
        """A cut line is not needlessly short: it uses more than half the limit."""
        line = json_line(_event(key="v" * 1_000_000))
        self.assertGreater(len(line.encode("utf-8")), MAX_LINE_BYTES // 2)

    def test_escaped_and_multibyte_text(self) -> None:
        """Quotes, control characters and multi-byte characters (which grow when escaped or encoded) still fit."""
        for unit in ('"\\', "\x01\n", "ключ", "😀", "a\udcff"):
            with self.subTest(unit=unit):
                record = self.check_line(json_line(_event(key=unit * 100_000)))
                self.assertIs(record["truncated"], True)

    def test_long_traceback_is_cut(self) -> None:
        """An event whose traceback alone is too long keeps the start of the traceback."""
        try:
            raise ValueError("x" * 200_000)
        except ValueError:
            failure = Failure()
        record = self.check_line(json_line(_event(key="k", log_failure=failure)))
        self.assertTrue(record["traceback"].startswith("Traceback"))
        self.assertIn("[truncated", record["traceback"])

    def test_large_structured_field_becomes_text(self) -> None:
        """A huge list field is cut as its JSON text."""
        record = self.check_line(json_line(_event(key="k", entries=list(range(100_000)))))
        self.assertTrue(record["fields"]["entries"].startswith("[0, 1, 2"))

    def test_thousands_of_fields_are_dropped(self) -> None:
        """An event whose many small fields cannot be cut keeps its time, level, namespace and text, and counts the dropped fields."""
        fields = {f"f{i}": i for i in range(20_000)}
        record = self.check_line(json_line(_event(key="k", **fields)))
        self.assertEqual(record["fields_dropped"], 20_001)
        self.assertEqual((record["level"], record["namespace"], record["text"]), ("info", "kvstore.test", "stored k"))
        self.assertNotIn("fields", record)

    def test_through_the_observer(self) -> None:
        """The observer writes one line for a huge event, within the limit."""
        out = io.StringIO()
        Logger(namespace="kvstore.test", observer=json_observer(out)).info("value {v}", v="x" * 500_000)
        (line,) = out.getvalue().splitlines(keepends=True)
        self.check_line(line)

    @settings(max_examples=60, deadline=None)
    @given(
        fields=st.dictionaries(
            st.text(max_size=20),
            st.one_of(st.text(max_size=3000), st.integers(), st.lists(st.text(max_size=200), max_size=40)),
            max_size=12,
        ),
        max_bytes=st.integers(min_value=300, max_value=4000),
    )
    def test_any_event_fits_any_limit(self, fields: dict[str, Any], max_bytes: int) -> None:
        """Whatever the fields, each line is strict JSON within the limit given."""
        event = {"log_format": "e", "log_level": LogLevel.warn, "log_time": 2.0, "log_namespace": "n"}
        event.update({f"x{k}": v for k, v in fields.items()})
        record = self.check_line(json_line(event, max_bytes=max_bytes), max_bytes)
        self.assertEqual(record["level"], "warn")
