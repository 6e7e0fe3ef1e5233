# -*- test-case-name: tests.test_node_snapshots_install -*-
"""
How a node handles C{Ready.install_snapshot} (the core's ordering rule:
first, before anything else in the batch), and the hooks the snapshot
transfer plugs into: offers, message routes, protection, reports.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.build import build_node
from kvstore.node.node import Node
from kvstore.node.snapshots import SnapshotPolicy
from kvstore.raft.config import RaftConfig
from kvstore.raft.messages import AppendEntries, AppendEntriesResponse, InstallSnapshot, Message
from kvstore.node.snapshotting import snapshot_cooperator
from kvstore.statemachine import KeyValueStateMachine, encode_put
from kvstore.storage import LogEntry, MemoryLog, MemoryMetadata, MetadataRecord
from kvstore.storage.snapshots import CorruptSnapshotError, SnapshotMeta
from kvstore.testing.runners import ManualRunner, run_now

from tests.snapshot_support import simulated_store


class RecordingLog(MemoryLog):
    """A memory log that records the node's calls and holds syncs until released."""

    def __init__(self, entries: list[LogEntry]) -> None:
        self.calls: list[str] = []
        self.held: list[Deferred[int]] = []
        super().__init__(entries)
        self.calls.clear()

    def append(self, entries: Any) -> None:
        if entries:
            self.calls.append(f"append {entries[0][0]}..{entries[-1][0]}")
        super().append(entries)

    def reset_after(self, index: int, term: int) -> None:
        self.calls.append(f"reset {index} {term}")
        super().reset_after(index, term)

    def sync(self, at_once: bool = False) -> "Deferred[int]":
        self.calls.append("sync")
        d: Deferred[int] = Deferred()
        self.held.append(d)
        return d

    def release(self) -> None:
        held, self.held = self.held, []
        for d in held:
            d.callback(MemoryLog.sync(self).result)  # type: ignore[attr-defined]


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, message: Message) -> None:
        self.sent.append(message)


def leader_state(last: int) -> KeyValueStateMachine:
    machine = KeyValueStateMachine()
    for i in range(1, last + 1):
        machine.apply(i, encode_put(f"k{i % 4}", f"leader{i}"))
    return machine


class Follower:
    """Node 0 of three, with an old log and a snapshot received from leader 1 at index 10, term 2."""

    def __init__(self, runner: Any = run_now) -> None:
        self.clock = Clock()
        self.fs, self.store = simulated_store()
        self.log = RecordingLog([LogEntry(i, 1, encode_put("old", str(i))) for i in range(1, 4)])
        self.peers = Recorder()
        self.node: Node = build_node(
            RaftConfig(0, peers=(1, 2)), clock=self.clock, rng=random.Random(0), log=self.log,
            metadata=MemoryMetadata(MetadataRecord(1, None, "c")), cluster_id="c", peers=self.peers,
            member_addresses={0: "a:1", 1: "b:1", 2: "c:1"}, snapshots=self.store,
            snapshot_policy=SnapshotPolicy(entries=1000), snapshot_runner=runner,
            cooperator=snapshot_cooperator(self.clock, max_steps=1),
        )
        self.node.start()
        # Received from the leader after start-up (the transfer's job).
        writer = self.store.begin(SnapshotMeta(10, 2, cluster_id="c", membership={}))
        self.leader_state = leader_state(10)
        writer.write(self.leader_state.snapshot())
        writer.finish()

    def run(self, turns: int = 200) -> None:
        for _ in range(turns):
            self.clock.advance(0)


