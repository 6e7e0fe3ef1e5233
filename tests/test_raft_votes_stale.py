# -*- test-case-name: tests.test_raft_votes_stale -*-
"""
Vote requests from an older term (Raft Figure 2, RequestVote receiver rule
1: "reply false if term < currentTerm").

A candidate from an older term is a node that was partitioned or paused and
has not yet learned the current term.  Granting it a vote (and recording
that vote in the current term) would let this node's vote go to a
candidate that can no longer win, and, worse, make the node refuse the
real candidate of the current term.  The refusal must carry the current
term so the stale candidate steps down.
"""

from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.config import RaftConfig
from kvstore.raft.core import HardState, RaftCore, Ready, Role
from kvstore.raft.messages import Entry, Message, RequestVote, RequestVoteResponse

HEARTBEAT = 0.05
TIMEOUT = (0.3, 0.6)


def make_core(hard_state: HardState, entries: list[Entry] | None = None, pre_vote: bool = False) -> RaftCore:
    """A started follower, node 1 of {1, 2, 3}, with C{hard_state}."""
    config = RaftConfig(
        node_id=1,
        peers=(2, 3),
        heartbeat_interval=HEARTBEAT,
        election_timeout_min=TIMEOUT[0],
        election_timeout_max=TIMEOUT[1],
        pre_vote=pre_vote,
    )
    core = RaftCore(config, Clock(), random.Random(1), hard_state, entries or [])
    core.start()
    return core


def vote_replies(rd: Ready) -> list[RequestVoteResponse]:
    return [m.body for m in rd.messages + rd.messages_after_persist if isinstance(m.body, RequestVoteResponse)]


class StaleVoteRequestTests(SynchronousTestCase):
    """RequestVote and pre-vote requests whose term is below the receiver's."""

    def test_vote_request_from_older_term_is_refused_without_recording_a_vote(self) -> None:
        """A RequestVote from an older term, whose log is up to date and with
        no vote cast in the current term, is refused with the current term,
        and no vote is recorded or persisted."""
        entries = [Entry(1, 1, b"a"), Entry(2, 2, b"b")]
        for request_term in (1, 2):
            with self.subTest(request_term=request_term):
                core = make_core(HardState(3, None), entries)
                # The candidate's log is longer than ours: only its term is stale.
                core.step(Message(2, 1, RequestVote(request_term, 5, 2, pre_vote=False)))
                rd = core.ready()
                self.assertEqual(vote_replies(rd), [RequestVoteResponse(3, False, False)])
                self.assertIsNone(core.voted_for)
                self.assertEqual(core.term, 3)
                self.assertIsNone(rd.hard_state)

    def test_stale_vote_request_leaves_the_vote_free_for_the_current_term(self) -> None:
        """After refusing a stale candidate, the node still grants its vote
        to a candidate of the current term."""
        core = make_core(HardState(3, None))
        core.step(Message(2, 1, RequestVote(2, 0, 0, pre_vote=False)))
        core.ready()
        core.step(Message(3, 1, RequestVote(3, 0, 0, pre_vote=False)))
        rd = core.ready()
        self.assertEqual(vote_replies(rd), [RequestVoteResponse(3, True, False)])
        self.assertEqual(rd.hard_state, HardState(3, 3))

    def test_pre_vote_from_older_term_is_refused(self) -> None:
        """A pre-vote request asking about an older term is refused with the
        current term, and changes no state."""
        for request_term in (1, 2):
            with self.subTest(request_term=request_term):
                core = make_core(HardState(3, None), pre_vote=True)
                core.step(Message(2, 1, RequestVote(request_term, 9, 2, pre_vote=True)))
                rd = core.ready()
                self.assertEqual(vote_replies(rd), [RequestVoteResponse(3, False, True)])
                self.assertIsNone(core.voted_for)
                self.assertEqual(core.term, 3)
                self.assertIsNone(rd.hard_state)

    def test_pre_vote_for_the_current_term_is_refused(self) -> None:
        """A pre-vote asking about the receiver's own term is refused too: a
        pre-candidate may only win a term that no one has reached yet."""
        core = make_core(HardState(3, None), pre_vote=True)
        core.step(Message(2, 1, RequestVote(3, 9, 2, pre_vote=True)))
        rd = core.ready()
        self.assertEqual(vote_replies(rd), [RequestVoteResponse(3, False, True)])
        self.assertIsNone(core.voted_for)

    def test_stale_vote_request_does_not_disturb_a_leader(self) -> None:
        """A leader refuses a stale candidate and stays leader of its term."""
        clock = Clock()
        config = RaftConfig(node_id=1, peers=(2, 3), heartbeat_interval=HEARTBEAT,
                            election_timeout_min=TIMEOUT[0], election_timeout_max=TIMEOUT[1], pre_vote=False)
        core = RaftCore(config, clock, random.Random(1), HardState(3, None))
        core.start()
        clock.advance(TIMEOUT[1] + 0.01)
        core.step(Message(2, 1, RequestVoteResponse(4, True, False)))
        self.assertIs(core.role, Role.LEADER)
        core.ready()
        core.step(Message(3, 1, RequestVote(3, 100, 3, pre_vote=False)))
        rd = core.ready()
        self.assertEqual(vote_replies(rd), [RequestVoteResponse(4, False, False)])
        self.assertIs(core.role, Role.LEADER)
        self.assertEqual((core.term, core.voted_for), (4, 1))
