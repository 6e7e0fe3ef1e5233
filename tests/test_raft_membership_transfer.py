# -*- test-case-name: tests.test_raft_membership_transfer -*-
"""
Leadership transfer in the Raft core (thesis section 3.10, issue 13):
L{RaftCore.transfer_leadership} brings the target up to date, sends it
L{TimeoutNow}, and the target wins the next term at once (no Pre-Vote, past
leader stickiness); proposals are refused meanwhile, naming the target; an
unanswered transfer is abandoned after the minimum election timeout; and
every refusal.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.core import (
    HardState,
    LeadershipTransferInProgress,
    NotLeaderError,
    Role,
    TransferInProgress,
    TransferToLearner,
    TransferToNonMember,
    TransferToSelf,
)
from kvstore.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)

from tests.raft_membership_support import HEARTBEAT, TIMEOUT, Cores, configuration, make_core


def of_kind(messages: list[Message], kind: type) -> list[Message]:
    return [m for m in messages if isinstance(m.body, kind)]


class TransferTests(SynchronousTestCase):
    """A transfer that succeeds, one that waits for the target's log, and one abandoned."""

    def test_caught_up_target_takes_over_at_once(self) -> None:
        """A caught-up target gets TimeoutNow at once, campaigns without Pre-Vote, and leads the next term."""
        cores = Cores(configuration([1, 2, 3]), pre_vote=True)
        leader = cores.elect(1)
        term = leader.term
        leader.transfer_leadership(2)
        self.assertEqual(leader.transfer_target, 2)
        delivered = cores.pump()
        self.assertEqual([(m.sender, m.receiver) for m in of_kind(delivered, TimeoutNow)], [(1, 2)])
        votes = [m.body for m in of_kind(delivered, RequestVote) if m.sender == 2]
        self.assertTrue(votes)
        self.assertTrue(all(v.leadership_transfer and not v.pre_vote for v in votes))  # type: ignore[union-attr]
        self.assertEqual((cores[2].role, cores[2].term), (Role.LEADER, term + 1))
        self.assertEqual((leader.role, leader.leader_id, leader.transfer_target), (Role.FOLLOWER, 2, None))

    def test_target_is_brought_up_to_date_before_timeout_now(self) -> None:
        """A lagging target gets the missing entries first; TimeoutNow follows its acknowledgement of the last one."""
        cores = Cores(configuration([1, 2, 3]))
        leader = cores.elect(1)
        for _ in range(5):
            leader.propose(b"Pk v")
        cores.pump(drop=lambda m: m.receiver == 2 or m.sender == 2)
        self.assertLess(cores[2].last_index, leader.last_index)
        last = leader.last_index
        leader.transfer_leadership(2)
        delivered = cores.pump()
        first_timeout_now = delivered.index(of_kind(delivered, TimeoutNow)[0])
        acks = [
            m for m in delivered[:first_timeout_now]
            if m.sender == 2 and isinstance(m.body, AppendEntriesResponse) and m.body.success and m.body.index == last
        ]
        self.assertTrue(acks, "TimeoutNow before the target acknowledged the leader's last entry")
        self.assertIs(cores[2].role, Role.LEADER)
        self.assertEqual(cores[2].entries(1, last), leader.entries(1, last))

    def test_proposals_are_refused_naming_the_target(self) -> None:
        """During a transfer a proposal raises LeadershipTransferInProgress, a NotLeaderError naming the target."""
        cores = Cores(configuration([1, 2, 3]))
        leader = cores.elect(1)
        last = leader.last_index
        leader.transfer_leadership(3)
        with self.assertRaises(LeadershipTransferInProgress) as caught:
            leader.propose(b"Pk v")
        self.assertIsInstance(caught.exception, NotLeaderError)
        self.assertEqual((caught.exception.leader_id, caught.exception.target), (3, 3))
        self.assertEqual(str(caught.exception), "leadership is being transferred to node 3")
        self.assertEqual(leader.last_index, last)

    def test_unanswered_transfer_is_abandoned_after_the_minimum_election_timeout(self) -> None:
        """If the target never takes over, the leader accepts proposals again after election_timeout_min, not before."""
        cores = Cores(configuration([1, 2, 3]))
        leader = cores.elect(1)
        leader.transfer_leadership(2)
        beats = 0
        while leader.transfer_target is not None:
            self.assertRaises(LeadershipTransferInProgress, leader.propose, b"Pk v")
            cores.heartbeat(1, among=[1, 3])
            beats += 1
        self.assertEqual(beats, round(TIMEOUT[0] / HEARTBEAT))
        self.assertIs(leader.role, Role.LEADER)
        index, _ = leader.propose(b"Pk v")
        cores.pump(among=[1, 3])
        self.assertEqual(leader.commit_index, index)

    def test_asking_again_for_the_same_target_changes_nothing(self) -> None:
        """A repeated request for the running transfer neither raises nor restarts its deadline."""
        cores = Cores(configuration([1, 2, 3]))
        leader = cores.elect(1)
        leader.transfer_leadership(2)
        for _ in range(round(TIMEOUT[0] / HEARTBEAT) - 1):
            cores.heartbeat(1, among=[1, 3])
            leader.transfer_leadership(2)
        cores.heartbeat(1, among=[1, 3])
        self.assertIsNone(leader.transfer_target)


