# -*- test-case-name: tests.test_review_members_admin_view -*-
"""
The admin endpoint's view of membership follows the Raft core's current
configuration (issue 13), not the command line's bootstrap membership:
C{/readyz}'s C{voter} check fails on a removed node (or a learner), and
C{/status} lists the current members with their roles (found in review).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.admin.view import NodeView
from kvstore.admin.web import status_document
from kvstore.node.node import Node
from kvstore.raft.core import Role
from kvstore.testing.memory_cluster import InMemoryCluster


def _view(node: Node) -> NodeView:
    return NodeView(node, "c", {i: f"127.0.0.1:{5000 + i}" for i in range(3)})


class AdminViewFollowsConfigurationTests(SynchronousTestCase):
    """NodeView.is_voter and /status's members come from core.configuration."""

    def setUp(self) -> None:
        self.cluster = InMemoryCluster(3, seed=13)
        self.leader_id = self.cluster.wait_for_leader()
        self.leader = self.cluster.node(self.leader_id)
        self.removed_id = max(i for i in self.cluster.ids if i != self.leader_id)
        self.cluster.run_until(lambda: not self.leader.core.configuration_change_pending and self.leader.core.commit_index > 0, 5)
        done: list[object] = []
        self.cluster.run_until(lambda: self.leader.core.role is Role.LEADER, 5)
        self.leader.remove_node(self.removed_id).addBoth(done.append)
        self.cluster.run_until(lambda: bool(done), 5)
        self.assertEqual(done, [None])
        removed = self.cluster.node(self.removed_id)
        self.cluster.run_until(lambda: self.removed_id in removed.core.configuration.removed, 5)

    def test_removed_node_is_not_a_voter(self) -> None:
        """A node its configuration removed is not a voter for /readyz."""
        self.assertFalse(_view(self.cluster.node(self.removed_id)).is_voter)
        self.assertTrue(_view(self.leader).is_voter)

    def test_status_lists_the_current_members(self) -> None:
        """/status lists the current configuration's members, not the command line's."""
        members = status_document(_view(self.leader))["members"]
        assert isinstance(members, list)
        self.assertEqual(
            sorted(m["id"] for m in members), sorted(i for i in self.cluster.ids if i != self.removed_id)
        )
        self.assertTrue(all(m["voter"] for m in members))
