# -*- test-case-name: tests.test_review_commands_stamps -*-
"""
Review of issue 14's log time (found in review): a node's reactor clock is
C{time.monotonic} in production (L{kvstore.daemon.clock}), the time since its
machine booted, so two nodes' clocks differ by the difference of their
uptimes: days.  Stamping entries with the clock's absolute reading made a
leader change to a machine up for longer expire every session at once
(exactly when clients retry after the old leader died), and one to a machine
up for less stop log time until its uptime caught up (no session expired by
time meanwhile).  Log time must advance by the leader's I{elapsed} time from
the log time it has seen, whatever its clock reads.
"""

from __future__ import annotations

import functools
from typing import Any

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node import build
from kvstore.errors import SessionExpired
from kvstore.statemachine import KeyValueStateMachine, SessionTag
from kvstore.testing import memory_cluster
from kvstore.testing.memory_cluster import InMemoryCluster

_DAY = 86400.0


class _OffsetClock:
    """A node's clock reading C{offset} seconds more than the cluster's (another machine's uptime); its
    timers are the cluster's."""

    def __init__(self, clock: Any, offset: float) -> None:
        self._clock, self._offset = clock, offset

    def seconds(self) -> float:
        return float(self._clock.seconds() + self._offset)

    def callLater(self, delay: float, f: Any, *args: Any, **kwargs: Any) -> Any:
        return self._clock.callLater(delay, f, *args, **kwargs)


class LeaderClockOffsetTests(SynchronousTestCase):
    """Log time across leaders whose monotonic clocks read differently."""

    def setUp(self) -> None:
        self.patch(build, "KeyValueStateMachine", functools.partial(KeyValueStateMachine, session_timeout=60.0))
        self.offsets: dict[int, float] = {}
        real_build_node = memory_cluster.build_node

        def build_node(config: Any, *, clock: Any, **kwargs: Any) -> Any:
            offset = self.offsets.get(config.node_id, 0.0)
            return real_build_node(config, clock=_OffsetClock(clock, offset) if offset else clock, **kwargs)

        self.patch(memory_cluster, "build_node", build_node)
        self.cluster = InMemoryCluster(3, seed=3)
        self.leader = self.cluster.node(self.cluster.wait_for_leader())

    def _others_clocks(self, offset: float) -> None:
        """Restart every node but the leader with a clock C{offset} seconds ahead of the leader's (each
        node is on a machine of its own, booted at another time)."""
        for i in self.cluster.ids:
            if i != self.leader.core.node_id:
                self.offsets[i] = offset
                self.cluster.crash(i)
                self.cluster.start(i)
        self.cluster.run(0.5)

    def _new_leader(self) -> Any:
        self.cluster.run(0.5)
        self.cluster.crash(self.leader.core.node_id)
        return self.cluster.node(self.cluster.wait_for_leader())

    def test_retry_on_a_leader_up_for_longer_keeps_the_session(self) -> None:
        """A tagged INCR retried on a new leader whose machine has been up a day longer than the old
        one's gets its first reply: the session, used a second ago, has not expired."""
        resolve = self.cluster.resolve
        self._others_clocks(_DAY)
        session = resolve(self.leader.open_session())
        tag = SessionTag(session, 1)
        self.assertEqual(resolve(self.leader.incr("n", 1, session=tag)), 1)
        new = self._new_leader()
        retried = resolve(new.incr("n", 1, session=tag))
        self.assertEqual(retried, 1, retried)
        self.assertEqual(resolve(new.incr("n", 1, session=SessionTag(session, 2))), 2)

    def test_log_time_advances_on_a_leader_up_for_less(self) -> None:
        """On a new leader whose machine booted a day after the old one's, log time still advances
        with its elapsed time: a session idle for longer than the timeout expires."""
        resolve = self.cluster.resolve
        self._others_clocks(-_DAY)
        idle = resolve(self.leader.open_session())
        busy = resolve(self.leader.open_session())
        new = self._new_leader()
        for seq in range(1, 5):
            self.cluster.run(20.0)
            self.assertIsNone(resolve(new.put("k", str(seq), session=SessionTag(busy, seq))))
        refused = resolve(new.put("k", "late", session=SessionTag(idle, 1)))
        self.assertIsInstance(refused, Failure)
        assert isinstance(refused, Failure)
        self.assertIsInstance(refused.value, SessionExpired)

    def test_a_write_refused_by_a_follower_of_a_new_cluster_sets_no_time(self) -> None:
        """A tagged write sent to followers before any stamped entry (they refuse it: not leader) does
        not make them take their clock's reading as log time: a session survives a later leader change
        to one of them."""
        resolve = self.cluster.resolve
        self._others_clocks(_DAY)
        for i in self.cluster.ids:
            node = self.cluster.node(i)
            if node is not self.leader:
                self.assertIsInstance(resolve(node.put("k", "v", session=SessionTag(1, 1))), Failure)
        session = resolve(self.leader.open_session())
        tag = SessionTag(session, 1)
        self.assertEqual(resolve(self.leader.incr("n", 1, session=tag)), 1)
        new = self._new_leader()
        retried = resolve(new.incr("n", 1, session=tag))
        self.assertEqual(retried, 1, retried)
