# -*- test-case-name: tests.test_sim_sessions -*-
"""
The simulator's side of issue 14: INCR and CAS in the per-key
linearizability model, the witness that no session's write is applied
twice (L{AuditedStateMachine}), clients that use sessions and retry in some
seeds, and the convergence check that compares the session tables.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.statemachine import SessionTag, encode_incr, encode_open_session, encode_put, encode_tagged
from kvstore.testing.sim.linearizability import (
    CAS,
    GET,
    INCR,
    NOT_FOUND,
    NOT_INTEGER,
    OK,
    OVERFLOW,
    PUT,
    Operation,
    check_history,
    mismatch,
)
from kvstore.testing.sim.sessions import AuditedStateMachine, decode_tag
from kvstore.testing.sim.world import Simulation, SimConfig, run_seed


def incr(client: int, delta: int, result: str | None, t0: float, t1: float | None, key: str = "n") -> Operation:
    return Operation(client, INCR, key, str(delta), result, t0, t1)


def cas(client: int, expected: str, new: str, result: str | None, t0: float, t1: float | None) -> Operation:
    return Operation(client, CAS, "k", new, result, t0, t1, expected)


def get(client: int, value: str | None, t0: float, t1: float, key: str = "n") -> Operation:
    return Operation(client, GET, key, None, value, t0, t1)


def put(client: int, value: str, t0: float, t1: float | None, key: str = "k") -> Operation:
    return Operation(client, PUT, key, value, OK, t0, t1)


class IncrCasModelTests(SynchronousTestCase):
    """INCR and CAS in the linearizability checker."""

    def test_incr_results_must_add_up(self) -> None:
        """Sequential INCRs must return the running sum; one counted twice (a result skipping a delta)
        is not linearizable."""
        good = [incr(1, 1, "1", 0, 1), incr(2, 2, "3", 2, 3), get(1, "3", 4, 5)]
        self.assertTrue(check_history(good).passed)
        twice = [incr(1, 1, "1", 0, 1), incr(2, 2, "4", 2, 3)]
        self.assertFalse(check_history(twice).ok)
        read_twice = [incr(1, 5, "5", 0, 1), get(2, "10", 2, 3)]
        self.assertFalse(check_history(read_twice).ok)

    def test_concurrent_incrs_in_either_order(self) -> None:
        """Overlapping INCRs may apply in either order, but their results must fit one order."""
        self.assertTrue(check_history([incr(1, 1, "3", 0, 5), incr(2, 2, "2", 1, 4)]).passed)
        self.assertFalse(check_history([incr(1, 1, "1", 0, 5), incr(2, 2, "2", 1, 4)]).ok)

    def test_unknown_incr_applied_or_not(self) -> None:
        """An INCR of unknown outcome may have been applied once, or not at all, never twice."""
        unknown = incr(1, 5, None, 0, None)
        self.assertTrue(check_history([unknown, get(2, "5", 1, 2)]).passed)
        self.assertTrue(check_history([unknown, get(2, None, 1, 2)]).passed)
        self.assertFalse(check_history([unknown, get(2, "10", 1, 2)]).ok)

    def test_not_integer_and_overflow(self) -> None:
        """INCR of a non-integer value or past 64 bits is refused and changes nothing; claiming a
        refusal when the value was an integer is not linearizable."""
        self.assertTrue(check_history([put(1, "x", 0, 1, key="n"), incr(1, 1, NOT_INTEGER, 2, 3),
                                       get(1, "x", 4, 5)]).passed)
        self.assertFalse(check_history([put(1, "7", 0, 1, key="n"), incr(1, 1, NOT_INTEGER, 2, 3)]).ok)
        top = str(2**63 - 1)
        self.assertTrue(check_history([put(1, top, 0, 1, key="n"), incr(1, 1, OVERFLOW, 2, 3),
                                       get(1, top, 4, 5)]).passed)
        self.assertFalse(check_history([put(1, top, 0, 1, key="n"), incr(1, -1, OVERFLOW, 2, 3)]).ok)

    def test_cas(self) -> None:
        """CAS sets only over the expected value; a failure reports the actual value; a missing key is
        not found; results that do not fit the state are not linearizable."""
        ok = [put(1, "a", 0, 1), cas(2, "a", "b", OK, 2, 3), get(1, "b", 4, 5, key="k")]
        self.assertTrue(check_history(ok).passed)
        failed = [put(1, "a", 0, 1), cas(2, "z", "b", mismatch("a"), 2, 3), get(1, "a", 4, 5, key="k")]
        self.assertTrue(check_history(failed).passed)
        self.assertTrue(check_history([cas(2, "z", "b", NOT_FOUND, 0, 1)]).passed)
        self.assertFalse(check_history([put(1, "a", 0, 1), cas(2, "a", "b", mismatch("a"), 2, 3)]).ok)
        self.assertFalse(check_history([put(1, "a", 0, 1), cas(2, "z", "b", OK, 2, 3)]).ok)
        self.assertFalse(check_history([put(1, "a", 0, 1), cas(2, "a", "b", OK, 2, 3), cas(3, "a", "c", OK, 4, 5)]).ok)

    def test_unknown_put_seen_by_a_cas_is_kept(self) -> None:
        """An unknown PUT that only a CAS observed is not pruned as unobservable: the CAS's success
        needs it."""
        history = [put(1, "a", 0, None), cas(2, "a", "b", OK, 1, 2)]
        self.assertTrue(check_history(history).passed)
        self.assertFalse(check_history([put(1, "a", 0, 1), put(1, "c", 2, None),
                                        cas(2, "c", "b", OK, 3, 4), get(2, "a", 5, 6, key="k")]).ok)


class AuditTests(SynchronousTestCase):
    """The witness that no session write is applied twice."""

    def machine(self, plants: frozenset[str] = frozenset(), **kwargs: object) -> tuple[AuditedStateMachine, list[str]]:
        reports: list[str] = []
        return AuditedStateMachine(reports.append, plants=plants, **kwargs), reports

    def test_decode_tag(self) -> None:
        """The witness reads (session, seq, key) from session writes only."""
        self.assertEqual(decode_tag(encode_tagged(SessionTag(3, 9), 5, encode_incr("n", 1))), (3, 9, "n"))
        self.assertEqual(decode_tag(encode_tagged(SessionTag(3, 9), 5, encode_put("k", "a b"))), (3, 9, "k"))
        for other in (encode_put("k", "v"), encode_open_session(5), b"", b"T1 x 5 Pk v", b"T1 1 5"):
            self.assertIsNone(decode_tag(other))

    def test_copy_that_changes_state_is_reported(self) -> None:
        """With dedup switched off (the plant), the copy of an INCR changes the counter and is reported;
        with the real machine the same log reports nothing."""
        for plants, reported in ((frozenset({"session-dedup-off"}), 1), (frozenset(), 0)):
            with self.subTest(plants=plants):
                sm, reports = self.machine(plants)
                sm.apply(1, encode_open_session(0))
                sm.apply(2, encode_tagged(SessionTag(1, 1), 0, encode_incr("n", 1)))
                sm.apply(3, encode_tagged(SessionTag(1, 1), 0, encode_incr("n", 1)))
                self.assertEqual(len(reports), reported)
                if reports:
                    self.assertIn("session 1 sequence 1", reports[0])

    def test_copies_that_change_nothing_pass(self) -> None:
        """Copies answered from the record, stale ones, and ones refused because their session expired
        change nothing and are not reported."""
        sm, reports = self.machine(session_timeout=1.0)
        sm.apply(1, encode_open_session(0))
        sm.apply(2, encode_tagged(SessionTag(1, 2), 0, encode_incr("n", 1)))
        sm.apply(3, encode_tagged(SessionTag(1, 1), 0, encode_incr("n", 1)))  # stale
        sm.apply(4, encode_tagged(SessionTag(1, 2), 0, encode_incr("n", 1)))  # duplicate
        sm.apply(5, encode_tagged(SessionTag(1, 2), 5000, encode_incr("n", 1)))  # expired
        self.assertEqual((reports, sm.get("n")), ([], "1"))


class SimulatedSessionTests(SynchronousTestCase):
    """Whole simulated runs with sessions."""

    def test_session_seeds_retry_and_pass(self) -> None:
        """Some seeds use sessions: clients open them, retry writes after unknown outcomes, see sessions
        expire, and the seed still passes every checker, INCR and CAS included."""
        sessions = [s for s in range(12) if Simulation(SimConfig(s, 3)).use_sessions]
        self.assertTrue(0 < len(sessions) < 12, sessions)
        results = [run_seed(s, 3) for s in sessions[:4]]
        self.assertEqual([r.report() for r in results if not r.ok], [])
        totals = {k: sum(r.stats[k] for r in results) for k in
                  ("sessions_opened", "session_retries", "sessions_expired", "incrs", "cass")}
        for name, count in totals.items():
            self.assertGreater(count, 0, name)

    def test_convergence_compares_sessions(self) -> None:
        """Nodes that hold the same data but different sessions at the same index are a state machine
        safety violation."""
        seed = next(s for s in range(12) if Simulation(SimConfig(s, 3)).use_sessions)
        sim = Simulation(SimConfig(seed, 3))
        result = sim.run()
        self.assertTrue(result.ok, result.report())
        machine = sim.members[0].node.state_machine  # type: ignore[union-attr]
        self.assertTrue(machine.sessions())
        machine._sessions.popitem()
        sim._converged()
        self.assertEqual([v.property for v in sim.monitor.violations], ["state-machine-safety"])
        self.assertIn("different sessions", sim.monitor.violations[0].detail)
