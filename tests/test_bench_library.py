# -*- test-case-name: tests.test_bench_library -*-
"""
C{kvstore-bench} on the client library: the do-nothing server's replies
are ones the library accepts, errors are counted by the library's kinds,
writers are given the leader first, the pipelined loop reads every reply
with the library's codec and follows Not leader, and whole runs (both
C{--client} modes) against the trivial server and a real node count every
request.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from twisted.trial.unittest import SynchronousTestCase

from kvstore.client import _protocol as p
from kvstore.client.errors import ConnectionFailed, KeyNotFound, NoLeader, OutcomeUnknown, ProtocolError
from kvstore.testing.processes import ROOT
from kvstore.tools import bench, bench_pipelined
from kvstore.tools.bench_pipelined import run_pipelined
from tests.client_fakes import FakeNode, store_script


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
        """Against the do-nothing server every request succeeds, in both client modes."""
        for mode in ("pipelined", "library"):
            with self.subTest(mode=mode):
                report = self.run_bench("--target", "trivial", "--client", mode, "-c", "3", "-P", "4", "-n", "600")
                self.assertEqual((report["requests_ok"], report["errors"]), (600, {}))

    def test_one_node_writes_and_reads(self) -> None:
        """Against a real node, half the connections write and half read preloaded keys, all successfully,
        in both client modes."""
        for mode in ("pipelined", "library"):
            with self.subTest(mode=mode):
                report = self.run_bench("--cluster-size", "1", "--client", mode, "-c", "2", "-P", "3", "-n", "400",
                                        "--writes", "0.5", "--keys", "50")
                self.assertEqual(report["requests_ok"], 400)
                self.assertEqual(report["errors"], {})
                self.assertGreater(report["writes_ok"], 0)
                self.assertGreater(report["reads_ok"], 0)


class PipelinedLoopTests(SynchronousTestCase):
    """The pipelined load loop (kvstore.tools.bench_pipelined) against scripted nodes."""

    def run_loop(self, address: str, requests: list[p.Request], pipeline: int) -> tuple[object, list[tuple]]:
        pending = list(requests)
        seen: list[tuple] = []

        def next_request() -> p.Request | None:
            return pending.pop(0) if pending else None

        def on_reply(request: p.Request, reply: p.Reply, sent: int, received: int) -> None:
            self.assertLessEqual(sent, received)
            seen.append((request, reply))

        outcome = asyncio.run(run_pipelined(address, pipeline, next_request, on_reply))
        return outcome, seen

    def test_requests_pipelined_and_replies_read_by_the_library(self) -> None:
        """Requests are kept in flight together (the node answers only once it has three) and each reply
        is read against its own request."""
        node = FakeNode(self, store_script(), batch=3)
        requests = [p.Put(f"k{i}", "v") for i in range(6)]
        outcome, seen = self.run_loop(node.address, requests, pipeline=3)
        self.assertIsNone(outcome)
        self.assertEqual([r for r, _ in seen], requests)
        self.assertEqual({type(reply) for _, reply in seen}, {p.Done})
        self.assertEqual(node.connections, 1)

    def test_not_leader_names_the_leader(self) -> None:
        """A Not leader reply stops the loop on that connection and returns the leader's address."""
        node = FakeNode(self, lambda line: "Error: Not leader. Current leader is Node 2 at 127.0.0.1:9")
        outcome, seen = self.run_loop(node.address, [p.Put("a", "v"), p.Put("b", "v"), p.Put("c", "v")], 2)
        self.assertEqual(outcome, "127.0.0.1:9")
        self.assertEqual(len(seen), 2)  # the two in flight; the third was never sent
        self.assertEqual(bench_pipelined.reply_kind(seen[0][1]), "Not leader")

    def test_reply_out_of_step(self) -> None:
        """A reply that does not fit its request is a ProtocolError, not a success."""
        node = FakeNode(self, lambda line: "PONG")
        self.assertRaises(ProtocolError, self.run_loop, node.address, [p.Get("a")], 1)
