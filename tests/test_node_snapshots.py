# -*- test-case-name: tests.test_node_snapshots -*-
"""
L{kvstore.node.snapshots}: the snapshot trigger, taking and pruning
snapshots (protected ones kept), and restoring a received snapshot into the
state machine a chunk per reactor turn.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock, Cooperator
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.snapshots import RESTORE_CHUNK, NodeSnapshots, SnapshotPolicy
from kvstore.node.snapshotting import snapshot_cooperator, turn_limit
from kvstore.statemachine import InvalidSnapshotContent, KeyValueStateMachine, encode_put
from kvstore.storage.snapshots import CorruptSnapshotError, SnapshotMeta
from kvstore.testing.runners import run_now

from tests.snapshot_support import simulated_store


def machine_with(keys: int, start: int = 0, value: str = "v") -> KeyValueStateMachine:
    machine = KeyValueStateMachine()
    for i in range(keys):
        machine.apply(i + 1, encode_put(f"k{start + i}", value))
    return machine


def meta_for(index: int) -> SnapshotMeta:
    return SnapshotMeta(index, 1, cluster_id="c", membership={})


class Harness:
    def __init__(self, policy: SnapshotPolicy = SnapshotPolicy()) -> None:
        self.clock = Clock()
        self.fs, self.store = simulated_store()
        self.snapshots = NodeSnapshots(self.store, policy, run_now, snapshot_cooperator(self.clock, max_steps=1))

    def run(self, limit: int = 100_000) -> int:
        """Advance the clock until nothing is scheduled; return the turns taken."""
        turns = 0
        while self.clock.getDelayedCalls() and turns < limit:
            self.clock.advance(max(0.0, min(c.getTime() for c in self.clock.getDelayedCalls()) - self.clock.seconds()))
            turns += 1
        return turns

    def take(self, machine: KeyValueStateMachine) -> Any:
        results: list[object] = []
        self.snapshots.take(machine, meta_for).addBoth(results.append)
        self.run()
        return results[0]


class TriggerTests(SynchronousTestCase):
    """A snapshot is due after enough entries or bytes, whichever first, and never while one runs."""

    def test_entries(self) -> None:
        """Due once the applied index is the policy's entries past the last snapshot."""
        snapshots = Harness(SnapshotPolicy(entries=10)).snapshots
        snapshots.index = 5
        self.assertFalse(snapshots.due(14))
        self.assertTrue(snapshots.due(15))

    def test_bytes(self) -> None:
        """Due once the applied log's bytes (payloads plus record headers) reach the policy's bytes."""
        snapshots = Harness(SnapshotPolicy(entries=1000, bytes=1000)).snapshots
        snapshots.note_applied(payload_bytes=900, entries=3)
        self.assertFalse(snapshots.due(3))
        snapshots.note_applied(payload_bytes=4, entries=1)
        self.assertTrue(snapshots.due(4))

    def test_not_while_busy(self) -> None:
        """While a snapshot runs, none is due, and the count starts over from the snapshot taken."""
        harness = Harness(SnapshotPolicy(entries=3))
        machine = machine_with(5)
        results: list[object] = []
        harness.snapshots.take(machine, meta_for).addBoth(results.append)
        self.assertFalse(harness.snapshots.due(100))
        harness.run()
        self.assertEqual(harness.snapshots.index, 5)
        self.assertFalse(harness.snapshots.due(7))
        self.assertTrue(harness.snapshots.due(8))

    def test_compact_through(self) -> None:
        """The log is kept from catch-up entries before the snapshot."""
        snapshots = Harness(SnapshotPolicy(catchup_entries=40)).snapshots
        self.assertEqual(snapshots.compact_through(100), 60)

    def test_policy_validates(self) -> None:
        """Zero entries or bytes, negative catch-up, or keeping no snapshot are refused."""
        for bad in ({"entries": 0}, {"bytes": 0}, {"catchup_entries": -1}, {"keep": 0}):
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                SnapshotPolicy(**bad)  # type: ignore[arg-type]


