# -*- test-case-name: tests.test_testing_fault_inconclusive -*-
"""
The fault suite's linearizability bound: a key the search gave up on is not
a pass, because a real violation can end up "inconclusive" on one key.
"""

from __future__ import annotations

import pytest
from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.sim.linearizability import Operation, check_history
from tests.fault import test_faults

#: A search of 600,000 states takes seconds.
pytestmark = pytest.mark.slow


def stale_read_among_unknown_writes(unknown: int) -> list[Operation]:
    """One key: C{unknown} puts of unknown outcome, then an acknowledged put
    of x, an acknowledged put of y, and a read of x after y was
    acknowledged (a stale read), and a delete that keeps the unknown puts
    observable."""
    ops = [Operation(f"u{i}", "put", "k", f"u{i}", None, 0.0, None) for i in range(unknown)]
    return ops + [
        Operation("a", "put", "k", "x", "ok", 1.0, 2.0),
        Operation("b", "put", "k", "y", "ok", 3.0, 4.0),
        Operation("c", "get", "k", None, "x", 5.0, 6.0),
        Operation("d", "delete", "k", None, "ok", 100.0, 101.0),
    ]


class InconclusiveAllowanceTests(SynchronousTestCase):
    """An undecided key may hide a violation, so the fault suite allows none."""

    def test_a_violation_can_be_inconclusive_at_the_fault_bound(self) -> None:
        """With few unknown writes the stale read is found; with 20 the search
        hits the fault suite's bound and the violation is only 'inconclusive'."""
        small = check_history(stale_read_among_unknown_writes(4), max_states=test_faults.FAULT_MAX_STATES)
        self.assertFalse(small.ok)
        big = check_history(stale_read_among_unknown_writes(20), max_states=test_faults.FAULT_MAX_STATES)
        self.assertEqual((big.ok, big.inconclusive), (True, ["k"]))

    def test_the_fault_suite_allows_no_inconclusive_key(self) -> None:
        """Since such a key may be a violation, the fault suite fails on it."""
        self.assertEqual(test_faults.INCONCLUSIVE_KEYS_ALLOWED, 0)
