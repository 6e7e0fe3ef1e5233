"""
Tests for C{--config} given more than once: refused, naming both files,
rather than reading only the last one (the first, even a missing one, was
silently ignored).
"""

from __future__ import annotations

from pathlib import Path

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.options import parse_config


class ConfigGivenTwiceTests(SynchronousTestCase):
    """One --config per command line."""

    def test_two_config_options_refused(self) -> None:
        """--config A --config B is an error naming both, even when A does not exist."""
        directory = Path(self.mktemp())
        directory.mkdir()
        second = directory / "b.toml"
        second.write_text("commit-timeout = 7\n", encoding="utf-8")
        first = str(directory / "missing.toml")
        with self.assertRaises(UsageError) as e:
            parse_config(["--config", first, "--config", str(second)])
        self.assertIn(first, str(e.exception))
        self.assertIn(str(second), str(e.exception))

    def test_one_config_option_accepted(self) -> None:
        """A single --config still loads."""
        path = Path(self.mktemp())
        path.write_text("commit-timeout = 7\n", encoding="utf-8")
        self.assertEqual(parse_config(["--config", str(path)]).commit_timeout, 7.0)
