# -*- test-case-name: tests.test_statemachine -*-
"""
Tests of L{kvstore.statemachine}: command encoding, in-order application,
deletes of missing keys, no-op entries, and rejection of foreign data.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kvstore.statemachine import ApplyResult, InvalidCommand, KeyValueStateMachine, encode_delete, encode_put

from tests.support import parametrize


keys = st.text(st.characters(exclude_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=5)
commands = st.lists(
    st.one_of(
        st.tuples(st.just("put"), keys, st.text(st.characters(exclude_categories=("Cs",)), max_size=5)),
        st.tuples(st.just("delete"), keys),
    ),
    max_size=30,
)


class KeyValueStateMachineTests(SynchronousTestCase):
    """
    L{KeyValueStateMachine}: applying commands in log order, refusals, and a model check.
    """

    def test_put_then_get(self):
        """A put sets the key's value, and a later put replaces it."""
        sm = KeyValueStateMachine()
        assert sm.apply(1, encode_put("k", "v1")) == ApplyResult(True)
        assert sm.get("k") == "v1"
        sm.apply(2, encode_put("k", "v2"))
        assert sm.get("k") == "v2" and len(sm) == 1 and sm.applied_index == 2

    def test_value_may_contain_spaces_and_unicode(self):
        """Everything after the first space is the value, spaces included."""
        sm = KeyValueStateMachine()
        sm.apply(1, encode_put("kéy", "a b  c ☃"))
        assert sm.get("kéy") == "a b  c ☃"

    def test_empty_value(self):
        """A put of an empty value stores the empty string, not a missing key."""
        sm = KeyValueStateMachine()
        sm.apply(1, encode_put("k", ""))
        assert sm.get("k") == ""

    def test_delete_existing_and_missing(self):
        """Deleting a present key removes it and reports found; deleting a
        missing key changes nothing and reports not found."""
        sm = KeyValueStateMachine()
        sm.apply(1, encode_put("k", "v"))
        assert sm.apply(2, encode_delete("k")) == ApplyResult(True)
        assert sm.get("k") is None and len(sm) == 0
        assert sm.apply(3, encode_delete("k")) == ApplyResult(False)
        assert sm.applied_index == 3

    def test_noop_entry_only_advances_applied_index(self):
        """The leader's empty no-op entry changes no data."""
        sm = KeyValueStateMachine()
        assert sm.apply(1, b"") == ApplyResult(True)
        assert sm.applied_index == 1 and len(sm) == 0

    @parametrize("index", [0, 2, 5])
    def test_out_of_order_apply_is_refused(self, index):
        """Applying anything but the next index is a bug and raises."""
        sm = KeyValueStateMachine()
        with self.assertRaises(AssertionError):
            sm.apply(index, encode_put("k", "v"))
        assert sm.applied_index == 0 and sm.get("k") is None

    def test_reapplying_an_index_is_refused(self):
        """An entry is applied once: applying its index again raises."""
        sm = KeyValueStateMachine()
        sm.apply(1, encode_put("k", "v"))
        with self.assertRaises(AssertionError):
            sm.apply(1, encode_put("k", "w"))
        assert sm.get("k") == "v"

    @parametrize(
        "data",
        [b"P\xff\xfe", b"Pnospace", b"P value", b"D", b"X", b"Xk v"],
        ids=["not-utf8", "put-without-space", "put-empty-key", "delete-empty-key", "unknown-op", "unknown-op-args"],
    )
    def test_invalid_command_raises_but_counts_as_applied(self, data):
        """Foreign data raises InvalidCommand yet still advances applied_index,
        so one bad entry cannot wedge the node, and changes no data."""
        sm = KeyValueStateMachine()
        with self.assertRaises(InvalidCommand):
            sm.apply(1, data)
        assert sm.applied_index == 1 and len(sm) == 0
        sm.apply(2, encode_put("k", "v"))
        assert sm.get("k") == "v"

    @settings(max_examples=100, deadline=None)
    @given(commands)
    def test_applying_matches_a_dict_model(self, ops):
        """Applying any sequence of encoded commands gives the same data as the
        same operations on a plain dict, and the same results for deletes."""
        sm = KeyValueStateMachine()
        model: dict[str, str] = {}
        for index, op in enumerate(ops, start=1):
            if op[0] == "put":
                assert sm.apply(index, encode_put(op[1], op[2])).found
                model[op[1]] = op[2]
            else:
                assert sm.apply(index, encode_delete(op[1])).found == (op[1] in model)
                model.pop(op[1], None)
        assert {k: sm.get(k) for k in model} == model and len(sm) == len(model)
