# -*- test-case-name: tests.test_node_membership_departing_links -*-
"""
The peer links of a leader elected while the removal of a member is still
pending (issue 13, review of the departing window): the core replicates to
the removed member (L{kvstore.raft.core.RaftCore.departing}), so the node
must link to it again, although it closed its link when, as a follower, it
appended the entry that removed that member.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.peer_membership import FollowConfiguration
from kvstore.protocols.peer import Membership
from kvstore.raft.membership import Configuration
from kvstore.testing.memory_cluster import CLUSTER_ID, InMemoryCluster

from tests.test_node_membership_removed import _ask, _follow_links


class _Links:
    """Records the links opened and closed."""

    def __init__(self) -> None:
        self.linked: dict[int, tuple[str, int]] = {}

    def add(self, peer_id: int, host: str, port: int) -> None:
        self.linked[peer_id] = (host, port)

    def remove(self, peer_id: int) -> None:
        self.linked.pop(peer_id, None)


class _Server:
    membership = Membership(0, CLUSTER_ID, frozenset())


def _configuration(ids: list[int], removed: list[int] = []) -> Configuration:
    return Configuration({i: f"127.0.0.1:{5000 + i}" for i in ids}, removed=removed)


class DepartingLinkTests(SynchronousTestCase):
    """A departing member whose link was closed before this node led is linked to again."""

    def test_departing_member_unlinked_as_a_follower_is_linked_again(self) -> None:
        """A follower that closed its link to a member on appending its removal opens it again (and accepts the
        member's connections) once, as leader, its core replicates to that member."""
        links, server = _Links(), _Server()
        follow = FollowConfiguration(1, CLUSTER_ID, links, server, {0: "127.0.0.1:5000", 2: "127.0.0.1:5002"})
        follow(_configuration([0, 1, 2]))
        follow(_configuration([0, 1], removed=[2]))
        self.assertNotIn(2, links.linked)
        follow.departing_changed(frozenset({2}))
        self.assertEqual(links.linked.get(2), ("127.0.0.1", 5002))
        self.assertIn(2, server.membership.peer_ids)
        follow.departing_changed(frozenset())
        self.assertNotIn(2, links.linked)
        self.assertNotIn(2, server.membership.peer_ids)

    def test_a_joiner_keeps_its_link_to_a_leader_missing_from_the_first_configuration_it_receives(self) -> None:
        """A joining node linked to its seed (the members it joined through, the leader among them) that
        receives the bootstrap configuration entry first, which names neither, keeps its link to the leader it
        follows (reported departing by the node): it answers the leader over that link."""
        links, server = _Links(), _Server()
        follow = FollowConfiguration(5, CLUSTER_ID, links, server, {}, seed={3: "127.0.0.1:5003", 4: "127.0.0.1:5004"})
        follow(Configuration({}))
        self.assertEqual(set(links.linked), {3, 4})
        follow.departing_changed(frozenset({3}))  # it follows leader 3, which its configuration does not name
        follow(_configuration([0, 1, 2]))  # index 1: the cluster's bootstrap members
        self.assertEqual(links.linked.get(3), ("127.0.0.1", 5003))
        self.assertIn(3, server.membership.peer_ids)
        self.assertNotIn(4, links.linked)

    def test_removed_node_learns_its_removal_from_a_leader_elected_while_it_was_pending(self) -> None:
        """The removal commits under a new leader elected while it was pending; the removed node, still
        running, learns of it through that leader's link and reports member_role=removed."""
        cluster = InMemoryCluster(4, seed=7)
        _follow_links(cluster)
        old = cluster.wait_for_leader()
        removed = max(i for i in cluster.ids if i != old)
        others = [i for i in cluster.ids if i not in (old, removed)]
        # The old leader's acknowledgements are lost, and the removed node
        # hears nothing of the change: it stays pending when the old leader dies.
        lost = {(i, old) for i in others} | {(old, removed)}
        cluster.network.blocked |= lost
        cluster.node(old).remove_node(removed).addErrback(lambda failure: None)  # the old leader dies first
        cluster.run(0.05)
        for i in others:
            self.assertNotIn(removed, cluster.node(i).core.configuration.member_ids)
        self.assertIn(removed, cluster.node(old).core.departing)
        cluster.crash(old)
        cluster.network.blocked -= lost
        new = cluster.wait_for_leader(among=others)
        self.assertEqual(cluster.node(new).core.departing, {removed})
        cluster.run(3.0)
        self.assertFalse(cluster.node(new).core.removed)
        self.assertTrue(cluster.node(removed).core.removed, "the removed node never heard of its removal")
        self.assertIn("member_role=removed", _ask(cluster, cluster.node(removed), "STATUS").split())
