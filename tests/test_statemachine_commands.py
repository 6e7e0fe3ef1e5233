# -*- test-case-name: tests.test_statemachine_commands -*-
"""
Applying INCR and CAS (issue 14): the result is computed at apply time,
a missing key counts as 0 for INCR, a value that is not an integer or a
sum beyond signed 64 bits is refused with nothing changed, and CAS sets the
new value only over the expected one; the same on the frozen map and in a
snapshot's overlay.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kvstore.errors import CasFailed, IntegerOverflow, KeyNotFound, NotAnInteger
from kvstore.statemachine import (
    INT64_MAX,
    INT64_MIN,
    ApplyResult,
    InvalidCommand,
    KeyValueStateMachine,
    Refusal,
    encode_cas,
    encode_delete,
    encode_incr,
    encode_put,
)


class Machine:
    """A state machine and the next index to apply at."""

    def __init__(self) -> None:
        self.sm = KeyValueStateMachine()

    def apply(self, command: bytes) -> ApplyResult:
        return self.sm.apply(self.sm.applied_index + 1, command)


class IncrTests(SynchronousTestCase):
    """INCR <key> <delta>."""

    def test_missing_key_counts_as_zero(self) -> None:
        """INCR of a missing key stores the delta and returns it as the new value."""
        m = Machine()
        self.assertEqual(m.apply(encode_incr("n", 1)), ApplyResult(value=1))
        self.assertEqual(m.sm.get("n"), "1")

    def test_adds_signed_delta(self) -> None:
        """Each INCR adds its (possibly negative) delta to the stored integer and returns the sum."""
        m = Machine()
        m.apply(encode_put("n", "40"))
        self.assertEqual(m.apply(encode_incr("n", 2)).value, 42)
        self.assertEqual(m.apply(encode_incr("n", -50)).value, -8)
        self.assertEqual(m.apply(encode_incr("n", 0)).value, -8)
        self.assertEqual(m.sm.get("n"), "-8")

    def test_integer_forms_accepted(self) -> None:
        """A stored value of ASCII digits with an optional minus sign is an integer, leading zeros too;
        the result is written in canonical form."""
        for stored, expected in (("007", 8), ("-0", 1), ("-12", -11), ("0" * 40 + "5", 6)):
            with self.subTest(stored=stored):
                m = Machine()
                m.apply(encode_put("n", stored))
                self.assertEqual(m.apply(encode_incr("n", 1)).value, expected)
                self.assertEqual(m.sm.get("n"), str(expected))

    def test_not_an_integer_changes_nothing(self) -> None:
        """A value that is not a decimal integer is refused with NOT_INTEGER and left as it was."""
        for stored in ("", "abc", "1.5", " 5", "5 ", "+5", "1e3", "٣", "0x10", "--1", "-"):
            with self.subTest(stored=stored):
                m = Machine()
                m.apply(encode_put("n", stored))
                result = m.apply(encode_incr("n", 1))
                self.assertEqual(result, ApplyResult(refusal=Refusal.NOT_INTEGER))
                self.assertEqual(m.sm.get("n"), stored)
                self.assertIsInstance(result.error("n"), NotAnInteger)

    def test_overflow_changes_nothing(self) -> None:
        """A sum outside the signed 64-bit range is refused with OVERFLOW and the value is kept;
        the bounds themselves are reachable."""
        cases = [(INT64_MAX, 1), (INT64_MIN, -1), (INT64_MAX, INT64_MAX), (INT64_MIN, INT64_MIN), (-1, INT64_MIN)]
        for start, delta in cases:
            with self.subTest(start=start, delta=delta):
                m = Machine()
                m.apply(encode_put("n", str(start)))
                result = m.apply(encode_incr("n", delta))
                if INT64_MIN <= start + delta <= INT64_MAX:
                    self.assertEqual(result.value, start + delta)
                else:
                    self.assertEqual(result, ApplyResult(refusal=Refusal.OVERFLOW))
                    self.assertEqual(m.sm.get("n"), str(start))
                    self.assertIsInstance(result.error("n"), IntegerOverflow)
        m = Machine()
        m.apply(encode_put("n", str(INT64_MAX - 1)))
        self.assertEqual(m.apply(encode_incr("n", 1)).value, INT64_MAX)

    def test_stored_value_beyond_64_bits_is_overflow(self) -> None:
        """A stored integer outside the range (written by PUT), however long, is refused as OVERFLOW without
        converting it (Python refuses int() of more than 4300 digits)."""
        for stored in (str(INT64_MAX + 1), str(INT64_MIN - 1), "9" * 5000, "-" + "9" * 5000):
            with self.subTest(digits=len(stored)):
                m = Machine()
                m.apply(encode_put("n", stored))
                self.assertEqual(m.apply(encode_incr("n", 0)).refusal, Refusal.OVERFLOW)
                self.assertEqual(m.sm.get("n"), stored)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(min_value=INT64_MIN, max_value=INT64_MAX), max_size=20))
    def test_against_a_model(self, deltas: list[int]) -> None:
        """Any sequence of INCRs gives the model's sums, refusing exactly the steps that would overflow."""
        m, value = Machine(), 0
        for delta in deltas:
            result = m.apply(encode_incr("n", delta))
            if INT64_MIN <= value + delta <= INT64_MAX:
                value += delta
                self.assertEqual(result.value, value)
            else:
                self.assertEqual(result.refusal, Refusal.OVERFLOW)
        self.assertEqual(m.sm.get("n"), str(value) if deltas else None)

    def test_malformed_incr_entries_are_invalid(self) -> None:
        """Committed data that is not an INCR command (no delta, a delta beyond 64 bits or not decimal)
        raises InvalidCommand and changes nothing."""
        for data in (b"Ik", b"I k", b"Ik ", b"Ik x", b"Ik +1", b"Ik 9223372036854775808", b"Ik " + b"9" * 30):
            with self.subTest(data=data):
                m = Machine()
                m.apply(encode_put("k", "1"))
                self.assertRaises(InvalidCommand, m.apply, data)
                self.assertEqual((m.sm.items(), m.sm.applied_index), ({"k": "1"}, 2))


