# -*- test-case-name: tests.test_protocols_nodelay -*-
"""
Tests that every kvstore socket turns Nagle's algorithm off: small
AppendEntries, acknowledgements and replies on a write's path must never
wait for the peer's delayed ACK.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.peer_links import PeerClientProtocol, PeerLink
from kvstore.protocols.dispatch import DispatchFactory


class _TcpLikeTransport(StringTransport):
    """Records setTcpNoDelay, as a TCP transport would apply it."""

    no_delay = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled


class NoDelayTests(SynchronousTestCase):
    def test_outbound_peer_links(self) -> None:
        """The connection a node opens to each peer (AppendEntries, acks)."""
        transport = _TcpLikeTransport()
        PeerClientProtocol(PeerLink(1, "127.0.0.1:1", b"hello")).makeConnection(transport)
        self.assertTrue(transport.no_delay)

    def test_accepted_connections(self) -> None:
        """Every accepted connection, client or peer, before its first byte
        says which."""
        factory = DispatchFactory(Factory(), Factory())
        transport = _TcpLikeTransport()
        factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1)).makeConnection(transport)
        self.assertTrue(transport.no_delay)
