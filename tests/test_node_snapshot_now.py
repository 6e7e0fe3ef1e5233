# -*- test-case-name: tests.test_node_snapshot_now -*-
"""
L{kvstore.node.node.Node.snapshot_now} (for online backups): a snapshot taken
on demand, not due, goes through the same steps as a due one, waits for one
that is running, and is refused while the leader's snapshot is installed.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.errors import Unavailable
from kvstore.node.snapshots import SnapshotPolicy
from kvstore.raft.core import SnapshotPoint
from kvstore.storage.snapshots import SnapshotInfo

from tests.node_snapshot_cluster import SnapshotCluster
from tests.test_node_snapshots_cluster import snapshot_indexes

#: Never due by itself during these tests.
RARE = SnapshotPolicy(entries=10_000, catchup_entries=5)


def outcome(cluster: SnapshotCluster, d: Any) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert cluster.run_until(lambda: bool(box)), "snapshot_now never fired"
    return box[0]


class SnapshotNowTests(SynchronousTestCase):
    """A snapshot on demand."""

    def test_taken_and_compacted(self) -> None:
        """A snapshot not due is taken at the applied index, reported to the core, and the log compacted."""
        cluster = SnapshotCluster(policy=RARE)
        cluster.start_all()
        with capturedLogs():
            expected = cluster.write_many(30)
            self.assertTrue(cluster.run_until(cluster.converged))
            leader = cluster.leader()
            assert leader is not None
            node = cluster.node(leader)
            self.assertEqual(snapshot_indexes(cluster, leader), [])
            applied = node.state_machine.applied_index
            info = outcome(cluster, node.snapshot_now())
            cluster.run(0.2)
        self.assertIsInstance(info, SnapshotInfo)
        self.assertEqual(info.index, applied)
        self.assertEqual(snapshot_indexes(cluster, leader), [applied])
        self.assertEqual(node.core.snapshot_index, applied)
        self.assertEqual(node.core.first_index, applied - 5 + 1)
        self.assertEqual(cluster.data(leader), expected)
        self.assertEqual(cluster.fatal, [])

    def test_waits_for_a_running_snapshot(self) -> None:
        """Asked while one runs, it waits for that one and then takes its own, at the index applied then."""
        cluster = SnapshotCluster(policy=RARE)
        cluster.start_all()
        with capturedLogs():
            cluster.write_many(20)
            self.assertTrue(cluster.run_until(cluster.converged))
            leader = cluster.leader()
            assert leader is not None
            node = cluster.node(leader)
            first = node.snapshot_now()
            second = node.snapshot_now()  # the first is still running
            a = outcome(cluster, first)
            b = outcome(cluster, second)
        self.assertIsInstance(a, SnapshotInfo)
        self.assertIsInstance(b, SnapshotInfo)
        self.assertGreaterEqual(b.index, a.index)
        self.assertEqual(cluster.fatal, [])

    def test_refused_while_installing(self) -> None:
        """While the leader's snapshot is being installed the answer is Unavailable."""
        cluster = SnapshotCluster(policy=RARE)
        cluster.start_all()
        with capturedLogs():
            cluster.write_many(5)
        node = cluster.node(0)
        node._installing = SnapshotPoint(3, 1)
        result = outcome(cluster, node.snapshot_now())
        node._installing = None
        self.assertIsInstance(result, Failure)
        self.assertIsInstance(result.value, Unavailable)

    def test_no_snapshot_directory(self) -> None:
        """A node without snapshots says so."""
        cluster = SnapshotCluster(policy=RARE)
        cluster.start_all()
        node = cluster.node(0)
        node._snapshots = None
        result = outcome(cluster, node.snapshot_now())
        self.assertIsInstance(result.value, Unavailable)
