# -*- test-case-name: tests.test_build -*-
"""
L{kvstore.node.build.build_node}, the one node builder: what it recovers from
storage, what it saves, and that the node it returns runs on its own.
"""

from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.build import HardStateStore, build_node
from kvstore.raft.config import RaftConfig
from kvstore.raft.core import HardState, Role
from kvstore.raft.messages import Message
from kvstore.storage import LogEntry, MemoryLog, MemoryMetadata, MetadataRecord


class _NoPeers:
    def send(self, message: Message) -> None:
        raise AssertionError("a one-node cluster sends nothing")


def _single(log: MemoryLog, metadata: MemoryMetadata, clock: Clock):  # type: ignore[no-untyped-def]
    return build_node(
        RaftConfig(0),
        clock=clock,
        rng=random.Random(0),
        log=log,
        metadata=metadata,
        cluster_id="c1",
        peers=_NoPeers(),
        member_addresses={0: "127.0.0.1:5000"},
    )


class BuildNodeTests(SynchronousTestCase):
    """A node built from in-memory storage and a Clock."""

    def test_recovers_term_vote_and_log(self) -> None:
        """The core starts from the stored term, vote and entries."""
        log = MemoryLog([LogEntry(1, 2, b""), LogEntry(2, 3, b"x")])
        metadata = MemoryMetadata(MetadataRecord(3, 0, "c1"))
        node = _single(log, metadata, Clock())
        self.assertEqual((node.core.term, node.core.voted_for), (3, 0))
        self.assertEqual(node.core.last_index, 2)
        self.assertEqual(node.core.term_at(2), 3)

    def test_runs_and_saves_with_the_cluster_id(self) -> None:
        """Started, the node elects itself and saves its vote with the cluster
        id; a write commits with no other help (the core wakes the node)."""
        clock = Clock()
        metadata = MemoryMetadata()
        node = _single(MemoryLog(), metadata, clock)
        node.start()
        clock.advance(0)
        clock.advance(0)
        self.assertIs(node.core.role, Role.LEADER)
        self.assertEqual(metadata.durable_state, MetadataRecord(node.core.term, 0, "c1"))
        done: list[object] = []
        node.put("k", "v").addBoth(done.append)
        clock.advance(0)
        clock.advance(0)
        self.assertEqual(done, [None])
        self.assertEqual(node.state_machine.get("k"), "v")
        node.stop()


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, message: Message) -> None:
        self.sent.append(message)


class WakeHookTests(SynchronousTestCase):
    """The built node is the core's wake hook: the core's own timers get its outputs sent."""

    def test_election_timer_sends_votes(self) -> None:
        """When the election timer fires, the vote requests go out without any other input."""
        clock = Clock()
        peers = _Recorder()
        config = RaftConfig(0, peers=(1, 2))
        node = build_node(
            config, clock=clock, rng=random.Random(0), log=MemoryLog(), metadata=MemoryMetadata(),
            cluster_id="c1", peers=peers, member_addresses={0: "a:1", 1: "b:1", 2: "c:1"},
        )
        node.start()
        clock.advance(0)
        self.assertEqual(peers.sent, [])
        clock.advance(config.election_timeout_max + 0.01)
        clock.advance(0)
        self.assertEqual(sorted(m.receiver for m in peers.sent), [1, 2])
        node.stop()


class HardStateStoreTests(SynchronousTestCase):
    """The metadata store as the node sees it."""

    def test_round_trip(self) -> None:
        """What is saved is loaded back as Raft's HardState, stored with the cluster id."""
        metadata = MemoryMetadata()
        store = HardStateStore(metadata, "c9")
        store.save(HardState(7, 2))
        self.assertEqual(metadata.state, MetadataRecord(7, 2, "c9"))
        self.assertEqual(HardStateStore(metadata, "c9").load(), HardState(7, 2))