class CasTests(SynchronousTestCase):
    """CAS <key> <expected> <new>."""

    def test_sets_over_the_expected_value(self) -> None:
        """CAS over the expected value stores the new one (which may hold spaces, or be empty)."""
        m = Machine()
        m.apply(encode_put("k", "old"))
        self.assertEqual(m.apply(encode_cas("k", "old", "new value ")), ApplyResult())
        self.assertEqual(m.sm.get("k"), "new value ")
        self.assertEqual(m.apply(encode_cas("k", "new", "x")).refusal, Refusal.CAS_FAILED)
        m.apply(encode_put("k", "a"))
        self.assertEqual(m.apply(encode_cas("k", "a", "")), ApplyResult())
        self.assertEqual(m.sm.get("k"), "")

    def test_mismatch_reports_the_actual_value(self) -> None:
        """CAS over another value changes nothing and reports the value it found."""
        m = Machine()
        m.apply(encode_put("k", "actual value"))
        result = m.apply(encode_cas("k", "expected", "new"))
        self.assertEqual(result, ApplyResult(refusal=Refusal.CAS_FAILED, value="actual value"))
        self.assertEqual(m.sm.get("k"), "actual value")
        error = result.error("k")
        assert isinstance(error, CasFailed)
        self.assertEqual((error.key, error.actual), ("k", "actual value"))

    def test_missing_key_is_not_found(self) -> None:
        """CAS of a missing (or deleted) key is not found and creates nothing."""
        m = Machine()
        self.assertEqual(m.apply(encode_cas("k", "a", "b")), ApplyResult(False))
        m.apply(encode_put("k", "a"))
        m.apply(encode_delete("k"))
        result = m.apply(encode_cas("k", "a", "b"))
        self.assertFalse(result.found)
        self.assertIsInstance(result.error("k"), KeyNotFound)
        self.assertEqual(m.sm.items(), {})

    def test_malformed_cas_entries_are_invalid(self) -> None:
        """Committed data that is not a CAS command raises InvalidCommand and changes nothing."""
        for data in (b"C", b"Ck", b"Ck a", b"C a b", b"Ck  b"):
            with self.subTest(data=data):
                m = Machine()
                self.assertRaises(InvalidCommand, m.apply, data)
                self.assertEqual(m.sm.items(), {})


class DuringSnapshotTests(SynchronousTestCase):
    """INCR and CAS while a snapshot is open go to the overlay, like PUT."""

    def test_incr_and_cas_in_the_overlay(self) -> None:
        """Applied while a snapshot is open, INCR and CAS read frozen and overlay values alike, the
        snapshot keeps the frozen values, and the merge keeps the new ones."""
        m = Machine()
        m.apply(encode_put("n", "1"))
        m.apply(encode_put("k", "a"))
        snapshot = m.sm.begin_snapshot()
        self.assertEqual(m.apply(encode_incr("n", 1)).value, 2)
        self.assertEqual(m.apply(encode_incr("n", 1)).value, 3)
        self.assertEqual(m.apply(encode_incr("fresh", 5)).value, 5)
        self.assertEqual(m.apply(encode_cas("k", "a", "b")), ApplyResult())
        self.assertEqual(m.apply(encode_cas("k", "a", "c")).value, "b")
        self.assertEqual(len(m.sm), 3)
        content = b"".join(snapshot.chunks())
        snapshot.close()
        while not m.sm.merge_overlay(1):
            pass
        self.assertEqual(m.sm.items(), {"n": "3", "k": "b", "fresh": "5"})
        restored = KeyValueStateMachine()
        restored.restore(snapshot.index, [content])
        self.assertEqual(restored.items(), {"n": "1", "k": "a"})
