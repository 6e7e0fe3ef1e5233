"""
The admin endpoint of real node processes: a 3-node cluster (its peer
traffic through the fault proxy) with C{--admin-listen} on every node takes
writes and reads; each node's C{/metrics} then agrees with what was done and
with the others'; C{/readyz} turns 503 on a node cut off from the others and
200 again once the network heals.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kvstore.testing.processes import allocate_port_range, wait_until
from kvstore.testing.proxy import ProxiedCluster
from tests.integration.support import ProcessTestCase

pytestmark = pytest.mark.integration

WRITES = 60


def http_get(port: int, path: str) -> tuple[int, str]:
    """The status and body of C{GET path} on 127.0.0.1:C{port}."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Scrape:
    """One node's /metrics, parsed."""

    def __init__(self, port: int) -> None:
        status, text = http_get(port, "/metrics")
        assert status == 200, text
        self.values = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def __call__(self, name: str, **labels: str) -> float:
        return self.values[(name, tuple(sorted(labels.items())))]


class AdminEndpointProcessTests(ProcessTestCase):
    """Three nodes, each with its admin endpoint."""

    def setUp(self) -> None:
        super().setUp()
        self.cluster = ProxiedCluster(self.tmp_path / "cluster", 3)
        self.addCleanup(self.cluster.close)
        base = allocate_port_range(3)
        self.admin = {node.node_id: base + node.node_id for node in self.cluster.nodes}
        for node in self.cluster.nodes:
            node.extra_args += ("--admin-listen", f"tcp:{self.admin[node.node_id]}:interface=127.0.0.1")
        self.started_nodes.extend(self.cluster.nodes)
        self.cluster.start()
        self.leader = self.cluster.wait_for_leader()
        self.cluster.wait_connected()

    def scrapes(self) -> dict[int, Scrape]:
        return {i: Scrape(port) for i, port in self.admin.items()}

    def write(self, first: int, count: int) -> None:
        with self.leader.client() as client:
            replies = client.pipeline([f"PUT key{i} value{i}" for i in range(first, first + count)])
        assert replies == [f"key{i} added successfully." for i in range(first, first + count)], replies

    def test_metrics_agree_with_the_work_done(self) -> None:
        """
        After writes and reads: one node is leader, all know it in the same
        term; every node reaches the leader's commit index; fsyncs rise on
        every node with more writes; requests and round trips are counted
        where they happened; every peer link is up.
        """
        before = self.scrapes()
        self.write(0, WRITES)
        for node in self.cluster.nodes:
            with node.client() as client:
                # The linearizable read first, alone: once it is answered the
                # node has applied every write acknowledged before it, so the
                # stale read then finds key1.  Pipelined, the two reads ran at
                # once, and a follower still applying the writes (a loaded
                # machine) answered the stale one "not found": its get_stale
                # "ok" count read 0 below.
                assert client.request("GET key0") == "value of key0: value0"
                assert client.request("GET key1 STALE") == "value of key1: value1"
        leader_id = self.leader.node_id

        def caught_up() -> dict[int, Scrape] | None:
            scrapes = self.scrapes()
            commits = {s("kvstore_proposals_committed_total") for s in scrapes.values()}
            applied = {s("kvstore_proposals_applied_total") for s in scrapes.values()}
            return scrapes if len(commits) == 1 and commits == applied else None

        scrapes = wait_until(caught_up, 15, message="every node at the leader's commit index")
        leader = scrapes[leader_id]
        self.assertEqual([s("kvstore_is_leader") for s in scrapes.values()].count(1.0), 1)
        self.assertEqual(leader("kvstore_is_leader"), 1.0)
        self.assertEqual({s("kvstore_has_leader") for s in scrapes.values()}, {1.0})
        self.assertEqual(len({s("kvstore_current_term") for s in scrapes.values()}), 1)
        self.assertGreaterEqual(leader("kvstore_proposals_committed_total"), WRITES + 1)  # and the term's no-op
        self.assertEqual(leader("kvstore_client_requests_total", command="put", result="ok"), WRITES)
        self.assertGreaterEqual(leader("kvstore_wal_group_commit_entries_sum"), WRITES)
        for node_id, s in scrapes.items():
            self.assertEqual(s("kvstore_client_requests_total", command="get", result="ok"), 1.0, node_id)
            self.assertEqual(s("kvstore_client_requests_total", command="get_stale", result="ok"), 1.0, node_id)
            self.assertEqual(s("kvstore_linearizable_reads_total", result="ok"), 1.0, node_id)
            self.assertGreater(s("kvstore_wal_fsyncs_total"), before[node_id]("kvstore_wal_fsyncs_total"), node_id)
            self.assertEqual(s("kvstore_wal_fsyncs_total"), s("kvstore_wal_fsync_duration_seconds_count"), node_id)
            for peer in self.admin:
                if peer != node_id:
                    self.assertEqual(s("kvstore_peer_connected", peer=str(peer)), 1.0, (node_id, peer))
                    if leader_id in (node_id, peer):  # followers talk to the leader only
                        self.assertGreater(s("kvstore_peer_messages_sent_total", peer=str(peer)), 0.0, (node_id, peer))
                    rtt = s("kvstore_peer_round_trip_time_seconds_count", peer=str(peer))
                    if node_id == leader_id:
                        self.assertGreater(rtt, 0.0, peer)
            self.assertGreater(s("process_resident_memory_bytes"), 0.0)

        fsyncs = {i: s("kvstore_wal_fsyncs_total") for i, s in scrapes.items()}
        self.write(WRITES, 10)
        wait_until(
            lambda: all(s("kvstore_wal_fsyncs_total") > fsyncs[i] for i, s in self.scrapes().items()),
            15, message="fsyncs to rise on every node",
        )
        # The reactor-lag probe fires every 0.5 s from start-up; all of the
        # above can take less than that.
        wait_until(
            lambda: all(s("kvstore_reactor_lag_seconds_count") > 0 for s in self.scrapes().values()),
            10, message="the reactor-lag probe to fire on every node",
        )

    def test_status_and_livez(self) -> None:
        """/status names the node, its leader and the members; /livez is 200."""
        for node_id, port in self.admin.items():
            status, body = http_get(port, "/status")
            self.assertEqual(status, 200)
            document = json.loads(body)
            self.assertEqual(document["node"], node_id)
            self.assertEqual(document["leader"], self.leader.node_id)
            self.assertEqual([m["id"] for m in document["members"]], [0, 1, 2])
            self.assertEqual(
                {m["id"]: m["connected"] for m in document["members"]},
                {i: (None if i == node_id else True) for i in range(3)},
            )
            self.assertEqual(http_get(port, "/livez"), (200, "ok\n"))

    def test_readyz_cut_off_and_healed(self) -> None:
        """/readyz is 200 everywhere, 503 on a follower cut off from the others, and 200 again after healing."""
        for port in self.admin.values():
            self.assertEqual(http_get(port, "/readyz"), (200, "ok\n"))
        follower = next(n for n in self.cluster.nodes if n is not self.leader).node_id
        self.cluster.proxy.isolate(follower)
        status, body = wait_until(
            lambda: (lambda r: r if r[0] == 503 else None)(http_get(self.admin[follower], "/readyz?verbose")),
            15, message="the cut-off follower to be not ready",
        )
        self.assertIn("readyz check failed", body)
        self.assertTrue("[-]leader failed" in body or "[-]read_index failed" in body, body)
        self.assertEqual(http_get(self.admin[self.leader.node_id], "/readyz")[0], 200, "the majority stays ready")
        self.assertEqual(http_get(self.admin[follower], "/livez")[0], 200, "cut off is not dead")
        self.cluster.proxy.heal()
        wait_until(
            lambda: http_get(self.admin[follower], "/readyz")[0] == 200, 20,
            message="the healed follower to be ready again",
        )
