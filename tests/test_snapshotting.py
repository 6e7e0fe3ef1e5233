# -*- test-case-name: tests.test_snapshotting -*-
"""
Tests for L{kvstore.node.snapshotting.take_snapshot}: the state machine is
serialised a slice per cooperator step while writes keep being applied, at
most one chunk is in the storage thread at a time, the result is durable
before the Deferred fires, and a failure leaves no file and no overlay.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, Cooperator
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.snapshotting import snapshot_cooperator, take_snapshot, turn_limit
from kvstore.statemachine import KeyValueStateMachine, SnapshotInProgress, encode_delete, encode_put
from kvstore.storage.snapshots import SnapshotMeta, SnapshotStore
from kvstore.testing.runners import ManualRunner

from tests.snapshot_support import DIRECTORY, ReadableSimulatedFileSystem, read_content


class FailingWrites(ReadableSimulatedFileSystem):
    """Fails the C{fail_at}-th data write with EIO."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.writes = 0

    def pwrite_all(self, fd: int, data: bytes, offset: int) -> None:
        self.writes += 1
        if self.writes == self.fail_at:
            raise OSError(5, "Input/output error (simulated)")
        super().pwrite_all(fd, data, offset)


class _Cancellable:
    def __init__(self, turns: list[Any], work: Any) -> None:
        self.turns, self.work = turns, work

    def cancel(self) -> None:
        self.turns.remove(self.work)


class TakeSnapshotTests(SynchronousTestCase):
    """Snapshotting a live state machine through a cooperator and a storage thread."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.runner = ManualRunner()
        # Each scheduled cooperator turn waits here until the test runs it,
        # as a real reactor runs a callLater(0) only on its next iteration.
        self.turns: list[Any] = []
        self.cooperator = Cooperator(
            terminationPredicateFactory=turn_limit(self.clock, 0.004, max_steps=1), scheduler=self.schedule
        )
        self.machine = KeyValueStateMachine()
        self.model: dict[str, str] = {}
        for i in range(50):
            self.put(f"k{i}", f"value {i}")
        self.frozen = dict(self.model)

    def schedule(self, work: Any) -> Any:
        self.turns.append(work)
        return _Cancellable(self.turns, work)

    def run_turn(self) -> None:
        if self.turns:
            self.turns.pop(0)()

    def put(self, key: str, value: str) -> None:
        self.machine.apply(self.machine.applied_index + 1, encode_put(key, value))
        self.model[key] = value

    def open_store(self, fs: ReadableSimulatedFileSystem | None = None) -> SnapshotStore:
        self.fs = fs if fs is not None else ReadableSimulatedFileSystem()
        self.fs.makedirs_durable("/data")
        return SnapshotStore.open(DIRECTORY, self.fs)

    def take(self, store: SnapshotStore, **kwargs: Any) -> "Deferred[Any]":
        return take_snapshot(
            self.machine,
            store,
            kwargs.pop("make_meta", lambda index: SnapshotMeta(index=index, term=3, cluster_id="c")),
            self.runner,
            self.cooperator,
            chunk_bytes=kwargs.pop("chunk_bytes", 100),
            slice_entries=kwargs.pop("slice_entries", 4),
        )

    def drive(self, d: "Deferred[Any]", write_between: bool = True) -> int:
        """Run turns and storage jobs until C{d} fires, applying writes between turns;
        return the largest number of storage jobs ever pending at once."""
        most = 0
        fired: list[object] = []
        d.addBoth(lambda r: fired.append(r) or r)
        turn = 0
        while not fired:
            turn += 1
            self.assertLess(turn, 10_000, "snapshot never finished")
            self.run_turn()
            if write_between:
                self.put(f"k{turn % 60}", f"turn {turn}")
                self.machine.apply(self.machine.applied_index + 1, encode_delete(f"k{(turn * 7) % 60}"))
                self.model.pop(f"k{(turn * 7) % 60}", None)
                self.assertEqual(self.machine.items(), self.model)
            most = max(most, len(self.runner.jobs))
            if self.runner.jobs and turn % 3 == 0:
                self.runner.release()
        return most

    def test_snapshot_of_a_live_machine(self) -> None:
        """The installed, durable snapshot holds the state at the freeze, while every write in between
        is applied and readable, with at most one chunk in the storage thread at a time."""
        store = self.open_store()
        frozen_index = self.machine.applied_index
        d = self.take(store)
        most = self.drive(d)
        info = self.successResultOf(d)
        self.assertEqual(most, 1)
        self.assertEqual((info.index, info.term), (frozen_index, 3))
        self.fs.crash()
        store = SnapshotStore.open(DIRECTORY, self.fs)
        restored = KeyValueStateMachine()
        restored.restore(info.index, [read_content(store, store.verify(store.list()[0]))])
        self.assertEqual(restored.items(), self.frozen)
        self.assertFalse(self.machine.snapshot_busy)
        self.assertEqual(self.machine._data, self.model)

    def test_many_slices_and_chunks(self) -> None:
        """The content really is produced slice by slice: one slice per turn means many turns."""
        store = self.open_store()
        self.runner.immediate = True
        d = self.take(store, slice_entries=2)
        turns = 0
        fired: list[object] = []
        d.addBoth(lambda r: fired.append(r) or r)
        while not fired and turns < 10_000:
            self.run_turn()
            turns += 1
        self.successResultOf(d)
        self.assertGreaterEqual(turns, 25)

    def test_write_failure_cleans_up(self) -> None:
        """A failed write fails the Deferred, removes the temporary file and merges the overlay."""
        store = self.open_store(FailingWrites(fail_at=3))
        d = self.take(store)
        self.drive(d)
        self.runner.release_all()  # the abort
        self.failureResultOf(d, OSError)
        self.assertEqual(self.fs.listdir(DIRECTORY), [])
        self.assertFalse(self.machine.snapshot_busy)
        self.assertEqual(self.machine.items(), self.model)
        self.assertEqual(self.machine._data, self.model)

    def test_bad_metadata_cleans_up(self) -> None:
        """Metadata for another index than the frozen one is refused, leaving no file and no overlay."""
        store = self.open_store()
        d = self.take(store, make_meta=lambda index: SnapshotMeta(index=index + 1, term=3))
        self.drive(d)
        self.failureResultOf(d, ValueError)
        self.assertEqual(self.fs.listdir(DIRECTORY), [])
        self.assertFalse(self.machine.snapshot_busy)

    def test_one_at_a_time(self) -> None:
        """A second snapshot while one is running fails at once and does not disturb the first."""
        store = self.open_store()
        first = self.take(store)
        self.failureResultOf(self.take(store), SnapshotInProgress)
        self.drive(first)
        self.successResultOf(first)


class TurnLimitTests(SynchronousTestCase):
    """The cooperator's turn ends on time or on the step count."""

    def test_production_cooperator_runs_on_the_clock(self) -> None:
        """The cooperator built for a node schedules its turns on the given clock."""
        clock = Clock()
        ran: list[int] = []
        snapshot_cooperator(clock).cooperate(iter(ran.append(i) for i in range(3)))
        self.assertEqual(ran, [])
        clock.advance(0)
        self.assertEqual(ran, [0, 1, 2])

    def test_ends_after_time_or_steps(self) -> None:
        """A turn ends once its time has passed, or after the given number of steps."""
        clock = Clock()
        ended = turn_limit(clock, 0.004, max_steps=3)()
        self.assertEqual([ended(), ended(), ended()], [False, False, True])
        ended = turn_limit(clock, 0.004, max_steps=None)()
        self.assertFalse(ended())
        clock.advance(0.004)
        self.assertTrue(ended())
