# -*- test-case-name: tests.test_service_daemon_logfile -*-
"""
Where a daemonized C{twistd kvstore} logs by default: in its data directory,
so that nodes daemonized from one directory do not share (and overwrite
each other's lines in) twistd's C{./twistd.log}.
"""

from __future__ import annotations

import os

from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

#: The log file name the node uses inside its data directory.
LOGFILE_NAME = "twistd.log"


def parse_twistd(*argv: str) -> ServerOptions:
    """Parse a twistd command line (after C{twistd}) as twistd does."""
    config = ServerOptions()
    config.parseOptions(list(argv))
    return config


class DaemonLogfileTests(SynchronousTestCase):
    """twistd's C{--logfile} as set by the kvstore plugin's options."""

    def test_daemon_default_log_moves_into_the_data_directory(self) -> None:
        """Daemonized without --logfile, a node logs to <data-dir>/twistd.log."""
        data_dir = self.mktemp()
        config = parse_twistd("kvstore", "--data-dir", data_dir)
        self.assertEqual(config["logfile"], os.path.abspath(os.path.join(data_dir, LOGFILE_NAME)))

    def test_two_daemons_from_one_directory_log_apart(self) -> None:
        """The design card's nodes, daemonized from one directory, get different log files."""
        first = parse_twistd("kvstore", "--node-id", "0", "--port", "5000", "--peers", "5001,5002")
        second = parse_twistd("kvstore", "--node-id", "1", "--port", "5001", "--peers", "5000,5002")
        self.assertNotEqual(first["logfile"], second["logfile"])

    def test_left_alone_otherwise(self) -> None:
        """In the foreground, or with --logfile, --syslog or --logger, twistd's choice stands."""
        cases = {
            ("-n",): None,
            ("--logfile", "node.log"): "node.log",
            ("-n", "--logfile=-"): "-",
            ("--syslog",): None,
            ("--logger", "twisted.logger.textFileLogObserver"): None,
        }
        for twistd_options, expected in cases.items():
            with self.subTest(twistd_options=twistd_options):
                config = parse_twistd(*twistd_options, "kvstore", "--data-dir", self.mktemp())
                self.assertEqual(config["logfile"], expected)
