# -*- test-case-name: tests.test_node_membership_address_taken -*-
"""
C{ADDNODE <id> <host>:<port>} with an address another member already has
(issue 13's table of refusals): one C{Error:} line, nothing changed; the
address of a removed member may be given to a new id (a machine replaced
in place).  Checked on L{Configuration.after} and through the client port
of a whole in-memory cluster on a C{task.Clock}.
"""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.client import ClientProtocol
from kvstore.protocols.commands import DEFAULT_LIMITS
from kvstore.raft.membership import AddLearner, AddressTaken, Configuration, RemoveMember
from kvstore.testing.memory_cluster import InMemoryCluster


class ConfigurationAddressTakenTests(SynchronousTestCase):
    """L{Configuration.after} refuses a learner at a member's address."""

    def setUp(self) -> None:
        self.configuration = Configuration({0: "h:5000", 1: "h:5001"}, {2: "h:5002"}, removed=[3])

    def test_a_voters_or_learners_address_is_refused(self) -> None:
        """A new id at a voter's or a learner's address raises AddressTaken naming that member."""
        for address, owner in (("h:5001", 1), ("h:5002", 2)):
            with self.subTest(address=address):
                with self.assertRaises(AddressTaken) as caught:
                    self.configuration.after(AddLearner(4, address))
                self.assertEqual(str(caught.exception), f"Address {address} is already in use by Node {owner}")

    def test_a_removed_members_address_may_be_reused(self) -> None:
        """Once its member is removed, an address may go to a new id (the removed id stays removed)."""
        after = self.configuration.after(RemoveMember(2))
        assert after is not None
        added = after.after(AddLearner(4, "h:5002"))
        assert added is not None
        self.assertEqual(added.learners, {4: "h:5002"})
        self.assertEqual(added.removed, {2, 3})

    def test_the_same_id_and_address_again_is_still_a_no_op(self) -> None:
        """Re-adding a learner with its own address is the idempotent retry, not a taken address."""
        self.assertIsNone(self.configuration.after(AddLearner(2, "h:5002")))


class AddNodeAddressTakenTests(SynchronousTestCase):
    """ADDNODE at a member's address through the client port."""

    def ask(self, line: str) -> str:
        transport = StringTransport()
        protocol = ClientProtocol(self.node, DEFAULT_LIMITS)
        protocol.makeConnection(transport)
        protocol.dataReceived(line.encode("utf-8") + b"\n")
        self.cluster.run_until(lambda: transport.value().endswith(b"\n"), 5.0)
        return transport.value().decode("utf-8").rstrip("\n")

    def test_addnode_at_a_members_address_is_refused_and_changes_nothing(self) -> None:
        """ADDNODE with a voter's or a learner's address gets 'Error: Address ... is already in use by Node N'
        and leaves the configuration and the log as they were."""
        self.cluster = InMemoryCluster(3, seed=5)
        self.node = self.cluster.node(self.cluster.wait_for_leader())
        self.assertEqual(self.ask("ADDNODE 5 127.0.0.1:5005"), "Node 5 added successfully.")
        core = self.node.core
        before, last = core.configuration, core.last_index
        cases = {
            "ADDNODE 6 127.0.0.1:5001": "Error: Address 127.0.0.1:5001 is already in use by Node 1",
            "ADDNODE 6 127.0.0.1:5005": "Error: Address 127.0.0.1:5005 is already in use by Node 5",
        }
        for line, reply in cases.items():
            with self.subTest(line=line):
                self.assertEqual(self.ask(line), reply)
        self.assertEqual((core.configuration, core.last_index), (before, last))
