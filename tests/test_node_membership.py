# -*- test-case-name: tests.test_node_membership -*-
"""
The node's membership admin (issue 13) on a whole in-memory cluster on a
C{task.Clock}: C{MEMBERS}, C{ADDNODE}, C{REMOVENODE} and C{TRANSFER} as the
client port answers them (exact reply lines), on the leader and on a
follower, and the refusals that change nothing; C{STATUS}'s membership
fields; the configuration observers the service's peer links follow.
"""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.node import Node
from kvstore.protocols.client import ClientProtocol, format_status
from kvstore.protocols.commands import DEFAULT_LIMITS
from kvstore.raft.core import Role
from kvstore.raft.membership import Configuration
from kvstore.testing.memory_cluster import InMemoryCluster


class _Session:
    """A client connection to one node of the cluster, through the real
    client protocol over a L{StringTransport}."""

    def __init__(self, cluster: InMemoryCluster, node: Node) -> None:
        self.cluster = cluster
        self.protocol = ClientProtocol(node, DEFAULT_LIMITS)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def ask(self, line: str, timeout: float = 5.0) -> str:
        """Send C{line}; run the cluster until its one reply line is back."""
        self.transport.clear()
        self.protocol.dataReceived(line.encode("utf-8") + b"\n")
        self.cluster.run_until(lambda: self.transport.value().endswith(b"\n"), timeout)
        reply = self.transport.value().decode("utf-8")
        assert reply.count("\n") == 1, reply
        return reply.rstrip("\n")


def _address(node_id: int) -> str:
    return f"127.0.0.1:{5000 + node_id}"


class MembershipCommandsTests(SynchronousTestCase):
    """The admin commands' replies on the leader and on a follower."""

    def setUp(self) -> None:
        self.cluster = InMemoryCluster(3, seed=13)
        self.leader_id = self.cluster.wait_for_leader()
        self.leader = _Session(self.cluster, self.cluster.node(self.leader_id))
        self.follower_id = min(i for i in self.cluster.ids if i != self.leader_id)
        self.follower = _Session(self.cluster, self.cluster.node(self.follower_id))

    def configuration(self) -> Configuration:
        return self.cluster.node(self.leader_id).core.configuration

    def test_members_lists_every_member_with_address_and_role(self) -> None:
        """MEMBERS on the leader is the id-ordered <id>@<host>:<port>/<role> line."""
        self.assertEqual(
            self.leader.ask("MEMBERS"),
            "0@127.0.0.1:5000/voter 1@127.0.0.1:5001/voter 2@127.0.0.1:5002/voter",
        )

    def test_follower_replies_not_leader_to_every_admin_command(self) -> None:
        """A follower answers MEMBERS, ADDNODE, REMOVENODE and TRANSFER exactly as a write."""
        expected = f"Error: Not leader. Current leader is Node {self.leader_id} at {_address(self.leader_id)}"
        self.assertEqual(self.follower.ask("PUT k v"), expected)
        for line in ("MEMBERS", "ADDNODE 7 127.0.0.1:5007", "REMOVENODE 2", f"TRANSFER {self.follower_id}"):
            with self.subTest(line=line):
                self.assertEqual(self.follower.ask(line), expected)
        self.assertNotIn(7, self.configuration().member_ids)

    def test_addnode_adds_a_learner_once_committed_and_is_idempotent(self) -> None:
        """ADDNODE replies once committed; the node is a learner; the same request again succeeds and appends nothing."""
        self.assertEqual(self.leader.ask("ADDNODE 5 127.0.0.1:5005"), "Node 5 added successfully.")
        core = self.cluster.node(self.leader_id).core
        self.assertFalse(core.configuration_change_pending)
        self.assertEqual(core.configuration.learners, {5: "127.0.0.1:5005"})
        last = core.last_index
        self.assertEqual(self.leader.ask("ADDNODE 5 127.0.0.1:5005"), "Node 5 added successfully.")
        self.assertEqual(core.last_index, last)
        self.assertEqual(
            self.leader.ask("MEMBERS"),
            "0@127.0.0.1:5000/voter 1@127.0.0.1:5001/voter 2@127.0.0.1:5002/voter 5@127.0.0.1:5005/learner",
        )

    def test_bad_membership_requests_get_an_error_and_change_nothing(self) -> None:
        """Every refusal is one Error: line and leaves the configuration and the log as they were."""
        self.assertEqual(self.leader.ask("ADDNODE 5 127.0.0.1:5005"), "Node 5 added successfully.")
        core = self.cluster.node(self.leader_id).core
        before, last = core.configuration, core.last_index
        cases = {
            "ADDNODE 1 127.0.0.1:6001": "Error: Node 1 is already a member with address 127.0.0.1:5001",
            "ADDNODE 6 nohost": "Error: Invalid address 'nohost': expected HOST:PORT",
            "ADDNODE 6 127.0.0.1:0": "Error: Invalid address '127.0.0.1:0': the port must be 1 to 65535",
            "ADDNODE x 127.0.0.1:5006": "Error: Invalid node id 'x'",
            "ADDNODE 6": "Error: Usage: ADDNODE <id> <host>:<port>",
            "REMOVENODE 9": "Error: Node 9 is not a member",
            "REMOVENODE": "Error: Usage: REMOVENODE <id>",
            "TRANSFER 5": "Error: Node 5 is a learner; leadership goes only to a voter",
            "TRANSFER 9": "Error: Node 9 is not a member",
            "MEMBERS 1": "Error: Usage: MEMBERS",
        }
        for line, reply in cases.items():
            with self.subTest(line=line):
                self.assertEqual(self.leader.ask(line), reply)
        self.assertEqual((core.configuration, core.last_index), (before, last))

    def test_a_second_change_while_one_is_pending_is_refused(self) -> None:
        """A change while another is uncommitted gets exactly 'Error: Membership change in progress'."""
        node = self.cluster.node(self.leader_id)
        # Cut the leader off so that its change cannot commit.
        for peer in self.cluster.ids:
            if peer != self.leader_id:
                self.cluster.network.partition({self.leader_id}, {peer})
        pending = node.add_node(5, "127.0.0.1:5005")
        self.assertEqual(self.leader.ask("REMOVENODE 2", timeout=0.01), "Error: Membership change in progress")
        self.assertEqual(self.leader.ask("ADDNODE 6 127.0.0.1:5006", timeout=0.01), "Error: Membership change in progress")
        self.assertNotIn(6, node.core.configuration.member_ids)
        self.assertIn(2, node.core.configuration.voter_ids)
        pending.addErrback(lambda f: None)

    def test_removing_the_last_voter_is_refused(self) -> None:
        """REMOVENODE down to one voter works; removing that one is refused."""
        others = [i for i in self.cluster.ids if i != self.leader_id]
        for other in others:
            self.assertEqual(self.leader.ask(f"REMOVENODE {other}"), f"Node {other} removed successfully.")
        self.assertEqual(
            self.leader.ask(f"REMOVENODE {self.leader_id}"),
            f"Error: Cannot remove node {self.leader_id}: it is the last voter",
        )
        self.assertEqual(self.configuration().voter_ids, {self.leader_id})
        self.assertEqual(self.configuration().removed, set(others))

    def test_transfer_hands_leadership_over_and_back(self) -> None:
        """TRANSFER replies once the target leads; writes then go to the new leader."""
        target = self.follower_id
        self.assertEqual(self.leader.ask(f"TRANSFER {target}"), f"Leadership transferred to Node {target}.")
        self.assertEqual(self.cluster.node(target).core.role, Role.LEADER)
        self.assertEqual(
            self.leader.ask("PUT k v"), f"Error: Not leader. Current leader is Node {target} at {_address(target)}"
        )
        self.assertEqual(self.follower.ask("PUT k v"), "k added successfully.")
        self.assertEqual(self.follower.ask(f"TRANSFER {self.leader_id}"), f"Leadership transferred to Node {self.leader_id}.")
        self.assertEqual(self.cluster.leader(), self.leader_id)

    def test_transfer_to_itself_succeeds_at_once(self) -> None:
        """TRANSFER to the leader itself changes nothing and succeeds."""
        term = self.cluster.node(self.leader_id).core.term
        self.assertEqual(self.leader.ask(f"TRANSFER {self.leader_id}"), f"Leadership transferred to Node {self.leader_id}.")
        self.assertEqual(self.cluster.node(self.leader_id).core.term, term)

    def test_transfer_to_a_node_not_connected_is_refused(self) -> None:
        """TRANSFER to a voter the leader has no link to is refused and leaves leadership alone."""
        self.cluster.node(self.leader_id).peer_connected = lambda peer: peer != self.follower_id
        self.assertEqual(
            self.leader.ask(f"TRANSFER {self.follower_id}"),
            f"Error: Node {self.follower_id} is not connected to the leader",
        )
        self.assertIsNone(self.cluster.node(self.leader_id).core.transfer_target)
        self.assertEqual(self.leader.ask("PUT k v"), "k added successfully.")

    def test_transfer_that_times_out_is_an_error_and_the_leader_leads_on(self) -> None:
        """A target that never takes over: the reply is an error and the old leader accepts writes again."""
        self.cluster.network.partition({self.leader_id}, {self.follower_id})
        reply = self.leader.ask(f"TRANSFER {self.follower_id}", timeout=10)
        self.assertEqual(
            reply, f"Error: Node {self.follower_id} did not take over in time; Node {self.leader_id} still leads"
        )
        self.assertEqual(self.leader.ask("PUT k v"), "k added successfully.")


