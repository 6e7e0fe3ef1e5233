# -*- test-case-name: tests.test_raft_membership_changes -*-
"""
Single-server membership changes in the Raft core (issue 13): every
refusal of L{RaftCore.propose_change}, a configuration taking effect when
appended and rolled back when truncated, learners counted nowhere (commit,
ReadIndex, check-quorum, elections), automatic promotion, removed nodes
unable to disrupt, a leader removing itself, and the Figure-4.3-style
scenario that shows why a leader must commit an entry of its own term
before it changes the membership.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.core import HardState, LeadershipTransferInProgress, NotLeaderError, Role
from kvstore.raft.membership import (
    AddLearner,
    ChangeInProgress,
    Configuration,
    IdRemoved,
    IdTaken,
    InvalidAddress,
    LastVoter,
    LeaderNotReady,
    PromoteLearner,
    RemoveMember,
    UnknownMember,
)
from kvstore.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)

from tests.raft_membership_support import HEARTBEAT, TIMEOUT, Conflict, Cores, address, configuration, make_core


def bodies_of(messages: list[Message], kind: type) -> list[Message]:
    return [m for m in messages if isinstance(m.body, kind)]


def cut(*nodes: int):  # type: ignore[no-untyped-def]
    """A drop filter that loses every message to or from C{nodes}."""
    return lambda m: m.sender in nodes or m.receiver in nodes


class ProposeChangeRefusalTests(SynchronousTestCase):
    """Every reason L{RaftCore.propose_change} refuses, and that a refusal appends nothing."""

    def test_follower_refuses_naming_the_leader(self) -> None:
        """A follower refuses with NotLeaderError naming the leader it knows."""
        cores = Cores(configuration([1, 2, 3]))
        cores.elect(1)
        with self.assertRaises(NotLeaderError) as caught:
            cores[2].propose_change(AddLearner(4, address(4)))
        self.assertEqual(caught.exception.leader_id, 1)

    def test_leader_refuses_until_an_entry_of_its_term_commits(self) -> None:
        """A new leader refuses a change until its no-op has committed, then accepts it."""
        cores = Cores(configuration([1, 2, 3]))
        cores.campaign(1)
        cores.pump(drop=lambda m: isinstance(m.body, AppendEntries))
        leader = cores[1]
        self.assertIs(leader.role, Role.LEADER)
        with self.assertRaises(LeaderNotReady):
            leader.propose_change(AddLearner(4, address(4)))
        self.assertEqual((leader.last_index, leader.configuration), (1, configuration([1, 2, 3])))
        cores.heartbeat(1)
        self.assertEqual(leader.commit_index, 1)
        self.assertEqual(leader.propose_change(AddLearner(4, address(4))), (2, 1))

    def test_one_change_at_a_time(self) -> None:
        """While a configuration entry is uncommitted every other change is refused ('Membership change in progress')."""
        cores = Cores(configuration([1, 2, 3]))
        leader = cores.elect(1)
        index, _ = leader.propose_change(AddLearner(4, address(4)))  # type: ignore[misc]
        self.assertTrue(leader.configuration_change_pending)
        for change in (AddLearner(5, address(5)), RemoveMember(2), PromoteLearner(4), AddLearner(4, address(4))):
            with self.subTest(change=change):
                with self.assertRaises(ChangeInProgress) as caught:
                    leader.propose_change(change)
                self.assertEqual(str(caught.exception), "Membership change in progress")
        self.assertEqual(leader.last_index, index)
        cores.pump()
        self.assertFalse(leader.configuration_change_pending)
        self.assertEqual(leader.propose_change(AddLearner(5, address(5))), (index + 1, 1))

    def test_committed_retry_appends_nothing(self) -> None:
        """Asking again for a change already made and committed returns None and appends nothing."""
        cores = Cores(configuration([1, 2, 3]))
        leader = cores.elect(1)
        leader.propose_change(AddLearner(4, address(4)))
        cores.pump()
        last = leader.last_index
        self.assertIsNone(leader.propose_change(AddLearner(4, address(4))))
        self.assertIsNone(leader.propose_change(PromoteLearner(1)))
        self.assertEqual(leader.last_index, last)

    def test_changes_the_configuration_refuses(self) -> None:
        """Unknown id, id taken by another address, removed id, bad address and the last voter are refused."""
        cores = Cores(configuration([1, 2], [3], removed=[9]))
        leader = cores.elect(1)
        for change, refusal in [
            (RemoveMember(5), UnknownMember),
            (PromoteLearner(5), UnknownMember),
            (AddLearner(3, "10.1.1.1:9"), IdTaken),
            (AddLearner(2, "10.1.1.1:9"), IdTaken),
            (AddLearner(9, address(9)), IdRemoved),
            (AddLearner(5, "no good"), InvalidAddress),
        ]:
            with self.subTest(change=change):
                self.assertRaises(refusal, leader.propose_change, change)
        self.assertEqual(leader.last_index, 1)
        single = Cores(configuration([1], [2]))
        self.assertRaises(LastVoter, single.elect(1).propose_change, RemoveMember(1))

    def test_refused_while_transferring_leadership(self) -> None:
        """During a leadership transfer a change is refused as a proposal is: not leader, naming the target."""
        cores = Cores(configuration([1, 2, 3]))
        leader = cores.elect(1)
        leader.transfer_leadership(2)
        with self.assertRaises(LeadershipTransferInProgress) as caught:
            leader.propose_change(AddLearner(4, address(4)))
        self.assertEqual(caught.exception.leader_id, 2)


class EffectiveWhenAppendedTests(SynchronousTestCase):
    """A configuration takes effect when its entry is appended, and is rolled back if the entry is truncated."""

    def test_leader_replicates_to_a_new_learner_at_once(self) -> None:
        """The leader's configuration changes with the append, and the new learner is sent entries in the same Ready."""
        cores = Cores(configuration([1, 2, 3]))
        leader = cores.elect(1)
        leader.propose_change(AddLearner(4, address(4)))
        self.assertEqual(leader.configuration, configuration([1, 2, 3], [4]))
        self.assertTrue(leader.configuration_change_pending)
        receivers = {m.receiver for m in bodies_of(leader.ready().messages, AppendEntries)}
        self.assertEqual(receivers, {2, 3, 4})

    def test_follower_uses_an_uncommitted_configuration(self) -> None:
        """A follower switches configuration when it appends the entry, before it knows of any commit."""
        cores = Cores(configuration([1, 2, 3]))
        leader = cores.elect(1)
        index, _ = leader.propose_change(AddLearner(4, address(4)))  # type: ignore[misc]
        cores.pump(drop=lambda m: m.sender == 2 or m.receiver == 3)
        follower = cores[2]
        self.assertEqual(follower.configuration, configuration([1, 2, 3], [4]))
        self.assertLess(follower.commit_index, index)
        self.assertEqual(follower.configuration_index, index)

    def test_a_promotion_needs_the_new_quorum_for_its_own_entry(self) -> None:
        """Promoting a learner to the fourth voter raises the quorum to 3 for the promotion entry itself."""
        cores = Cores(configuration([1, 2, 3], [4]))
        leader = cores.elect(1)
        index, _ = leader.propose_change(PromoteLearner(4))  # type: ignore[misc]
        self.assertEqual(leader.configuration.quorum, 3)
        cores.pump(drop=cut(3, 4))
        self.assertLess(leader.commit_index, index, "committed by 2 of 4 voters")
        cores.heartbeat(1, among=[1, 2, 4])
        self.assertEqual(leader.commit_index, index)

    def test_truncated_configuration_is_rolled_back(self) -> None:
        """Nodes that appended a change a new leader never had return to the configuration before it."""
        before = configuration([1, 2, 3, 4, 5])
        cores = Cores(before)
        old_leader = cores.elect(1)
        old_leader.propose_change(AddLearner(6, address(6)))
        cores.pump(among=[1, 2], drop=lambda m: m.sender == 2)  # 2 appends it; its acknowledgement is lost
        self.assertEqual(cores[2].configuration, configuration([1, 2, 3, 4, 5], [6]))
        for node in (3, 4, 5):
            cores.expire_lease(node)
        new_leader = cores.elect(3, among=[3, 4, 5])
        self.assertEqual(new_leader.configuration, before)
        cores.heartbeat(3)
        for node in (1, 2):
            with self.subTest(node=node):
                self.assertEqual(cores[node].role, Role.FOLLOWER)
                self.assertEqual(cores[node].configuration, before)
                self.assertEqual(cores[node].configuration_index, 0)
                self.assertFalse(cores[node].configuration_change_pending)


