"""
Unit tests of the linearizability checker (kvstore.testing.sim.linearizability):
known linearizable and non-linearizable histories, unknown outcomes, keys
checked independently, and the search bound reported as inconclusive.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.sim.linearizability import DELETE, GET, NOT_FOUND, OK, PUT, Operation, check_history


def put(c, key, value, t0, t1, result=OK):
    return Operation(c, PUT, key, value, result, t0, t1)


def get(c, key, value, t0, t1):
    return Operation(c, GET, key, None, value, t0, t1)


def delete(c, key, t0, t1, result=OK):
    return Operation(c, DELETE, key, None, result, t0, t1)


class LinearizabilityCheckerTests(SynchronousTestCase):
    """
    L{check_history} on hand-written histories, including writes of unknown outcome.
    """

    def test_empty_history_is_linearizable(self):
        """No operations: trivially linearizable."""
        assert check_history([]).ok

    def test_sequential_history(self):
        """Writes then reads in real-time order, reads see the last write."""
        h = [put(1, "k", "a", 0, 1), get(2, "k", "a", 2, 3), put(1, "k", "b", 4, 5), get(2, "k", "b", 6, 7)]
        assert check_history(h).ok

    def test_stale_read_after_completed_write_is_not_linearizable(self):
        """A read that starts after a write completed must not return the older value."""
        h = [put(1, "k", "a", 0, 1), put(1, "k", "b", 2, 3), get(2, "k", "a", 4, 5)]
        result = check_history(h)
        assert not result.ok
        assert result.key == "k"
        assert "get k" in result.details

    def test_concurrent_read_may_see_either_value(self):
        """A read overlapping a write may return the old or the new value."""
        base = [put(1, "k", "a", 0, 1), put(1, "k", "b", 2, 6)]
        assert check_history(base + [get(2, "k", "a", 3, 4)]).ok
        assert check_history(base + [get(2, "k", "b", 3, 4)]).ok

    def test_reads_must_not_go_back_in_time(self):
        """Two sequential reads during one write cannot see new then old."""
        h = [put(1, "k", "a", 0, 1), put(1, "k", "b", 2, 10), get(2, "k", "b", 3, 4), get(2, "k", "a", 5, 6)]
        assert not check_history(h).ok

    def test_read_of_missing_key_and_delete_results(self):
        """A missing key reads as None; a delete reports whether it removed something."""
        assert check_history([get(1, "k", None, 0, 1)]).ok
        assert not check_history([get(1, "k", "x", 0, 1)]).ok
        h = [put(1, "k", "a", 0, 1), delete(1, "k", 2, 3), get(2, "k", None, 4, 5), delete(2, "k", 6, 7, NOT_FOUND)]
        assert check_history(h).ok
        assert not check_history([delete(1, "k", 0, 1, OK)]).ok
        assert not check_history([put(1, "k", "a", 0, 1), delete(1, "k", 2, 3, NOT_FOUND)]).ok

    def test_unknown_write_may_take_effect_late(self):
        """A write with unknown outcome may take effect long after its invocation."""
        h = [put(1, "k", "a", 0, None), get(2, "k", None, 1, 2), get(2, "k", "a", 50, 51)]
        assert check_history(h).ok

    def test_unknown_write_may_never_take_effect(self):
        """A write with unknown outcome may never take effect."""
        h = [put(1, "k", "a", 0, None), get(2, "k", None, 50, 51)]
        assert check_history(h).ok

    def test_unknown_write_cannot_take_effect_before_its_invocation(self):
        """Even an unknown write cannot explain a value read before it was sent."""
        h = [get(2, "k", "a", 0, 1), put(1, "k", "a", 5, None)]
        assert not check_history(h).ok

    def test_unknown_write_takes_effect_at_most_once(self):
        """Once overwritten, an unknown write cannot reappear."""
        h = [
            put(1, "k", "a", 0, None),
            get(2, "k", "a", 1, 2),
            put(2, "k", "b", 3, 4),
            get(2, "k", "a", 5, 6),
        ]
        assert not check_history(h).ok

    def test_unknown_read_is_ignored(self):
        """A read whose answer never came constrains nothing."""
        h = [put(1, "k", "a", 0, 1), get(2, "k", "zzz", 2, None)]
        assert check_history(h).ok

    def test_keys_are_independent(self):
        """A violation on one key is reported for that key even if others are fine."""
        h = [put(1, "x", "1", 0, 1), get(1, "x", "1", 2, 3), put(1, "y", "1", 0, 1), get(2, "y", None, 2, 3)]
        result = check_history(h)
        assert not result.ok and result.key == "y"

    def test_search_bound_is_reported_as_inconclusive(self):
        """A search that hits its bound says so instead of passing silently or hanging."""
        h = [put(c, "k", f"v{c}", 0, 100) for c in range(12)] + [get(99, "k", "nope", 101, 102)]
        result = check_history(h, max_states=50)
        assert result.ok and result.inconclusive == ["k"]
        assert not check_history(h, max_states=10_000_000).ok

    def test_many_concurrent_writers_are_checked_quickly(self):
        """Memoization keeps a long, concurrent but valid history cheap to check."""
        h = []
        t = 0.0
        for round_ in range(40):
            for c in range(4):
                h.append(put(c, "k", f"{round_}.{c}", t, t + 3))
            h.append(get(9, "k", f"{round_}.3", t + 4, t + 5))
            t += 6
        result = check_history(h)
        assert result.ok and not result.inconclusive
