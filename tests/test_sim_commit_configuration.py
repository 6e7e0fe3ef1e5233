# -*- test-case-name: tests.test_sim_commit_configuration -*-
"""
The durable-quorum check (C{committed-entry-lost}) also accepts an entry
held durably by a majority of the configuration its leader committed it
under, even if that configuration was only in the leader's unsynced log
and died with it: seed 1397 (5 nodes), where leader 1 promoted learner 5,
committed entry 67 on {0, 3, 5} (a majority of {0, 1, 3, 4, 5}) and
crashed before syncing it or the promotion; {0, 3} is half of the voters
{0, 1, 3, 4} left, so every quorum of them still holds the entry.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.sim.world import run_seed


class CommitConfigurationTests(SynchronousTestCase):
    def test_seed_1397_is_no_lost_entry(self) -> None:
        """Seed 1397 with 5 nodes passes every checker (it reported entry 67 lost before the fix)."""
        result = run_seed(1397, 5)
        self.assertEqual([v.property for v in result.violations], [])
