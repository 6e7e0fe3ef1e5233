# -*- test-case-name: tests.test_raft_term_durable_before_send -*-
"""
Nothing in a term leaves a node before that term is durable there.  A node
that is the only voter (a cluster shrunk to one voter, with a learner)
wins its election in the very batch that raised its term; its
AppendEntries, sent at once, let a crash before the term reached disk
bring it back in the old term, win the same term again and write another
entry at an index the learner already held with that term: two leaders'
logs in one term (found by kvstore-sim's membership churn, seed 1375).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.core import HardState, Role
from kvstore.raft.messages import AppendEntries, RequestVote

from tests.raft_membership_support import Cores, configuration, make_core


class TermDurableBeforeSendTests(SynchronousTestCase):
    """Messages in a new term wait for the hard state that carries it."""

    def test_a_lone_voter_sends_nothing_in_its_new_term_before_it_is_durable(self) -> None:
        """The only voter becomes leader in the batch that raised its term; its AppendEntries to the learner
        come in messages_after_persist, with the hard state, none in messages."""
        clock = Clock()
        core = make_core(0, configuration([0], learners=[1]), clock=clock, entries=[(1, 1, b"")],
                         hard_state=HardState(1, 0), commit_index=1)
        # A lone voter campaigns as it starts and wins at once.
        self.assertIs(core.role, Role.LEADER)
        rd = core.ready()
        self.assertIsNotNone(rd.hard_state)
        self.assertEqual(rd.hard_state.term, 2)  # type: ignore[union-attr]
        self.assertEqual([m for m in rd.messages if isinstance(m.body, AppendEntries)], [])
        sent = [m for m in rd.messages_after_persist if isinstance(m.body, AppendEntries)]
        self.assertTrue(sent)
        self.assertTrue(all(m.body.term == 2 for m in sent))

    def test_messages_in_a_term_already_durable_go_at_once(self) -> None:
        """Once the term has been handed out with a hard state, a leader's later AppendEntries go at once."""
        cores = Cores(configuration([1, 2, 3]))
        leader = cores.elect(1)
        leader.propose(b"x")
        rd = leader.ready()
        self.assertIsNone(rd.hard_state)
        self.assertTrue([m for m in rd.messages if isinstance(m.body, AppendEntries)])

    def test_a_candidate_asks_for_votes_only_after_its_term_is_durable(self) -> None:
        """A candidate's vote requests wait for its new term and vote (as before this change)."""
        cores = Cores(configuration([1, 2, 3]))
        cores.campaign(1)
        rd = cores.cores[1].ready()
        self.assertIsNotNone(rd.hard_state)
        self.assertEqual([m for m in rd.messages if isinstance(m.body, RequestVote)], [])
        self.assertTrue([m for m in rd.messages_after_persist if isinstance(m.body, RequestVote)])
