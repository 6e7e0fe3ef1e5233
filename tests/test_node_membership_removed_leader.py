# -*- test-case-name: tests.test_node_membership_removed_leader -*-
"""
C{REMOVENODE} of the leader itself with peer links that follow the
configuration as the service wires them (issue 13: "a removed leader keeps
leading until the change that removes it commits, then steps down and
hands over leadership").  A follower answers over its own link to the
leader, so it must keep that link while it follows a leader its
configuration no longer names, or the leader never hears that its removal
is stored and cannot commit it.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.core import Role
from kvstore.testing.memory_cluster import InMemoryCluster

from tests.test_node_membership_removed import _ask, _follow_links


class RemovedLeaderTests(SynchronousTestCase):
    """The leader removes itself, commits the change, and hands over."""

    def test_removing_the_leader_commits_and_hands_leadership_over(self) -> None:
        """REMOVENODE of the leader succeeds with the table's reply, within an election timeout, and the
        leadership passes to another member without an election timeout's wait; the old leader is removed."""
        for seed in (1, 2, 31):
            with self.subTest(seed=seed):
                cluster = InMemoryCluster(3, seed=seed)
                _follow_links(cluster)
                leader_id = cluster.wait_for_leader()
                leader = cluster.node(leader_id)
                start = cluster.clock.seconds()
                self.assertEqual(_ask(cluster, leader, f"REMOVENODE {leader_id}"),
                                 f"Node {leader_id} removed successfully.")
                self.assertLess(cluster.clock.seconds() - start, leader.core.config.election_timeout_min)
                self.assertTrue(cluster.run_until(lambda: cluster.leader() not in (None, leader_id), 
                                                  leader.core.config.election_timeout_min))
                self.assertTrue(leader.core.removed)
                self.assertIs(leader.core.role, Role.FOLLOWER)
