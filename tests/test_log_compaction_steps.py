# -*- test-case-name: tests.test_log_compaction_steps -*-
"""
Tests for the reactor's share of a snapshot being bounded per turn: the
log prefix a snapshot covers is dropped in bounded steps, one per reactor
turn (L{kvstore.node.log_compaction.StepwiseCompaction}, wired into
L{kvstore.node.node.Node}); the snapshot's encoding runs in short turns with
pauses between them (L{kvstore.node.snapshotting.TAKE_PAUSE}); installing one
decodes a bounded piece per step and frees the replaced map in slices.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.build import build_node
from kvstore.node.log_compaction import DEFAULT_STEP_ENTRIES, StepwiseCompaction
from kvstore.node.snapshots import RELEASE_SLICE, RESTORE_CHUNK, RESTORE_STEP, NodeSnapshots, SnapshotPolicy, release_in_slices
from kvstore.raft.config import RaftConfig
from kvstore.node.snapshotting import DEFAULT_TURN, TAKE_PAUSE, snapshot_cooperator, take_snapshot
from kvstore.statemachine import DEFAULT_SLICE_ENTRIES, ContentDecoder, KeyValueStateMachine, encode_put
from kvstore.storage import LogEntry, MemoryLog, MemoryMetadata, MetadataRecord
from kvstore.storage.snapshots import SnapshotMeta
from kvstore.testing.runners import run_now

from tests.snapshot_support import simulated_store


def _run_due_calls_one_by_one(clock: Clock, after_each: Any) -> int:
    """Run C{clock}'s calls due now one at a time (each is one reactor
    callback), calling C{after_each()} after each, until it returns true
    or none is due; the number run."""
    ran = 0
    while True:
        due = [c for c in clock.getDelayedCalls() if c.getTime() <= clock.seconds()]
        if not due:
            return ran
        call = min(due, key=lambda c: c.getTime())
        clock.calls.remove(call)
        call.called = 1
        call.func(*call.args, **call.kw)
        ran += 1
        if after_each():
            return ran


def _run_until_compacting(clock: Clock, node: Any) -> None:
    """Move C{clock} on a millisecond at a time, running its calls one by
    one, until the node's compaction has steps to come."""
    for _ in range(500):
        clock.rightNow += 0.001
        if _run_due_calls_one_by_one(clock, lambda: node.compaction.running) and node.compaction.running:
            return
    raise AssertionError("no compaction started")


class StepwiseCompactionTests(SynchronousTestCase):
    """The driver: bounded steps, one per clock callback, towards the highest target."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.first = 1
        self.steps: list[tuple[int, int]] = []
        self.finished: list[int] = []
        self.go_on = True
        self.compaction = StepwiseCompaction(
            self.clock, self.compact, lambda: self.first, self.finished.append, step_entries=100
        )

    def compact(self, through: int) -> bool:
        self.steps.append((self.first, through))
        self.first = through + 1
        return self.go_on

    def test_one_step_per_callback(self) -> None:
        """A request to drop 1,000 entries drops at most 100 now and at most 100 in each later clock callback, then reports the target."""
        self.compaction.request(1000)
        self.assertEqual(self.steps, [(1, 100)])
        self.assertTrue(self.compaction.running)
        sizes: list[int] = []
        ran = _run_due_calls_one_by_one(self.clock, lambda: sizes.append(self.first - 1))  # type: ignore[func-returns-value]
        self.assertEqual(ran, 9)
        self.assertEqual(sizes, list(range(200, 1001, 100)))
        self.assertTrue(all(through - first + 1 <= 100 for first, through in self.steps))
        self.assertEqual(self.finished, [1000])
        self.assertFalse(self.compaction.running)

    def test_a_later_request_extends_the_running_one(self) -> None:
        """A request made while steps are running raises their target instead of starting a second run."""
        self.compaction.request(300)
        self.compaction.request(450)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0)
        self.assertEqual(self.first, 451)
        self.assertEqual(self.finished, [450])

    def test_nothing_to_drop(self) -> None:
        """A target below the log's first index drops nothing and reports nothing."""
        self.first = 500
        self.compaction.request(300)
        self.assertEqual((self.steps, self.finished, self.clock.getDelayedCalls()), ([], [], []))

    def test_refused_step_abandons(self) -> None:
        """When the compact callable says stop (the node stopped or installs a snapshot), no further step is scheduled and nothing is reported."""
        self.go_on = False
        self.compaction.request(1000)
        self.assertEqual(self.steps, [(1, 100)])
        self.assertEqual((self.finished, self.clock.getDelayedCalls()), ([], []))

    def test_cancel(self) -> None:
        """Cancelling removes the pending step."""
        self.compaction.request(1000)
        self.compaction.cancel()
        self.clock.advance(1)
        self.assertEqual(self.steps, [(1, 100)])
        self.assertFalse(self.compaction.running)

    def test_invalid_step(self) -> None:
        """A step of fewer than one entry is refused."""
        self.assertRaises(ValueError, StepwiseCompaction, self.clock, self.compact, lambda: 1, print, step_entries=0)