class LearnerTests(SynchronousTestCase):
    """Learners get the log but count in no quorum and never campaign."""

    def test_learners_do_not_commit(self) -> None:
        """An entry held by the leader and two learners is not committed; one voter more commits it."""
        cores = Cores(configuration([1, 2, 3], [4, 5]))
        leader = cores.elect(1)
        index, _ = leader.propose(b"Pk v")
        cores.pump(drop=cut(2, 3))
        self.assertEqual((cores[4].last_index, cores[5].last_index), (index, index))
        self.assertLess(leader.commit_index, index)
        cores.heartbeat(1, among=[1, 2])
        self.assertEqual(leader.commit_index, index)

    def test_learners_do_not_confirm_a_read_index(self) -> None:
        """A read round acknowledged only by learners stays unconfirmed; a voter's acknowledgement confirms it."""
        cores = Cores(configuration([1, 2, 3], [4, 5]))
        leader = cores.elect(1)
        leader.request_read(7)
        cores.pump(drop=cut(2, 3))
        cores.heartbeat(1, among=[1, 4, 5], beats=3)  # learners echo the round with each heartbeat
        self.assertEqual(cores.reads.get(1, []), [])
        cores.heartbeat(1, among=[1, 2])
        self.assertEqual([r.request_id for r in cores.reads[1]], [7])

    def test_learners_do_not_keep_a_leader_in_check_quorum(self) -> None:
        """A leader that hears only from learners for an election timeout steps down."""
        cores = Cores(configuration([1, 2, 3], [4, 5]))
        leader = cores.elect(1)
        cores.heartbeat(1, among=[1, 4, 5], beats=int(2 * TIMEOUT[1] / HEARTBEAT) + 1)
        self.assertIsNot(leader.role, Role.LEADER)

    def test_voter_keeps_a_leader_in_check_quorum(self) -> None:
        """The same leader hearing from one voter keeps leading (the check above counts nodes, not messages)."""
        cores = Cores(configuration([1, 2, 3], [4, 5]))
        leader = cores.elect(1)
        cores.heartbeat(1, among=[1, 2], beats=int(2 * TIMEOUT[1] / HEARTBEAT) + 1)
        self.assertIs(leader.role, Role.LEADER)

    def test_learner_never_campaigns(self) -> None:
        """However long a learner hears nothing, it sends no vote request and keeps its term."""
        cores = Cores(configuration([1, 2, 3], [4]), pre_vote=True)
        for _ in range(10):
            cores.campaign(4)
            rd = cores.drain(4)
            self.assertEqual(rd.messages + rd.messages_after_persist, [])
        self.assertEqual((cores[4].role, cores[4].term), (Role.FOLLOWER, 0))

    def test_new_learner_does_not_campaign_before_its_addition_commits(self) -> None:
        """A node holding its own uncommitted addition as a learner does not campaign either."""
        cores = Cores(configuration([1, 2, 3]), ids=[1, 2, 3])
        leader = cores.elect(1)
        leader.propose_change(AddLearner(4, address(4)))
        learner = cores.add(4, Configuration({}))
        cores.pump(drop=cut(2, 3))
        self.assertEqual(learner.configuration, configuration([1, 2, 3], [4]))
        self.assertTrue(learner.configuration_change_pending)
        for _ in range(5):
            cores.campaign(4)
            rd = cores.drain(4)
            self.assertEqual(rd.messages + rd.messages_after_persist, [])
        self.assertIs(learner.role, Role.FOLLOWER)

    def test_candidate_asks_and_counts_voters_only(self) -> None:
        """A candidate sends vote requests to voters only, and a learner's granted vote does not count."""
        cores = Cores(configuration([1, 2, 3], [4]))
        cores.campaign(1)
        rd = cores.drain(1)
        self.assertEqual({m.receiver for m in bodies_of(rd.messages_after_persist, RequestVote)}, {2, 3})
        candidate = cores[1]
        candidate.step(Message(4, 1, RequestVoteResponse(candidate.term, True)))
        self.assertIs(candidate.role, Role.CANDIDATE)
        candidate.step(Message(2, 1, RequestVoteResponse(candidate.term, True)))
        self.assertIs(candidate.role, Role.LEADER)

    def test_node_answers_a_candidate_that_counts_it_as_voter(self) -> None:
        """A node that is a learner in its own (older) configuration still votes when asked (thesis 4.1): a
        candidate asks only nodes it counts as voters, and a node that has not received its own promotion
        may hold the vote that candidate needs."""
        learner = make_core(4, configuration([1, 2, 3], [4]), hard_state=HardState(2, None))
        learner.step(Message(2, 4, RequestVote(3, 0, 0)))
        rd = learner.ready()
        self.assertEqual([m.body for m in rd.messages_after_persist], [RequestVoteResponse(3, True)])


