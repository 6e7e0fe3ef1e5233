# -*- test-case-name: tests.test_bench_library -*-
"""
C{kvstore-bench} on the client library (L{kvstore.client.asyncio}): the
do-nothing server's replies are ones the library accepts, errors are
counted by the library's kinds, writers are given the leader first, and
whole runs against the trivial server and a real node count every request.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from twisted.trial.unittest import SynchronousTestCase

from kvstore.client import _protocol as p
from kvstore.client.errors import ConnectionFailed, KeyNotFound, NoLeader, OutcomeUnknown
from kvstore.testing.processes import ROOT
from kvstore.tools import bench


class PureTests(SynchronousTestCase):
    """The parts of the tool that need no server."""

    def test_trivial_replies_satisfy_the_library(self) -> None:
        """Each reply of the do-nothing server is the success reply the library expects for its request."""
        requests = [p.Put("key1", "v" * 10), p.Get("key2"), p.Get("key3", stale=True), p.Delete("key4"), p.Status()]
        lines = [p.encode_request(r).rstrip(b"\n") for r in requests]
        replies = bench.trivial_replies(lines).decode().splitlines()
        self.assertEqual(len(replies), len(requests))
        kinds = [type(p.interpret_reply(r, line)) for r, line in zip(requests, replies)]
        self.assertEqual(kinds, [p.Done, p.Value, p.Value, p.Done, p.StatusFields])

    def test_error_kinds(self) -> None:
        """Library errors are counted under their kind, the most specific first."""
        self.assertEqual(bench.error_kind(NoLeader("x")), "No leader")
        self.assertEqual(bench.error_kind(ConnectionFailed("x")), "Connection failed")
        self.assertEqual(bench.error_kind(OutcomeUnknown("x")), "Outcome unknown")
        self.assertEqual(bench.error_kind(KeyNotFound("k")), "Key not found")

    def test_writers_get_the_leader_first(self) -> None:
        """A writing client lists the known leader first, then the others in order."""
        cluster = bench.TargetNodes([("h", 1), ("h", 2), ("h", 3)])
        cluster.leader = ("h", 2)
        self.assertEqual(cluster.nodes_leader_first(), ["h:2", "h:1", "h:3"])


@pytest.mark.integration
class RunTests(SynchronousTestCase):
    """Whole runs of the tool, as a user starts it."""

    def run_bench(self, *argv: str) -> dict:
        result = subprocess.run([sys.executable, "-m", "kvstore.tools.bench", *argv, "--json", "--warmup", "0",
                                 "--fsync-probe", "0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def test_trivial_target(self) -> None:
        """Against the do-nothing server every request succeeds through the library."""
        report = self.run_bench("--target", "trivial", "-c", "3", "-P", "4", "-n", "600")
        self.assertEqual((report["requests_ok"], report["errors"]), (600, {}))

    def test_one_node_writes_and_reads(self) -> None:
        """Against a real node, half the connections write and half read preloaded keys, all successfully."""
        report = self.run_bench("--cluster-size", "1", "-c", "2", "-P", "3", "-n", "400", "--writes", "0.5",
                                "--keys", "50")
        self.assertEqual(report["requests_ok"], 400)
        self.assertEqual(report["errors"], {})
        self.assertGreater(report["writes_ok"], 0)
        self.assertGreater(report["reads_ok"], 0)
