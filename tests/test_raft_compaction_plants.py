# -*- test-case-name: tests.test_raft_compaction_plants -*-
"""
The planted compaction bugs in the Raft core (kvstore.testing.sim.plants
COMPACTION_PLANTS) do what they say, so that the simulator can show its
checkers catch them: without the plant the same inputs behave correctly.
"""

from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.config import RaftConfig
from kvstore.raft.core import HardState, RaftCore, SnapshotPoint
from kvstore.raft.messages import Entry, InstallSnapshot, Message
from kvstore.testing.sim.plants import COMPACTION_PLANTS, PLANTS


def _core(plants: frozenset[str], terms: list[int], commit_index: int, snapshot: SnapshotPoint | None = None) -> RaftCore:
    entries = [Entry(i, t, b"e%d" % i) for i, t in enumerate(terms, start=1)]
    return RaftCore(
        RaftConfig(node_id=1, peers=(2, 3)),
        Clock(),
        random.Random(1),
        HardState(max(terms), None),
        entries,
        plants=plants,
        snapshot=snapshot,
        commit_index=commit_index,
    )


class CompactionPlantTests(SynchronousTestCase):
    """Each compaction plant changes the core's behaviour as described."""

    def test_plants_are_registered_apart(self) -> None:
        """The core's compaction plants are described and among the simulator's self-tested plants (issue 12)."""
        self.assertEqual(
            set(COMPACTION_PLANTS),
            {"compact-past-applied", "keep-conflicting-suffix-after-install", "compact-wal-before-snapshot-durable"},
        )
        self.assertTrue(set(COMPACTION_PLANTS) <= set(PLANTS))

    def test_compact_past_applied(self) -> None:
        """With the plant, compaction drops committed entries not yet applied and they are never handed out; without it, it refuses."""
        plant = frozenset({"compact-past-applied"})
        core = _core(plant, [1] * 20, commit_index=15, snapshot=SnapshotPoint(5, 1))
        core.compact(3)
        self.assertEqual((core.first_index, core.applied), (16, 15))
        self.assertEqual(core.ready().committed, [])
        correct = _core(frozenset(), [1] * 20, commit_index=15, snapshot=SnapshotPoint(5, 1))
        self.assertRaises(ValueError, correct.compact, 6)
        correct.compact(3)
        self.assertEqual([e[0] for e in correct.ready().committed], list(range(6, 16)))

    def test_keep_conflicting_suffix_after_install(self) -> None:
        """With the plant, a follower whose log conflicts at the snapshot's index keeps it and commits its own entries; without it, it installs."""
        plant = frozenset({"keep-conflicting-suffix-after-install"})
        terms = [1] * 5 + [2] * 7
        core = _core(plant, terms, commit_index=3)
        core.ready()
        core.step(Message(2, 1, InstallSnapshot(4, 10, 3)))
        rd = core.ready()
        self.assertIsNone(rd.install_snapshot)
        self.assertEqual([(e[0], e[1]) for e in rd.committed], [(i, 1 if i <= 5 else 2) for i in range(4, 11)])
        self.assertEqual(core.last_index, 12)
        correct = _core(frozenset(), terms, commit_index=3)
        correct.ready()
        correct.step(Message(2, 1, InstallSnapshot(4, 10, 3)))
        self.assertEqual(correct.ready().install_snapshot, SnapshotPoint(10, 3))
