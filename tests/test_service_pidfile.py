# -*- test-case-name: tests.test_service_pidfile -*-
"""
Where C{twistd kvstore} puts its pid file (L{kvstore.daemon.service.Options}): in
the node's data directory unless C{--pidfile} says otherwise, so that the
three nodes of a cluster can be started from one directory.
"""

from __future__ import annotations

import os

from twisted.internet.defer import succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon import service as service_module
from kvstore.daemon.service import PIDFILE_NAME, Options, build_service


def parse_twistd(*argv: str) -> ServerOptions:
    """Parse a twistd command line (after C{twistd}) as twistd does."""
    config = ServerOptions()
    config.parseOptions(list(argv))
    return config


class PidfileOptionTests(SynchronousTestCase):
    """twistd's C{--pidfile} as seen by the kvstore plugin's options."""

    def test_default_moves_into_the_data_directory(self) -> None:
        """Left at twistd's default, the pid file is the data directory's
        twistd.pid, written by the node, and twistd writes none."""
        data_dir = self.mktemp()
        config = parse_twistd("-n", "kvstore", "--data-dir", data_dir)
        self.assertEqual(config["pidfile"], "")
        self.assertEqual(config.subOptions.pidfile, os.path.abspath(os.path.join(data_dir, PIDFILE_NAME)))

    def test_default_data_directory(self) -> None:
        """Without --data-dir, the pid file is kvstore-data/node-<id>/twistd.pid
        under the working directory."""
        config = parse_twistd("-n", "kvstore", "--node-id", "1", "--port", "5001", "--peers", "5000,5002")
        self.assertEqual(config.subOptions.pidfile, os.path.abspath("kvstore-data/node-1/twistd.pid"))

    def test_explicit_pidfile_wins(self) -> None:
        """An explicit --pidfile is left to twistd, made absolute as usual."""
        config = parse_twistd("-n", "--pidfile", "elsewhere.pid", "kvstore", "--data-dir", self.mktemp())
        self.assertEqual(config["pidfile"], os.path.abspath("elsewhere.pid"))
        self.assertIsNone(config.subOptions.pidfile)

    def test_empty_pidfile_means_none(self) -> None:
        """--pidfile= still means no pid file at all."""
        config = parse_twistd("-n", "--pidfile=", "kvstore", "--data-dir", self.mktemp())
        self.assertEqual(config["pidfile"], "")
        self.assertIsNone(config.subOptions.pidfile)

    def test_options_on_their_own_have_no_pidfile(self) -> None:
        """Parsed without twistd (tests, tools), the options name no pid file."""
        options = Options()
        options.parseOptions(["--data-dir", self.mktemp()])
        self.assertIsNone(options.pidfile)


class PidfileServiceTests(SynchronousTestCase):
    """The node writes its pid file when it starts and removes it when it stops."""

    def test_written_on_start_and_removed_on_stop(self) -> None:
        """The pid file holds this process's pid while the service runs and
        is gone after it stops; a stale one from a crash is overwritten."""
        self.patch(service_module, "tune_garbage_collector", lambda: None)
        data_dir = self.mktemp()
        options = Options()
        options.parseOptions(["--data-dir", data_dir, "--port", "24998"])
        pidfile = os.path.abspath(os.path.join(data_dir, PIDFILE_NAME))
        service = build_service(options.config, MemoryReactorClock(), pidfile=pidfile)
        with open(pidfile, "w") as f:
            f.write("999999999\n")  # left by a crashed node: never checked
        service.startService()
        with open(pidfile) as f:
            self.assertEqual(f.read(), f"{os.getpid()}\n")
        self.patch(service.wal, "close", lambda: succeed(None))
        self.successResultOf(service.stopService())
        self.assertFalse(os.path.exists(pidfile))
