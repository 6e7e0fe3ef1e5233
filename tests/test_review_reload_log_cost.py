"""
Review tests for L{kvstore.daemon.log_format.json_line}: fitting a long event into
one line costs work in proportion to the event's size, not to its size
times its number of fields (the line is rendered on the reactor thread).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon import log_format
from kvstore.daemon.log_format import MAX_LINE_BYTES, json_line


def _event(fields: dict[str, Any]) -> dict[str, Any]:
    return {"log_format": "many fields", "log_level": LogLevel.info, "log_time": 1.0, "log_namespace": "kvstore.test", **fields}


class TruncationCostTests(SynchronousTestCase):
    """The work of shortening a line is bounded by a few renderings of the event."""

    def encoded_characters(self, event: dict[str, Any]) -> tuple[str, int]:
        """The line for C{event}, and how many characters of JSON were encoded to make it."""
        total = [0]
        original = log_format._dumps

        def counting(record: Any) -> str:
            line = original(record)
            total[0] += len(line)
            return line

        self.patch(log_format, "_dumps", counting)
        return json_line(event), total[0]

    def check(self, fields: dict[str, Any]) -> dict[str, Any]:
        event = _event(fields)
        size = len(json.dumps(fields, ensure_ascii=False))
        line, work = self.encoded_characters(event)
        self.assertLessEqual(len(line.encode("utf-8")), MAX_LINE_BYTES)
        self.assertLess(work, 10 * size, f"encoded {work} characters of JSON for an event of {size}")
        record: dict[str, Any] = json.loads(line)
        self.assertTrue(record["truncated"])
        return record

    def test_many_medium_fields(self) -> None:
        """An event of a thousand 300-character fields (which cannot all keep 256 bytes) is dropped to its fixed keys after a few renderings, not a thousand."""
        record = self.check({f"f{i}": "é" * 300 for i in range(1000)})
        self.assertEqual(record["fields_dropped"], 1000)

    def test_many_large_fields_that_can_fit(self) -> None:
        """Fifty 20,000-character fields are each cut (all keep a part) after a few renderings of the event, not one per field."""
        record = self.check({f"f{i}": "x" * 20_000 for i in range(50)})
        self.assertEqual(len(record["fields"]), 50)
        self.assertTrue(all("[truncated" in value for value in record["fields"].values()))
