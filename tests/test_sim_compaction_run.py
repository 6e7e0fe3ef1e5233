# -*- test-case-name: tests.test_sim_compaction_run -*-
"""
Snapshots, compaction and InstallSnapshot in whole simulated runs
(kvstore.testing.sim.snapshots): every seed draws small thresholds; a fixed
set of seeds takes, receives and installs snapshots, compacts and prunes,
crashes nodes in the middle of those steps, restarts nodes from snapshots,
checks every snapshot file, and passes; a soak prints what the snapshot
machinery did.
"""

from __future__ import annotations

import io
from collections import Counter

from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.sim.cli import soak
from kvstore.testing.sim.snapshots import COVERAGE
from kvstore.testing.sim.world import SimConfig, Simulation, run_seed

from tests.support import slow

#: Seeds 5, 7, 9, 13, 17, 21, 23 (mixed) and 0, 4 (figure8), with 3 nodes:
#: together they crash a node in the middle of every kind of step.
SEEDS = (0, 4, 5, 7, 9, 13, 17, 21, 23, 44)


class PolicyTests(SynchronousTestCase):
    """Each seed draws its thresholds and transfer tuning."""

    def test_thresholds_are_small_and_vary(self) -> None:
        """Snapshot every 3 to 40 entries, keep 0 to 10, chunks far below a snapshot's size."""
        sims = [Simulation(SimConfig(seed, 3)) for seed in range(60)]
        entries = {s.snapshot_policy.entries for s in sims}
        catchup = {s.snapshot_policy.catchup_entries for s in sims}
        self.assertTrue(entries <= set(range(3, 41)) and len(entries) > 10, entries)
        self.assertIn(3, entries)
        self.assertTrue(catchup <= set(range(0, 11)) and {0, 10} <= catchup, catchup)
        self.assertTrue(all(s.snapshot_activity.transfer_options["chunk_bytes"] <= 4096 for s in sims))

    def test_reads_profile_has_no_snapshot_crashes(self) -> None:
        """Crashes in the middle of snapshot steps come with the mixed and
        figure8 profiles, not reads (its cut-offs need a quiet background)."""
        for seed in range(16):
            sim = Simulation(SimConfig(seed, 3))
            probabilities = set(sim.snapshot_activity.crash_probability.values())
            if sim.config.fault_profile == "reads":
                self.assertEqual(probabilities, {0.0})
            else:
                self.assertTrue(probabilities - {0.0}, seed)


@slow
class RunTests(SynchronousTestCase):
    """Whole runs exercise every step and pass."""

    def test_seeds_exercise_snapshots_and_pass(self) -> None:
        """Every seed of the set takes snapshots and compacts; together they
        receive and install snapshots, prune, crash in the middle of
        snapshot steps and restart from snapshots, all checked, all passing."""
        totals: Counter[str] = Counter()
        faults = []
        for seed in SEEDS:
            result = run_seed(seed, 3)
            self.assertTrue(result.ok, result.report())
            self.assertGreater(result.stats["snapshots_taken"], 0, seed)
            self.assertGreater(result.stats["compactions"], 0, seed)
            totals.update(result.stats)
            faults += result.faults
        for stat in COVERAGE:
            self.assertGreater(totals[stat], 0, stat)
        self.assertEqual(totals["snapshots_checked"], totals["snapshots_taken"] + totals["snapshots_received"])
        kinds = {f.split("during snapshot ")[1].split()[0] for f in faults if "during snapshot" in f}
        self.assertTrue({"take", "compact", "prune", "receive", "install", "reset"} <= kinds, kinds)

    def test_replay_with_snapshots_is_deterministic(self) -> None:
        """A seed that installs snapshots replays to the same trace."""
        first, second = run_seed(13, 3, trace=True), run_seed(13, 3, trace=True)
        self.assertGreater(first.stats["snapshot_installs"], 0)
        self.assertEqual(first.trace_hash, second.trace_hash)
        self.assertEqual(first.stats, second.stats)

    def test_soak_reports_snapshot_activity(self) -> None:
        """The soak's output has a line counting snapshots, installs and compactions."""
        out = io.StringIO()
        self.assertEqual(soak([5, 13], 3, frozenset(), 1, 3.0, out=out), 0)
        line = next(l for l in out.getvalue().splitlines() if l.startswith("snapshots: "))
        for stat in ("snapshots_taken", "snapshot_installs", "compactions", "snapshot_crashes"):
            self.assertIn(f"{stat}=", line)
        self.assertNotIn("snapshots_taken=0,", line)
