# -*- test-case-name: tests.test_node_snapshots_stagger -*-
"""
The members of a cluster snapshot at different applied indices
(L{kvstore.node.snapshots.stagger_fraction}), so that their snapshots do not
all slow the write path at once, while no node ever goes longer than the
documented interval (C{--snapshot-entries} entries or C{--snapshot-bytes}
of log) since its last snapshot.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.snapshots import NodeSnapshots, SnapshotPolicy, stagger_fraction
from kvstore.node.snapshotting import snapshot_cooperator
from kvstore.testing.runners import run_now

from tests.node_snapshot_cluster import SnapshotCluster
from tests.snapshot_support import simulated_store
from tests.test_node_snapshots import machine_with, meta_for
from tests.test_node_snapshots_cluster import snapshot_indexes


def snapshots_for(node_id: int, policy: SnapshotPolicy, cluster_size: int = 3) -> tuple[NodeSnapshots, Clock]:
    clock = Clock()
    _, store = simulated_store()
    snapshots = NodeSnapshots(
        store, policy, run_now, snapshot_cooperator(clock, max_steps=1),
        stagger=stagger_fraction(node_id, cluster_size),
    )
    return snapshots, clock


def first_due(snapshots: NodeSnapshots, start: int, limit: int) -> int:
    """The first applied index after C{start} at which a snapshot is due (one entry of 10 bytes at a time)."""
    for index in range(start + 1, limit + 1):
        snapshots.note_applied(payload_bytes=10, entries=1)
        if snapshots.due(index):
            return index
    raise AssertionError(f"no snapshot due through {limit}")


def take(snapshots: NodeSnapshots, clock: Clock, keys: int) -> None:
    results: list[object] = []
    snapshots.take(machine_with(keys), meta_for).addBoth(results.append)
    while clock.getDelayedCalls():
        clock.advance(1.0)
    assert snapshots.index == keys, results


class FractionTests(SynchronousTestCase):
    """Each member's fraction of the interval is its own, within the first half."""

    def test_three_members(self) -> None:
        """Nodes 1, 2 and 3 of three get 1/6, 1/3 and 0."""
        self.assertEqual([stagger_fraction(i, 3) for i in (1, 2, 3)], [1 / 6, 1 / 3, 0.0])

    def test_spread_in_first_half(self) -> None:
        """For clusters of 1 to 9 members numbered 1..n, the fractions are distinct and in [0, 1/2)."""
        for size in range(1, 10):
            with self.subTest(size=size):
                fractions = [stagger_fraction(i, size) for i in range(1, size + 1)]
                self.assertEqual(len(set(fractions)), size)
                self.assertTrue(all(0 <= f < 0.5 for f in fractions), fractions)

    def test_invalid_stagger_refused(self) -> None:
        """A stagger outside [0, 1) is refused."""
        _, store = simulated_store()
        for bad in (-0.1, 1.0):
            with self.subTest(stagger=bad), self.assertRaises(ValueError):
                NodeSnapshots(store, SnapshotPolicy(), run_now, snapshot_cooperator(Clock()), stagger=bad)


class TriggerStaggerTests(SynchronousTestCase):
    """Members trigger at different indices, and never later than the documented interval."""

    def test_members_trigger_apart(self) -> None:
        """With 600 entries per snapshot, nodes 1, 2 and 3 of three first trigger at indices 500, 400 and 600."""
        policy = SnapshotPolicy(entries=600)
        firsts = [first_due(snapshots_for(i, policy)[0], 0, 600) for i in (1, 2, 3)]
        self.assertEqual(firsts, [500, 400, 600])

    def test_stay_apart_counting_from_own_snapshot(self) -> None:
        """After its first snapshot, each node counts a whole interval from its own snapshot, so they stay apart."""
        policy = SnapshotPolicy(entries=600)
        seconds = []
        for i in (1, 2, 3):
            with self.subTest(node=i):
                snapshots, clock = snapshots_for(i, policy)
                first = first_due(snapshots, 0, 600)
                take(snapshots, clock, first)
                second = first_due(snapshots, first, first + 600)
                self.assertEqual(second - first, 600)
                seconds.append(second)
        self.assertEqual(seconds, [1100, 1000, 1200])

    def test_bytes_first_interval_shorter_never_longer(self) -> None:
        """The byte trigger's first interval is shorter by the node's fraction, the next ones the policy's bytes."""
        policy = SnapshotPolicy(entries=10_000, bytes=6000)  # 10 + 32 bytes per entry counted
        expected = {1: (120, 143), 2: (96, 143), 3: (143, 143)}
        for i in (1, 2, 3):
            with self.subTest(node=i):
                snapshots, clock = snapshots_for(i, policy)
                first = first_due(snapshots, 0, 1000)
                take(snapshots, clock, first)
                second = first_due(snapshots, first, first + 1000)
                self.assertEqual((first, second - first), expected[i])
                self.assertLessEqual(max(first, second - first) * 42, policy.bytes + 42)

    def test_not_staggered_alone(self) -> None:
        """A node with no stagger (a one-member cluster) triggers after exactly the policy's entries, as before."""
        snapshots, _ = snapshots_for(1, SnapshotPolicy(entries=600), cluster_size=1)
        self.assertEqual(first_due(snapshots, 0, 600), 600)


class ClusterStaggerTests(SynchronousTestCase):
    """In a running cluster of production nodes the members snapshot at different indices."""

    def test_members_snapshot_at_different_indices(self) -> None:
        """After 120 writes with a 20-entry policy, no two of the three members hold a snapshot at the same index."""
        cluster = SnapshotCluster()
        cluster.start_all()
        with capturedLogs():
            cluster.write_many(120)
            self.assertTrue(cluster.run_until(cluster.converged))
            cluster.run(0.5)
        newest = {i: snapshot_indexes(cluster, i)[0] for i in cluster.ids}
        self.assertEqual(len(set(newest.values())), len(newest), newest)
        self.assertEqual(cluster.fatal, [])
