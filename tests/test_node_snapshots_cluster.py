# -*- test-case-name: tests.test_node_snapshots_cluster -*-
"""
The node side of snapshots in a running cluster of production nodes on
simulated disks (L{tests.node_snapshot_cluster}): taking snapshots and
compacting the log, a follower too far behind receiving and installing
the leader's snapshot, and restarts from snapshot plus log, including a
node restarted alone that serves stale reads of everything it had applied.
"""

from __future__ import annotations

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from kvstore.storage.snapshots import SnapshotStore

from tests.node_snapshot_cluster import DATA, SnapshotCluster


def snapshot_indexes(cluster: SnapshotCluster, node_id: int) -> list[int]:
    store = SnapshotStore(f"{DATA}/snapshots", cluster.members[node_id].fs)
    return [info.index for info in store.list()]


class TakingTests(SynchronousTestCase):
    """Nodes snapshot as the policy says, then compact the core's log and the WAL, keeping two snapshots."""

    def test_snapshot_and_compact(self) -> None:
        """After 120 writes with a 20-entry policy and 5 catch-up entries, every node holds two snapshots and a short log."""
        cluster = SnapshotCluster()
        cluster.start_all()
        with capturedLogs():
            expected = cluster.write_many(120)
            self.assertTrue(cluster.run_until(cluster.converged))
            cluster.run(0.5)
        for i in cluster.ids:
            with self.subTest(node=i):
                node = cluster.node(i)
                self.assertEqual(cluster.data(i), expected)
                indexes = snapshot_indexes(cluster, i)
                self.assertEqual(len(indexes), 2, indexes)
                self.assertEqual(node.core.snapshot_index, indexes[0])
                self.assertGreater(node.core.snapshot_index, node.core.commit_index - 40)
                self.assertEqual(node.core.first_index, node.core.snapshot_index - 5 + 1)
                status = node.status()
                self.assertEqual((status["snapshot"], status["first_index"]), (indexes[0], indexes[0] - 4))
                wal = cluster.members[i].wal
                assert wal is not None
                self.assertGreater(wal.first_index, 1)
                self.assertLessEqual(wal.first_index, node.core.first_index)
        self.assertEqual(cluster.fatal, [])


class InstallTests(SynchronousTestCase):
    """A follower whose next entry was compacted away installs the leader's snapshot and continues from the log."""

    def test_lagging_follower_installs(self) -> None:
        """A follower down for 100 writes receives the snapshot, replaces its state and log, and converges."""
        cluster = SnapshotCluster()
        on_wire: list[str] = []
        cluster.network.on_send.append(lambda m: on_wire.append(type(m.body).__name__))
        cluster.start_all()
        with capturedLogs():
            cluster.write_many(10)
            self.assertTrue(cluster.run_until(cluster.converged))
            leader = cluster.leader()
            follower = next(i for i in cluster.ids if i != leader)
            cluster.crash(follower)
            expected = cluster.write_many(100, start=10)
            cluster.start(follower)
            self.assertTrue(cluster.run_until(cluster.converged))
            cluster.run(0.3)
        sent = [s for t in cluster.transfers.values() for s in t.sent]
        self.assertIn(follower, [receiver for receiver, _ in sent])
        self.assertNotIn("InstallSnapshot", on_wire)  # offers go to the transfer, never to peers
        node = cluster.node(follower)
        self.assertEqual(cluster.data(follower), expected)
        installed = max(index for receiver, index in sent if receiver == follower)
        self.assertGreaterEqual(node.core.snapshot_index, installed)
        wal = cluster.members[follower].wal
        assert wal is not None
        self.assertGreater(wal.first_index, 1)
        self.assertEqual(cluster.fatal, [])

    def test_restart_after_install(self) -> None:
        """A follower that installed a snapshot restarts from it: same data, log continuing it."""
        cluster = SnapshotCluster()
        cluster.start_all()
        with capturedLogs():
            cluster.write_many(5)
            self.assertTrue(cluster.run_until(cluster.converged))
            leader = cluster.leader()
            follower = next(i for i in cluster.ids if i != leader)
            cluster.crash(follower)
            cluster.write_many(80, start=5)
            cluster.start(follower)
            self.assertTrue(cluster.run_until(cluster.converged))
            expected = cluster.data(follower)
            cluster.run(0.5)  # the commit index is saved
            cluster.crash(follower)
            node = cluster.start(follower)
            # Restored from the snapshot at once; the log after it applies in the first pass.
            self.assertEqual(node.state_machine.applied_index, node.core.snapshot_index)
            self.assertGreater(node.core.snapshot_index, 5)
            cluster.run(0.01)
            self.assertEqual(cluster.data(follower), expected)
        self.assertEqual(cluster.fatal, [])


class RestartTests(SynchronousTestCase):
    """A restarted node recovers from its newest snapshot and applies its log through the saved commit index."""

    def test_alone_after_restart(self) -> None:
        """With every other node down, a restarted follower answers stale reads with all it had applied."""
        cluster = SnapshotCluster()
        cluster.start_all()
        with capturedLogs():
            expected = cluster.write_many(57)
            self.assertTrue(cluster.run_until(cluster.converged))
            cluster.run(0.2)  # at least one commit-index save interval
            leader = cluster.leader()
            follower = next(i for i in cluster.ids if i != leader)
            for i in cluster.ids:
                cluster.crash(i)
            with capturedLogs() as events:
                node = cluster.start(follower)
                cluster.run(0.05)
        self.assertIsNone(node.core.leader_id)
        self.assertEqual(node.state_machine.items(), expected)
        for key, value in expected.items():
            self.assertEqual(node.get(key, stale=True).result, value)  # type: ignore[attr-defined]
        reports = [e for e in events if "recovered" in str(e.get("report", ""))]
        self.assertEqual(len(reports), 1)
        self.assertIn(f"from snapshot at index {node.core.snapshot_index} and", reports[0]["report"])

    def test_whole_cluster_restarts(self) -> None:
        """Every node crashed (torn unsynced writes) and restarted keeps every acknowledged write."""
        cluster = SnapshotCluster()
        cluster.start_all()
        with capturedLogs():
            expected = cluster.write_many(90)
            for i in cluster.ids:
                cluster.crash(i, tear=True)
            cluster.start_all()
            expected.update(cluster.write_many(3, start=90))
            self.assertTrue(cluster.run_until(cluster.converged))
        for i in cluster.ids:
            self.assertEqual(cluster.data(i), expected)
        self.assertEqual(cluster.fatal, [])
