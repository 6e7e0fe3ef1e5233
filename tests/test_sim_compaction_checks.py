# -*- test-case-name: tests.test_sim_compaction_checks -*-
"""
The simulator's compaction checks (kvstore.testing.sim.compaction_checks)
fail on crafted bad inputs and pass on good ones: nodes at the same applied
index with different state machines, and snapshots that hold an entry that
was never committed (by index, by term or by content).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.statemachine import encode_delete, encode_put
from kvstore.testing.sim.compaction_checks import (
    MissingCommitted,
    replay_committed,
    snapshot_uncommitted,
    state_machines_disagree,
)
from kvstore.testing.sim.safety import PROPERTIES

#: index -> (term, payload, term seen committed in), as the safety monitor keeps it.
COMMITTED = {
    1: (1, b"", 1),
    2: (1, encode_put("a", "1"), 1),
    3: (1, encode_put("b", "2"), 1),
    4: (2, b"", 2),
    5: (2, encode_delete("a"), 2),
    6: (2, b"\xffnot a command", 2),
    7: (2, encode_put("c", "3"), 2),
}


class StateMachinesAgreeTests(SynchronousTestCase):
    """Nodes at the same applied index must hold identical state machines."""

    def test_same_index_same_state_passes(self) -> None:
        """Equal states at one index, and different states at different indexes, are fine."""
        states = [(0, 3, {"a": "1", "b": "2"}), (1, 3, {"b": "2", "a": "1"}), (2, 2, {"a": "1"})]
        self.assertEqual(state_machines_disagree(states), [])

    def test_same_index_different_state_fails(self) -> None:
        """A node holding another value, or an extra key, at an index another node also applied is reported, naming both nodes and the key."""
        states = [(0, 3, {"a": "1", "b": "2"}), (1, 3, {"a": "1", "b": "9"}), (2, 3, {"a": "1", "b": "2", "z": "0"})]
        problems = state_machines_disagree(states)
        self.assertEqual(len(problems), 2)
        self.assertIn("nodes 0 and 1 have both applied index 3", problems[0])
        self.assertIn("'b': '2' vs '9'", problems[0])
        self.assertIn("nodes 0 and 2", problems[1])
        self.assertIn("'z': None vs '0'", problems[1])


class SnapshotCommittedTests(SynchronousTestCase):
    """No snapshot may contain an uncommitted entry."""

    def test_replay_applies_committed_entries_in_order(self) -> None:
        """The replay applies puts and deletes in order and skips an invalid command, as a node does."""
        self.assertEqual(replay_committed(COMMITTED, 3), {"a": "1", "b": "2"})
        self.assertEqual(replay_committed(COMMITTED, 7), {"b": "2", "c": "3"})
        self.assertEqual(replay_committed(COMMITTED, 0), {})
        with self.assertRaises(MissingCommitted) as caught:
            replay_committed({1: COMMITTED[1], 3: COMMITTED[3]}, 3)
        self.assertEqual(caught.exception.index, 2)

    def test_snapshot_of_committed_entries_passes(self) -> None:
        """A snapshot whose last entry and content match the committed history passes, as does an empty one at index 0."""
        self.assertIsNone(snapshot_uncommitted(5, 2, {"b": "2"}, COMMITTED))
        self.assertIsNone(snapshot_uncommitted(7, 2, None, COMMITTED))
        self.assertIsNone(snapshot_uncommitted(0, 0, {}, COMMITTED))

    def test_snapshot_past_the_committed_history_fails(self) -> None:
        """A snapshot ending at an index never seen committed is reported."""
        problem = snapshot_uncommitted(8, 2, None, COMMITTED)
        self.assertIsNotNone(problem)
        self.assertIn("never seen committed", problem or "")

    def test_snapshot_with_another_term_fails(self) -> None:
        """A snapshot recording another term for its last entry than the committed one is reported."""
        problem = snapshot_uncommitted(5, 3, None, COMMITTED)
        self.assertIn("has term 2", problem or "")

    def test_snapshot_with_uncommitted_content_fails(self) -> None:
        """A snapshot whose content includes a write that was not committed by its index, or lacks one that was, is reported."""
        extra = snapshot_uncommitted(3, 1, {"a": "1", "b": "2", "c": "3"}, COMMITTED)
        self.assertIn("'c': '3' vs None", extra or "")
        missing = snapshot_uncommitted(7, 2, {"b": "2"}, COMMITTED)
        self.assertIn("'c': None vs '3'", missing or "")

    def test_snapshot_over_a_gap_fails(self) -> None:
        """A snapshot covering an index never seen committed is reported."""
        gappy = {i: e for i, e in COMMITTED.items() if i != 2}
        self.assertIn("covers entry 2", snapshot_uncommitted(3, 1, {"b": "2"}, gappy) or "")

    def test_properties_are_described(self) -> None:
        """The safety monitor knows both new properties by name."""
        self.assertIn("state-machines-agree", PROPERTIES)
        self.assertIn("snapshot-committed", PROPERTIES)
