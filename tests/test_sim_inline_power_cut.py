# -*- test-case-name: tests.test_sim_inline_power_cut -*-
"""
Power cuts during inline flushes in the simulator (review of issue 16's
h/siminline): a crash can land inside an inline flush, after its writes
and before its fsyncs take effect, so that what a node sent before an
inline flush can be followed by the loss of that flush, as in production
(a power cut while the reactor is blocked in C{fdatasync}).
"""

from __future__ import annotations

import random
from collections import Counter

from twisted.trial.unittest import SynchronousTestCase

from kvstore.storage import LogEntry, WriteAheadLog
from kvstore.storage.wal import PREALLOCATE_BYTES
from kvstore.testing.sim.clock import HeapClock
from kvstore.testing.sim.fs import SimulatedDisk, SimulatedFileSystem
from kvstore.testing.sim.inline import InlineFlushes, SimulatedInlineFlushes

DIRECTORY = "/data/wal"


class _Incarnation:
    """One simulated node's disk and log whose inline flushes ask
    C{cut()} whether the power fails during them."""

    def __init__(self, cut: bool) -> None:
        self.clock = HeapClock()
        self.fs = SimulatedFileSystem()
        self.fs.makedirs_durable("/data")
        self.disk = SimulatedDisk(self.clock, random.Random(1), self.fs)
        self.stats: Counter[str] = Counter()
        self.cut = cut
        self.sent_before_fsync: list[bool] = []
        self.policy = SimulatedInlineFlushes(self.clock, self.disk, lambda: 0.0001, self.stats, 1.0, self.power_cut)
        self.wal = WriteAheadLog.open(DIRECTORY, run_in_thread=self.disk, fs=self.fs, inline_flush=self.policy,
                                      preallocate_bytes=PREALLOCATE_BYTES)

    def power_cut(self) -> bool:
        # The flush's writes are in the page cache, its fsync not durable.
        self.sent_before_fsync.append(self.fs.durable_content(f"{DIRECTORY}/{self.fs.listdir(DIRECTORY)[-1]}")
                                      != self.fs.read_file(f"{DIRECTORY}/{self.fs.listdir(DIRECTORY)[-1]}"))
        if not self.cut:
            return False
        self.disk.kill()
        self.fs.crash()
        return True

    def recovered(self) -> list[int]:
        runner = lambda f: f()  # noqa: E731  # a recovery view never flushes
        log = WriteAheadLog.open(DIRECTORY, run_in_thread=runner, fs=self.fs, preallocate_bytes=PREALLOCATE_BYTES)
        return [e.index for e in log.entries]


class InlinePowerCutTests(SynchronousTestCase):
    """A crash inside an inline flush."""

    def test_power_cut_during_at_once_flush_loses_it(self):
        """A power cut during an at-once inline flush finds its writes in
        the page cache and its fsync not yet durable, and loses them."""
        node = _Incarnation(cut=True)
        node.wal.append([LogEntry(1, 1, b"one")])
        node.wal.sync(at_once=True)
        assert node.sent_before_fsync == [True]
        assert node.stats["inline_power_cuts"] == 1
        assert node.recovered() == []
        node.fs.crash()  # and its fsync never takes effect later
        assert node.recovered() == []

    def test_power_cut_declined_keeps_the_flush_durable(self):
        """When the power does not fail (the faults are over), the flush's
        fsync takes effect before it returns, as without power cuts."""
        node = _Incarnation(cut=False)
        node.wal.append([LogEntry(1, 1, b"one")])
        assert self.successResultOf(node.wal.sync(at_once=True)) == 1
        assert node.stats["inline_power_cuts"] == 0
        node.disk.kill()
        node.fs.crash()
        assert node.recovered() == [1]

    def test_end_of_turn_flush_can_be_cut_too(self):
        """A flush at the end of the turn is asked too."""
        node = _Incarnation(cut=True)
        node.wal.append([LogEntry(1, 1, b"one")])
        node.wal.sync()
        node.clock.advance(0)
        assert node.sent_before_fsync == [True] and node.recovered() == []

    def test_some_incarnations_see_power_cuts(self):
        """The run's generator gives some inline incarnations a power-cut
        rate and asks the world's callback at about that rate; the other
        choices and flush durations are those of a run without cuts."""
        asked: list[int] = []

        def draws(power_cut: object) -> list[object]:
            choices = InlineFlushes(random.Random(3), Counter())
            result: list[object] = []
            for _ in range(60):
                name, policy = choices.for_incarnation(
                    HeapClock(), SimulatedDisk(HeapClock(), random.Random(0), SimulatedFileSystem()),
                    power_cut)  # type: ignore[arg-type]
                result.append(name.split("/cuts")[0])
                if policy is not None:
                    result.append([policy._duration() for _ in range(3)])
                    if policy.power_cut is not None:
                        result.append(sum(policy.power_cut() for _ in range(200)))
            return result

        with_cuts = draws(lambda: asked.append(1) is None)
        without = draws(None)
        assert [d for d in with_cuts if not isinstance(d, int)] == without
        assert asked and any(isinstance(d, int) and d > 0 for d in with_cuts)