class PromotionTests(SynchronousTestCase):
    """The leader promotes a learner once it has caught up for a few heartbeats in a row."""

    def _joined(self, **options: object) -> Cores:
        """Three voters, led by 1, which added node 4; node 4 started empty, knowing no configuration, and caught up."""
        cores = Cores(configuration([1, 2, 3]), ids=[1, 2, 3], **options)
        leader = cores.elect(1)
        leader.propose_change(AddLearner(4, address(4)))
        cores.pump()
        cores.add(4, Configuration({}))
        cores.heartbeat(1)
        self.assertEqual(cores[4].last_index, leader.last_index)
        self.assertEqual(cores[4].configuration, configuration([1, 2, 3], [4]))
        return cores

    def test_caught_up_learner_is_promoted_after_the_heartbeats(self) -> None:
        """A caught-up, answering learner is promoted at its third heartbeat in a row (the default), not before."""
        cores = self._joined()
        leader = cores[1]
        self.assertEqual(leader.config.learner_promotion_heartbeats, 3)
        cores.heartbeat(1, beats=2)
        self.assertEqual(leader.configuration.learner_ids, {4})
        cores.heartbeat(1)
        self.assertEqual(leader.configuration, configuration([1, 2, 3, 4]))
        self.assertFalse(leader.configuration_change_pending)
        self.assertEqual(cores[4].configuration, configuration([1, 2, 3, 4]))

    def test_silent_learner_is_not_promoted(self) -> None:
        """A learner that stops answering is not promoted, however close its log was."""
        cores = self._joined()
        cores.heartbeat(1, among=[1, 2, 3], beats=20)
        self.assertEqual(cores[1].configuration.learner_ids, {4})

    def _lagging(self, lag: int) -> Cores:
        """A learner that answers every heartbeat but stays 3 entries behind,
        with learner_promotion_lag C{lag}."""
        cores = self._joined(learner_promotion_lag=lag)
        leader = cores[1]
        behind = leader.last_index
        for _ in range(3):
            leader.propose(b"Pk v")
        cores.pump(among=[1, 2, 3])
        for _ in range(10):
            cores.heartbeat(1, among=[1, 2, 3])
            leader.step(Message(4, 1, AppendEntriesResponse(leader.term, True, behind)))
        return cores

    def test_lagging_learner_is_not_promoted(self) -> None:
        """A learner more than learner_promotion_lag entries behind is not promoted, however long it answers."""
        self.assertEqual(self._lagging(lag=2)[1].configuration.learner_ids, {4})

    def test_learner_within_the_lag_is_promoted(self) -> None:
        """The same learner is promoted when the allowed lag covers its distance."""
        self.assertEqual(self._lagging(lag=3)[1].configuration.voter_ids, {1, 2, 3, 4})

    def test_no_automatic_promotion_when_disabled(self) -> None:
        """With auto_promote_learners off a learner stays a learner."""
        cores = self._joined(auto_promote_learners=False)
        cores.heartbeat(1, beats=20)
        self.assertEqual(cores[1].configuration.learner_ids, {4})


