# -*- test-case-name: tests.test_node_membership_departing_links -*-
"""
The peer links of a leader elected while the removal of a member is still
pending (issue 13, review of the departing window): the core replicates to
the removed member (L{kvstore.raft.core.RaftCore.departing}), so the node
must link to it again, although it closed its link when, as a follower, it
appended the entry that removed that member.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.build import build_node
from kvstore.node.node import Node
from kvstore.node.peer_membership import FollowConfiguration
from kvstore.protocols.peer import Membership
from kvstore.raft.config import RaftConfig
from kvstore.raft.core import Role
from kvstore.raft.membership import Configuration
from kvstore.storage import MemoryLog, MemoryMetadata
from kvstore.testing.memory_cluster import CLUSTER_ID, InMemoryCluster

from tests.test_node_membership_removed import _NetworkLinks, _address, _ask, _follow_links
from tests.test_node_membership_removed import _Server as _RemovedServer

#: Small AppendEntries, so that a log of a few dozen entries takes several.
_OPTIONS = {"max_append_entries": 8}


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

    def test_a_joiner_accepts_every_member_of_its_seed_while_its_configuration_lags(self) -> None:
        """While the configuration a joining node holds (the bootstrap members') lags behind the members it
        joined through, it still accepts their connections, so that any of them that leads next reaches it;
        a member that a committed configuration removed is refused."""
        links, server = _Links(), _Server()
        seed = {3: "127.0.0.1:5003", 4: "127.0.0.1:5004", 5: "127.0.0.1:5005"}
        follow = FollowConfiguration(6, CLUSTER_ID, links, server, {}, seed=seed)
        follow(Configuration({}))
        follow(_configuration([0, 1, 2]))
        self.assertEqual({i for i in range(8) if server.membership.accepts(i)}, {0, 1, 2, 3, 4, 5, 7})
        latest = _configuration([0, 1, 2, 3, 4], removed=[5])
        follow(latest)
        self.assertTrue(server.membership.accepts(5))  # removed by an entry not committed yet
        follow.committed_changed(latest)
        self.assertEqual({i for i in range(8) if server.membership.accepts(i)}, {0, 1, 2, 3, 4, 7})
        self.assertEqual(set(links.linked), {0, 1, 2, 3, 4})

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


class JoinAfterTheLeaderChangedTests(SynchronousTestCase):
    """A node joins a bootstrapped cluster whose leader is not one of its first members."""

    def joiner(self, node_id: int, seed: list[int]) -> Node:
        """Start an empty node that joined (no bootstrap entry), its links following its configuration and
        linked to C{seed} until it has one, as the service wires it."""
        cluster = self.cluster
        config = RaftConfig(node_id=node_id, peers=(), heartbeat_interval=0.05, election_timeout_min=0.3,
                            election_timeout_max=0.6, **_OPTIONS)
        node = build_node(config, clock=cluster.clock, rng=random.Random(node_id), log=MemoryLog(),
                          metadata=MemoryMetadata(), cluster_id=CLUSTER_ID, peers=cluster.network, member_addresses={},
                          configuration=Configuration({}), bootstrap=False)
        cluster.network.attach(node_id, node.receive)
        follow = FollowConfiguration(node_id, CLUSTER_ID, _NetworkLinks(cluster.network, node_id), _RemovedServer(),
                                     {}, seed={i: _address(i) for i in seed})
        follow(node.core.configuration)
        node.configuration_observers.append(follow)
        node.departing_observers.append(follow.departing_changed)
        node.start()
        self.addCleanup(node.stop)
        self.nodes[node_id] = node
        return node

    def leader(self) -> Node:
        leaders = [n for n in self.nodes.values() if n.core.role is Role.LEADER]
        self.assertTrue(leaders, "no leader")
        return max(leaders, key=lambda n: n.core.term)

    def test_a_node_joining_when_a_later_member_leads_catches_up_and_becomes_a_voter(self) -> None:
        """Node 3 joins, is promoted and takes the leadership; node 4 then joins through all four: its first
        batch of entries holds only the bootstrap members (0, 1, 2), yet it keeps answering leader 3, catches up
        and is promoted."""
        self.cluster = cluster = InMemoryCluster(3, seed=3, bootstrap=True, **_OPTIONS)
        _follow_links(cluster)
        self.nodes = {i: cluster.node(i) for i in cluster.ids}
        first = cluster.node(cluster.wait_for_leader())
        for k in range(60):  # many more entries than one AppendEntries carries
            first.put(f"k{k}", "v")
        cluster.run(1.0)
        self.joiner(3, [0, 1, 2])
        self.assertEqual(_ask(cluster, first, f"ADDNODE 3 {_address(3)}"), "Node 3 added successfully.")
        self.assertTrue(cluster.run_until(lambda: 3 in first.core.configuration.voter_ids, 10))
        self.assertEqual(_ask(cluster, first, "TRANSFER 3"), "Leadership transferred to Node 3.")
        cluster.run(0.5)  # its term's first entry commits
        leader = self.leader()
        self.assertEqual(leader.core.node_id, 3)
        joined = self.joiner(4, [0, 1, 2, 3])
        self.assertEqual(_ask(cluster, leader, f"ADDNODE 4 {_address(4)}"), "Node 4 added successfully.")
        self.assertTrue(cluster.run_until(lambda: 4 in self.leader().core.configuration.voter_ids, 10),
                        f"node 4 stuck at index {joined.core.last_index} with {joined.core.configuration}")
