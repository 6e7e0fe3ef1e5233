"""
Tests for L{kvstore.daemon.log_format.json_line} on awkward events: every line is
strict JSON (no C{NaN}/C{Infinity}, which RFC 8259 and most shippers
refuse) and encodable as UTF-8 (a lone surrogate from a non-UTF-8 file
name must not make the observer drop the line).
"""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.logger import LogLevel, LogPublisher
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.log_format import json_line, json_observer


def _strict_loads(line: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(line, parse_constant=refuse)


def _event(**fields: Any) -> dict[str, Any]:
    return {"log_format": "event {value}", "log_level": LogLevel.info, "log_time": 1.0, **fields}


class StrictJSONTests(SynchronousTestCase):
    """Each line is strict JSON, whatever the event's fields hold."""

    def test_non_finite_floats(self) -> None:
        """NaN and infinities, at the top of a field or nested in it, yield strict JSON keeping the message."""
        for value in (float("nan"), float("inf"), {"p99": float("-inf")}, [1.0, float("nan")]):
            with self.subTest(value=value):
                record = _strict_loads(json_line(_event(value=value)))
                self.assertTrue(record["text"].startswith("event "))
                self.assertIn("value", record["fields"])

    def test_lone_surrogate_is_written(self) -> None:
        """A field holding a lone surrogate (os.fsdecode of a non-UTF-8 name) reaches a binary log file as JSON."""
        name = b"/srv/data-\xff".decode("utf-8", "surrogateescape")
        out = io.BytesIO()
        LogPublisher(json_observer(out))(_event(value=name))  # type: ignore[arg-type]
        lines = out.getvalue().decode("utf-8").splitlines()
        self.assertEqual(len(lines), 1)
        record = _strict_loads(lines[0])
        self.assertEqual(record["fields"]["value"], name)

    def test_non_ascii_stays_readable(self) -> None:
        """Ordinary non-ASCII text is written as itself, not as escapes."""
        self.assertIn("ключ", json_line(_event(value="ключ")))


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class UnrepresentableFieldTests(SynchronousTestCase):
    """One field that cannot be shown does not cost the event its message."""

    def test_field_whose_repr_raises(self) -> None:
        """The line keeps the event's level, namespace and other fields; only the bad field is a placeholder."""
        event = {
            "log_format": "peer {peer} said {thing}",
            "log_level": LogLevel.warn,
            "log_namespace": "kvstore.protocols.peer_links",
            "log_time": 1.0,
            "peer": 2,
            "thing": _BadRepr(),
        }
        record = _strict_loads(json_line(event))
        self.assertEqual((record["level"], record["namespace"]), ("warn", "kvstore.protocols.peer_links"))
        self.assertEqual(record["fields"]["peer"], 2)
        self.assertIn("RuntimeError", record["fields"]["thing"])
