# -*- test-case-name: tests.test_sim_sizes -*-
"""
The simulator runs every cluster size from 1 to 7, its default seed space
mixes odd and even sizes, and a quorum formula wrong only for even sizes is
caught.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.sim.cli import main
from kvstore.testing.sim.figure8 import PROFILES, profile_for_seed
from kvstore.testing.sim.world import SimConfig, nodes_for_seed, run_seed


class ClusterSizeTests(SynchronousTestCase):
    def test_every_size_runs_clean(self) -> None:
        """A seed passes with each size from 1 to 7 nodes."""
        for nodes in range(1, 8):
            with self.subTest(nodes=nodes):
                result = run_seed(1, nodes)
                self.assertTrue(result.ok, result.report())
                self.assertEqual(result.config.nodes, nodes)

    def test_sizes_outside_one_to_seven_are_refused(self) -> None:
        """A cluster of 0 or 8 nodes is refused, by the API and the command line."""
        for nodes in (0, 8):
            self.assertRaises(ValueError, SimConfig, 1, nodes)
            self.assertRaises(SystemExit, main, ["--seed", "1", "--nodes", str(nodes)])

    def test_default_seed_space_mixes_odd_and_even_sizes(self) -> None:
        """Without --nodes, 128 consecutive seeds run every profile with every
        size from 2 to 7, and a seed's size is part of its replay command."""
        for start in (0, 1000):
            for profile in PROFILES:
                with self.subTest(start=start, profile=profile):
                    sizes = {nodes_for_seed(s) for s in range(start, start + 128) if profile_for_seed(s) == profile}
                    self.assertEqual(sizes, {2, 3, 4, 5, 6, 7})
        config = SimConfig(9)
        self.assertEqual(config.nodes, nodes_for_seed(9))
        self.assertIn(f"--nodes {config.nodes}", config.replay_command())

    def test_reads_seeds_run_five_and_seven_nodes(self) -> None:
        """The reads profile runs 5 and 7 nodes (where a read index confirmed
        one acknowledgement short is unsafe) for most of its seeds, and the
        slow 6- and 7-node seeds stay a small share of a soak."""
        reads = [nodes_for_seed(s) for s in range(128) if profile_for_seed(s) == "reads"]
        self.assertGreaterEqual(sum(n in (5, 7) for n in reads), len(reads) // 2)
        self.assertIn(7, reads)
        everything = [nodes_for_seed(s) for s in range(128)]
        self.assertLessEqual(sum(n in (6, 7) for n in everything), len(everything) // 5)

    def test_even_quorum_too_small_is_caught_on_even_sizes(self) -> None:
        """With the quorum of an even-sized cluster one node too small, a
        4-node and a 2-node seed fail; a 3-node seed (same formula) does not."""
        plant = frozenset({"even-quorum-too-small"})
        for nodes in (2, 4):
            failed = [s for s in range(6) if not run_seed(s, nodes, plant).ok]
            self.assertNotEqual(failed, [], f"{nodes} nodes")
        self.assertTrue(run_seed(1, 3, plant).ok)
