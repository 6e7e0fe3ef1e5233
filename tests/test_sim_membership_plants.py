"""
The simulator catches the planted membership bugs (issue 13,
L{kvstore.testing.sim.plants.MEMBERSHIP_PLANTS}) within a bounded number of
seeds, naming a property the bug breaks; the same seeds pass without them.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.sim.figure8 import profile_for_seed
from kvstore.testing.sim.plants import MEMBERSHIP_PLANTS, PLANTS
from kvstore.testing.sim.safety import PROPERTIES
from kvstore.testing.sim.world import RunResult, run_seed

from tests.support import parametrize, slow

# plant -> (seeds to try from 0, properties that may be named).  Churn runs
# in the mixed profile (3 seeds in 8); kvstore-sim --plant NAME --seeds 80
# --jobs 2 caught two-changes-at-once in 8 seeds (first 5),
# learner-counted-in-quorum in 10 (first 7), change-before-own-term-commit
# in 5 (first 5); docs/simulation.md.
PLANT_CASES = {
    "two-changes-at-once": (40, {"membership-change-rules", "commit-quorum", "election-safety",
                                 "committed-entry-lost", "leader-completeness", "state-machine-safety"}),
    "learner-counted-in-quorum": (40, {"commit-quorum", "committed-entry-lost", "leader-completeness",
                                       "state-machine-safety", "log-matching"}),
    "change-before-own-term-commit": (40, {"membership-change-rules", "commit-quorum", "election-safety",
                                           "committed-entry-lost", "leader-completeness"}),
}


def _first_caught(plant: str, count: int) -> tuple[int, RunResult] | None:
    for seed in range(count):
        if profile_for_seed(seed) != "mixed":
            continue  # no churn there: the plant cannot show
        result = run_seed(seed, plants=frozenset({plant}))
        if not result.ok:
            return seed, result
    return None


@slow
class MembershipPlantTests(SynchronousTestCase):
    """Each planted membership bug is caught by the simulator's checkers within a bounded number of seeds."""

    def test_every_membership_plant_has_a_case(self) -> None:
        """Each membership plant is a plant of the simulator, is tested below, and names known properties."""
        self.assertEqual(set(PLANT_CASES), set(MEMBERSHIP_PLANTS))
        self.assertLessEqual(set(MEMBERSHIP_PLANTS), set(PLANTS))
        for _, properties in PLANT_CASES.values():
            self.assertLessEqual(properties, set(PROPERTIES))

    @parametrize("plant", sorted(PLANT_CASES))
    def test_plant_is_caught(self, plant: str) -> None:
        """With the plant on, a seed among the first few mixed ones fails, naming a property the bug breaks and
        printing its replay command; the same seed passes without the plant."""
        count, expected = PLANT_CASES[plant]
        found = _first_caught(plant, count)
        if found is None:
            self.fail(f"{plant} not caught in seeds 0..{count - 1}")
        seed, result = found
        self.assertIn(result.violations[0].property, expected, result.report())
        self.assertIn(f"kvstore-sim --seed {seed} --nodes {result.config.nodes} --plant {plant}", result.report())
        clean = run_seed(seed)
        self.assertTrue(clean.ok, clean.report())
        self.assertGreater(clean.stats["membership_changes"], 0)