class NodeCompactsInStepsTests(SynchronousTestCase):
    """A node drops the log after a snapshot in bounded steps across reactor turns."""

    ENTRIES = 3000
    STEP = 250

    def build(self) -> Any:
        self.clock = Clock()
        self.fs, self.store = simulated_store()
        self.log = MemoryLog([LogEntry(i, 1, encode_put(f"k{i % 50}", str(i))) for i in range(1, self.ENTRIES + 1)])
        self.fatal: list[Any] = []
        node = build_node(
            RaftConfig(0, peers=(1, 2)), clock=self.clock, rng=random.Random(0), log=self.log,
            metadata=MemoryMetadata(MetadataRecord(1, None, "c", commit_index=self.ENTRIES)), cluster_id="c",
            peers=_Discard(), member_addresses={0: "a:1", 1: "b:1", 2: "c:1"}, snapshots=self.store,
            snapshot_policy=SnapshotPolicy(entries=self.ENTRIES, catchup_entries=0), snapshot_runner=run_now,
            cooperator=snapshot_cooperator(self.clock, max_steps=8), on_fatal=self.fatal.append,
        )
        node.compaction.step_entries = self.STEP
        return node

    def test_compaction_after_a_snapshot_is_stepwise(self) -> None:
        """Once a snapshot of 3,000 applied entries is durable, the core's and the log's prefix go at most 250 entries per reactor callback, over at least 12 callbacks, and the segment deletions are synced after the last."""
        node = self.build()
        core_steps: list[int] = []
        wal_steps: list[int] = []
        original_compact, original_drop = node.core.compact, self.log.drop_prefix

        def compact(through: int) -> None:
            core_steps.append(through - node.core.first_index + 1)
            original_compact(through)

        def drop_prefix(upto: int) -> None:
            wal_steps.append(upto - self.log.first_index + 1)
            original_drop(upto)

        node.core.compact = compact  # type: ignore[method-assign]
        self.log.drop_prefix = drop_prefix  # type: ignore[method-assign]
        first_after_done: list[int] = []
        original_done = node._snapshot_done

        def snapshot_done(info: Any, *args: Any) -> None:
            original_done(info, *args)
            first_after_done.append(node.core.first_index)

        node._snapshot_done = snapshot_done  # type: ignore[method-assign]
        syncs: list[int] = []
        original_sync = self.log.sync

        def sync(at_once: bool = False) -> Any:
            syncs.append(node.core.first_index)
            return original_sync(at_once)

        self.log.sync = sync  # type: ignore[method-assign]
        with capturedLogs():
            node.start()
            for _ in range(200):
                self.clock.advance(0.001)
        self.assertEqual(self.fatal, [])
        self.assertEqual(node.state_machine.applied_index, self.ENTRIES)
        # The snapshot's own turn dropped one step only.
        self.assertEqual(first_after_done, [self.STEP + 1])
        self.assertEqual(node.core.first_index, self.ENTRIES + 1)
        self.assertEqual(sum(core_steps), self.ENTRIES)
        self.assertLessEqual(max(core_steps), self.STEP)
        self.assertGreaterEqual(len(core_steps), self.ENTRIES // self.STEP)
        self.assertLessEqual(max(wal_steps), self.STEP)
        # The deletions are made durable once, after the last step.
        self.assertIn(self.ENTRIES + 1, syncs)

    def test_each_step_is_its_own_callback(self) -> None:
        """Right after the snapshot is durable the log still holds all but one step; each later clock callback drops at most one more step."""
        node = self.build()
        seen: list[int] = []
        with capturedLogs():
            node.start()
            _run_until_compacting(self.clock, node)
            self.assertEqual(node.core.first_index, self.STEP + 1)
            _run_due_calls_one_by_one(self.clock, lambda: seen.append(node.core.first_index))
        drops = [b - a for a, b in zip([self.STEP + 1] + seen, seen)]
        self.assertLessEqual(max(drops), self.STEP)
        self.assertEqual(node.core.first_index, self.ENTRIES + 1)
        self.assertEqual(self.fatal, [])

    def test_stop_cancels_the_steps(self) -> None:
        """A node stopped in the middle of a compaction schedules no further step."""
        node = self.build()
        with capturedLogs():
            node.start()
            _run_until_compacting(self.clock, node)
            node.stop()
            self.clock.advance(1)
        self.assertFalse(node.compaction.running)
        self.assertEqual(node.core.first_index, self.STEP + 1)

    def test_default_step(self) -> None:
        """A node built with the defaults drops at most DEFAULT_STEP_ENTRIES per step, a few thousand entries (about a millisecond)."""
        node = build_node(
            RaftConfig(0, peers=(1, 2)), clock=Clock(), rng=random.Random(0), log=MemoryLog([]),
            metadata=MemoryMetadata(MetadataRecord(0, None, "c")), cluster_id="c", peers=_Discard(),
            member_addresses={0: "a:1", 1: "b:1", 2: "c:1"},
        )
        self.assertEqual(node.compaction.step_entries, DEFAULT_STEP_ENTRIES)
        self.assertLessEqual(DEFAULT_STEP_ENTRIES, 8192)

    def test_default_take_cooperator_is_paced(self) -> None:
        """A node built with the default cooperators takes snapshots on a paced cooperator of its own, apart from the one that installs them."""
        fs, store = simulated_store()
        node = build_node(
            RaftConfig(0, peers=(1, 2)), clock=Clock(), rng=random.Random(0), log=MemoryLog([]),
            metadata=MemoryMetadata(MetadataRecord(0, None, "c")), cluster_id="c", peers=_Discard(),
            member_addresses={0: "a:1", 1: "b:1", 2: "c:1"}, snapshots=store,
        )
        snapshots = node._snapshots
        assert snapshots is not None
        self.assertIsNot(snapshots._take_cooperator, snapshots._cooperator)


class _Discard:
    def send(self, message: Any) -> None:
        pass


class _WorkingClock(Clock):
    """A clock on which each slice of encoding takes C{cost} seconds, as on
    a real reactor, so that a turn's time limit is reached."""

    cost = 0.0003


class SnapshotTurnsTests(SynchronousTestCase):
    """Taking a snapshot with the production pacing: short turns, pauses between them."""

    def test_turns_are_short_and_paused(self) -> None:
        """With each 512-key slice costing 0.3 ms, a turn encodes at most 4 slices (about 1 ms) and the next turn starts at least TAKE_PAUSE later."""
        clock = _WorkingClock()
        machine = KeyValueStateMachine()
        for i in range(1, 20_001):
            machine.apply(i, encode_put(f"key{i}", "v" * 20))
        slices: list[tuple[float, int]] = []
        begin = machine.begin_snapshot

        def begin_timed() -> Any:
            snapshot = begin()
            next_chunk = snapshot.next_chunk

            def timed(max_entries: int) -> Any:
                slices.append((clock.seconds(), max_entries))
                clock.rightNow += clock.cost
                return next_chunk(max_entries)

            snapshot.next_chunk = timed  # type: ignore[method-assign]
            return snapshot

        machine.begin_snapshot = begin_timed  # type: ignore[method-assign]
        fs, store = simulated_store()
        done: list[Any] = []
        take_snapshot(
            machine, store, lambda index: SnapshotMeta(index, 1, cluster_id="c", membership={}), run_now,
            snapshot_cooperator(clock, pause=TAKE_PAUSE),
        ).addBoth(done.append)
        for _ in range(2000):
            if done:
                break
            clock.advance(0.001)
        self.assertEqual(len(done), 1)
        self.assertEqual(done[0].index, 20_000)
        self.assertTrue(all(n == DEFAULT_SLICE_ENTRIES <= 512 for _, n in slices))
        # Group the slices into turns: any idle time separates two.
        turns: list[list[float]] = [[slices[0][0]]]
        gaps: list[float] = []
        for (previous, _), (now, _) in zip(slices, slices[1:]):
            idle = now - previous - clock.cost
            if idle > 1e-9:
                turns.append([now])
                gaps.append(idle)
            else:
                turns[-1].append(now)
        self.assertGreater(len(turns), 10)
        for turn in turns:
            self.assertLessEqual(len(turn), int(DEFAULT_TURN / clock.cost) + 1)
        # The reactor is left idle for most of a pause between two turns.
        self.assertGreaterEqual(min(gaps), TAKE_PAUSE / 2)


class InstallStepsTests(SynchronousTestCase):
    """Installing a snapshot decodes a bounded piece per step and frees the replaced map in slices."""

    def test_release_in_slices(self) -> None:
        """A map of 10,000 keys is emptied at most 4,096 keys per step, in 3 steps."""
        garbage = {f"k{i}": "v" for i in range(10_000)}
        sizes: list[int] = []
        for _ in release_in_slices(garbage, 4096):
            sizes.append(len(garbage))
        self.assertEqual(sizes, [10_000 - 4096, 10_000 - 8192, 0])

    def test_restore_decodes_in_bounded_steps_and_frees_the_old_map_later(self) -> None:
        """A restore feeds the decoder at most RESTORE_STEP bytes per step; the replaced map (100,000 keys) is not freed within the install's turn but emptied in later cooperator steps of at most RELEASE_SLICE keys."""
        clock = Clock()
        fs, store = simulated_store()
        source = KeyValueStateMachine()
        for i in range(1, 3001):
            source.apply(i, encode_put(f"key{i}", "x" * 300))
        writer = store.begin(SnapshotMeta(3000, 1, cluster_id="c", membership={}))
        writer.write(source.snapshot())
        info = writer.finish()
        self.assertGreater(info.content_length, 2 * RESTORE_CHUNK)
        target = KeyValueStateMachine()
        for i in range(1, 100_001):
            target.apply(i, encode_put(f"old{i}", "y"))
        old_map = target._data
        feeds: list[int] = []
        original_feed = ContentDecoder.feed

        def feed(decoder: ContentDecoder, chunk: bytes) -> None:
            feeds.append(len(chunk))
            original_feed(decoder, chunk)

        self.patch(ContentDecoder, "feed", feed)
        snapshots = NodeSnapshots(store, SnapshotPolicy(), run_now, snapshot_cooperator(clock, max_steps=1))
        results: list[object] = []
        snapshots.restore(target, 3000, 1).addBoth(results.append)
        sizes_when_installed: list[int] = []
        left: list[int] = []

        def after_each_callback() -> bool:
            if results and not sizes_when_installed:
                sizes_when_installed.append(len(old_map))
            left.append(len(old_map))
            return False

        _run_due_calls_one_by_one(clock, after_each_callback)
        self.assertEqual(results, [3000])
        self.assertEqual(target.items(), source.items())
        self.assertLessEqual(max(feeds), RESTORE_STEP)
        self.assertGreater(len(feeds), info.content_length // RESTORE_CHUNK)
        self.assertEqual(sizes_when_installed[0], 100_000)
        drops = [a - b for a, b in zip(left, left[1:]) if a != b]
        self.assertEqual(left[-1], 0)
        self.assertLessEqual(max(drops), RELEASE_SLICE)
