# -*- test-case-name: tests.test_options_snapshots -*-
"""
The snapshot options (issue 12): C{--snapshot-entries},
C{--snapshot-bytes} and C{--snapshot-catchup-entries}, on the command line
and in a TOML file.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.options import parse_config


class SnapshotOptionTests(SynchronousTestCase):
    """Defaults, parsing and bounds."""

    def test_defaults(self) -> None:
        """10,000 entries, 64 MiB, 5,000 catch-up entries."""
        config = parse_config([])
        self.assertEqual(
            (config.snapshot_entries, config.snapshot_bytes, config.snapshot_catchup_entries),
            (10_000, 64 * 1024 * 1024, 5_000),
        )

    def test_given(self) -> None:
        """Given values are parsed; the byte count accepts unit suffixes; zero catch-up entries is allowed."""
        config = parse_config(
            ["--snapshot-entries", "50", "--snapshot-bytes", "8MiB", "--snapshot-catchup-entries", "0"]
        )
        self.assertEqual(
            (config.snapshot_entries, config.snapshot_bytes, config.snapshot_catchup_entries),
            (50, 8 * 1024 * 1024, 0),
        )

    def test_refused(self) -> None:
        """Out-of-range or malformed values are refused naming the option."""
        for argv, message in (
            (["--snapshot-entries", "0"], "--snapshot-entries must be >= 1"),
            (["--snapshot-entries", "many"], "--snapshot-entries must be an integer"),
            (["--snapshot-bytes", "100"], "--snapshot-bytes must be at least 4096"),
            (["--snapshot-bytes", "1TB"], "--snapshot-bytes must be a byte count"),
            (["--snapshot-catchup-entries", "-1"], "--snapshot-catchup-entries must be >= 0"),
        ):
            with self.subTest(argv=argv), self.assertRaises(UsageError) as caught:
                parse_config(argv)
            self.assertIn(message, str(caught.exception))

    def test_config_file(self) -> None:
        """A TOML file sets them with integers and a size string, like the command line."""
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "kvstore.toml"
        path.write_text(
            textwrap.dedent(
                """\
                snapshot-entries = 200
                snapshot-bytes = "1MiB"
                snapshot-catchup-entries = 30
                """
            ),
            encoding="utf-8",
        )
        config = parse_config(["--config", str(path)])
        self.assertEqual(
            (config.snapshot_entries, config.snapshot_bytes, config.snapshot_catchup_entries), (200, 1 << 20, 30)
        )

    def test_config_file_types(self) -> None:
        """A TOML string where an integer is expected is refused naming the key."""
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "kvstore.toml"
        path.write_text('snapshot-entries = "200"\n', encoding="utf-8")
        with self.assertRaises(UsageError) as caught:
            parse_config(["--config", str(path)])
        self.assertIn("snapshot-entries", str(caught.exception))
        self.assertIn("expected an integer", str(caught.exception))
