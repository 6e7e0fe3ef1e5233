# -*- test-case-name: tests.test_sim_checkers -*-
"""
The simulator's checkers fail on known-bad histories: the linearizability
checker on a stale read, a lost write and a duplicated apply; the safety
monitor on two leaders in a term, a double vote, a changed committed entry,
a duplicated apply, a committed entry lost from a quorum and a leader that
outlives its majority; an undecided search is reported, never a pass.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.core import Role
from kvstore.raft.messages import AppendEntriesResponse, Entry, Message, RequestVoteResponse
from kvstore.testing.sim.linearizability import DELETE, GET, NOT_FOUND, OK, PUT, Operation, check_history
from kvstore.testing.sim.safety import SafetyMonitor


def put(client: int, value: str, t0: float, t1: float | None) -> Operation:
    return Operation(client, PUT, "k", value, OK, t0, t1)


def get(client: int, value: str | None, t0: float, t1: float | None) -> Operation:
    return Operation(client, GET, "k", None, value, t0, t1)


def delete(client: int, t0: float, t1: float | None, result: str = OK) -> Operation:
    return Operation(client, DELETE, "k", None, result, t0, t1)


class LinearizabilityCheckerTests(SynchronousTestCase):
    def test_stale_read_fails(self) -> None:
        """A read that begins after a write was acknowledged and returns the
        value before it is not linearizable."""
        history = [put(1, "old", 0, 1), put(1, "new", 2, 3), get(2, "old", 4, 5)]
        result = check_history(history)
        self.assertFalse(result.ok)
        self.assertEqual(result.key, "k")

    def test_lost_write_fails(self) -> None:
        """An acknowledged write that later reads never see (the key reads as
        missing) is not linearizable."""
        history = [put(1, "v", 0, 1), get(2, None, 2, 3)]
        self.assertFalse(check_history(history).ok)

    def test_duplicated_apply_fails(self) -> None:
        """A delete applied twice, the second time after a later write (the
        key reads as missing after the write was acknowledged), is not
        linearizable; nor is a put applied again after it was overwritten."""
        deleted_twice = [put(1, "a", 0, 1), delete(1, 2, 3), put(1, "b", 4, 5), get(2, None, 6, 7)]
        self.assertFalse(check_history(deleted_twice).ok)
        put_twice = [put(1, "a", 0, 1), put(1, "b", 2, 3), get(2, "a", 4, 5)]
        self.assertFalse(check_history(put_twice).ok)

    def test_unknown_writes_nobody_observed_do_not_make_the_search_inconclusive(self) -> None:
        """Many concurrent writes of unknown outcome that no read observed are
        left out of the search, so a small budget still decides, both ways."""
        unknown = [put(c, f"lost{c}", 0, None) for c in range(40)]
        good = unknown + [put(99, "x", 1, 2), get(98, "x", 3, 4)]
        bad = unknown + [put(99, "x", 1, 2), get(98, None, 3, 4)]
        self.assertTrue(check_history(good, max_states=1_000).passed)
        result = check_history(bad, max_states=1_000)
        self.assertFalse(result.ok)
        self.assertEqual(result.inconclusive, [])

    def test_observed_unknown_writes_are_still_searched(self) -> None:
        """An unknown write whose value a read returned, or whose effect a
        delete reported, is kept: the history with it is linearizable."""
        self.assertTrue(check_history([put(1, "u", 0, None), get(2, "u", 1, 2)]).passed)
        self.assertTrue(check_history([put(1, "u", 0, None), delete(2, 1, 2)]).passed)
        self.assertTrue(check_history([put(1, "v", 0, 1), delete(1, 2, None), get(2, None, 3, 4)]).passed)
        self.assertTrue(
            check_history([put(1, "v", 0, 1), delete(1, 2, None), delete(2, 3, 4, result=NOT_FOUND)]).passed
        )

    def test_an_undecided_search_is_not_a_pass(self) -> None:
        """A key whose search hits the bound is named, and the result does
        not count as passed."""
        history = [put(c, f"v{c}", 0, 100) for c in range(12)] + [get(99, "v3", 101, 102), put(1, "z", 103, 104),
                                                                   get(2, "nope", 105, 106)]
        result = check_history(history, max_states=20)
        self.assertEqual(result.inconclusive, ["k"])
        self.assertFalse(result.passed)


class _FakeCore:
    def __init__(self, entries: list[Entry], term: int, commit: int, role: Role = Role.FOLLOWER) -> None:
        self.log = entries
        self.term = term
        self.commit_index = commit
        self.role = role
        self.first_index = 1  # nothing compacted
        self.snapshot_index = 0

    @property
    def last_index(self) -> int:
        return len(self.log)

    @property
    def last_term(self) -> int:
        return self.log[-1].term if self.log else 0

    def term_at(self, index: int) -> int:
        return self.log[index - 1].term if 0 < index <= len(self.log) else 0

    def entries(self, start: int, end: int) -> list[Entry]:
        return self.log[start - 1 : end]


class _FakeStateMachine:
    def apply(self, index: int, data: bytes) -> Any:
        return None


class _FakeNode:
    def __init__(self, core: _FakeCore) -> None:
        self.core = core
        self.state_machine = _FakeStateMachine()


def _monitor(durable: dict[int, list[Entry]] | None = None, **options: Any) -> tuple[SafetyMonitor, list[float]]:
    now = [0.0]
    logs = durable or {}
    monitor = SafetyMonitor(lambda: now[0], (0, 1, 2), 2, lambda i: logs.get(i, []), **options)
    return monitor, now


def _properties(monitor: SafetyMonitor) -> set[str]:
    return {v.property for v in monitor.violations}


A1, B1, C2 = Entry(1, 1, b"a"), Entry(1, 1, b"b"), Entry(2, 1, b"c")


class SafetyMonitorTests(SynchronousTestCase):
    def test_two_leaders_in_one_term(self) -> None:
        """Two nodes leading the same term violate election safety."""
        monitor, _ = _monitor()
        monitor.watch(0, _FakeNode(_FakeCore([A1], 2, 0, Role.LEADER)))  # type: ignore[arg-type]
        monitor.watch(1, _FakeNode(_FakeCore([A1], 2, 0, Role.LEADER)))  # type: ignore[arg-type]
        monitor.step()
        self.assertIn("election-safety", _properties(monitor))

    def test_double_vote(self) -> None:
        """A node granting its vote to two candidates in one term is caught
        from the messages it sends."""
        monitor, _ = _monitor()
        monitor.on_send(Message(0, 1, RequestVoteResponse(3, True)))
        monitor.on_send(Message(0, 2, RequestVoteResponse(3, True)))
        self.assertEqual(_properties(monitor), {"double-vote"})

    def test_committed_entry_changed(self) -> None:
        """A node committing another entry at an index already committed
        violates state machine safety."""
        monitor, _ = _monitor()
        monitor.watch(0, _FakeNode(_FakeCore([A1], 1, 1)))  # type: ignore[arg-type]
        monitor.watch(1, _FakeNode(_FakeCore([B1], 1, 1)))  # type: ignore[arg-type]
        monitor.step()
        self.assertIn("state-machine-safety", _properties(monitor))

    def test_duplicated_apply(self) -> None:
        """A node applying an entry again at a later index (where another
        entry was applied) violates state machine safety."""
        monitor, _ = _monitor()
        nodes = [_FakeNode(_FakeCore([A1, C2], 1, 2)) for _ in range(2)]
        for i, node in enumerate(nodes):
            monitor.watch(i, node)  # type: ignore[arg-type]
        nodes[0].state_machine.apply(1, b"a")
        nodes[0].state_machine.apply(2, b"c")
        nodes[1].state_machine.apply(1, b"a")
        nodes[1].state_machine.apply(2, b"a")
        self.assertEqual(_properties(monitor), {"state-machine-safety"})

    def test_committed_entry_lost_from_a_quorum(self) -> None:
        """An entry seen committed but durable on only one of three nodes is
        reported lost."""
        monitor, _ = _monitor(durable={0: [A1]})
        monitor.watch(0, _FakeNode(_FakeCore([A1], 1, 1)))  # type: ignore[arg-type]
        monitor.step()
        monitor.check_durable_quorum()
        self.assertEqual(_properties(monitor), {"committed-entry-lost"})

    def test_leader_that_outlives_its_majority(self) -> None:
        """A leader that no majority acknowledged for longer than the bound is
        reported; one that keeps hearing from a majority is not."""
        monitor, now = _monitor(step_down_within=0.5)
        monitor.watch(0, _FakeNode(_FakeCore([A1], 1, 0, Role.LEADER)))  # type: ignore[arg-type]
        for t in range(10):
            now[0] = t * 0.1
            monitor.on_deliver(Message(1, 0, AppendEntriesResponse(1, True, 1)))
            monitor.step()
        self.assertEqual(monitor.violations, [])
        now[0] = 0.9 + 0.49
        monitor.step()
        self.assertEqual(monitor.violations, [])
        now[0] = 0.9 + 0.51
        monitor.step()
        self.assertEqual(_properties(monitor), {"leader-steps-down"})
