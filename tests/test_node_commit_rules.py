# -*- test-case-name: tests.test_node_commit_rules -*-
"""
Two rules of L{kvstore.node.node.Node} that the whole-cluster simulator rarely
reaches, driven here message by message (found by the mutation campaign,
C{kvstore.testing.mutation}: both bugs passed the suite):

  - a write is acknowledged only if the entry applied at its index is the
    one it proposed: when another leader's entry took that index, the
    client gets an unknown outcome, never a success;
  - a linearizable read is answered only once the state machine has applied
    the read index, not one entry earlier.

Node 1 of {1, 2, 3} runs on in-memory storage and a L{Clock}; the peers are
played by the test, which feeds it messages.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.build import build_node
from kvstore.errors import OutcomeUnknown
from kvstore.raft.config import RaftConfig
from kvstore.raft.core import Role
from kvstore.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Body,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVoteResponse,
)
from kvstore.statemachine import encode_put
from kvstore.storage.memory import MemoryLog, MemoryMetadata

TIMEOUT = (0.3, 0.6)


class RecordingPeers:
    """Keeps what the node sends, for the test to answer."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, message: Message) -> None:
        self.sent.append(message)


class NodeUnderTest:
    """Node 1 of a three-member cluster, on memory storage."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.peers = RecordingPeers()
        config = RaftConfig(1, (2, 3), heartbeat_interval=0.05, election_timeout_min=TIMEOUT[0],
                            election_timeout_max=TIMEOUT[1], pre_vote=False)
        self.node = build_node(
            config, clock=self.clock, rng=random.Random(1), log=MemoryLog(), metadata=MemoryMetadata(),
            cluster_id="test", peers=self.peers,
            member_addresses={1: "127.0.0.1:1", 2: "127.0.0.1:2", 3: "127.0.0.1:3"},
        )
        self.node.start()
        self.settle()

    def settle(self) -> None:
        """Run the processing passes that are due now (no time passes)."""
        for _ in range(10):
            self.clock.advance(0)

    def deliver(self, sender: int, body: Body) -> None:
        self.node.receive(Message(sender, 1, body))

    def become_leader(self) -> None:
        """Win term 1 and commit its no-op entry (index 1)."""
        self.clock.advance(TIMEOUT[1] + 0.01)
        self.settle()
        self.deliver(2, RequestVoteResponse(1, True, False))
        self.settle()
        assert self.node.core.role is Role.LEADER
        self.deliver(2, AppendEntriesResponse(1, True, 1))
        self.settle()
        assert self.node.core.commit_index == 1


def outcome(d: Deferred[Any]) -> list[Any]:
    box: list[Any] = []
    d.addBoth(box.append)
    return box


class ReplacedWriteTests(SynchronousTestCase):
    """A write whose log index another leader's entry took."""

    def test_write_replaced_by_another_leaders_entry_is_not_acknowledged(self) -> None:
        """A leader's pending write at index 2 is overwritten and committed,
        in one AppendEntries, by the entry of a new leader in a later term:
        the client gets an unknown outcome, not a success, and the value
        was never applied."""
        n = NodeUnderTest()
        n.become_leader()
        put = outcome(n.node.put("k", "v"))
        n.settle()
        self.assertEqual((n.node.core.last_index, put), (2, []))
        # Node 3 won term 2 with a log ending at index 1 and wrote its no-op
        # at index 2; it is committed (on 2 and 3) and sent with the commit.
        n.deliver(3, AppendEntries(2, 1, 1, ((2, 2, b""),), leader_commit=2))
        n.settle()
        self.assertEqual(n.node.state_machine.applied_index, 2)
        self.assertEqual(len(put), 1)
        self.assertIsInstance(put[0], Failure)
        self.assertIsInstance(put[0].value, OutcomeUnknown)
        self.assertIsNone(n.node.state_machine.get("k"))


class ReadAfterApplyTests(SynchronousTestCase):
    """A follower's linearizable read and its read index."""

    def test_read_waits_until_the_read_index_is_applied(self) -> None:
        """When the leader's read index is one entry ahead of what the
        follower applied, the read is answered only after that entry is
        applied, with the value it wrote."""
        n = NodeUnderTest()
        n.deliver(2, AppendEntries(1, 0, 0, ((1, 1, b""), (2, 1, encode_put("k", "v1"))), leader_commit=2))
        n.settle()
        self.assertEqual(n.node.state_machine.applied_index, 2)
        read = outcome(n.node.get("k"))
        n.settle()
        requests = [m.body for m in n.peers.sent if isinstance(m.body, ReadIndexRequest)]
        self.assertEqual(len(requests), 1)
        # The leader committed index 3 (a put of v2) before confirming the read.
        n.deliver(2, ReadIndexResponse(1, requests[0].request_id, 3))
        n.settle()
        self.assertEqual(read, [], "answered before the read index was applied")
        n.deliver(2, AppendEntries(1, 2, 1, ((3, 1, encode_put("k", "v2")),), leader_commit=3))
        n.settle()
        self.assertEqual(read, ["v2"])
