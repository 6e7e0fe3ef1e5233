# -*- test-case-name: tests.test_clock_monotonic -*-
"""
Raft's timers follow a monotonic clock (issue 9, part 4).

The tests run Raft cores on Twisted's real timer machinery (a C{ReactorBase}
with no I/O, driven by hand through C{runUntilCurrent}) whose clock is first
the wall clock, as Twisted's is, and then replaced by
L{kvstore.daemon.clock.install_monotonic_clock}.  Both clocks are fakes: the wall
clock is stepped by an hour while the monotonic one advances normally.
"""

from __future__ import annotations

import random
from typing import Callable

from twisted.internet.base import ReactorBase
from twisted.trial.unittest import SynchronousTestCase

import kvstore.daemon.service
from kvstore.daemon.clock import install_monotonic_clock
from kvstore.raft.config import RaftConfig
from kvstore.raft.core import RaftCore, Role
from kvstore.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
)

_HOUR = 3600.0
_STEP = 0.01


class _TimersOnlyReactor(ReactorBase):
    """Twisted's own scheduling (C{callLater}, C{timeout},
    C{runUntilCurrent}) with no I/O and no waker."""

    def installWaker(self) -> None:
        pass


class _Clocks:
    """A fake wall clock and a fake monotonic clock, and a reactor whose
    clock starts as the wall clock."""

    def __init__(self, monotonic: bool) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 1000.0
        self.reactor = _TimersOnlyReactor()
        self.reactor.seconds = lambda: self.wall  # what Twisted uses: time.time()
        if monotonic:
            install_monotonic_clock(self.reactor, lambda: self.mono)

    def step_wall(self, seconds: float) -> None:
        """What NTP or an operator does: the wall clock jumps."""
        self.wall += seconds

    def run(self, seconds: float, each_step: Callable[[], None]) -> None:
        """Let C{seconds} pass on both clocks, in small steps, running what
        is due as the reactor loop would."""
        for _ in range(round(seconds / _STEP)):
            self.wall += _STEP
            self.mono += _STEP
            self.reactor.runUntilCurrent()
            each_step()


def _config(node_id: int) -> RaftConfig:
    return RaftConfig(
        node_id,
        peers=tuple(i for i in (0, 1, 2) if i != node_id),
        heartbeat_interval=0.1,
        election_timeout_min=1.0,
        election_timeout_max=2.0,
        pre_vote=False,
    )


def _drain(core: RaftCore) -> list[Message]:
    rd = core.ready()
    core.persisted(*rd.persist_through)
    return rd.messages + rd.messages_after_persist


class _LeaderRun:
    """A leader (node 0) whose followers acknowledge everything it sends;
    counts the AppendEntries it sends to node 1."""

    def __init__(self, clocks: _Clocks) -> None:
        self.clocks = clocks
        self.core = RaftCore(_config(0), clocks.reactor, random.Random(0))
        self.sent_to_1 = 0
        self.followers_silent = False
        self.core.start()
        clocks.run(2.1, self._answer)
        assert self.core.role is Role.LEADER, self.core.role

    def _answer(self) -> None:
        core = self.core
        for message in _drain(core):
            body = message.body
            if isinstance(body, RequestVote):
                core.step(Message(message.receiver, 0, RequestVoteResponse(body.term, True, False)))
            elif isinstance(body, AppendEntries) and not self.followers_silent:
                if message.receiver == 1:
                    self.sent_to_1 += 1
                last = body.prev_log_index + len(body.entries)
                core.step(Message(message.receiver, 0, AppendEntriesResponse(body.term, True, last, 0, 0, body.round)))

    def fall_silent_at_quorum_check(self) -> None:
        """Silence the followers just before the leader's next check-quorum
        and run until just after it (which they pass: they answered until
        just before), so they are silent for the whole next check period."""
        check_at = self.core._quorum_check_at
        while self.clocks.reactor.seconds() < check_at - 0.05:
            self.clocks.run(_STEP, self._answer)
        self.followers_silent = True
        while self.core._quorum_check_at == check_at:
            self.clocks.run(_STEP, self._answer)
        assert self.core.role is Role.LEADER

    def run(self, seconds: float) -> None:
        self.clocks.run(seconds, self._answer)

    def heartbeats_in(self, seconds: float) -> int:
        before = self.sent_to_1
        self.clocks.run(seconds, self._answer)
        return self.sent_to_1 - before


class _FollowerRun:
    """A follower (node 1) that has just heard from leader 0; records
    whether it ever asks for votes."""

    def __init__(self, clocks: _Clocks) -> None:
        self.clocks = clocks
        self.core = RaftCore(_config(1), clocks.reactor, random.Random(1))
        self.campaigned = False
        self.core.start()
        self.core.step(Message(0, 1, AppendEntries(1, 0, 0, (), 0, 0)))
        _drain(self.core)

    def watch(self) -> None:
        for message in _drain(self.core):
            if isinstance(message.body, RequestVote):
                self.campaigned = True


