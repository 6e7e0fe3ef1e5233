# -*- test-case-name: tests.test_node_commit_index -*-
"""
The node saves a lower bound of the commit index in the metadata file
without adding an fsync to any write's path: with every term/vote save, on
a timer, and when the service stops; and never an index whose entries are
not yet durable in its log.
"""

from __future__ import annotations

import random

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.build import build_node
from kvstore.node.node import Node
from kvstore.raft.config import RaftConfig
from kvstore.raft.messages import AppendEntries, Message
from kvstore.statemachine import encode_put
from kvstore.storage import MemoryLog, MemoryMetadata


class HeldSyncLog(MemoryLog):
    """A memory log whose syncs complete only when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Deferred[int]] = []

    def sync(self, at_once: bool = False) -> "Deferred[int]":
        d: Deferred[int] = Deferred()
        self.held.append(d)
        return d

    def release(self) -> None:
        held, self.held = self.held, []
        for d in held:
            d.callback(super().sync().result)  # type: ignore[attr-defined]


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, message: Message) -> None:
        self.sent.append(message)


def single(clock: Clock, metadata: MemoryMetadata, interval: float = 1.0) -> Node:
    return build_node(
        RaftConfig(0), clock=clock, rng=random.Random(0), log=MemoryLog(), metadata=metadata, cluster_id="c",
        peers=Recorder(), member_addresses={0: "a:1"}, commit_save_interval=interval,
    )


def turn(clock: Clock, times: int = 3) -> None:
    for _ in range(times):
        clock.advance(0)


class PeriodicSaveTests(SynchronousTestCase):
    """The timer saves the commit index when it moved, and only then."""

    def test_saved_after_an_interval(self) -> None:
        """Writes commit; within one interval the metadata holds their commit index."""
        clock, metadata = Clock(), MemoryMetadata()
        node = single(clock, metadata)
        node.start()
        turn(clock)
        for i in range(5):
            node.put(f"k{i}", "v")
        turn(clock)
        commit = node.core.commit_index
        self.assertEqual(node.state_machine.applied_index, commit)
        saves = metadata.save_count
        clock.advance(1.0)
        self.assertEqual(metadata.durable_state.commit_index, commit)
        self.assertEqual(metadata.save_count, saves + 1)
        clock.advance(1.0)
        self.assertEqual(metadata.save_count, saves + 1)  # nothing moved: no save
        node.stop()

    def test_not_on_the_write_path(self) -> None:
        """A write commits and is acknowledged without any metadata save."""
        clock, metadata = Clock(), MemoryMetadata()
        node = single(clock, metadata, interval=0)
        node.start()
        turn(clock)
        saves = metadata.save_count
        done: list[object] = []
        node.put("k", "v").addBoth(done.append)
        turn(clock)
        self.assertEqual((done, metadata.save_count), ([None], saves))
        node.stop()

    def test_term_and_vote_saves_carry_it(self) -> None:
        """A later term/vote save carries the durable commit index too."""
        clock, metadata = Clock(), MemoryMetadata()
        node = single(clock, metadata, interval=0)
        node.start()
        turn(clock)
        node.put("k", "v")
        turn(clock)
        commit = node.core.commit_index
        self.assertEqual(metadata.durable_state.commit_index, 0)  # the vote was saved before anything committed
        node._save_hard_state(node._metadata._hard_state)  # type: ignore[attr-defined]
        self.assertEqual(metadata.durable_state.commit_index, commit)
        node.stop()

    def test_saved_when_stopping(self) -> None:
        """save_commit_index after stop (the service's shutdown) saves the final commit index."""
        clock, metadata = Clock(), MemoryMetadata()
        node = single(clock, metadata, interval=0)
        node.start()
        turn(clock)
        node.put("k", "v")
        turn(clock)
        node.stop()
        node.save_commit_index()
        self.assertEqual(metadata.durable_state.commit_index, node.core.commit_index)


class DurableOnlyTests(SynchronousTestCase):
    """The saved commit index never covers entries that are not durable in the log."""

    def test_commit_learnt_with_its_entries(self) -> None:
        """A follower that learns entries and their commit in one message saves that commit only once they are durable."""
        clock, metadata, log = Clock(), MemoryMetadata(), HeldSyncLog()
        node = build_node(
            RaftConfig(0, peers=(1, 2)), clock=clock, rng=random.Random(0), log=log, metadata=metadata,
            cluster_id="c", peers=Recorder(), member_addresses={0: "a:1", 1: "b:1", 2: "c:1"},
            commit_save_interval=0.5,
        )
        node.start()
        entries = tuple((i, 1, encode_put(f"k{i}", "v")) for i in range(1, 4))
        node.receive(Message(1, 0, AppendEntries(1, 0, 0, entries, 3)))
        turn(clock)
        self.assertEqual((node.core.commit_index, node.core.durable_index), (3, 0))
        for _ in range(4):  # the flush is held: however many intervals pass, 3 is not saved
            clock.advance(0.5)
        self.assertEqual(metadata.durable_state.commit_index, 0)
        log.release()
        turn(clock)
        self.assertEqual(node.core.durable_index, 3)
        clock.advance(0.5)
        self.assertEqual(metadata.durable_state.commit_index, 3)
        node.stop()
