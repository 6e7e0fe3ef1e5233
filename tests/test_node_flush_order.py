# -*- test-case-name: tests.test_node_flush_order -*-
"""
Tests for the order in which the node hands a batch to the network and to
storage: the batch's messages that need nothing durable are sent before its
entries go to the log and its flush starts, and acknowledgements still wait
for the flush.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.node import Node
from kvstore.raft.core import Ready
from kvstore.raft.messages import AppendEntries, AppendEntriesResponse, Message
from kvstore.statemachine import KeyValueStateMachine


class _Core:
    """Hands the node one prepared Ready, then nothing."""

    node_id = 0
    leader_id = 0
    term = 1

    def __init__(self, ready: Ready, calls: list[str]) -> None:
        self._ready: Ready | None = ready
        self._calls = calls
        self.role = None

    def start(self) -> None:
        pass

    def set_wake(self, wake: Any) -> None:
        pass

    def has_ready(self) -> bool:
        return self._ready is not None

    def ready(self) -> Ready:
        ready, self._ready = self._ready, None
        assert ready is not None
        return ready

    def persisted(self, index: int, term: int) -> None:
        self._calls.append("persisted")


class _Log:
    def __init__(self, calls: list[str]) -> None:
        self._calls = calls
        self.flushes: list[Deferred[int]] = []

    def append(self, entries: Any) -> None:
        self._calls.append("append")

    def truncate_suffix(self, from_index: int) -> None:
        raise AssertionError("not expected")

    def sync(self, at_once: bool = False) -> Deferred[int]:
        self._calls.append("flush")
        d: Deferred[int] = Deferred()
        self.flushes.append(d)
        return d


class _Peers:
    def __init__(self, calls: list[str]) -> None:
        self._calls = calls

    def send(self, message: Message) -> None:
        self._calls.append(f"send {type(message.body).__name__}")


class FlushOrderTests(SynchronousTestCase):
    def test_sends_go_before_the_flush_and_acks_wait_for_it(self) -> None:
        """A batch's messages are sent before its entries are appended and
        its WAL flush starts; the messages that need durability go only
        once the flush is done."""
        calls: list[str] = []
        ready = Ready(
            entries=[(1, 1, b"x")],
            persist_through=(1, 1),
            messages=[Message(0, 1, AppendEntries(1, 0, 0, ((1, 1, b"x"),), 0))],
            messages_after_persist=[Message(0, 2, AppendEntriesResponse(1, True, 1))],
        )
        log = _Log(calls)
        clock = Clock()
        node = Node(
            _Core(ready, calls),  # type: ignore[arg-type]
            log,
            None,  # type: ignore[arg-type]
            KeyValueStateMachine(),
            _Peers(calls),
            clock,
            member_addresses={},
        )
        node.wake()
        clock.advance(0)
        self.assertEqual(calls, ["send AppendEntries", "append", "flush"])
        log.flushes[0].callback(1)
        self.assertEqual(calls[3:], ["send AppendEntriesResponse", "persisted"])