class StatusMembershipTests(SynchronousTestCase):
    """STATUS's members=, learners= and member_role=."""

    def test_status_names_voters_learners_and_own_role(self) -> None:
        """The leader's STATUS lists the voters and learners; the learner's own role shows on its STATUS."""
        cluster = InMemoryCluster(3, seed=5)
        leader = cluster.node(cluster.wait_for_leader())
        status = format_status(leader.status())
        self.assertIn("members=0,1,2 learners=none member_role=voter", status)
        d = leader.add_node(4, "127.0.0.1:5004")
        cluster.resolve(d)
        self.assertIn("members=0,1,2 learners=4 member_role=voter", format_status(leader.status()))


class ConfigurationObserverTests(SynchronousTestCase):
    """The node tells its observers (the service's peer links) of each new
    configuration, once, on every node that appends it."""

    def test_observers_see_each_new_configuration_once(self) -> None:
        """An ADDNODE and a REMOVENODE reach the observers of every node, each exactly once."""
        cluster = InMemoryCluster(3, seed=7)
        leader = cluster.node(cluster.wait_for_leader())
        seen: dict[int, list[Configuration]] = {i: [] for i in cluster.ids}
        for i in cluster.ids:
            cluster.node(i).configuration_observers.append(seen[i].append)
        cluster.resolve(leader.add_node(4, "127.0.0.1:5004"))
        cluster.resolve(leader.remove_node(4))
        cluster.run(1.0)
        for i in cluster.ids:
            with self.subTest(node=i):
                self.assertEqual([sorted(c.member_ids) for c in seen[i]], [[0, 1, 2, 4], [0, 1, 2]])
                self.assertEqual(seen[i][-1].removed, {4})
