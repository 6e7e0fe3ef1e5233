# -*- test-case-name: tests.test_review_compaction -*-
"""
Adversarial review of issue 12's log compaction (found in review): races at
the compaction boundary between a node's own snapshots, installs of the
leader's snapshots and the Raft core.
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
from kvstore.raft.messages import AppendEntries, Message
from kvstore.node.snapshotting import snapshot_cooperator
from kvstore.statemachine import KeyValueStateMachine, encode_put
from kvstore.storage import LogEntry, MemoryLog, MemoryMetadata, MetadataRecord
from kvstore.storage.snapshots import SnapshotMeta
from kvstore.testing.runners import run_now

from tests.snapshot_support import simulated_store


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, message: Any) -> None:
        self.sent.append(message)


def _leader_state(last: int) -> KeyValueStateMachine:
    machine = KeyValueStateMachine()
    for i in range(1, last + 1):
        machine.apply(i, encode_put(f"k{i % 4}", f"leader{i}"))
    return machine


class _Follower:
    """Node 0 of three: entries 1..3 of term 1, all committed, a snapshot due
    after 3 applied entries; the leader's snapshot at index 10 term 2 on disk."""

    def __init__(self, runner: Any = run_now) -> None:
        self.clock = Clock()
        self.fs, self.store = simulated_store()
        self.log = MemoryLog([LogEntry(i, 1, encode_put("old", str(i))) for i in range(1, 4)])
        self.peers = _Recorder()
        self.fatal: list[Any] = []
        self.node: Node = build_node(
            RaftConfig(0, peers=(1, 2)), clock=self.clock, rng=random.Random(0), log=self.log,
            metadata=MemoryMetadata(MetadataRecord(1, None, "c", commit_index=3)), cluster_id="c",
            peers=self.peers, member_addresses={0: "a:1", 1: "b:1", 2: "c:1"}, snapshots=self.store,
            snapshot_policy=SnapshotPolicy(entries=3, catchup_entries=0), snapshot_runner=runner,
            cooperator=snapshot_cooperator(self.clock, max_steps=1, pause=0.001), on_fatal=self.fatal.append,
        )
        writer = self.store.begin(SnapshotMeta(10, 2, cluster_id="c", membership={}))
        self.leader_state = _leader_state(10)
        writer.write(self.leader_state.snapshot())
        writer.finish()

    def run(self, turns: int = 200) -> None:
        for _ in range(turns):
            self.clock.advance(0.001)


class LocalSnapshotMeetsInstallTests(SynchronousTestCase):
    """A local snapshot being taken while the core installs the leader's."""

    def test_install_stepped_right_after_the_freeze(self) -> None:
        """A leader's snapshot stepped into the core after the state machine was frozen for a local snapshot, but before the snapshot's first slice ran, neither stops the node nor loses the install."""
        follower = _Follower()
        node = follower.node
        with capturedLogs():
            node.start()
            follower.clock.advance(0)  # applies 1..3: the local snapshot is due and freezes
            self.assertEqual(node.state_machine.applied_index, 3)
            self.assertIsNotNone(node._snapshots.busy)
            node.step_installed_snapshot(1, 2, 10, 2)
            follower.run()
        self.assertEqual(follower.fatal, [])
        self.assertEqual(node.state_machine.applied_index, 10)
        self.assertEqual(node.state_machine.items(), follower.leader_state.items())

    def test_local_snapshot_ends_while_an_install_waits(self) -> None:
        """A local snapshot that becomes durable after the core took a leader's snapshot, but before the node handled it, neither stops the node (by starting another local snapshot of an index the core no longer holds) nor loses the install."""
        follower = _Follower()
        node = follower.node
        leader_state = _leader_state(20)
        writer = follower.store.begin(SnapshotMeta(20, 2, cluster_id="c", membership={}))
        writer.write(leader_state.snapshot())
        writer.finish()
        original = node._snapshot_done
        stepped: list[int] = []

        def install_arrives_first(info: Any, *args: Any) -> None:
            # The receiver's completion and the local snapshot's reach the
            # reactor in the same turn, the receiver's first.
            if not stepped:
                stepped.append(20)
                node.step_installed_snapshot(1, 2, 20, 2)
            original(info, *args)

        node._snapshot_done = install_arrives_first  # type: ignore[method-assign]
        with capturedLogs():
            node.start()
            follower.clock.advance(0)  # applies 1..3 and freezes for a snapshot at 3
            self.assertIsNotNone(node._snapshots.busy)
            entries = tuple((i, 2, encode_put("new", str(i))) for i in range(4, 7))
            node.receive(Message(1, 0, AppendEntries(2, 3, 1, entries, 6)))
            follower.clock.advance(0)  # applied into the overlay: a snapshot is due again at 6
            self.assertEqual(node.state_machine.applied_index, 6)
            follower.run()
        self.assertEqual(stepped, [20])
        self.assertEqual(follower.fatal, [])
        self.assertEqual(node.state_machine.applied_index, 20)
        self.assertEqual(node.state_machine.items(), leader_state.items())
