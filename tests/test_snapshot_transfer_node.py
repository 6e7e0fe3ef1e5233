# -*- test-case-name: tests.test_snapshot_transfer_node -*-
"""
The snapshot transfer wired into real nodes (L{attach_transfers}): the
leader's core offers its snapshot to a follower whose next entry was
compacted away, the node hands the offer to the transfer instead of the
wire, the follower's node routes the chunks to its receiver and steps its
core once the file is installed, and the core's acknowledgement ends the
transfer, after which the follower continues from the log.

The state machine side of an install (replacing the content, resetting the
log) belongs to the node's own snapshot handling, built on another branch;
here a stand-in restores the state machine from the installed file and
resets the follower's in-memory log.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node import Node
from kvstore.raft.core import Ready
from kvstore.raft.messages import InstallSnapshot, Message, SnapshotChunk
from kvstore.snapshot_transfer import TransferRouter, attach_transfers
from kvstore.storage import MemoryLog
from kvstore.storage.snapshots import SnapshotStore, snapshot_name
from kvstore.testing.memory_cluster import InMemoryCluster
from tests.snapshot_support import DIRECTORY, ReadableSimulatedFileSystem, content_for, write_snapshot


def stand_in_install(node: Node, log: MemoryLog, store: SnapshotStore) -> None:
    """What the node's snapshot handling does with C{Ready.install_snapshot}:
    replace the state machine with the file's content, continue the log
    after the snapshot."""
    original = node._handle_ready

    def handle(ready: Ready) -> None:
        point = ready.install_snapshot
        if point is not None:
            [info] = [i for i in store.list() if (i.index, i.term) == (point.index, point.term)]
            node.state_machine.restore(point.index, store.read_content(info))
            log._entries.clear()
            log._first_index = point.index + 1
            log._durable_index = point.index
        original(ready)

    node._handle_ready = handle  # type: ignore[method-assign]


class NodeTransferTests(SynchronousTestCase):
    """A lagging follower catches up through the snapshot transfer."""

    def setUp(self) -> None:
        self.cluster = InMemoryCluster(3, seed=4)
        self.stores: dict[int, SnapshotStore] = {}
        self.routers: dict[int, TransferRouter] = {}
        self.reports: list[tuple[int, int, bool]] = []
        for i in self.cluster.ids:
            fs = ReadableSimulatedFileSystem()
            fs.makedirs_durable("/data")
            self.stores[i] = SnapshotStore.open(DIRECTORY, fs)
            self.attach(i)
        self.on_wire: list[Message] = []
        self.cluster.network.on_send.append(self.on_wire.append)

    def attach(self, node_id: int) -> TransferRouter:
        node = self.cluster.node(node_id)
        router = attach_transfers(node, self.stores[node_id], self.cluster.network, self.cluster.clock, chunk_bytes=256)
        report = router._report

        def recorded(follower: int, ok: bool) -> None:
            self.reports.append((node_id, follower, ok))
            report(follower, ok)

        router._report = recorded  # type: ignore[method-assign]
        self.routers[node_id] = router
        return router

    def test_follower_behind_the_compacted_log_catches_up_by_snapshot(self) -> None:
        """A follower stopped while the leader wrote and compacted gets the
        snapshot file (identical), its core installs it, the leader is told
        the transfer is done, the follower then has the leader's whole log,
        and no InstallSnapshot ever went on the wire."""
        cluster = self.cluster
        leader = cluster.wait_for_leader()
        lagging = next(i for i in cluster.ids if i != leader)
        cluster.crash(lagging)
        node = cluster.node(leader)
        for n in range(40):
            node.put(f"k{n}", f"v{n}")
        self.assertTrue(cluster.run_until(lambda: node.core.applied == node.core.last_index, timeout=5))
        index = node.core.applied
        term = node.core.term_at(index)
        info = write_snapshot(self.stores[leader], index, term, node.state_machine.snapshot())
        node.core.snapshot_taken(index, term)
        node.core.compact(index)
        node.put("after", "snapshot")

        cluster.start(lagging)
        self.attach(lagging)
        follower = cluster.node(lagging)
        stand_in_install(follower, cluster.members[lagging].log, self.stores[lagging])
        with capturedLogs():
            caught_up = cluster.run_until(
                lambda: follower.core.last_index == node.core.last_index and follower.core.commit_index == node.core.commit_index,
                timeout=20,
            )
        self.assertTrue(caught_up)
        self.assertEqual(follower.core.snapshot_index, index)
        self.assertEqual(self.reports, [(leader, lagging, True)])
        installed = self.stores[lagging].verify(self.stores[lagging].list()[0])
        self.assertEqual((installed.name, installed.digest), (snapshot_name(index, term), info.digest))
        self.assertEqual(self.routers[leader].senders, {})
        self.assertFalse(any(isinstance(m.body, InstallSnapshot) for m in self.on_wire))
        chunk_offsets = {m.body.offset for m in self.on_wire if isinstance(m.body, SnapshotChunk)}
        assert installed.size is not None
        self.assertEqual(len(chunk_offsets), -(-installed.size // 256))
        self.assertGreater(len(chunk_offsets), 2)
        self.assertEqual(cluster.data_of(lagging), cluster.data_of(leader))
        self.assertEqual(len(cluster.data_of(lagging)), 41)

    def test_deposed_leader_stops_sending(self) -> None:
        """A sender whose node no longer leads in its term ends quietly at
        its next timer: no report, file unprotected."""
        cluster = self.cluster
        leader = cluster.wait_for_leader()
        lagging = next(i for i in cluster.ids if i != leader)
        node = cluster.node(leader)
        index = node.core.applied
        write_snapshot(self.stores[leader], index, node.core.term_at(index), content_for(index, 30_000))
        cluster.network.blocked.add((leader, lagging))
        router = self.routers[leader]
        with capturedLogs() as events:
            router.send_snapshot(lagging, node.core.term, index, node.core.term_at(index))
            self.assertIn(lagging, router.senders)
            node.core._become_follower(node.core.term + 1, None)  # what a higher term does
            cluster.run(3.0)
        self.assertEqual(router.senders, {})
        self.assertEqual(self.reports, [])
        self.assertTrue(any("no longer leads" in str(e.get("why")) for e in events))

    def test_chunks_never_reach_the_core(self) -> None:
        """The node hands chunks to its router: a stray chunk from a
        non-leader changes nothing in the core and does not stop the node."""
        cluster = self.cluster
        leader = cluster.wait_for_leader()
        other = next(i for i in cluster.ids if i != leader)
        core = cluster.node(other).core
        before = (core.term, core.commit_index, core.last_index)
        stray: Any = SnapshotChunk(core.term, 5, 1, 100, 0, b"x")
        with capturedLogs():
            cluster.node(other).receive(Message(next(i for i in cluster.ids if i not in (leader, other)), other, stray))
        self.assertEqual((core.term, core.commit_index, core.last_index), before)
        self.assertFalse(cluster.node(other)._failed)


class BuildWiringTests(SynchronousTestCase):
    """build_node attaches the transfer when given a snapshot store."""

    def test_build_node_with_a_transfer_store(self) -> None:
        """With transfer_store the node gets a router that sends through the
        node's peers and joins their unsendable observers; without, none."""
        import random

        from twisted.internet.task import Clock

        from kvstore.build import build_node
        from kvstore.raft.config import RaftConfig
        from kvstore.storage import MemoryMetadata

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
        node = build(transfer_store=store)
        router = node.transfers
        assert isinstance(router, TransferRouter)
        self.assertEqual(peers.unsendable, [router.unsendable])
        write_snapshot(store, 1, 1, content_for(1, 100))
        self.assertTrue(router.offer(Message(1, 2, InstallSnapshot(1, 1, 1))))
        self.assertTrue(peers.sent and all(isinstance(m.body, SnapshotChunk) for m in peers.sent))

    def test_uses_the_node_snapshot_hooks_when_the_node_has_them(self) -> None:
        """With a node that has the node branch's snapshot hooks
        (snapshot_store, set_snapshot_offers, protect/release_snapshot,
        report_snapshot, step_installed_snapshot), attach_transfers goes
        through them rather than the core."""
        import random

        from twisted.internet.task import Clock

        from kvstore.build import build_node
        from kvstore.raft.config import RaftConfig
        from kvstore.storage import MemoryMetadata

        fs = ReadableSimulatedFileSystem()
        fs.makedirs_durable("/data")
        store = SnapshotStore.open(DIRECTORY, fs)
        sent: list[Message] = []

        class Peers:
            def send(self, message: Message) -> None:
                sent.append(message)

        node = build_node(
            RaftConfig(1, peers=(2,)), clock=Clock(), rng=random.Random(0), log=MemoryLog(),
            metadata=MemoryMetadata(), cluster_id="c1", peers=Peers(),
            member_addresses={1: "127.0.0.1:5001", 2: "127.0.0.1:5002"},
        )
        calls: list[tuple[Any, ...]] = []
        offers: list[Any] = []
        hooks: dict[str, Any] = dict(
            snapshot_store=store,
            set_snapshot_offers=offers.append,
            protect_snapshot=lambda name: calls.append(("protect", name)),
            release_snapshot=lambda name: calls.append(("release", name)),
            report_snapshot=lambda follower, ok: calls.append(("report", follower, ok)),
            step_installed_snapshot=lambda *a: calls.append(("installed", *a)),
        )
        for name, value in hooks.items():
            setattr(node, name, value)
        router = attach_transfers(node)
        self.assertIs(node.transfers, router)
        [plugged] = offers
        write_snapshot(store, 1, 1, content_for(1, 100))
        plugged.offer(Message(1, 2, InstallSnapshot(1, 1, 1)))
        name = snapshot_name(1, 1)
        self.assertEqual(calls, [("protect", name)])
        self.assertTrue(sent and isinstance(sent[0].body, SnapshotChunk))
        router.unsendable(sent[0])
        self.assertEqual(calls, [("protect", name), ("release", name), ("report", 2, False)])
        router.receiver._installed(2, 1, 1, 1)
        self.assertEqual(calls[-1], ("installed", 2, 1, 1, 1))