class MonotonicTimerTests(SynchronousTestCase):
    """With the monotonic clock installed, wall-clock steps change nothing."""

    def test_leader_heartbeats_survive_a_backward_step(self) -> None:
        """A leader keeps sending about one heartbeat per interval after the
        wall clock steps back an hour, and stays leader."""
        clocks = _Clocks(monotonic=True)
        leader = _LeaderRun(clocks)
        term = leader.core.term
        clocks.step_wall(-_HOUR)
        sent = leader.heartbeats_in(1.0)
        self.assertGreaterEqual(sent, 8)
        self.assertIs(leader.core.role, Role.LEADER)
        self.assertEqual(leader.core.term, term)

    def test_follower_does_not_campaign_on_a_forward_step(self) -> None:
        """A follower that heard from its leader does not start an election
        when the wall clock jumps an hour ahead, before its election timeout
        has passed on the monotonic clock..."""
        clocks = _Clocks(monotonic=True)
        follower = _FollowerRun(clocks)
        clocks.step_wall(_HOUR)
        clocks.run(0.9, follower.watch)
        self.assertFalse(follower.campaigned)
        self.assertIs(follower.core.role, Role.FOLLOWER)

    def test_follower_still_campaigns_when_the_leader_is_silent(self) -> None:
        """...but does once the leader has been silent for a full election
        timeout on the monotonic clock."""
        clocks = _Clocks(monotonic=True)
        follower = _FollowerRun(clocks)
        clocks.step_wall(_HOUR)
        clocks.run(2.1, follower.watch)
        self.assertTrue(follower.campaigned)

    def test_check_quorum_is_not_hastened_by_a_forward_step(self) -> None:
        """Check-quorum: a leader whose followers pause for 1.5 s (less than
        the 2 s check period) stays leader across a forward wall step."""
        clocks = _Clocks(monotonic=True)
        leader = _LeaderRun(clocks)
        leader.fall_silent_at_quorum_check()
        term = leader.core.term
        leader.run(1.0)
        clocks.step_wall(_HOUR)
        leader.run(0.5)
        leader.followers_silent = False
        leader.run(3.0)
        self.assertIs(leader.core.role, Role.LEADER)
        self.assertEqual(leader.core.term, term)  # never stepped down and re-elected

    def test_check_quorum_still_deposes_an_isolated_leader(self) -> None:
        """A leader that hears from no one for a check period of monotonic
        time does step down."""
        clocks = _Clocks(monotonic=True)
        leader = _LeaderRun(clocks)
        clocks.step_wall(-_HOUR)
        leader.followers_silent = True
        leader.run(4.5)
        self.assertIsNot(leader.core.role, Role.LEADER)


class WallClockDefectTests(SynchronousTestCase):
    """The same scenarios on Twisted's default clock show the defect, so
    the tests above can fail."""

    def test_wall_clock_leader_goes_silent(self) -> None:
        """Without the monotonic clock, a backward step silences the
        leader."""
        clocks = _Clocks(monotonic=False)
        leader = _LeaderRun(clocks)
        clocks.step_wall(-_HOUR)
        self.assertEqual(leader.heartbeats_in(1.0), 0)

    def test_wall_clock_check_quorum_fires_early(self) -> None:
        """Without the monotonic clock, a forward step runs check-quorum at
        once and a leader whose followers merely paused steps down."""
        clocks = _Clocks(monotonic=False)
        leader = _LeaderRun(clocks)
        leader.fall_silent_at_quorum_check()
        leader.run(1.0)
        clocks.step_wall(_HOUR)
        leader.run(0.5)
        self.assertIsNot(leader.core.role, Role.LEADER)

    def test_wall_clock_follower_campaigns_early(self) -> None:
        """Without the monotonic clock, a forward step fires the election at
        once."""
        clocks = _Clocks(monotonic=False)
        follower = _FollowerRun(clocks)
        clocks.step_wall(_HOUR)
        clocks.run(0.1, follower.watch)
        self.assertTrue(follower.campaigned)


class InstallationTests(SynchronousTestCase):
    """How and when the clock is installed."""

    def test_refuses_when_calls_are_pending(self) -> None:
        """A call scheduled on the wall clock would fire at the wrong time,
        so installing after anything is scheduled is refused."""
        reactor = _TimersOnlyReactor()
        reactor.callLater(1, lambda: None)
        self.assertRaises(RuntimeError, install_monotonic_clock, reactor)

    def test_install_is_idempotent(self) -> None:
        """Installing twice is harmless, even with calls pending."""
        reactor = _TimersOnlyReactor()
        monotonic = lambda: 5.0  # noqa: E731
        install_monotonic_clock(reactor, monotonic)
        reactor.callLater(1, lambda: None)
        install_monotonic_clock(reactor, monotonic)
        self.assertIs(reactor.seconds, monotonic)

    def test_production_node_installs_it(self) -> None:
        """Building the production node (on the global reactor) installs the
        monotonic clock on that reactor, after the node is built."""
        from twisted.internet import reactor as global_reactor

        installed: list[object] = []
        self.patch(kvstore.daemon.service, "install_monotonic_clock", installed.append)
        self.patch(kvstore.daemon.service, "_open_storage", _refuse)
        self.assertRaises(_Refused, kvstore.daemon.service.build_service, _node_config(self.mktemp()))
        self.assertEqual(installed, [])  # not when building fails
        from twisted.internet.testing import MemoryReactorClock

        self.patch(kvstore.daemon.service, "_open_storage", _fake_storage)
        kvstore.daemon.service.build_service(_node_config(self.mktemp()), MemoryReactorClock())
        self.assertEqual(installed, [])  # not for a reactor passed in (tests, tools)
        kvstore.daemon.service.build_service(_node_config(self.mktemp()))
        self.assertEqual(installed, [global_reactor])


class _Refused(Exception):
    pass


def _refuse(config: object) -> None:
    raise _Refused()


def _fake_storage(config: object) -> tuple[object, object, object, None]:
    from kvstore.storage import MetadataRecord

    class _Metadata:
        state = MetadataRecord(0, None, None)

    class _Wal:
        first_index = 1
        last_index = 0
        fsync_count = 0
        inline_flush = None  # makeService asks for the policy (snapshot_runner_for)

        def entry_tuples(self) -> list[tuple[int, int, bytes]]:
            return []

    return object(), _Wal(), _Metadata(), None  # no snapshot store


def _node_config(data_dir: str) -> object:
    from kvstore.daemon.options import parse_config

    return parse_config(["--data-dir", data_dir, "--port", "20999"])
