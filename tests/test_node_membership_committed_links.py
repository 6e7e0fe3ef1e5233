# -*- test-case-name: tests.test_node_membership_committed_links -*-
"""
Peer links follow the union of the current and the committed configuration
(issue 13): a follower that appends the entry removing the leader keeps its
link to that leader until the removal commits, so the leader hears the acks
that commit its own removal.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.peer_membership import FollowConfiguration
from kvstore.protocols.peer import Membership
from kvstore.raft.membership import Configuration

from tests.test_node_membership_links import RecordingLinks


class _Server:
    membership = Membership(1, "c", frozenset({0, 2}))


class CommittedConfigurationLinksTests(SynchronousTestCase):
    def test_a_removed_leader_stays_linked_until_its_removal_commits(self) -> None:
        """A follower appending the removal of node 0 keeps its link to, and accepts, node 0 until that removal commits."""
        links, server = RecordingLinks(), _Server()
        follow = FollowConfiguration(1, "c", links, server, {0: "h:0", 2: "h:2"})
        before = Configuration({0: "h:0", 1: "h:1", 2: "h:2"})
        follow(before)
        follow.committed_changed(before)
        follow(Configuration({1: "h:1", 2: "h:2"}, removed=[0]))
        self.assertEqual(links.calls, [])
        self.assertEqual(server.membership.peer_ids, {0, 2})
        follow.committed_changed(Configuration({1: "h:1", 2: "h:2"}, removed=[0]))
        self.assertEqual(links.calls, [("remove", 0)])
        self.assertEqual(server.membership.peer_ids, {2})
