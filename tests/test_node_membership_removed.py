# -*- test-case-name: tests.test_node_membership_removed -*-
"""
A removed node that is still running, at the node level on a C{task.Clock}
(issue 13): peer links follow the configuration as the service wires them
(L{FollowConfiguration}, here over the in-memory network: a link removed
is a directed link cut), the leader keeps its link to the node it removes
until the core lets it go, and the removed node learns of its removal,
stops campaigning, shows C{member_role=removed} in C{STATUS} and answers
every client request at once with an C{Error:} line.
"""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.node import Node
from kvstore.node.peer_membership import FollowConfiguration
from kvstore.protocols.client import ClientProtocol
from kvstore.protocols.commands import DEFAULT_LIMITS
from kvstore.protocols.peer import Membership
from kvstore.raft.core import Role
from kvstore.raft.messages import Message, RequestVote
from kvstore.testing.memory_cluster import CLUSTER_ID, InMemoryCluster
from kvstore.testing.sim.network import SimulatedNetwork


def _address(node_id: int) -> str:
    return f"127.0.0.1:{5000 + node_id}"


class _NetworkLinks:
    """Node C{owner}'s outbound peer links, as the in-memory network's
    directed links: a link removed loses everything C{owner} sends on it."""

    def __init__(self, network: SimulatedNetwork, owner: int) -> None:
        self.network = network
        self.owner = owner

    def add(self, peer_id: int, host: str, port: int) -> None:
        self.network.blocked.discard((self.owner, peer_id))

    def remove(self, peer_id: int) -> None:
        self.network.blocked.add((self.owner, peer_id))


class _Server:
    membership = Membership(0, CLUSTER_ID, frozenset())


def _follow_links(cluster: InMemoryCluster) -> None:
    """Wire every node's links to its configuration as the service does."""
    for node_id in cluster.ids:
        node = cluster.node(node_id)
        follow = FollowConfiguration(
            node_id, CLUSTER_ID, _NetworkLinks(cluster.network, node_id), _Server(),
            {peer: _address(peer) for peer in cluster.ids if peer != node_id},
        )
        follow(node.core.configuration)
        node.configuration_observers.append(follow)
        node.departing_observers.append(follow.departing_changed)


def _ask(cluster: InMemoryCluster, node: Node, line: str) -> str:
    """One request on C{node}'s client port; its reply line, within a second of simulated time."""
    transport = StringTransport()
    protocol = ClientProtocol(node, DEFAULT_LIMITS)
    protocol.makeConnection(transport)
    protocol.dataReceived(line.encode("utf-8") + b"\n")
    cluster.run_until(lambda: transport.value().endswith(b"\n"), 1.0)
    return transport.value().decode("utf-8").rstrip("\n")


class RemovedNodeTests(SynchronousTestCase):
    """REMOVENODE of a running follower, with peer links that follow the configuration."""

    def setUp(self) -> None:
        self.cluster = InMemoryCluster(3, seed=31)
        _follow_links(self.cluster)
        self.leader_id = self.cluster.wait_for_leader()
        self.removed_id = max(i for i in self.cluster.ids if i != self.leader_id)
        self.leader = self.cluster.node(self.leader_id)
        self.removed = self.cluster.node(self.removed_id)
        self.vote_requests: list[Message] = []
        self.cluster.network.on_send.append(
            lambda m: self.vote_requests.append(m) if isinstance(m.body, RequestVote) else None
        )
        self.assertEqual(_ask(self.cluster, self.leader, f"REMOVENODE {self.removed_id}"),
                         f"Node {self.removed_id} removed successfully.")
        self.cluster.run(1.0)

    def test_removed_node_learns_its_removal_and_stops_campaigning(self) -> None:
        """The removed node learns that its removal committed and sends no vote request for many election
        timeouts; the others keep their leader and term."""
        self.assertTrue(self.removed.core.removed)
        term = self.leader.core.term
        self.cluster.run(10.0)
        self.assertEqual([m for m in self.vote_requests if m.sender == self.removed_id], [])
        self.assertIs(self.removed.core.role, Role.FOLLOWER)
        self.assertEqual((self.cluster.leader(), self.leader.core.term), (self.leader_id, term))

    def test_the_leader_closes_its_link_to_the_removed_node_after_the_commit(self) -> None:
        """The leader's link to the removed node is closed once the core lets it go; the others' already were."""
        self.assertEqual(self.leader.core.departing, frozenset())
        for node_id in self.cluster.ids:
            if node_id != self.removed_id:
                self.assertIn((node_id, self.removed_id), self.cluster.network.blocked)

    def test_status_shows_the_node_removed(self) -> None:
        """STATUS on the removed node says member_role=removed and lists only the remaining members."""
        status = _ask(self.cluster, self.removed, "STATUS")
        self.assertIn("member_role=removed", status.split())
        members = sorted(i for i in self.cluster.ids if i != self.removed_id)
        self.assertIn("members=" + ",".join(map(str, members)), status.split())

    def test_client_requests_on_the_removed_node_get_an_error_at_once(self) -> None:
        """Writes, reads (linearizable or stale) and admin commands on the removed node get an Error: line
        naming the removal at once instead of waiting for a timeout."""
        expected = f"Error: Unavailable: Node {self.removed_id} was removed from the cluster; ask another member"
        for line in ("PUT k v", "GET k", "DELETE k", "MEMBERS", f"REMOVENODE {self.leader_id}",
                     f"TRANSFER {self.leader_id}", "ADDNODE 9 127.0.0.1:5009"):
            with self.subTest(line=line):
                self.assertEqual(_ask(self.cluster, self.removed, line), expected)
