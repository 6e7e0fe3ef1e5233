# -*- test-case-name: tests.test_sim_linearizability_unknown_chain -*-
"""
The linearizability checker with a chain of writes of unknown outcome: an
unknown put that no read returned may still have been observed, through an
unknown CAS or INCR that started from its value and whose own result a read
returned (a false violation kvstore-sim reported for seed 1442 with
C{--profile mixed}).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.sim.linearizability import CAS, GET, INCR, PUT, Operation, check_history


def _chain(read: str, second: Operation) -> list[Operation]:
    return [
        Operation(4, PUT, "a", "4.1", None, 0.21, None),
        second,
        Operation(7, GET, "a", None, read, 1.0, 1.1),
    ]


class UnknownChainTests(SynchronousTestCase):
    def test_unknown_put_then_unknown_cas_then_read(self) -> None:
        """A read of the value an unknown CAS set from an unknown put's value
        is linearizable: put, CAS, read."""
        result = check_history(_chain("5.1", Operation(5, CAS, "a", "5.1", None, 0.27, None, expected="4.1")))
        self.assertTrue(result.passed, result.details)

    def test_two_unknown_cases_in_a_row(self) -> None:
        """The seed 1442 shape: put 4.1, CAS 4.1->5.1, CAS 5.1->7.1, all
        unknown, then a read of 7.1."""
        ops = [
            Operation(4, PUT, "a", "4.1", None, 0.21, None),
            Operation(5, CAS, "a", "5.1", None, 0.27, None, expected="4.1"),
            Operation(7, CAS, "a", "7.1", None, 0.32, None, expected="5.1"),
            Operation(7, GET, "a", None, "7.1", 1.0, 1.1),
        ]
        result = check_history(ops)
        self.assertTrue(result.passed, result.details)

    def test_unknown_put_then_unknown_incr_then_read(self) -> None:
        """The same through an unknown INCR: put 40, INCR by 2, read 42."""
        ops = [
            Operation(4, PUT, "a", "40", None, 0.21, None),
            Operation(5, INCR, "a", "2", None, 0.27, None),
            Operation(7, GET, "a", None, "42", 1.0, 1.1),
        ]
        result = check_history(ops)
        self.assertTrue(result.passed, result.details)

    def test_a_value_no_chain_explains_is_still_a_violation(self) -> None:
        """Keeping the unknown put changes no verdict on a read no chain can
        explain."""
        result = check_history(_chain("9.9", Operation(5, CAS, "a", "5.1", None, 0.27, None, expected="4.1")))
        self.assertFalse(result.ok)
