"""
Tests for L{kvstore.protocols.dispatch}: one port, the first byte decides
between the client and the peer protocol.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.dispatch import DispatchFactory


class Recorder(Protocol):
    def __init__(self, kind: str, log: list[tuple[str, bytes]]) -> None:
        self.kind = kind
        self.log = log
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.log.append((self.kind, data))

    def connectionLost(self, reason: object = None) -> None:
        self.lost = True


def make(kind: str, log: list[tuple[str, bytes]]) -> Factory:
    return Factory.forProtocol(lambda: Recorder(kind, log))


def connect() -> tuple[list[tuple[str, bytes]], Protocol, StringTransport]:
    log: list[tuple[str, bytes]] = []
    factory = DispatchFactory(make("client", log), make("peer", log))
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    transport = StringTransport()
    protocol.makeConnection(transport)
    return log, protocol, transport


class DispatchFactoryTests(SynchronousTestCase):
    """
    L{DispatchFactory} picks the peer or client protocol from the first byte
    and then gets out of the way.
    """

    def test_digit_selects_peer(self) -> None:
        """A connection whose first byte is an ASCII digit is a peer connection,
        and all later data goes to the same protocol."""
        log, protocol, transport = connect()
        protocol.dataReceived(b"5:hello,")
        protocol.dataReceived(b"PUT")
        assert log == [("peer", b"5:hello,"), ("peer", b"PUT")]
        assert protocol.chosen.transport is transport  # type: ignore[attr-defined]

    def test_letter_selects_client(self) -> None:
        """A connection starting with anything but a digit is a client."""
        for first in (b"PUT k v\n", b"\n", b"\xff", b" 1"):
            log, protocol, _ = connect()
            protocol.dataReceived(first)
            protocol.dataReceived(b"1")
            assert log == [("client", first), ("client", b"1")]

    def test_nothing_chosen_before_data(self) -> None:
        """Until data arrives no protocol is built; losing the connection then
        is harmless."""
        log, protocol, _ = connect()
        protocol.dataReceived(b"")
        protocol.connectionLost(None)  # type: ignore[arg-type]
        assert log == [] and protocol.chosen is None  # type: ignore[attr-defined]

    def test_connection_lost_reaches_chosen_protocol(self) -> None:
        """The chosen protocol is told when the connection is lost."""
        log, protocol, _ = connect()
        protocol.dataReceived(b"GET k\n")
        protocol.connectionLost(None)  # type: ignore[arg-type]
        assert protocol.chosen.lost  # type: ignore[attr-defined]

    def test_half_close_reaches_a_protocol_that_supports_it(self) -> None:
        """A half-close is passed to a chosen protocol that supports half-closed
        connections; otherwise the connection is closed."""
        from twisted.internet.interfaces import IHalfCloseableProtocol
        from zope.interface import implementer

        @implementer(IHalfCloseableProtocol)
        class HalfCloseable(Recorder):
            read_lost = False

            def readConnectionLost(self) -> None:
                self.read_lost = True

            def writeConnectionLost(self) -> None:
                pass

        log: list[tuple[str, bytes]] = []
        factory = DispatchFactory(Factory.forProtocol(lambda: HalfCloseable("client", log)), make("peer", log))
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"GET k\n")
        protocol.readConnectionLost()  # type: ignore[attr-defined]
        assert protocol.chosen.read_lost and not transport.disconnecting  # type: ignore[attr-defined]
        log2, peer, peer_transport = connect()
        peer.dataReceived(b"5:hello,")
        peer.readConnectionLost()  # type: ignore[attr-defined]
        assert peer_transport.disconnecting
