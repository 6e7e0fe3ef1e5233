# -*- test-case-name: tests.test_raft_membership_departed_unsendable -*-
"""
A removed member that the leader still replicates to after its removal
committed (L{RaftCore.departing}) and that is found stuck behind an entry
too large for any message (issue 9) just before the leader lets it go: the
leader's next L{RaftCore.ready} must not trip over the report of a follower
it no longer tracks.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.core import HardState
from kvstore.raft.membership import RemoveMember
from kvstore.raft.messages import AppendEntriesResponse, Entry
from tests.test_raft_core import drain, elect, make_core, msg
from tests.test_raft_unsendable_entry import _BIG, _LIMITS


class DepartedStuckFollowerTests(SynchronousTestCase):
    """The departing window ends while a stuck report about the departed member is pending."""

    def test_a_departed_member_found_stuck_just_before_it_is_let_go_is_not_a_crash(self) -> None:
        """Node 4 is removed; after the commit its refusal shows it stuck behind the oversized entry, and the
        heartbeat that lets it go runs before the next ready(): that ready() works and reports nothing of it."""
        clock = Clock()
        leader = make_core(1, (2, 3, 4), clock, HardState(1, None), [Entry(1, 1, b"a"), Entry(2, 1, _BIG)], **_LIMITS)
        elect(leader, clock, [2, 3])
        drain(leader)
        for peer in (2, 3):  # they hold the oversized entry (an older release sent it) and the no-op
            leader.step(msg(peer, 1, AppendEntriesResponse(leader.term, True, leader.last_index, 0, 0, 0)))
        drain(leader)
        self.assertEqual(leader.commit_index, leader.last_index)
        result = leader.propose_change(RemoveMember(4))
        assert result is not None
        drain(leader)
        for peer in (2, 3):
            leader.step(msg(peer, 1, AppendEntriesResponse(leader.term, True, result[0], 0, 0, 0)))
        drain(leader)
        self.assertEqual(leader.departing, {4})
        # Node 4 answers the election's probe only now: it lacks entry 2.
        leader.step(msg(4, 1, AppendEntriesResponse(leader.term, False, 2, 2, 0, 0)))
        clock.advance(leader.config.election_timeout_min + 0.01)  # the heartbeats let node 4 go
        self.assertEqual(leader.departing, frozenset())
        rd = leader.ready()
        self.assertEqual([u for u in rd.unsendable if u.follower == 4], [])
