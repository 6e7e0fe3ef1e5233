# -*- test-case-name: tests.test_review_admin_snapshot_metrics -*-
"""
The snapshot metrics move when snapshots happen (found in review): the
node reports each snapshot it takes and each one it installs, and the
snapshot transfer each one it sends, to the node's
L{kvstore.node.monitoring.NodeMetrics} -- the admin endpoint's
C{kvstore_snapshot_*} families stayed at zero before.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from kvstore.admin.metrics import AdminMetrics
from kvstore.node.build import build_node
from kvstore.node.node import Node
from kvstore.node.snapshots import SnapshotPolicy
from kvstore.raft.config import RaftConfig
from kvstore.node.snapshot_transfer import run_now
from kvstore.testing.memory_cluster import CLUSTER_ID

from tests.test_snapshot_transfer_node import SnapshottingCluster


class MeteredSnapshottingCluster(SnapshottingCluster):
    """L{SnapshottingCluster} whose nodes each record into their own L{AdminMetrics}."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.metrics: dict[int, AdminMetrics] = {}
        super().__init__(*args, **kwargs)

    def start(self, node_id: int) -> Node:
        member = self.members[node_id]
        peers = tuple(i for i in self.ids if i != node_id)
        metrics = self.metrics[node_id] = AdminMetrics(peers, process=False)
        config = RaftConfig(
            node_id=node_id, peers=peers,
            heartbeat_interval=self._heartbeat_interval, election_timeout_min=self._election_timeout[0],
            election_timeout_max=self._election_timeout[1], **self._raft_options,
        )
        node = build_node(
            config, clock=self.clock, rng=random.Random(self.rng.random()), log=member.log,
            metadata=member.metadata, cluster_id=CLUSTER_ID, peers=self.network,
            member_addresses={i: f"127.0.0.1:{5000 + i}" for i in self.ids},
            snapshots=self.store(node_id), snapshot_policy=SnapshotPolicy(entries=20, catchup_entries=0),
            snapshot_runner=run_now, metrics=metrics,
        )
        member.node = node
        self.network.attach(node_id, node.receive)
        node.start()
        return node

    def sample(self, node_id: int, name: str, **labels: str) -> float:
        value = self.metrics[node_id].registry.get_sample_value(name, labels or None)
        return 0.0 if value is None else value


class SnapshotMetricsTests(SynchronousTestCase):
    """Taking, sending and installing a snapshot each move their metrics."""

    def test_taken_sent_and_installed_snapshots_are_counted(self) -> None:
        """A leader that snapshots and sends its snapshot to a lagging follower
        counts saves and the bytes sent to that follower; the follower counts
        an install of each snapshot sent, of its size."""
        cluster = MeteredSnapshottingCluster(3, seed=4)
        leader = cluster.wait_for_leader()
        lagging = next(i for i in cluster.ids if i != leader)
        cluster.crash(lagging)
        node = cluster.node(leader)
        with capturedLogs():
            for n in range(70):
                node.put(f"k{n}", f"v{n}" * 50)
                cluster.run(0.01)
            self.assertTrue(cluster.run_until(lambda: node.core.first_index > 30, timeout=5))
            saved = cluster.sample(leader, "kvstore_snapshot_save_duration_seconds_count")
            self.assertGreaterEqual(saved, 2)
            self.assertEqual(cluster.sample(leader, "kvstore_snapshot_save_bytes_count"), saved)
            self.assertGreater(cluster.sample(leader, "kvstore_snapshot_save_bytes_sum"), 70 * 50)
            cluster.start(lagging)
            follower = cluster.node(lagging)
            self.assertTrue(cluster.run_until(
                lambda: follower.state_machine.applied_index == node.state_machine.applied_index, timeout=20,
            ))
            cluster.run(0.5)
        peer = str(lagging)
        sent_bytes = cluster.sample(leader, "kvstore_snapshot_sent_bytes_total", peer=peer)
        self.assertGreater(sent_bytes, 70 * 50)
        sends = cluster.sample(leader, "kvstore_snapshot_send_duration_seconds_count", peer=peer)
        self.assertGreaterEqual(sends, 1)
        self.assertEqual(cluster.sample(lagging, "kvstore_snapshot_install_duration_seconds_count"), sends)
        self.assertEqual(cluster.sample(lagging, "kvstore_snapshot_install_bytes_sum"), sent_bytes)
        other = next(i for i in cluster.ids if i not in (leader, lagging))
        self.assertEqual(cluster.sample(other, "kvstore_snapshot_install_duration_seconds_count"), 0)
