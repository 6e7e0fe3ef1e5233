# -*- test-case-name: tests.test_raft_membership_address_spelling -*-
"""
The taken-address refusal of C{ADDNODE} (issue 13) sees through spellings
of one C{HOST:PORT} that the node's own address parser treats as the same
address: the case of a host name, leading zeros of the port and the
spelling of an IPv6 literal.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.commands import parse_address
from kvstore.raft.membership import AddLearner, AddressTaken, Configuration


class AddressSpellingTests(SynchronousTestCase):
    """Another spelling of a member's address is a taken address too."""

    def test_other_spellings_of_a_members_address_are_refused(self) -> None:
        """A learner at a member's address spelled with another case, a zero-padded port or another IPv6 form
        (one host and port for the peer links) raises AddressTaken naming that member."""
        configuration = Configuration({0: "node0.example:5000", 1: "127.0.0.1:5001", 2: "[::1]:5002"})
        for address, owner in (
            ("NODE0.example:5000", 0),
            ("127.0.0.1:05001", 1),
            ("[0:0::1]:5002", 2),
            ("[0:0:0:0:0:0:0:1]:05002", 2),
        ):
            with self.subTest(address=address):
                parse_address(address)  # ADDNODE accepts it
                with self.assertRaises(AddressTaken) as caught:
                    configuration.after(AddLearner(4, address))
                self.assertEqual(caught.exception.node_id, owner)

    def test_other_addresses_are_still_accepted(self) -> None:
        """Another port or another host is not taken."""
        configuration = Configuration({0: "node0.example:5000", 1: "127.0.0.1:5001"})
        for address in ("node0.example:5001", "node1.example:5000", "127.0.0.1:50010", "[::1]:5001"):
            with self.subTest(address=address):
                after = configuration.after(AddLearner(4, address))
                assert after is not None
                self.assertEqual(after.learners, {4: address})
