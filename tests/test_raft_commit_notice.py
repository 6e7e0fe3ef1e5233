# -*- test-case-name: tests.test_raft_commit_notice -*-
"""
How a leader tells its followers that its commit index moved
(C{RaftConfig.commit_notify_delay}): with the next entries it sends them,
or with a notice once the delay has passed without any, never both, and
never at once (which doubled the messages of a sequential write).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.config import RaftConfig
from kvstore.raft.core import RaftCore, Role
from kvstore.raft.messages import AppendEntries, AppendEntriesResponse
from tests.test_raft_core import HEARTBEAT, bodies, drain, elect, make_core, msg

DELAY = 0.002


def _leader_with_entry(clock: Clock) -> RaftCore:
    """A leader of term 1 whose no-op (index 1) both followers hold but
    which has not committed yet."""
    core = make_core(clock=clock, commit_notify_delay=DELAY)
    elect(core, clock, [2])
    drain(core)
    return core


def _commit_messages(core: RaftCore) -> dict[int, list[AppendEntries]]:
    rd = drain(core)
    sent: dict[int, list[AppendEntries]] = {}
    for m in rd.messages:
        if isinstance(m.body, AppendEntries):
            sent.setdefault(m.receiver, []).append(m.body)
    return sent


class CommitNoticeTests(SynchronousTestCase):
    def test_no_message_at_the_moment_of_commit(self) -> None:
        """An acknowledgement that moves the commit index sends the followers nothing by itself."""
        clock = Clock()
        core = _leader_with_entry(clock)
        core.step(msg(2, 1, AppendEntriesResponse(core.term, True, 1)))
        self.assertEqual(core.commit_index, 1)
        self.assertEqual(bodies(drain(core).messages, AppendEntries), [])

    def test_notice_after_the_delay(self) -> None:
        """Once the delay has passed, each follower gets one AppendEntries carrying the new commit index."""
        clock = Clock()
        core = _leader_with_entry(clock)
        core.step(msg(2, 1, AppendEntriesResponse(core.term, True, 1)))
        drain(core)
        clock.advance(DELAY / 2)
        self.assertEqual(bodies(drain(core).messages, AppendEntries), [])
        clock.advance(DELAY / 2)
        sent = _commit_messages(core)
        self.assertEqual({to: [(a.leader_commit, a.entries) for a in appends] for to, appends in sent.items()},
                         {2: [(1, ())], 3: [(1, ())]})

    def test_entries_sent_meanwhile_carry_the_commit_instead(self) -> None:
        """A proposal before the delay ends tells the followers with its entries; no notice follows."""
        clock = Clock()
        core = _leader_with_entry(clock)
        core.step(msg(2, 1, AppendEntriesResponse(core.term, True, 1)))
        core.step(msg(3, 1, AppendEntriesResponse(core.term, True, 1)))
        drain(core)
        core.propose(b"next")
        sent = _commit_messages(core)
        self.assertEqual({to: [(a.leader_commit, len(a.entries)) for a in appends] for to, appends in sent.items()},
                         {2: [(1, 1)], 3: [(1, 1)]})
        clock.advance(DELAY)
        self.assertEqual(bodies(drain(core).messages, AppendEntries), [])

    def test_only_the_follower_not_told_gets_the_notice(self) -> None:
        """A follower told by entries sent after the commit gets no notice; one whose window was full does."""
        clock = Clock()
        core = make_core(clock=clock, commit_notify_delay=DELAY, max_inflight=1)
        elect(core, clock, [2])
        drain(core)
        core.step(msg(2, 1, AppendEntriesResponse(core.term, True, 1)))
        core.step(msg(3, 1, AppendEntriesResponse(core.term, True, 1)))
        clock.advance(DELAY)
        drain(core)
        core.propose(b"two")
        drain(core)
        core.step(msg(2, 1, AppendEntriesResponse(core.term, True, 2)))
        self.assertEqual(core.commit_index, 2)
        # Entry 3 goes to node 2 (carrying commit 2); node 3 still has entry
        # 2 unacknowledged, so its window of one message is full.
        core.propose(b"three")
        sent = _commit_messages(core)
        self.assertEqual({to: [(a.leader_commit, len(a.entries)) for a in appends] for to, appends in sent.items()},
                         {2: [(2, 1)]})
        clock.advance(DELAY)
        sent = _commit_messages(core)
        self.assertEqual({to: [(a.leader_commit, len(a.entries)) for a in appends] for to, appends in sent.items()},
                         {3: [(2, 0)]})

    def test_immediate_with_zero_delay(self) -> None:
        """C{commit_notify_delay=0} keeps the old behaviour: the notice goes in the same Ready as the commit."""
        clock = Clock()
        core = make_core(clock=clock, commit_notify_delay=0)
        elect(core, clock, [2])
        drain(core)
        core.step(msg(2, 1, AppendEntriesResponse(core.term, True, 1)))
        sent = _commit_messages(core)
        self.assertEqual(sorted(sent), [2, 3])

    def test_no_notice_after_stepping_down(self) -> None:
        """A leader that steps down before the delay ends sends no notice (its timer is cancelled)."""
        clock = Clock()
        core = _leader_with_entry(clock)
        core.step(msg(2, 1, AppendEntriesResponse(core.term, True, 1)))
        drain(core)
        calls_before = len(clock.getDelayedCalls())
        core.step(msg(3, 1, AppendEntries(core.term + 1, 1, 1, (), 1)))
        self.assertIs(core.role, Role.FOLLOWER)
        drain(core)
        # The notice timer is cancelled (the heartbeat timer too).
        self.assertLess(len(clock.getDelayedCalls()), calls_before)
        clock.advance(DELAY)
        self.assertEqual(bodies(drain(core).messages, AppendEntries), [])

    def test_heartbeat_still_tells_followers(self) -> None:
        """A notice never replaces heartbeats: they go on every heartbeat interval as before."""
        clock = Clock()
        core = _leader_with_entry(clock)
        core.step(msg(2, 1, AppendEntriesResponse(core.term, True, 1)))
        clock.advance(DELAY)
        drain(core)
        clock.advance(HEARTBEAT)
        self.assertEqual(sorted(_commit_messages(core)), [2, 3])


class ValidationTests(SynchronousTestCase):
    def test_negative_delay_refused(self) -> None:
        """A negative commit notice delay is refused when the config is validated."""
        with self.assertRaises(ValueError):
            RaftConfig(node_id=1, peers=(2, 3), commit_notify_delay=-0.001).validate()