class TransferRefusalTests(SynchronousTestCase):
    """What transfer_leadership refuses, with the node's reply texts."""

    def test_refusals(self) -> None:
        """Self, a learner, a non-member, a removed node and a second target are refused; nothing starts."""
        cores = Cores(configuration([1, 2, 3], [4], removed=[5]))
        leader = cores.elect(1)
        for target, refusal, text in [
            (1, TransferToSelf, "Node 1 is already the leader"),
            (4, TransferToLearner, "Node 4 is a learner; leadership goes only to a voter"),
            (6, TransferToNonMember, "Node 6 is not a member"),
            (5, TransferToNonMember, "Node 5 is not a member"),
        ]:
            with self.subTest(target=target):
                with self.assertRaises(refusal) as caught:
                    leader.transfer_leadership(target)
                self.assertEqual(str(caught.exception), text)
                self.assertIsNone(leader.transfer_target)
        leader.transfer_leadership(2)
        with self.assertRaises(TransferInProgress) as caught:
            leader.transfer_leadership(3)
        self.assertEqual(str(caught.exception), "Leadership transfer to node 2 in progress")

    def test_follower_refuses_naming_the_leader(self) -> None:
        """A follower cannot transfer leadership: NotLeaderError naming the leader."""
        cores = Cores(configuration([1, 2, 3]))
        cores.elect(1)
        with self.assertRaises(NotLeaderError) as caught:
            cores[2].transfer_leadership(3)
        self.assertEqual(caught.exception.leader_id, 1)


class TimeoutNowTests(SynchronousTestCase):
    """Who acts on TimeoutNow, and how its election gets past leader stickiness."""

    def _follower_of_2(self, members=configuration([1, 2, 3]), node_id: int = 1):  # type: ignore[no-untyped-def]
        """Node C{node_id}, following leader 2 in term 3 (and so within its leader lease)."""
        core = make_core(node_id, members, hard_state=HardState(3, None))
        core.step(Message(2, node_id, AppendEntries(3, 0, 0, (), 0)))
        core.ready()
        self.assertEqual(core.leader_id, 2)
        return core

    def test_timeout_now_from_the_leader_starts_an_election(self) -> None:
        """The leader's TimeoutNow makes a voter campaign in the next term with flagged vote requests."""
        core = self._follower_of_2()
        core.step(Message(2, 1, TimeoutNow(3)))
        self.assertEqual((core.role, core.term), (Role.CANDIDATE, 4))
        requests = [m.body for m in of_kind(core.ready().messages_after_persist, RequestVote)]
        self.assertEqual(requests, [RequestVote(4, 0, 0, False, True)] * 2)

    def test_timeout_now_from_anyone_else_is_ignored(self) -> None:
        """TimeoutNow from a node that is not this node's leader, or of an older term, changes nothing."""
        core = self._follower_of_2()
        core.step(Message(3, 1, TimeoutNow(3)))
        core.step(Message(2, 1, TimeoutNow(2)))
        self.assertEqual((core.role, core.term), (Role.FOLLOWER, 3))

    def test_a_learner_ignores_timeout_now(self) -> None:
        """A learner never campaigns, not even when asked to take over."""
        core = self._follower_of_2(configuration([1, 2, 3], [4]), node_id=4)
        core.step(Message(2, 4, TimeoutNow(3)))
        self.assertEqual((core.role, core.term), (Role.FOLLOWER, 3))

    def test_flagged_vote_passes_leader_stickiness(self) -> None:
        """Within its leader lease a node refuses an ordinary vote request of a higher term but grants a transfer's."""
        core = self._follower_of_2()
        core.step(Message(3, 1, RequestVote(4, 0, 0)))
        self.assertEqual(
            [m.body for m in core.ready().messages], [RequestVoteResponse(3, False)]
        )
        self.assertEqual(core.term, 3)
        core.step(Message(3, 1, RequestVote(4, 0, 0, False, True)))
        self.assertEqual([m.body for m in core.ready().messages_after_persist], [RequestVoteResponse(4, True)])
        self.assertEqual((core.term, core.voted_for), (4, 3))

    def test_leader_grants_a_flagged_vote(self) -> None:
        """The leader handing over steps down for its target's flagged vote request and grants it."""
        cores = Cores(configuration([1, 2, 3]))
        leader = cores.elect(1)
        leader.step(Message(2, 1, RequestVote(leader.term + 1, leader.last_index, leader.last_term, False, True)))
        self.assertIs(leader.role, Role.FOLLOWER)
        self.assertEqual(
            [m.body for m in leader.ready().messages_after_persist], [RequestVoteResponse(leader.term, True)]
        )
