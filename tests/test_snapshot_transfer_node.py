# -*- test-case-name: tests.test_snapshot_transfer_node -*-
"""
The snapshot transfer wired into real nodes with their snapshot handling
(build_node with a snapshot directory attaches it): a follower stopped while
the leader snapshotted and compacted its log gets the leader's snapshot
through the chunked transfer, the node installs it, and the follower
continues from the log with the leader's exact state.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.build import build_node
from kvstore.node.node import Node
from kvstore.node.snapshots import SnapshotPolicy
from kvstore.raft.config import RaftConfig
from kvstore.raft.messages import InstallSnapshot, Message, SnapshotChunk
from kvstore.node.snapshot_transfer import TransferRouter, run_now
from kvstore.storage import MemoryLog, MemoryMetadata
from kvstore.storage.snapshots import SnapshotStore, snapshot_name
from kvstore.testing.memory_cluster import CLUSTER_ID, InMemoryCluster
from tests.snapshot_support import DIRECTORY, ReadableSimulatedFileSystem


class SnapshottingCluster(InMemoryCluster):
    """An in-memory cluster whose nodes snapshot every 20 entries, keep no
    catch-up tail, and each have a snapshot directory on a simulated disk."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.disks: dict[int, ReadableSimulatedFileSystem] = {}
        self.stores: dict[int, SnapshotStore] = {}
        super().__init__(*args, **kwargs)

    def store(self, node_id: int) -> SnapshotStore:
        if node_id not in self.disks:
            fs = ReadableSimulatedFileSystem()
            fs.makedirs_durable("/data")
            self.disks[node_id] = fs
        self.stores[node_id] = SnapshotStore.open(DIRECTORY, self.disks[node_id])
        return self.stores[node_id]

    def start(self, node_id: int) -> Node:
        member = self.members[node_id]
        config = RaftConfig(
            node_id=node_id, peers=tuple(i for i in self.ids if i != node_id),
            heartbeat_interval=self._heartbeat_interval, election_timeout_min=self._election_timeout[0],
            election_timeout_max=self._election_timeout[1], **self._raft_options,
        )
        node = build_node(
            config, clock=self.clock, rng=random.Random(self.rng.random()), log=member.log,
            metadata=member.metadata, cluster_id=CLUSTER_ID, peers=self.network,
            member_addresses={i: f"127.0.0.1:{5000 + i}" for i in self.ids},
            snapshots=self.store(node_id), snapshot_policy=SnapshotPolicy(entries=20, catchup_entries=0),
            snapshot_runner=run_now,
        )
        member.node = node
        self.network.attach(node_id, node.receive)
        node.start()
        return node


class NodeTransferTests(SynchronousTestCase):
    """A lagging follower catches up through the snapshot transfer."""

    def test_follower_behind_the_compacted_log_catches_up_by_snapshot(self) -> None:
        """The follower gets the leader's snapshot file (identical), installs
        it, then has the leader's whole log and state; no InstallSnapshot
        went on the wire."""
        cluster = SnapshottingCluster(3, seed=4)
        on_wire: list[Message] = []
        cluster.network.on_send.append(on_wire.append)
        leader = cluster.wait_for_leader()
        lagging = next(i for i in cluster.ids if i != leader)
        cluster.crash(lagging)
        node = cluster.node(leader)
        with capturedLogs():
            for n in range(70):
                node.put(f"k{n}", f"v{n}" * 50)
                cluster.run(0.01)
            # Past two of the leader's snapshots (its indices depend on its
            # id: kvstore.node.snapshots.stagger_fraction).
            self.assertTrue(cluster.run_until(lambda: node.core.first_index > 30, timeout=5))
            cluster.start(lagging)
            follower = cluster.node(lagging)
            caught_up = cluster.run_until(
                lambda: follower.core.commit_index == node.core.commit_index
                and follower.state_machine.applied_index == node.state_machine.applied_index,
                timeout=20,
            )
        self.assertTrue(caught_up)
        self.assertGreater(follower.core.snapshot_index, 0)
        self.assertEqual(dict(follower.state_machine.items()), dict(node.state_machine.items()))
        self.assertEqual(len(dict(node.state_machine.items())), 70)
        router = node.transfers
        assert isinstance(router, TransferRouter)
        self.assertEqual(router.senders, {})
        self.assertFalse(any(isinstance(m.body, InstallSnapshot) for m in on_wire))
        chunks = [m.body for m in on_wire if isinstance(m.body, SnapshotChunk)]
        self.assertTrue(chunks)
        name = snapshot_name(chunks[0].index, chunks[0].snapshot_term)
        ours = cluster.stores[lagging]
        theirs = cluster.stores[leader]
        [mine] = [i for i in ours.list() if i.name == name]
        [original] = [i for i in theirs.list() if i.name == name]
        self.assertEqual(ours.verify(mine).digest, theirs.verify(original).digest)


class BuildWiringTests(SynchronousTestCase):
    """build_node attaches the transfer to a node with a snapshot directory."""

    def test_build_node_with_snapshots_attaches_the_transfer(self) -> None:
        """With a snapshot store the node gets a router that joins the peers'
        unsendable observers and protects what it sends in the node's
        snapshots; without one, no router."""

        class Peers:
            def __init__(self) -> None:
                self.sent: list[Message] = []
                self.unsendable: list[Any] = []

            def send(self, message: Message) -> None:
                self.sent.append(message)

        fs = ReadableSimulatedFileSystem()
        fs.makedirs_durable("/data")
        store = SnapshotStore.open(DIRECTORY, fs)
        peers = Peers()

        def build(**extra: Any) -> Node:
            return build_node(
                RaftConfig(1, peers=(2,)), clock=Clock(), rng=random.Random(0), log=MemoryLog(),
                metadata=MemoryMetadata(), cluster_id="c1", peers=peers,
                member_addresses={1: "127.0.0.1:5001", 2: "127.0.0.1:5002"}, **extra,
            )

        self.assertIsNone(build().transfers)
        node = build(snapshots=store, snapshot_runner=run_now)
        router = node.transfers
        assert isinstance(router, TransferRouter)
        self.assertEqual(peers.unsendable, [router.unsendable])
        from tests.snapshot_support import content_for, write_snapshot

        write_snapshot(store, 1, 1, content_for(1, 100))
        node._snapshot_offers.offer(Message(1, 2, InstallSnapshot(1, 1, 1)))
        self.assertTrue(peers.sent and all(isinstance(m.body, SnapshotChunk) for m in peers.sent))
        self.assertIn(snapshot_name(1, 1), node._snapshots.protected)  # type: ignore[union-attr]
