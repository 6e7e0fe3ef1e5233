# -*- test-case-name: tests.test_node_unsendable_stepdown -*-
"""
When a leader steps down because its followers are stuck behind an entry
too large for any peer message (issue 9 part 5), the node's clients are told
at once: a write waiting to commit fails with an unknown outcome (it may yet
commit under another leader) and a read waiting for leadership confirmation
fails as unavailable; the node does not stop.
"""

from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.build import build_node
from kvstore.errors import OutcomeUnknown, Unavailable
from kvstore.raft.config import RaftConfig
from kvstore.raft.core import Role
from kvstore.raft.messages import AppendEntries, AppendEntriesResponse, Message, RequestVoteResponse
from kvstore.storage import LogEntry, MemoryLog, MemoryMetadata

_BIG = b"x" * 500  # over the 200-byte limit below


class _Sent:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    def send(self, message: Message) -> None:
        self.messages.append(message)


class UnsendableStepDownClientsTests(SynchronousTestCase):
    """A step-down for an unsendable entry fails the node's waiting clients."""

    def test_waiting_write_and_read_fail(self) -> None:
        """The pending write gets OutcomeUnknown and the pending read Unavailable when the leader steps down."""
        clock = Clock()
        entries = [LogEntry(1, 1, b""), LogEntry(2, 1, _BIG)]
        config = RaftConfig(0, peers=(1, 2), pre_vote=False, max_append_bytes=100, max_entries_bytes=200)
        sent = _Sent()
        fatal: list[object] = []
        node = build_node(
            config, clock=clock, rng=random.Random(0), log=MemoryLog(entries), metadata=MemoryMetadata(),
            cluster_id="c", peers=sent, member_addresses={0: "a:1", 1: "a:2", 2: "a:3"}, on_fatal=fatal.append,
        )
        core = node.core
        node.start()

        def settle() -> None:
            for _ in range(5):
                clock.advance(0)

        clock.advance(config.election_timeout_max + 0.01)
        settle()
        node.receive(Message(1, 0, RequestVoteResponse(core.term, True, False)))
        settle()
        self.assertIs(core.role, Role.LEADER)
        write = node.put("k", "v")
        read = node.get("k")
        settle()
        results: dict[str, object] = {}
        write.addBoth(lambda r: results.update(write=r))
        read.addBoth(lambda r: results.update(read=r))
        # Both followers lack entry 2: each refuses the probe, is backed
        # off to index 2, and is found stuck there.
        probes = [m for m in sent.messages if isinstance(m.body, AppendEntries)]
        for follower in (1, 2):
            prev = [m.body for m in probes if m.receiver == follower][0].prev_log_index
            node.receive(Message(follower, 0, AppendEntriesResponse(core.term, False, prev, 2, 0, 0)))
            settle()
        self.assertIs(core.role, Role.FOLLOWER)
        self.assertIsInstance(results["write"].value, OutcomeUnknown)
        self.assertIsInstance(results["read"].value, Unavailable)
        self.assertEqual(fatal, [])