class TakeAndPruneTests(SynchronousTestCase):
    """Taken snapshots are durable files; pruning keeps the newest and the protected."""

    def test_take(self) -> None:
        """The snapshot is written, durable and verified, at the machine's applied index."""
        harness = Harness()
        info = harness.take(machine_with(50))
        self.assertEqual(info.index, 50)
        self.assertEqual(harness.store.verify(info).digest, info.digest)
        self.assertIsNone(harness.snapshots.busy)

    def test_prune_keeps_the_newest_and_the_protected(self) -> None:
        """Of four snapshots, the two newest stay, and a protected older one until released."""
        harness = Harness()
        infos = [harness.take(machine_with(n)) for n in (10, 20, 30, 40)]
        harness.snapshots.protect(infos[0].name)
        harness.snapshots.protect(infos[0].name)
        deleted: list[object] = []
        harness.snapshots.prune().addCallback(deleted.append)
        self.assertEqual(deleted, [[infos[1].name]])
        harness.snapshots.release(infos[0].name)
        harness.snapshots.prune().addCallback(deleted.append)
        self.assertEqual(deleted[-1], [])
        harness.snapshots.release(infos[0].name)
        self.assertEqual(harness.snapshots.protected, frozenset())
        harness.snapshots.prune().addCallback(deleted.append)
        self.assertEqual(deleted[-1], [infos[0].name])
        self.assertEqual([i.index for i in harness.store.list()], [40, 30])


class RestoreTests(SynchronousTestCase):
    """A received snapshot replaces the state machine, a chunk per turn, or changes nothing."""

    def test_restore_over_several_turns(self) -> None:
        """The whole state is replaced at the snapshot's index, decoding one chunk per reactor turn."""
        harness = Harness()
        source = machine_with(30_000, value="x" * 100)
        info = harness.take(source)
        self.assertGreater(info.content_length, 10 * RESTORE_CHUNK)
        target = machine_with(3, start=90_000)
        turns: list[int] = []
        cooperator = Cooperator(
            terminationPredicateFactory=turn_limit(harness.clock, 1.0, 1),
            scheduler=lambda work: (turns.append(1), harness.clock.callLater(0, work))[1],
        )
        snapshots = NodeSnapshots(harness.store, SnapshotPolicy(), run_now, cooperator)
        results: list[object] = []
        snapshots.restore(target, info.index, info.term).addBoth(results.append)
        self.assertEqual(results, [])
        self.assertIsNotNone(snapshots.busy)
        self.assertEqual(len(target), 3)  # untouched until the whole content is decoded
        harness.run()
        # One step per turn, and a step reads or decodes at most one chunk.
        self.assertGreaterEqual(len(turns), 2 * (info.content_length // RESTORE_CHUNK))
        self.assertEqual(results, [30_000])
        self.assertEqual(target.items(), source.items())
        self.assertEqual((target.applied_index, snapshots.index), (30_000, 30_000))
        self.assertIsNone(snapshots.busy)

    def test_damaged_file(self) -> None:
        """A damaged file fails the restore, naming it, and the state machine is unchanged."""
        harness = Harness()
        info = harness.take(machine_with(20))
        data = bytearray(harness.fs.read_file(info.path))
        data[-40] ^= 1
        fd = harness.fs.create_truncate(info.path)
        harness.fs.pwrite_all(fd, bytes(data), 0)
        target = machine_with(2, start=500)
        results: list[Any] = []
        harness.snapshots.restore(target, info.index, info.term).addBoth(results.append)
        harness.run()
        self.assertTrue(results[0].check(CorruptSnapshotError))
        self.assertEqual((len(target), target.applied_index, harness.snapshots.index), (2, 2, 20))

    def test_invalid_content(self) -> None:
        """Content that is not kv/1 (its checksum right) fails the restore and changes nothing."""
        harness = Harness()
        writer = harness.store.begin(meta_for(9))
        writer.write(b"KVSM\x01\x05garbage")
        info = writer.finish()
        target = machine_with(2)
        results: list[Any] = []
        harness.snapshots.restore(target, info.index, info.term).addBoth(results.append)
        harness.run()
        self.assertTrue(results[0].check(InvalidSnapshotContent))
        self.assertEqual(target.applied_index, 2)
