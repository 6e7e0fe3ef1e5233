# -*- test-case-name: tests.test_node_snapshots_crash -*-
"""
kill -9 at every point of taking a snapshot (writing it, compacting the
log, pruning) and of installing one (restoring the state machine,
resetting the log, acknowledging): the node restarts from the old or the
new snapshot with a log that continues it, and keeps every acknowledged
write.  Crashes are simulated: the disk applies each fsync after a delay
(L{SimulatedDisk}), and the crash keeps only what was durable, tearing
unsynced appends.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.node import Node
from kvstore.node.snapshots import SnapshotPolicy
from kvstore.storage.snapshots import SnapshotStore

from tests.node_snapshot_cluster import DATA, SnapshotCluster
from tests.support import slow


def step_events(cluster: SnapshotCluster, count: int) -> None:
    """Run the next C{count} scheduled calls (each a timer, a message or a disk effect)."""
    for _ in range(count):
        calls = cluster.clock.getDelayedCalls()
        if not calls:
            return
        at = min(call.getTime() for call in calls)
        cluster.clock.advance(max(0.0, at - cluster.clock.seconds()))


def watch_snapshots(node: Node) -> list[float]:
    """Record when the node starts taking a snapshot."""
    started: list[float] = []
    snapshots = node._snapshots
    assert snapshots is not None
    take = snapshots.take

    def recording(*args: Any) -> Any:
        started.append(1.0)
        return take(*args)

    snapshots.take = recording  # type: ignore[method-assign]
    return started


def check_store(test: SynchronousTestCase, cluster: SnapshotCluster, node_id: int) -> None:
    """Every snapshot on disk is intact and no temporary file is left."""
    fs = cluster.members[node_id].fs
    store = SnapshotStore(f"{DATA}/snapshots", fs)
    test.assertEqual([error for _, error in store.scan()], [None] * len(store.list()))
    test.assertEqual([n for n in fs.listdir(f"{DATA}/snapshots") if n.endswith(".tmp")], [])


class CrashWhileSnapshottingTests(SynchronousTestCase):
    """A one-node cluster crashed at each event from the start of a snapshot to well after its pruning."""

    def run_case(self, events: int, tear: bool) -> bool:
        cluster = SnapshotCluster(size=1, seed=events, policy=SnapshotPolicy(entries=20, catchup_entries=3),
                                  segment_bytes=300)
        with capturedLogs():
            node = cluster.start(0)
            started = watch_snapshots(node)
            expected = cluster.write_many(25)  # the second snapshot starts at 40 (20 after the first)
            while not started or len(started) < 2:
                i = len(expected) + 100
                expected.update(cluster.write_many(1, start=i))
            step_events(cluster, events)
            finished = node._snapshots is not None and node._snapshots.busy is None
            cluster.crash(0, tear=tear)
            check_store(self, cluster, 0)
            node = cluster.start(0)
            self.assertTrue(cluster.run_until(lambda: cluster.node(0).state_machine.applied_index
                                              >= cluster.node(0).core.commit_index > 0))
            expected.update(cluster.write_many(1, start=1000))
        self.assertEqual(cluster.data(0), expected)
        self.assertEqual(cluster.fatal, [])
        return finished

    def test_every_event(self) -> None:
        """Crashing at each of the events of a snapshot and what follows it loses nothing acknowledged."""
        for tear in (False, True):
            finished_at = None
            for events in range(0, 80):
                with self.subTest(events=events, tear=tear):
                    if self.run_case(events, tear) and finished_at is None:
                        finished_at = events
            self.assertIsNotNone(finished_at)  # the cases cover the whole snapshot


class CrashWhileInstallingTests(SynchronousTestCase):
    """A follower crashed at each event after its snapshot arrives, until well after it caught up."""

    def run_case(self, events: int, tear: bool) -> bool:
        cluster = SnapshotCluster(seed=events)
        with capturedLogs():
            cluster.start_all()
            expected = cluster.write_many(5)
            self.assertTrue(cluster.run_until(cluster.converged))
            leader = cluster.leader()
            follower = next(i for i in cluster.ids if i != leader)
            cluster.crash(follower)
            expected.update(cluster.write_many(60, start=5))
            node = cluster.start(follower)
            arrived: list[bool] = []
            step = node.step_installed_snapshot

            def recording(*args: Any) -> None:
                arrived.append(True)
                step(*args)

            node.step_installed_snapshot = recording  # type: ignore[method-assign]
            self.assertTrue(cluster.run_until(lambda: bool(arrived), step=0.0002))
            step_events(cluster, events)
            cluster.crash(follower, tear=tear)
            check_store(self, cluster, follower)
            with capturedLogs() as events_logged:
                cluster.start(follower)
            expected.update(cluster.write_many(2, start=100))
            self.assertTrue(cluster.run_until(cluster.converged))
        for i in cluster.ids:
            self.assertEqual(cluster.data(i), expected)
        self.assertEqual(cluster.fatal, [])
        # Whether the crash came before the log's reset was durable (recovery resets it again).
        return any("does not continue the snapshot" in e.get("log_format", "") for e in events_logged)

    @slow
    def test_every_event(self) -> None:
        """Crashing at each event of an installation loses nothing and the follower converges."""
        for tear in (False, True):
            outcomes = set()
            for events in range(0, 24):
                with self.subTest(events=events, tear=tear):
                    outcomes.add(self.run_case(events, tear))
            # Crashes both before and after the reset became durable.
            self.assertEqual(outcomes, {True, False})
