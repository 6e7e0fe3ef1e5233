# -*- test-case-name: tests.test_sim_linearizability_pruning -*-
"""
The linearizability checker leaves out unknown writes that no completed
operation could have observed (kvstore.testing.sim.linearizability._unobservable).
That must change no verdict: on random small histories (values repeated
across puts, unknown puts and deletes, reads of missing keys) the checker
decides exactly as the same search without the pruning.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.sim import linearizability
from kvstore.testing.sim.linearizability import DELETE, GET, NOT_FOUND, OK, PUT, Operation, check_key


@st.composite
def _histories(draw: Any) -> list[Operation]:
    ops = []
    for i in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from((PUT, PUT, GET, GET, DELETE)))
        invoke = draw(st.integers(0, 10))
        complete = None if kind != GET and draw(st.booleans()) else invoke + draw(st.integers(0, 6))
        value = draw(st.sampled_from(("x", "y"))) if kind == PUT else None
        if kind == PUT:
            result = OK
        elif kind == DELETE:
            result = draw(st.sampled_from((OK, NOT_FOUND)))
        else:
            result = draw(st.sampled_from((None, "x", "y")))
        ops.append(Operation(i, kind, "k", value, result, float(invoke), None if complete is None else float(complete)))
    return ops


class PruningChangesNoVerdictTests(SynchronousTestCase):
    def test_unknown_put_invoked_as_a_delete_completes(self) -> None:
        """An unknown put invoked at the instant a delete that removed a
        value completes may be what it removed: the history is linearizable."""
        history = [
            Operation(0, DELETE, "k", None, OK, 0.0, 4.0),
            Operation(1, GET, "k", None, None, 0.0, 0.0),
            Operation(2, PUT, "k", "x", None, 4.0, None),
        ]
        result = check_key("k", history)
        self.assertTrue(result.ok, result.details)

    @settings(max_examples=1500, deadline=None)
    @given(_histories())
    def test_same_verdict_as_unpruned_search(self, history: list[Operation]) -> None:
        """Pruning unobservable unknown writes never changes whether a
        history is linearizable."""
        pruned = check_key("k", history)
        original = linearizability._unobservable
        linearizability._unobservable = lambda ops: set()
        try:
            full = check_key("k", history)
        finally:
            linearizability._unobservable = original
        self.assertEqual(pruned.ok, full.ok, "\n".join(map(str, history)))
