# -*- test-case-name: tests.test_fault_checkers -*-
"""
The fault suite's own checkers (L{kvstore.testing.history} and L{kvstore.testing.checks}), fed histories
known to be bad.

A checker that cannot fail proves nothing: the real-process fault scenarios
pass whenever C{classify}, C{History.operations} and
C{check_no_lost_writes} report nothing.  So each is given here a history
with a lost acknowledged write, a misclassified outcome or a stale read,
and must report it; and the matching good history, which must pass, so
that the checks are not simply always failing.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.checks import check_no_lost_writes, check_replies
from kvstore.testing.history import FAILED, OK_STATUS, UNEXPECTED, UNKNOWN, History, Record, classify
from kvstore.testing.sim.linearizability import check_history


def record(kind: str, key: str, reply: str | None, invoke: float, complete: float, value: str | None = None,
           client: object = "c") -> Record:
    """A record classified from the reply line the node sent (None: no
    reply, e.g. a timeout)."""
    r = Record(client, kind, key, value, invoke, 0)
    if reply is not None:
        classify(r, reply, complete)
    return r


def put(key: str, value: str, invoke: float, complete: float, reply: str | None = "") -> Record:
    if reply == "":
        reply = f"{key} added successfully."
    return record("put", key, reply, invoke, complete, value)


def delete(key: str, invoke: float, complete: float, reply: str | None = "") -> Record:
    if reply == "":
        reply = f"{key} deleted successfully."
    return record("delete", key, reply, invoke, complete)


def get(key: str, value: str | None, invoke: float, complete: float) -> Record:
    reply = f"Error: Key {key} not found" if value is None else f"value of {key}: {value}"
    return record("get", key, reply, invoke, complete)


def history_of(records: list[Record]) -> History:
    history = History()
    for r in records:
        history.add(r)
    return history


class ClassifyTests(SynchronousTestCase):
    """C{classify}: each reply line the node can send, and what it means
    for whether the operation took effect."""

    def test_replies_and_their_outcomes(self) -> None:
        """Success lines are known outcomes; 'Not leader' is a certain
        failure of a write; any other error of a write (outcome unknown,
        unavailable, internal error) leaves its outcome unknown; any error
        of a read means it observed nothing."""
        cases = [
            ("put", "k added successfully.", OK_STATUS, "ok"),
            ("put", "Error: Not leader. Current leader is Node 2 at 127.0.0.1:20002", FAILED, None),
            ("put", "Error: Not leader. No leader elected yet", FAILED, None),
            ("put", "Error: Outcome unknown: the write did not commit in time "
                    "(the write may or may not have been applied)", UNKNOWN, None),
            ("put", "Error: Unavailable: the node is shutting down", UNKNOWN, None),
            ("put", "Error: Internal error", UNKNOWN, None),
            ("delete", "k deleted successfully.", OK_STATUS, "ok"),
            ("delete", "Error: Key k not found", OK_STATUS, "not-found"),
            ("delete", "Error: Not leader. No leader elected yet", FAILED, None),
            ("delete", "Error: Outcome unknown: leadership changed before the write committed "
                       "(the write may or may not have been applied)", UNKNOWN, None),
            ("get", "value of k: v1", OK_STATUS, "v1"),
            ("get", "value of k: two words", OK_STATUS, "two words"),
            ("get", "Error: Key k not found", OK_STATUS, None),
            ("get", "Error: Unavailable: the read index was not confirmed in time", FAILED, None),
            ("get", "Error: Not leader. No leader elected yet", FAILED, None),
        ]
        for kind, reply, status, result in cases:
            with self.subTest(kind=kind, reply=reply):
                r = record(kind, "k", reply, 1.0, 2.0, "v" if kind == "put" else None)
                self.assertEqual((r.status, r.result), (status, result))
                self.assertEqual(r.complete, 2.0 if status == OK_STATUS else None)
                self.assertEqual(r.reply, reply)

    def test_reply_for_another_request_is_not_taken_for_a_refusal(self) -> None:
        """A reply that is neither this request's success line nor an error
        (for example the reply of another key: replies crossed on a
        pipelined connection) is flagged as unexpected, not silently counted
        as a failed read or an unknown write."""
        cases = [
            ("get", "value of other: v1"),
            ("get", "Error: Key other not found"),
            ("put", "other added successfully."),
            ("put", "value of k: v"),
            ("delete", "other deleted successfully."),
            ("delete", "PONG"),
        ]
        for kind, reply in cases:
            with self.subTest(kind=kind, reply=reply):
                r = record(kind, "k", reply, 1.0, 2.0, "v" if kind == "put" else None)
                self.assertEqual(r.status, UNEXPECTED)
                problems = check_replies([r])
                self.assertEqual(len(problems), 1)
                self.assertIn(repr(reply), problems[0])

    def test_expected_replies_pass_the_reply_check(self) -> None:
        """Success lines and error lines are not reported by check_replies."""
        records = [put("k", "v", 0, 1), get("k", "v", 2, 3), delete("k", 4, 5),
                   put("k", "w", 6, 7, reply="Error: Not leader. No leader elected yet")]
        self.assertEqual(check_replies(records), [])


class LostWriteTests(SynchronousTestCase):
    """C{check_no_lost_writes} against histories with and without a lost
    acknowledged write."""

    def test_acknowledged_put_missing_from_the_final_state(self) -> None:
        """An acknowledged put of a key that is missing at the end, with no
        delete that could have followed it, is a lost write."""
        records = [put("k", "v1", 1, 2)]
        problems = check_no_lost_writes(records, {"k": None})
        self.assertEqual(len(problems), 1)
        self.assertIn("'v1'", problems[0])

    def test_acknowledged_put_overwritten_by_an_earlier_value(self) -> None:
        """The final value was written by a put that completed before another
        acknowledged put began: the later put was lost."""
        records = [put("k", "v1", 1, 2), put("k", "v2", 3, 4)]
        problems = check_no_lost_writes(records, {"k": "v1"})
        self.assertEqual(len(problems), 1)
        self.assertIn("'v2'", problems[0])

    def test_acknowledged_delete_lost(self) -> None:
        """A value that an acknowledged delete, begun after the put completed,
        should have removed is still there: the delete was lost."""
        records = [put("k", "v1", 1, 2), delete("k", 3, 4)]
        self.assertEqual(len(check_no_lost_writes(records, {"k": "v1"})), 1)

    def test_final_value_never_written(self) -> None:
        """A final value no put wrote, or only a put that certainly failed
        (Not leader) wrote, is reported."""
        refused = put("k", "v9", 1, 2, reply="Error: Not leader. No leader elected yet")
        for final in ("v9", "invented"):
            with self.subTest(final=final):
                problems = check_no_lost_writes([refused, put("k", "v1", 0, 0.5)], {"k": final})
                self.assertEqual(len(problems), 1)
                self.assertIn("never written", problems[0])

    def test_a_delete_that_found_nothing_cannot_explain_a_missing_key(self) -> None:
        """A delete that replied 'not found' removed nothing, so it does not
        excuse an acknowledged put that is missing at the end."""
        records = [put("k", "v1", 1, 2), delete("k", 3, 4, reply="Error: Key k not found")]
        self.assertEqual(len(check_no_lost_writes(records, {"k": None})), 1)

    def test_delete_completed_at_time_zero_is_a_completed_delete(self) -> None:
        """A delete that completed at time 0.0 (a falsy time) completed before
        a put invoked later; the put missing at the end is lost."""
        records = [delete("k", 0.0, 0.0), put("k", "v1", 1, 2)]
        self.assertEqual(len(check_no_lost_writes(records, {"k": None})), 1)

    def test_acknowledged_write_without_a_final_read_is_reported(self) -> None:
        """A key with acknowledged writes but no final read cannot be checked;
        that is reported, not passed."""
        problems = check_no_lost_writes([put("k", "v1", 1, 2), put("other", "x", 1, 2)], {"other": "x"})
        self.assertEqual(len(problems), 1)
        self.assertIn("k:", problems[0])

    def test_good_histories_pass(self) -> None:
        """Histories where nothing was lost are not reported: the last
        acknowledged value survives; a concurrent or unknown write may win;
        a delete that could have come later explains a missing key."""
        cases = [
            ([put("k", "v1", 1, 2), put("k", "v2", 3, 4)], "v2"),
            ([put("k", "v1", 1, 4), put("k", "v2", 2, 3)], "v1"),  # concurrent: either order
            ([put("k", "v1", 1, 2), put("k", "v2", 3, 4, reply=None)], "v1"),  # unknown: may not apply
            ([put("k", "v1", 1, 2), put("k", "v2", 3, 4), put("k", "v0", 0, 5, reply=None)], "v0"),
            ([put("k", "v1", 1, 2), delete("k", 3, 4)], None),
            ([put("k", "v1", 1, 2), delete("k", 0.5, 1.5, reply=None)], None),  # unknown delete after it
            ([put("k", "v1", 1, 2, reply="Error: Not leader. No leader elected yet")], None),
        ]
        for records, final in cases:
            with self.subTest(final=final, records=[(r.kind, r.value, r.status) for r in records]):
                self.assertEqual(check_no_lost_writes(records, {"k": final}), [])


class HistoryLinearizabilityTests(SynchronousTestCase):
    """C{History.operations} feeds the linearizability checker; the checker
    must then see a stale read, a lost write, or a refused write that took
    effect."""

    def test_stale_read_is_not_linearizable(self) -> None:
        """A read that began after a put was acknowledged but returned the
        previous value fails the check."""
        history = history_of([put("k", "old", 0, 1), put("k", "new", 2, 3), get("k", "old", 4, 5)])
        result = check_history(history.operations())
        self.assertFalse(result.ok)
        self.assertEqual(result.key, "k")

    def test_read_of_a_missing_key_after_an_acknowledged_put(self) -> None:
        """A final read that finds nothing after an acknowledged put (a lost
        write) fails the check."""
        history = history_of([put("k", "v1", 0, 1), get("k", None, 2, 3)])
        self.assertFalse(check_history(history.operations()).ok)

    def test_refused_write_that_took_effect(self) -> None:
        """A put refused with 'Not leader' is left out of the history (it
        certainly had no effect), so reading its value fails the check."""
        history = history_of([
            put("k", "v1", 0, 1),
            put("k", "v2", 2, 3, reply="Error: Not leader. Current leader is Node 1"),
            get("k", "v2", 4, 5),
        ])
        self.assertFalse(check_history(history.operations()).ok)

    def test_unknown_write_may_or_may_not_take_effect(self) -> None:
        """A put whose outcome is unknown (an 'Outcome unknown' reply, or no
        reply) may be seen or not, and either history passes."""
        for reply in ("Error: Outcome unknown: the write did not commit in time "
                      "(the write may or may not have been applied)", None):
            for seen in ("v1", "v2"):
                with self.subTest(reply=reply, seen=seen):
                    history = history_of([put("k", "v1", 0, 1), put("k", "v2", 2, 3, reply=reply),
                                          get("k", seen, 4, 5)])
                    self.assertTrue(check_history(history.operations()).ok)

    def test_failed_reads_and_unknown_reads_constrain_nothing(self) -> None:
        """A refused read is left out, and a read without a reply is ignored,
        so neither can make a good history fail."""
        refused = record("get", "k", "Error: Unavailable: the read index was not confirmed in time", 2, 3)
        silent = record("get", "k", None, 2, 3)
        history = history_of([put("k", "v1", 0, 1), refused, silent, get("k", "v1", 4, 5)])
        operations = history.operations()
        self.assertEqual([op.kind for op in operations], ["put", "get", "get"])
        self.assertTrue(check_history(operations).ok)
