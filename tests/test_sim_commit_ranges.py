# -*- test-case-name: tests.test_sim_commit_ranges -*-
"""
L{CommitConfigurations} gives every index a commit advance covered the
configurations it was committed under, keeps what two leaders recorded for
the same index, and stays one range per run of equal configurations however
many advances the simulator records.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.membership import Configuration
from kvstore.testing.sim.commit_configurations import CommitConfigurations

FOUR = Configuration({0: "", 1: "", 3: "", 4: ""}, {5: "d:1"}, removed=[2])
FIVE = Configuration({0: "", 1: "", 3: "", 4: "", 5: "d:1"}, removed=[2])
CONFIGURATIONS = (FOUR, FIVE, Configuration({0: "", 1: "", 3: ""}, removed=[2, 4]))


class CommitConfigurationsTests(SynchronousTestCase):
    def test_every_index_of_an_advance_gets_its_configuration(self) -> None:
        """An advance from 2 to 7 records its configuration at 3..7, none at 2 or 8."""
        recorded = CommitConfigurations()
        recorded.record(3, 7, [FIVE])
        self.assertEqual([recorded.at(i) for i in range(2, 9)], [(), *[(FIVE,)] * 5, ()])

    def test_a_recommitted_range_keeps_both_configurations(self) -> None:
        """A new leader committing 5..9 again under another configuration adds it where the ranges overlap."""
        recorded = CommitConfigurations()
        recorded.record(3, 7, [FIVE])
        recorded.record(5, 9, [FOUR])
        self.assertEqual(recorded.at(4), (FIVE,))
        self.assertEqual(set(recorded.at(6)), {FOUR, FIVE})
        self.assertEqual(recorded.at(9), (FOUR,))

    def test_advances_under_one_configuration_are_one_range(self) -> None:
        """Ten thousand one-entry advances under one configuration, then a change, leave two ranges."""
        recorded = CommitConfigurations()
        for index in range(1, 10_001):
            recorded.record(index, index, [FOUR])
        recorded.record(10_001, 10_050, [FIVE])
        self.assertEqual(recorded.ranges(), [(1, 10_000, (FOUR,)), (10_001, 10_050, (FIVE,))])

    @given(st.lists(st.tuples(st.integers(1, 40), st.integers(0, 8), st.sampled_from(CONFIGURATIONS)), max_size=30))
    def test_ranges_agree_with_one_set_per_index(self, advances: list[tuple[int, int, Configuration]]) -> None:
        """Any sequence of records gives each index the union of the configurations recorded over it, in disjoint merged ranges."""
        recorded = CommitConfigurations()
        expected: dict[int, set[Configuration]] = {}
        for low, length, configuration in advances:
            recorded.record(low, low + length - 1, [configuration])
            for index in range(low, low + length):
                expected.setdefault(index, set()).add(configuration)
        for index in range(0, 50):
            self.assertEqual(set(recorded.at(index)), expected.get(index, set()), index)
        ranges = recorded.ranges()
        for (_, high, held), (low, _, next_held) in zip(ranges, ranges[1:]):
            self.assertLess(high, low)
            self.assertFalse(high + 1 == low and held == next_held, ranges)
