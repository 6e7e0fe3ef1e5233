# -*- test-case-name: tests.test_node_sessions -*-
"""
INCR, CAS and exactly-once sessions through whole in-memory clusters of
production nodes (issue 14): results computed at apply time reach the
waiting client, a retried tagged write gets its first reply after the
leader changed, sessions expire by the stamps in the log identically on
every node, and the leader's stamps never go backwards along the log even
when its clock is behind.
"""

from __future__ import annotations

import functools
from typing import Any

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node import build
from kvstore.errors import CasFailed, KeyNotFound, NotAnInteger, SessionExpired
from kvstore.statemachine import KeyValueStateMachine, SessionTag
from kvstore.testing.memory_cluster import InMemoryCluster


class _ClockBehind:
    """A node's clock C{offset} seconds behind the cluster's (its timers are the cluster's)."""

    def __init__(self, clock: Any, offset: float) -> None:
        self._clock, self._offset = clock, offset

    def seconds(self) -> float:
        return float(self._clock.seconds() - self._offset)

    def callLater(self, delay: float, f: Any, *args: Any, **kwargs: Any) -> Any:
        return self._clock.callLater(delay, f, *args, **kwargs)


class NodeCommandTests(SynchronousTestCase):
    """INCR and CAS through a three-node cluster."""

    def setUp(self) -> None:
        self.cluster = InMemoryCluster(3, seed=1)
        self.leader = self.cluster.node(self.cluster.wait_for_leader())

    def resolve(self, d: Any) -> Any:
        return self.cluster.resolve(d)

    def test_incr_and_cas_results(self) -> None:
        """INCR fires with the new value and CAS with None; refusals fail with their errors; every node
        applies the same values."""
        self.assertEqual(self.resolve(self.leader.incr("n", 5)), 5)
        self.assertEqual(self.resolve(self.leader.incr("n", -2)), 3)
        self.assertIsNone(self.resolve(self.leader.put("k", "a")))
        self.assertIsNone(self.resolve(self.leader.cas("k", "a", "b")))
        failed = self.resolve(self.leader.cas("k", "a", "c"))
        assert isinstance(failed, Failure) and isinstance(failed.value, CasFailed)
        self.assertEqual(failed.value.actual, "b")
        missing = self.resolve(self.leader.cas("nothing", "a", "b"))
        assert isinstance(missing, Failure) and isinstance(missing.value, KeyNotFound)
        not_int = self.resolve(self.leader.incr("k", 1))
        assert isinstance(not_int, Failure) and isinstance(not_int.value, NotAnInteger)
        self.cluster.run(0.5)
        for i in self.cluster.ids:
            self.assertEqual(self.cluster.data_of(i), {"n": "3", "k": "b"})

    def test_retry_after_leader_change_gets_the_first_reply(self) -> None:
        """A tagged INCR retried on a new leader after the old one crashed is answered with the value
        it got the first time, and applied once on every node."""
        session = self.resolve(self.leader.open_session())
        tag = SessionTag(session, 1)
        self.assertEqual(self.resolve(self.leader.incr("n", 1, session=tag)), 1)
        self.assertEqual(self.resolve(self.leader.incr("n", 10)), 11)  # someone else's
        self.cluster.run(0.2)
        self.cluster.crash(self.leader.core.node_id)
        new = self.cluster.node(self.cluster.wait_for_leader())
        self.assertEqual(self.resolve(new.incr("n", 1, session=tag)), 1)
        self.assertEqual(self.resolve(new.incr("n", 1, session=SessionTag(session, 2))), 12)
        self.cluster.run(0.5)
        for i in self.cluster.running():
            self.assertEqual(self.cluster.data_of(i), {"n": "12"})
            self.assertEqual(self.cluster.node(i).state_machine.sessions()[0][:2], (session, 2))


class NodeExpiryTests(SynchronousTestCase):
    """Expiry by the log's stamps."""

    def setUp(self) -> None:
        # Every node of this cluster expires sessions after 1 s of log time.
        self.patch(build, "KeyValueStateMachine", functools.partial(KeyValueStateMachine, session_timeout=1.0))
        self.cluster = InMemoryCluster(3, seed=2)
        self.leader = self.cluster.node(self.cluster.wait_for_leader())

    def test_expiry_is_the_same_on_every_node(self) -> None:
        """A session idle for longer than the timeout is refused once a later stamp shows it, and
        every node holds the same sessions, in the same order, with the same data."""
        resolve = self.cluster.resolve
        idle = resolve(self.leader.open_session())
        busy = resolve(self.leader.open_session())
        for seq in range(1, 8):
            self.cluster.run(0.2)
            self.assertIsNone(resolve(self.leader.put("k", str(seq), session=SessionTag(busy, seq))))
        refused = resolve(self.leader.put("k", "late", session=SessionTag(idle, 1)))
        assert isinstance(refused, Failure) and isinstance(refused.value, SessionExpired)
        self.assertEqual(refused.value.session, idle)
        self.cluster.run(0.5)
        tables = {i: self.cluster.node(i).state_machine.sessions() for i in self.cluster.ids}
        self.assertEqual([s[0] for s in tables[0]], [busy])
        self.assertEqual(tables[0], tables[1])
        self.assertEqual(tables[1], tables[2])
        for i in self.cluster.ids:
            self.assertEqual(self.cluster.data_of(i), {"k": "7"})

    def test_stamps_do_not_go_backwards_with_a_clock_behind(self) -> None:
        """A leader whose clock is 100 s behind stamps no lower than the log time it has applied,
        so a session it registers is not born already expired and nothing expires early."""
        resolve = self.cluster.resolve
        first = resolve(self.leader.open_session())
        self.cluster.run(0.5)
        machine = self.leader.state_machine
        before = machine.log_time
        self.assertGreater(before, 0)
        self.patch(self.leader, "_clock", _ClockBehind(self.cluster.clock, 100.0))
        second = resolve(self.leader.open_session())
        self.assertEqual(machine.log_time, before)
        self.assertEqual([s[0] for s in machine.sessions()], [first, second])
        stamps = [int(e.payload[1:]) for e in self.cluster.log_of(self.leader.core.node_id) if e.payload[:1] == b"S"]
        self.assertEqual(stamps, sorted(stamps))
        self.assertIsNone(resolve(self.leader.put("k", "v", session=SessionTag(first, 1))))
