# -*- test-case-name: tests.test_node_membership_strangers -*-
"""
A member whose configuration is out of date still hears a leader it does not
know yet (issue 13): its peer server accepts any id of its cluster that no
committed configuration removed, and it links back to that peer at the
address its hello carries, bounded and dropped once removal commits.
"""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.peer_membership import MAX_STRANGERS, FollowConfiguration
from kvstore.protocols.peer import (
    MalformedMessage,
    Membership,
    PeerServerFactory,
    encode_hello,
    read_hello,
)
from kvstore.raft.membership import Configuration

from tests.test_node_membership_links import RecordingLinks


class _Server:
    membership = Membership(0, "c", frozenset({1, 2}))


def _netstring(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b":" + payload + b","


class HelloFromNonMembersTests(SynchronousTestCase):
    def test_unknown_id_accepted_unless_removed(self) -> None:
        """With the committed removals known, an unknown id is accepted and a removed one refused."""
        membership = Membership(0, "c", frozenset({1, 2}), removed=frozenset({4}))
        hello = read_hello(encode_hello(3, "c", address="h:3"), membership)
        self.assertEqual((hello.sender, hello.address), (3, "h:3"))
        self.assertRaises(MalformedMessage, read_hello, encode_hello(4, "c"), membership)
        self.assertRaises(MalformedMessage, read_hello, encode_hello(0, "c"), membership)
        self.assertRaises(MalformedMessage, read_hello, encode_hello(3, "other"), membership)

    def test_strict_membership_and_old_hellos(self) -> None:
        """Without removals known only members are accepted; a hello without an address still is."""
        strict = Membership(0, "c", frozenset({1, 2}))
        self.assertRaises(MalformedMessage, read_hello, encode_hello(3, "c", address="h:3"), strict)
        self.assertIsNone(read_hello(encode_hello(1, "c"), strict).address)

    def test_server_tells_of_a_stranger(self) -> None:
        """The peer server accepts a non-member's hello and reports its id and address."""
        factory = PeerServerFactory(Membership(0, "c", frozenset({1}), removed=frozenset()), lambda m: None)
        strangers: list[tuple[int, str | None]] = []
        factory.on_stranger = lambda peer, address: strangers.append((peer, address))
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(_netstring(encode_hello(3, "c", address="h:3")))
        self.assertTrue(transport.connected and not transport.disconnecting)
        self.assertEqual(strangers, [(3, "h:3")])


class LinkBackTests(SynchronousTestCase):
    def test_links_back_to_a_stranger_until_removal_commits(self) -> None:
        """A non-member that connected gets one link back, kept as it becomes a member, dropped when removed."""
        links, server = RecordingLinks(), _Server()
        follow = FollowConfiguration(0, "c", links, server, {1: "h:1", 2: "h:2"})
        configuration = Configuration({0: "h:0", 1: "h:1", 2: "h:2"})
        follow(configuration)
        follow.committed_changed(configuration)
        self.assertTrue(server.membership.accepts(3))
        follow.stranger(3, "h:3")
        follow.stranger(3, "h:3")
        self.assertEqual(links.calls, [("add", 3)])
        follow.stranger(5, "not an address")
        follow.stranger(0, "h:0")
        self.assertEqual(links.calls, [("add", 3)])
        joined = Configuration({0: "h:0", 1: "h:1", 2: "h:2", 3: "h:3"})
        follow(joined)
        follow.committed_changed(joined)
        self.assertEqual(links.calls, [("add", 3)])
        gone = Configuration({0: "h:0", 1: "h:1", 2: "h:2"}, removed=[3])
        follow(gone)
        follow.committed_changed(gone)
        self.assertEqual(links.calls, [("add", 3), ("remove", 3)])
        self.assertFalse(server.membership.accepts(3))
        follow.stranger(3, "h:3")
        self.assertEqual(links.calls, [("add", 3), ("remove", 3)])

    def test_links_back_are_bounded(self) -> None:
        """At most MAX_STRANGERS non-members are linked back to at once."""
        links, server = RecordingLinks(), _Server()
        follow = FollowConfiguration(0, "c", links, server, {1: "h:1"})
        follow(Configuration({0: "h:0", 1: "h:1"}))
        for peer in range(10, 10 + MAX_STRANGERS + 5):
            follow.stranger(peer, f"h:{peer}")
        self.assertEqual(len(links.calls), MAX_STRANGERS)
