# -*- test-case-name: tests.test_raft_membership_removed -*-
"""
A removed node that is still running learns that its removal committed
(issue 13: "a removed node stops campaigning"): the leader replicates to it
until the removal commits and for the minimum election timeout after, a new
leader elected while the removal is pending replicates to it too, and a
node that knows a committed configuration removed it reports
L{RaftCore.removed} and never campaigns again.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.core import Role
from kvstore.raft.membership import RemoveMember
from kvstore.raft.messages import AppendEntries, AppendEntriesResponse, Message, RequestVote

from tests.raft_membership_support import HEARTBEAT, Cores, configuration


def _campaigns(cores: Cores, node_id: int, times: int = 5) -> list[Message]:
    """Let C{node_id}'s election timer fire C{times} times; the vote requests it sent."""
    sent: list[Message] = []
    for _ in range(times):
        cores.campaign(node_id)
        rd = cores.drain(node_id)
        sent += [m for m in rd.messages + rd.messages_after_persist if isinstance(m.body, RequestVote)]
    return sent


class RemovedNodeLearnsItsRemovalTests(SynchronousTestCase):
    """The removed node hears of the commit of its removal, and stays quiet."""

    def test_removed_node_learns_the_commit_after_the_message_that_carried_it_was_lost(self) -> None:
        """The leader keeps sending heartbeats to the removed node after the commit, so it learns of it even if
        the first message with the new commit index is lost, and from then on is removed and never campaigns."""
        cores = Cores(configuration([1, 2, 3]), pre_vote=True)
        leader = cores.elect(1)
        index, _ = leader.propose_change(RemoveMember(3))  # type: ignore[misc]

        def commit_to_3(message: Message) -> bool:
            body = message.body
            return message.receiver == 3 and isinstance(body, AppendEntries) and body.leader_commit >= index

        cores.pump(drop=commit_to_3)
        removed = cores[3]
        self.assertGreaterEqual(leader.commit_index, index)
        self.assertEqual(removed.configuration, configuration([1, 2], removed=[3]))
        self.assertLess(removed.commit_index, index)
        self.assertFalse(removed.removed, "removed before it knows the change committed")
        self.assertEqual(leader.departing, {3})
        cores.heartbeat(1)
        self.assertGreaterEqual(removed.commit_index, index)
        self.assertTrue(removed.removed)
        self.assertFalse(leader.removed or cores[2].removed)
        self.assertEqual(_campaigns(cores, 3), [])
        self.assertIs(removed.role, Role.FOLLOWER)

    def test_a_removed_node_that_missed_the_change_is_caught_up_after_the_commit(self) -> None:
        """A removed node that got neither the entry nor the commit while the change was pending is sent both
        afterwards, within the minimum election timeout, and stops campaigning."""
        cores = Cores(configuration([1, 2, 3]), pre_vote=True)
        leader = cores.elect(1)
        leader.propose_change(RemoveMember(3))
        cores.pump(among=[1, 2])
        self.assertFalse(cores[3].removed)
        cores.heartbeat(1, beats=3)
        self.assertTrue(cores[3].removed)
        self.assertEqual(_campaigns(cores, 3), [])

    def test_the_leader_lets_the_removed_node_go_after_the_minimum_election_timeout(self) -> None:
        """After the commit the leader replicates to the removed node for the minimum election timeout only."""
        cores = Cores(configuration([1, 2, 3]))
        leader = cores.elect(1)
        leader.propose_change(RemoveMember(3))
        cores.pump(among=[1, 2])
        beats = 0
        while leader.departing:
            cores.heartbeat(1, among=[1, 2])
            beats += 1
            self.assertLess(beats, 100, "the removed node is never let go")
        self.assertGreaterEqual(beats * HEARTBEAT, leader.config.election_timeout_min - 1e-9)
        cores.heartbeat(1)
        self.assertFalse(cores[3].removed, "still told after the leader let it go")

    def test_a_new_leader_replicates_to_a_node_removed_by_a_pending_change(self) -> None:
        """A leader elected while the removal of a node is not committed yet replicates to that node as well,
        so it learns of its removal once the new leader commits it."""
        cores = Cores(configuration([1, 2, 3, 4]), pre_vote=False)
        old = cores.elect(1)
        index, _ = old.propose_change(RemoveMember(4))  # type: ignore[misc]

        def not_to_4_nor_acked(message: Message) -> bool:
            return message.receiver == 4 or (message.receiver == 1 and isinstance(message.body, AppendEntriesResponse))

        cores.pump(drop=not_to_4_nor_acked)
        self.assertLess(old.commit_index, index)
        self.assertEqual(cores[2].configuration, configuration([1, 2, 3], removed=[4]))
        cores.expire_lease(3)
        new = cores.elect(2, among=[2, 3])
        self.assertEqual(new.departing, {4})
        cores.heartbeat(2, beats=3)
        self.assertGreaterEqual(new.commit_index, index)
        self.assertTrue(cores[4].removed)
        self.assertEqual(_campaigns(cores, 4), [])
