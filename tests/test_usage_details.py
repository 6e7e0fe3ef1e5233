# -*- test-case-name: tests.test_usage_details -*-
"""
Small usage details that a newcomer trips over (issue 11): C{tox} runs the
suite once, the launcher's data is ignored by git, the protocol example uses
the default port, and C{kvstore-bench --help} says which ports its own
cluster takes.
"""

from __future__ import annotations

import configparser
import io
import re
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from kvstore.tools import bench
from kvstore.testing.processes import ROOT


class UsageDetailTests(SynchronousTestCase):
    """Configuration and documentation details."""

    def test_tox_runs_the_suite_once(self) -> None:
        """Plain `tox` has one environment, so it runs the suite once."""
        parser = configparser.ConfigParser()
        parser.read(ROOT / "tox.ini")
        envs = [e for e in re.split(r"[\s,]+", parser["tox"]["envlist"]) if e]
        self.assertEqual(len(envs), 1, envs)

    def test_cluster_data_is_ignored(self) -> None:
        """kvstore-cluster's default data directory is ignored by git."""
        if not (ROOT / ".git").exists():
            self.skipTest("not a git checkout")
        result = subprocess.run(
            ["git", "check-ignore", "-q", "kvstore-cluster-data/node-0/wal"], cwd=ROOT, check=False
        )
        self.assertEqual(result.returncode, 0)

    def test_protocol_example_uses_default_port(self) -> None:
        """docs/protocol.md connects to the default port 5000."""
        text = (ROOT / "docs" / "protocol.md").read_text()
        self.assertEqual(re.findall(r"nc localhost (\d+)", text), ["5000"])

    def test_bench_help_names_its_ports(self) -> None:
        """kvstore-bench --help says its own cluster's ports start at 21000."""
        out = io.StringIO()
        self.patch(bench.sys, "stdout", out)
        with self.assertRaises(SystemExit):
            bench.parse_args(["--help"])
        self.assertIn("from 21000", " ".join(out.getvalue().split()))
