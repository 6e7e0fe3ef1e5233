# -*- test-case-name: tests.test_raft_commit_notice_step_down -*-
"""
The commit notice (C{RaftConfig.commit_notify_delay}) at the edges of a
leadership: a leader that removes itself steps down in the batch that
commits its removal, so the notice timer, cancelled with the leadership,
would never tell the followers; and a leader alone in its configuration
has no one to tell.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.core import Role
from kvstore.raft.membership import RemoveMember
from kvstore.raft.messages import TimeoutNow

from tests.raft_membership_support import Cores, configuration
from tests.test_raft_core import drain, make_core


class RemovedLeaderTellsTheCommitTests(SynchronousTestCase):
    def test_followers_learn_the_removal_committed_from_the_leader_that_stepped_down(self) -> None:
        """A leader that commits its own removal tells the followers the new commit index before it steps down,
        so they know it without waiting for a successor's election and first commit."""
        cores = Cores(configuration([1, 2, 3]))
        leader = cores.elect(1)
        index, _ = leader.propose_change(RemoveMember(1))  # type: ignore[misc]
        # No successor takes over: only the stepped-down leader could tell them.
        cores.pump(drop=lambda m: isinstance(m.body, TimeoutNow))
        self.assertIs(leader.role, Role.FOLLOWER)
        self.assertGreaterEqual(leader.commit_index, index)
        self.assertEqual({n: cores[n].commit_index for n in (2, 3)}, {2: leader.commit_index, 3: leader.commit_index})

    def test_successor_knows_the_commit_when_it_takes_over(self) -> None:
        """The successor gets the commit notice before the TimeoutNow that makes it campaign."""
        cores = Cores(configuration([1, 2, 3]))
        leader = cores.elect(1)
        index, _ = leader.propose_change(RemoveMember(1))  # type: ignore[misc]
        seen: dict[int, int] = {}

        def note_commit_at_handover(message: object) -> bool:
            if isinstance(getattr(message, "body", None), TimeoutNow):
                seen[message.receiver] = cores[message.receiver].commit_index  # type: ignore[attr-defined]
            return False

        cores.pump(drop=note_commit_at_handover)
        self.assertEqual(len(seen), 1)
        self.assertGreaterEqual(min(seen.values()), index)


class LeaderAloneTests(SynchronousTestCase):
    def test_no_notice_timer_without_followers(self) -> None:
        """A leader alone in its configuration schedules no commit notice when its commit index moves."""
        clock = Clock()
        core = make_core(node_id=1, peers=(), clock=clock, commit_notify_delay=0.002)
        self.assertIs(core.role, Role.LEADER)
        calls = len(clock.getDelayedCalls())
        core.propose(b"x")
        rd = drain(core)
        self.assertGreater(core.commit_index, 0)
        self.assertEqual(rd.messages, [])
        self.assertEqual(len(clock.getDelayedCalls()), calls)