class RemovedNodeTests(SynchronousTestCase):
    """Removed nodes cannot disrupt the cluster, and a removed leader hands over."""

    def test_messages_from_removed_ids_are_ignored(self) -> None:
        """A vote, pre-vote or append from a removed id with a higher term changes nothing and gets no answer."""
        core = make_core(1, configuration([1, 2, 3], removed=[4]), hard_state=HardState(2, None))
        for body in (RequestVote(9, 50, 9), RequestVote(9, 50, 9, pre_vote=True), AppendEntries(9, 0, 0, (), 0)):
            with self.subTest(body=body):
                core.step(Message(4, 1, body))
                rd = core.ready()
                self.assertEqual((core.term, core.voted_for, core.leader_id), (2, None, None))
                self.assertEqual(rd.messages + rd.messages_after_persist, [])

    def test_vote_from_an_unknown_id_is_answered(self) -> None:
        """An id this node has not heard of (a newer configuration may hold it) gets an answer, unlike a removed one."""
        core = make_core(1, configuration([1, 2, 3], removed=[4]), hard_state=HardState(2, None))
        core.step(Message(7, 1, RequestVote(3, 0, 0)))
        self.assertEqual([m.body for m in core.ready().messages_after_persist], [RequestVoteResponse(3, True)])

    def test_removed_node_stops_campaigning(self) -> None:
        """A node that appended its own removal never campaigns again."""
        cores = Cores(configuration([1, 2, 3]), pre_vote=True)
        leader = cores.elect(1)
        leader.propose_change(RemoveMember(3))
        cores.pump()
        cores.clocks[1].advance(leader.config.commit_notify_delay)  # the notice of the commit
        cores.pump()
        removed = cores[3]
        self.assertEqual(removed.configuration, configuration([1, 2], removed=[3]))
        term = removed.term
        for _ in range(10):
            cores.campaign(3)
            rd = cores.drain(3)
            self.assertEqual(rd.messages + rd.messages_after_persist, [])
        self.assertEqual((removed.role, removed.term), (Role.FOLLOWER, term))

    def test_removed_member_is_replicated_to_until_the_change_commits(self) -> None:
        """The leader keeps sending to a removed member (so it learns of its removal) until the change commits,
        and for the minimum election timeout after, then stops."""
        cores = Cores(configuration([1, 2, 3]))
        leader = cores.elect(1)
        index, _ = leader.propose_change(RemoveMember(3))  # type: ignore[misc]
        delivered = bodies_of(cores.pump(), AppendEntries)
        self.assertIn(index, [e[0] for m in delivered if m.receiver == 3 for e in m.body.entries])  # type: ignore[union-attr]
        self.assertGreaterEqual(leader.commit_index, index)
        self.assertEqual(leader.departing, {3})
        cores.clocks[1].advance(HEARTBEAT)
        self.assertEqual({m.receiver for m in leader.ready().messages}, {2, 3})
        cores.clocks[1].advance(TIMEOUT[0])
        leader.ready()
        cores.clocks[1].advance(HEARTBEAT)
        self.assertEqual({m.receiver for m in leader.ready().messages}, {2})
        self.assertEqual(leader.departing, frozenset())

    def test_leader_removing_itself_leads_until_the_change_commits_then_hands_over(self) -> None:
        """A leader that removes itself does not count itself, leads until the change commits, then steps down
        and sends TimeoutNow to a caught-up voter, which takes over."""
        cores = Cores(configuration([1, 2, 3]))
        leader = cores.elect(1)
        index, _ = leader.propose_change(RemoveMember(1))  # type: ignore[misc]
        self.assertEqual(leader.configuration, configuration([2, 3], removed=[1]))
        cores.pump(drop=cut(3))
        self.assertLess(leader.commit_index, index, "committed with the removed leader's own copy")
        self.assertIs(leader.role, Role.LEADER)
        leader.propose(b"Pk v")  # it still serves meanwhile
        cores.clocks[1].advance(HEARTBEAT)
        delivered = cores.pump()
        self.assertGreaterEqual(leader.commit_index, index)
        self.assertIs(leader.role, Role.FOLLOWER)
        (handover,) = bodies_of(delivered, TimeoutNow)
        successor = cores[handover.receiver]
        self.assertEqual(handover.sender, 1)
        self.assertEqual(successor.entries(1, leader.last_index), leader.entries(1, leader.last_index))
        self.assertIs(successor.role, Role.LEADER)
        self.assertEqual(successor.term, 2)
        for _ in range(5):
            cores.campaign(1)
            self.assertEqual(bodies_of(cores.drain(1).messages_after_persist, RequestVote), [])


    def test_removed_leader_that_crashed_before_the_commit_finishes_the_change(self) -> None:
        """A leader that appended its own removal and restarted before it committed is the only node holding
        it; the voter left behind cannot win without its vote, so it campaigns (counting the new voters only),
        commits the removal and hands over, then never campaigns again."""
        cores = Cores(configuration([1, 2]))
        cores.elect(2)
        index, _ = cores[2].propose_change(RemoveMember(2))  # type: ignore[misc]
        cores.drain(2)  # appended here, never sent
        removed = cores.restart(2)
        self.assertEqual(removed.configuration, configuration([1], removed=[2]))
        cores.expire_lease(1)
        cores.campaign(1)
        cores.pump()
        self.assertIsNot(cores[1].role, Role.LEADER, "won without the longer log's vote")
        cores.campaign(2)
        cores.pump(among=[2])
        self.assertIs(removed.role, Role.CANDIDATE, "elected by its own vote, though no longer a voter")
        cores.campaign(2)
        delivered = cores.pump()
        self.assertEqual([(m.sender, m.receiver) for m in bodies_of(delivered, TimeoutNow)], [(2, 1)])
        self.assertIs(cores[1].role, Role.LEADER)
        self.assertEqual(cores[1].configuration, configuration([1], removed=[2]))
        self.assertGreaterEqual(cores[1].commit_index, index)
        self.assertIs(removed.role, Role.FOLLOWER)
        cores.heartbeat(1)
        for _ in range(5):
            cores.campaign(2)
            self.assertEqual(bodies_of(cores.drain(2).messages_after_persist, RequestVote), [])


