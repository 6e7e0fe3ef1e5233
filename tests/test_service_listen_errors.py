# -*- test-case-name: tests.test_service_listen_errors -*-
"""
A listening endpoint Twisted cannot make (a systemd socket that systemd did
not pass) is a one-line start-up refusal, like a port in use, and is found
before the data directory is opened.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.options import Options
from kvstore.daemon.service import makeService


class SystemdEndpointWithoutSocketTests(SynchronousTestCase):
    """C{--listen systemd:...} with no socket passed by systemd."""

    def setUp(self) -> None:
        for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            if name in os.environ:
                self.patch(os, "environ", {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")})
                break

    def test_refused_in_one_line_before_the_data_directory_is_touched(self) -> None:
        """makeService exits with one line naming the endpoint and the missing
        socket (no IndexError traceback), and creates no data directory."""
        data = Path(self.mktemp()).absolute() / "data"
        options = Options()
        options.parseOptions(["--data-dir", str(data), "--port", "24998", "--listen", "systemd:domain=INET:index=0"])
        with self.assertRaises(SystemExit) as raised:
            makeService(options)
        message = str(raised.exception.code)
        self.assertEqual(len(message.splitlines()), 1, message)
        self.assertIn("systemd:domain=INET:index=0", message)
        self.assertIn("systemd passed no socket", message)
        self.assertFalse(data.exists())
