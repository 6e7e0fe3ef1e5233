# -*- test-case-name: tests.test_sim_compaction_steps -*-
"""
The simulator compacts logs in steps of a few entries in most seeds, so that
crashes, installs and new snapshots land between two steps of
L{kvstore.node.log_compaction.StepwiseCompaction} (with the production step
of 4,096 entries every compaction of a simulated run is a single step).
"""

from __future__ import annotations

import random
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.log_compaction import DEFAULT_STEP_ENTRIES
from kvstore.testing.sim.snapshots import SnapshotActivity


class SimulatedCompactionStepTests(SynchronousTestCase):
    """SnapshotActivity.compaction_step."""

    def test_small_steps_in_most_seeds(self) -> None:
        """Across seeds the step is 1 to 3 entries mostly, sometimes the production one."""
        steps = [SnapshotActivity(Any, random.Random(seed)).compaction_step for seed in range(200)]  # type: ignore[arg-type]  # the run is not needed to draw the tuning
        self.assertEqual(set(steps), {1, 2, 3, DEFAULT_STEP_ENTRIES})
        self.assertGreater(sum(1 for s in steps if s < DEFAULT_STEP_ENTRIES), 100)

    def test_same_step_in_every_process(self) -> None:
        """A seed's step depends on the seed alone, not on the process (so a failing seed replays)."""
        steps = [SnapshotActivity(Any, random.Random(seed)).compaction_step for seed in range(12)]  # type: ignore[arg-type]  # see above
        self.assertEqual(steps, [4096, 4096, 1, 1, 4096, 4096, 1, 3, 4096, 1, 1, 1])