class OwnTermRuleTests(SynchronousTestCase):
    """
    Why a leader commits an entry of its own term before a change: the
    single-server bug (Ongaro, raft-dev 2015; thesis Figure 4.3's setting).

    Voters 1-4 and learner 5.  Leader 1 (term 1) promotes 5, but only 5
    gets that entry.  Leader 2 (term 2, voters 2-4) removes 4.  Without the
    rule, 2 appends the removal right after its no-op and commits both with
    node 3 alone (2 of the new voters 1-3), so 4 never sees term 2.  Then 1
    (whose log ends in term 1) wins term 3 with 4 and 5 (3 of its voters
    1-5) and commits its own entry at the index where 2 and 3 committed
    theirs.  With the rule, 2's no-op must commit among voters 1-4 first,
    which puts a term-2 entry on node 4, and 4 refuses to vote for 1.
    """

    def _scenario(self, plants: frozenset[str] = frozenset()) -> Cores:
        cores = Cores(configuration([1, 2, 3, 4], [5]), plants=plants)
        first = cores.elect(1)
        first.propose_change(PromoteLearner(5))
        cores.pump(among=[1, 5])
        self.assertEqual(cores[5].configuration, configuration([1, 2, 3, 4, 5]))
        # Node 1 is cut off; 2 is elected by 3 and 4 once they stop hearing
        # from 1.  Its no-op reaches no one yet.
        for node in (3, 4):
            cores.expire_lease(node)
        cores.campaign(2)
        cores.pump(among=[2, 3, 4], drop=lambda m: isinstance(m.body, AppendEntries))
        second = cores[2]
        self.assertIs(second.role, Role.LEADER)
        while True:
            try:
                second.propose_change(RemoveMember(4))
                break
            except LeaderNotReady:
                cores.heartbeat(2, among=[2, 3, 4])
        cores.heartbeat(2, among=[2, 3])
        self.assertFalse(second.configuration_change_pending, "the removal commits with 2 and 3")
        # Node 2 crashes; 1, 4 and 5 restart (so none remembers a leader).
        for node in (1, 4, 5):
            cores.restart(node)
        for _ in range(4):
            cores.campaign(1)
            cores.pump(among=[1, 4, 5])
        return cores

    def test_the_rule_keeps_the_committed_change(self) -> None:
        """With the rule the old leader cannot win again, and no two nodes commit different entries."""
        cores = self._scenario()
        self.assertIsNot(cores[1].role, Role.LEADER)
        self.assertNotEqual(cores[4].last_term, 1)

    def test_without_the_rule_a_committed_entry_is_overwritten(self) -> None:
        """With the rule planted away the same schedule elects node 1, which commits over the removal."""
        with self.assertRaises(Conflict):
            self._scenario(frozenset({"change-before-own-term-commit"}))
