# -*- test-case-name: tests.test_protocols_sending -*-
"""
Tests for sending at once (L{kvstore.protocols.sending.send_now}) from the
client protocol and the peer links, instead of at the next reactor
iteration.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.peer_links import PeerClientProtocol, PeerLink
from kvstore.protocols.client import ClientProtocol
from kvstore.protocols.sending import send_now


class _SocketLikeTransport(StringTransport):
    """A StringTransport that counts the reactor-style C{doWrite} calls."""

    def __init__(self) -> None:
        super().__init__()
        self.do_writes = 0

    def doWrite(self) -> None:
        self.do_writes += 1


class SendNowTests(SynchronousTestCase):
    def test_writes_an_open_transport(self) -> None:
        """An open file-descriptor transport is written at once."""
        transport = _SocketLikeTransport()
        send_now(transport)
        self.assertEqual(transport.do_writes, 1)

    def test_leaves_closing_transports_to_the_reactor(self) -> None:
        """A closing or half-closing transport is left alone: the reactor
        must see the end of the close."""
        for attribute in ("disconnecting", "_writeDisconnecting"):
            with self.subTest(attribute=attribute):
                transport = _SocketLikeTransport()
                setattr(transport, attribute, True)
                send_now(transport)
                self.assertEqual(transport.do_writes, 0)

    def test_leaves_transports_with_a_paused_producer_to_the_reactor(self) -> None:
        """A transport whose full buffer paused its producer is left to the
        reactor: draining it here would resume the producer (and run new
        requests) inside the caller's callback."""
        transport = _SocketLikeTransport()
        transport.producerPaused = True
        send_now(transport)
        self.assertEqual(transport.do_writes, 0)

    def test_ignores_transports_without_a_descriptor(self) -> None:
        """Transports without doWrite (TLS wrappers, test transports) are
        left to write as they do."""
        send_now(StringTransport())  # no exception


class _Service:
    def __init__(self) -> None:
        self.writes: list[Deferred[None]] = []

    def put(self, key: str, value: str) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.writes.append(d)
        return d


class ClientReplyTests(SynchronousTestCase):
    def _connect(self) -> tuple[_Service, ClientProtocol, _SocketLikeTransport]:
        service = _Service()
        protocol = ClientProtocol(service)  # type: ignore[arg-type]
        transport = _SocketLikeTransport()
        protocol.makeConnection(transport)
        return service, protocol, transport

    def test_last_outstanding_reply_is_sent_at_once(self) -> None:
        """A reply that leaves nothing outstanding on its connection is sent
        at once; while others are outstanding, replies wait for the reactor
        (so a pipelining client still gets one send for many replies)."""
        service, protocol, transport = self._connect()
        protocol.dataReceived(b"PUT a 1\nPUT b 2\n")
        self.assertEqual(transport.do_writes, 0)
        service.writes[0].callback(None)
        self.assertEqual(transport.do_writes, 0)
        service.writes[1].callback(None)
        self.assertEqual(transport.do_writes, 1)
        self.assertEqual(transport.value(), b"a added successfully.\nb added successfully.\n")

    def test_immediate_replies_are_sent_at_once(self) -> None:
        """Replies produced while reading a chunk go out when it ends."""
        _, protocol, transport = self._connect()
        protocol.dataReceived(b"PING\nPING\n")
        self.assertEqual(transport.value(), b"PONG\nPONG\n")
        self.assertEqual(transport.do_writes, 1)


class PeerSendTests(SynchronousTestCase):
    def test_messages_are_sent_at_once(self) -> None:
        """A peer message is written at once unless the link is paused."""
        link = PeerLink(2, "127.0.0.1:1", b"hello")
        protocol = PeerClientProtocol(link)
        transport = _SocketLikeTransport()
        protocol.makeConnection(transport)
        sends = transport.do_writes
        link.send(b"message")
        self.assertEqual(transport.do_writes, sends + 1)
        protocol.pauseProducing()
        link.send(b"another")
        self.assertEqual(transport.do_writes, sends + 1)
