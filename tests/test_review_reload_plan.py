"""
Review tests for L{kvstore.daemon.reload}: a reload notices every change of a
duration, however small, and renders it so that old and new differ.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.reload import parse_arguments, plan, settings


class DurationChangeTests(SynchronousTestCase):
    """Durations are compared by value, not by a rounded rendering."""

    def test_change_beyond_six_digits_is_applied(self) -> None:
        """A commit timeout changed in its seventh significant digit (1234567 s to 1234568 s, 2.5 s to 2.5000001 s) is applied, and logged with distinct values."""
        for old, new in (("1234567", "1234568"), ("2.5", "2.5000001")):
            with self.subTest(old=old, new=new):
                result = plan(
                    settings(parse_arguments(["--commit-timeout", old])),
                    settings(parse_arguments(["--commit-timeout", new])),
                )
                (change,) = result.applied
                self.assertEqual(change.name, "commit-timeout")
                self.assertNotEqual(change.old, change.new)
                self.assertEqual(float(change.new.rstrip("s")), float(new))

    def test_round_values_stay_short(self) -> None:
        """Round durations still render as the log shows them (5s, 0.1s)."""
        values = settings(parse_arguments(["--commit-timeout", "5", "--heartbeat-interval", "100"]))
        self.assertEqual((values["commit-timeout"], values["heartbeat-interval"]), ("5s", "0.1s"))