class OrderingTests(SynchronousTestCase):
    """The install comes first; the rest of the batch, and its acknowledgement, after it."""

    def test_install_then_the_batch(self) -> None:
        """The state machine is replaced, then the log reset, then the batch's entries appended, then synced; the acknowledgement leaves only once that sync is done."""
        follower = Follower()
        node, log = follower.node, follower.log
        log.calls.clear()
        with capturedLogs():
            node.step_installed_snapshot(1, 2, 10, 2)
            node.receive(Message(1, 0, AppendEntries(2, 10, 2, ((11, 2, encode_put("k1", "after")),), 11)))
            self.assertEqual(log.calls, [])  # nothing before the processing pass
            follower.run()
        self.assertEqual(log.calls[:3], ["reset 10 2", "append 11..11", "sync"])
        acks = [m for m in follower.peers.sent if isinstance(m.body, AppendEntriesResponse)]
        self.assertEqual(acks, [])
        expected = follower.leader_state.items()
        expected["k1"] = "after"
        self.assertEqual(node.state_machine.items(), expected)
        self.assertEqual(node.state_machine.applied_index, 11)
        log.release()
        follower.run(5)
        acks = [m.body for m in follower.peers.sent if isinstance(m.body, AppendEntriesResponse)]
        self.assertTrue(acks and all(a.success for a in acks))
        self.assertEqual(max(a.index for a in acks), 11)
        self.assertEqual((log.first_index, log.last_index), (11, 11))

    def test_no_later_batch_while_installing(self) -> None:
        """While the snapshot is being restored, no other batch is handled: messages wait in the core."""
        runner = ManualRunner()
        follower = Follower(runner)
        node, log = follower.node, follower.log
        with capturedLogs():
            node.step_installed_snapshot(1, 2, 10, 2)
            follower.run()
            self.assertIsNotNone(node._installing)  # verifying the file, on the held storage thread
            log.calls.clear()
            node.receive(Message(1, 0, AppendEntries(2, 10, 2, ((11, 2, encode_put("k1", "after")),), 11)))
            follower.run()
            self.assertEqual(log.calls, [])
            self.assertEqual(node.state_machine.applied_index, 0)
            runner.immediate = True
            runner.release_all()
            follower.run()
        self.assertIsNone(node._installing)
        self.assertEqual(log.calls[0], "reset 10 2")
        self.assertIn("append 11..11", log.calls)
        self.assertEqual(node.state_machine.applied_index, 11)

    def test_damaged_file_stops_the_node(self) -> None:
        """A snapshot file that no longer verifies when it is installed stops the node (storage failure)."""
        follower = Follower()
        fatal: list[Any] = []
        follower.node._on_fatal = fatal.append
        info = follower.store.list()[0]
        fd = follower.fs.open_rw(info.path)
        follower.fs.pwrite_all(fd, b"\x00" * 8, 60)
        with capturedLogs():
            follower.node.step_installed_snapshot(1, 2, 10, 2)
            follower.run()
        self.flushLoggedErrors(CorruptSnapshotError)
        self.assertEqual(len(fatal), 1)
        self.assertEqual(fatal[0].value.part.value, "storage")
        self.assertEqual(follower.log.calls.count("reset 10 2"), 0)


class HookTests(SynchronousTestCase):
    """What the snapshot transfer plugs into."""

    def test_routes(self) -> None:
        """A routed body type goes to its handler, never to the core."""
        follower = Follower()
        got: list[Message] = []
        follower.node.route(AppendEntries, got.append)
        message = Message(1, 0, AppendEntries(9, 0, 0, (), 0))
        follower.node.receive(message)
        self.assertEqual(got, [message])
        self.assertEqual(follower.node.core.term, 1)

    def test_protect_and_release(self) -> None:
        """Protected names are kept from pruning until released as often."""
        follower = Follower()
        follower.node.protect_snapshot("a")
        self.assertEqual(follower.node._snapshots.protected, frozenset({"a"}))  # type: ignore[union-attr]
        follower.node.release_snapshot("a")
        self.assertEqual(follower.node._snapshots.protected, frozenset())  # type: ignore[union-attr]
        self.assertIs(follower.node.snapshot_store, follower.store)
        self.assertIs(follower.node.snapshot_runner, run_now)

    def test_offers_go_to_the_transfer(self) -> None:
        """An InstallSnapshot the core emits goes to the offers object, never to the peers."""
        follower = Follower()
        offers: list[Message] = []

        class Offers:
            def offer(self, message: Message) -> None:
                offers.append(message)

        follower.node.set_snapshot_offers(Offers())
        follower.node.core._messages.append(Message(0, 2, InstallSnapshot(1, 10, 2)))
        follower.node.wake()
        follower.run(3)
        self.assertEqual([m.receiver for m in offers], [2])
        self.assertFalse(any(isinstance(m.body, InstallSnapshot) for m in follower.peers.sent))
