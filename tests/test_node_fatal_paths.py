# -*- test-case-name: tests.test_node_fatal_paths -*-
"""
Every bug-shaped exception in a node stops it as an internal failure (exit
69), not only one raised while handling the core's outputs: one raised in
handling a peer's message, in a Raft timer (election, heartbeat,
check-quorum) or in the timeout sweeper (issue 9 part 5, review).  Before,
these were logged by Twisted (or raised to the peer protocol) and the node
carried on; a leader whose heartbeat timer raised once never heartbeat again.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node import node as node_module
from kvstore.node.build import build_node
from kvstore.node.node import FailedPart, FatalError, Node
from kvstore.raft.config import RaftConfig
from kvstore.raft.core import Role
from kvstore.raft.messages import Message, RequestVoteResponse
from kvstore.storage import MemoryLog, MemoryMetadata


class _Bug(Exception):
    """Stands for a bug in the core or the node."""


def _raise_bug(*args: object, **kwargs: object) -> None:
    raise _Bug("planted")


class _Sent:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    def send(self, message: Message) -> None:
        self.messages.append(message)


class _ThreeMemberNode:
    """Node 0 of a three-member cluster on a fake clock, with in-memory
    storage; its log events, sent messages and fatal reports captured."""

    def __init__(self, test: SynchronousTestCase) -> None:
        self.events: list[dict[str, Any]] = []
        test.patch(Node, "log", Logger(namespace="kvstore.node.node", observer=self.events.append))
        self.clock = Clock()
        self.peers = _Sent()
        self.fatal: list[Failure] = []
        config = RaftConfig(0, peers=(1, 2), pre_vote=False)
        self.node = build_node(
            config,
            clock=self.clock,
            rng=random.Random(0),
            log=MemoryLog(),
            metadata=MemoryMetadata(),
            cluster_id="c",
            peers=self.peers,
            member_addresses={0: "127.0.0.1:5000", 1: "127.0.0.1:5001", 2: "127.0.0.1:5002"},
            on_fatal=self.fatal.append,
        )
        self.core = self.node.core
        self.node.start()
        self.settle()

    def settle(self) -> None:
        for _ in range(5):
            self.clock.advance(0)

    def elect(self) -> None:
        """Let the election timer fire and grant node 0 one vote."""
        self.clock.advance(self.core.config.election_timeout_max + 0.01)
        self.settle()
        self.node.receive(Message(1, 0, RequestVoteResponse(self.core.term, True, False)))
        self.settle()
        assert self.core.role is Role.LEADER, self.core.role

    def reported(self) -> FatalError:
        [failure] = self.fatal
        error = failure.value
        assert isinstance(error, FatalError), error
        return error

    def fatal_log_events(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("log_failure") is not None]


class FatalPathTests(SynchronousTestCase):
    """An exception outside the Ready loop still stops the node, as internal."""

    def _check_internal(self, n: _ThreeMemberNode, where: str) -> None:
        error = n.reported()
        self.assertIs(error.part, FailedPart.INTERNAL)
        self.assertIsInstance(error.failure.value, _Bug)
        [event] = n.fatal_log_events()
        self.assertEqual(event["where"], where)
        self.assertTrue(event["log_format"].startswith("internal error"), event["log_format"])

    def test_exception_in_step_is_internal_failure(self) -> None:
        """An exception from the core's handling of a peer's message stops the node."""
        n = _ThreeMemberNode(self)
        self.patch(n.core, "step", _raise_bug)
        n.node.receive(Message(2, 0, RequestVoteResponse(n.core.term, False, False)))
        self._check_internal(n, "handling a message from node 2")

    def test_exception_in_election_timer_is_internal_failure(self) -> None:
        """An exception in the core's election timer stops the node instead of reaching the reactor."""
        n = _ThreeMemberNode(self)
        self.patch(n.core, "_campaign", _raise_bug)
        n.clock.advance(n.core.config.election_timeout_max + 0.01)
        self._check_internal(n, "a Raft timer")

    def test_exception_in_heartbeat_timer_is_internal_failure(self) -> None:
        """An exception in a leader's heartbeat timer stops the node instead of silently ending its heartbeats."""
        n = _ThreeMemberNode(self)
        n.elect()
        self.patch(n.core, "_send_append", _raise_bug)
        n.clock.advance(n.core.config.heartbeat_interval)
        self._check_internal(n, "a Raft timer")

    def test_exception_in_check_quorum_is_internal_failure(self) -> None:
        """An exception in the check-quorum run by the heartbeat timer stops the node."""
        n = _ThreeMemberNode(self)
        n.elect()
        self.patch(n.core, "_check_quorum", _raise_bug)
        n.clock.advance(n.core.config.election_timeout_max + 0.01)
        self._check_internal(n, "a Raft timer")

    def test_exception_in_sweeper_is_internal_failure(self) -> None:
        """An exception in the timeout sweeper stops the node instead of ending the sweeps."""
        n = _ThreeMemberNode(self)
        # A bug: a pending read whose Deferred has already fired.
        done: Deferred[str] = Deferred()
        done.callback("v")
        n.node._pending_reads[7] = node_module._PendingRead("k", done, deadline=0.0)
        n.clock.advance(2.0)
        error = n.reported()
        self.assertIs(error.part, FailedPart.INTERNAL)
        [event] = n.fatal_log_events()
        self.assertEqual(event["where"], "the timeout sweeper")

    def test_message_after_fatal_is_ignored(self) -> None:
        """After a fail-stop the node hands no further message to the core."""
        n = _ThreeMemberNode(self)
        self.patch(n.core, "step", _raise_bug)
        n.node.receive(Message(2, 0, RequestVoteResponse(n.core.term, False, False)))
        n.node.receive(Message(2, 0, RequestVoteResponse(n.core.term, False, False)))
        self.assertEqual(len(n.fatal), 1)

    def test_exception_in_leadership_check_is_internal_failure(self) -> None:
        """An exception in the leadership check after a processing pass stops the node."""
        n = _ThreeMemberNode(self)
        self.patch(n.node, "_check_leadership", _raise_bug)
        n.node.wake()
        n.clock.advance(0)
        self._check_internal(n, "checking leadership")
