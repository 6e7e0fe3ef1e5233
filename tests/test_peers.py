# -*- test-case-name: tests.test_peers -*-
"""
Outbound peer links (L{kvstore.protocols.peer_links}), on in-memory transports and a
L{MemoryReactorClock}: no real socket is opened.

What matters is that sending never grows this node's memory without bound
and never blocks: a message for a peer that is not connected is dropped, a
peer whose connection is backed up gets at most
L{MAX_BUFFERED_WHILE_PAUSED} bytes (plus one message) queued before its
messages are dropped, and a dead peer is retried with a growing, capped
delay rather than in a busy loop.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.peer_links import MAX_BUFFERED_WHILE_PAUSED, PeerClientProtocol, PeerLink, PeerLinks
from kvstore.protocols.peer import encode_hello, encode_message
from kvstore.raft.messages import AppendEntriesResponse, Message

HELLO = encode_hello(1, "test-cluster")
MIB = 1024 * 1024


def netstring(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


class NoDelayTransport(StringTransport):
    """A StringTransport that records C{setTcpNoDelay} like a TCP one."""

    no_delay: bool | None = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled


def connected_link() -> tuple[PeerLink, PeerClientProtocol, NoDelayTransport]:
    """A link to peer 2 with a connected protocol on a memory transport."""
    link = PeerLink(2, "127.0.0.1:20002", HELLO)
    protocol = PeerClientProtocol(link)
    transport = NoDelayTransport()
    protocol.makeConnection(transport)
    return link, protocol, transport


class SendingTests(SynchronousTestCase):
    """L{PeerLink.send} on a connected, a disconnected and a paused link."""

    def test_send_without_connection_is_dropped(self) -> None:
        """A message for a peer that has never connected is counted as
        dropped and nothing is queued for it."""
        link = PeerLink(2, "127.0.0.1:20002", HELLO)
        link.send(b"payload")
        link.send(b"payload")
        self.assertEqual((link.sent, link.dropped), (0, 2))
        self.assertIsNone(link.protocol)

    def test_connection_says_hello_then_sends_netstrings(self) -> None:
        """A new connection registers as the transport's streaming producer,
        disables Nagle, and sends the hello before any message; messages
        follow as netstrings."""
        link, protocol, transport = connected_link()
        self.assertIs(link.protocol, protocol)
        self.assertIs(transport.producer, protocol)
        self.assertTrue(transport.streaming)
        self.assertIs(transport.no_delay, True)
        self.assertEqual(transport.value(), netstring(HELLO))
        link.send(b"first")
        link.send(b"second")
        self.assertEqual(transport.value(), netstring(HELLO) + netstring(b"first") + netstring(b"second"))
        self.assertEqual((link.sent, link.dropped), (2, 0))

    def test_inbound_data_other_than_an_answer_closes_the_connection(self) -> None:
        """The only bytes a peer may send back on an outbound link are its
        answer to the hello (tests/test_protocols_peer_versions.py); anything
        else closes the connection, and the link reconnects."""
        link, protocol, transport = connected_link()
        protocol.dataReceived(b"garbage:,")
        self.assertIs(link.protocol, protocol)
        self.assertTrue(transport.disconnecting)

    def test_send_after_disconnect_is_dropped(self) -> None:
        """Once the connection is lost, messages are dropped rather than
        written to the dead transport."""
        link, protocol, transport = connected_link()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(link.protocol)
        written = transport.value()
        link.send(b"lost")
        self.assertEqual(transport.value(), written)
        self.assertEqual((link.sent, link.dropped), (0, 1))

    def test_loss_of_an_old_connection_keeps_the_new_one(self) -> None:
        """A late connectionLost from a replaced connection does not
        disconnect the link's current connection."""
        link, old, _ = connected_link()
        new = PeerClientProtocol(link)
        transport = StringTransport()
        new.makeConnection(transport)
        old.connectionLost(Failure(ConnectionDone()))
        self.assertIs(link.protocol, new)
        link.send(b"still-here")
        self.assertTrue(transport.value().endswith(netstring(b"still-here")))


class PausedPeerTests(SynchronousTestCase):
    """The bound on what is queued for a peer whose connection is backed up."""

    def test_queue_for_a_paused_peer_is_bounded(self) -> None:
        """While the transport has paused the link (its send buffer is full),
        at most MAX_BUFFERED_WHILE_PAUSED bytes plus one message are queued;
        further messages are dropped."""
        link, protocol, transport = connected_link()
        transport.producer.pauseProducing()  # what a full transport does
        self.assertTrue(protocol.paused)
        before = len(transport.value())
        payload = b"x" * MIB
        for _ in range(3 * MAX_BUFFERED_WHILE_PAUSED // MIB):
            link.send(payload)
        # The budget counts payload bytes (netstring framing is a few more).
        self.assertEqual(len(transport.value()) - before, link.sent * len(netstring(payload)))
        queued = link.sent * len(payload)
        self.assertLessEqual(queued, MAX_BUFFERED_WHILE_PAUSED + len(payload))
        self.assertGreaterEqual(queued, MAX_BUFFERED_WHILE_PAUSED)
        self.assertEqual(link.sent, MAX_BUFFERED_WHILE_PAUSED // MIB + 1)
        self.assertEqual(link.dropped, 3 * MAX_BUFFERED_WHILE_PAUSED // MIB - link.sent)

    def test_small_messages_are_bounded_too(self) -> None:
        """The bound counts bytes, not messages: many small messages to a
        paused peer stop being queued once their total passes the limit."""
        link, _, transport = connected_link()
        transport.producer.pauseProducing()
        payload = b"y" * 1000
        count = MAX_BUFFERED_WHILE_PAUSED // len(payload) + 100
        for _ in range(count):
            link.send(payload)
        self.assertEqual(link.sent, MAX_BUFFERED_WHILE_PAUSED // len(payload) + 1)
        self.assertEqual(link.dropped, count - link.sent)

    def test_resume_sends_again_and_a_new_pause_starts_a_new_budget(self) -> None:
        """After the transport resumes the link (its buffer drained), messages
        are sent again, and a later pause gets a fresh budget."""
        link, protocol, transport = connected_link()
        payload = b"z" * MIB
        protocol.pauseProducing()
        for _ in range(20):
            link.send(payload)
        dropped = link.dropped
        self.assertGreater(dropped, 0)
        protocol.resumeProducing()
        self.assertFalse(protocol.paused)
        sent = link.sent
        for _ in range(20):
            link.send(payload)  # not paused: no limit applies here
        self.assertEqual((link.sent, link.dropped), (sent + 20, dropped))
        protocol.pauseProducing()
        link.send(payload)
        self.assertEqual((link.sent, link.dropped), (sent + 21, dropped))

    def test_stop_producing_stops_sending(self) -> None:
        """stopProducing (the transport is going away) pauses the link, so
        the queue bound applies from then on."""
        link, protocol, transport = connected_link()
        protocol.stopProducing()
        self.assertTrue(protocol.paused)
        for _ in range(20):
            link.send(b"w" * MIB)
        self.assertGreater(link.dropped, 0)


class PeerLinksTests(SynchronousTestCase):
    """L{PeerLinks}: one reconnecting client per peer."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.links = PeerLinks(
            self.reactor, 1, "test-cluster", {2: ("127.0.0.1", 20002), 3: ("127.0.0.1", 20003)}, clock=self.reactor
        )
        self.links.startService()
        self.addCleanup(self.links.stopService)

    def attempts_to(self, port: int) -> list:
        return [c for c in self.reactor.tcpClients if c[1] == port]

    def fail_last_attempt(self, port: int) -> None:
        index = max(i for i, c in enumerate(self.reactor.tcpClients) if c[1] == port)
        factory = self.reactor.tcpClients[index][2]
        factory.clientConnectionFailed(self.reactor.connectors[index], Failure(ConnectionRefusedError()))

    def connect_last_attempt(self, port: int) -> tuple[StringTransport, IProtocol]:
        """Complete the last attempt to C{port} on a memory transport;
        return it and the outermost protocol (the one a real transport
        would call)."""
        factory = self.attempts_to(port)[-1][2]
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return transport, protocol

    def wait_for_attempt(self, port: int, limit: float, step: float = 0.005) -> float:
        """Advance the clock until a new attempt to C{port}; return how long
        that took."""
        count = len(self.attempts_to(port))
        start = self.reactor.seconds()
        while len(self.attempts_to(port)) == count:
            self.assertLess(self.reactor.seconds() - start, limit, "no reconnection attempt")
            self.reactor.advance(step)
        return self.reactor.seconds() - start

    def test_connects_to_every_peer_at_start(self) -> None:
        """Starting the service opens one connection attempt per peer, to
        its address."""
        self.assertEqual(sorted((c[0], c[1]) for c in self.reactor.tcpClients),
                         [("127.0.0.1", 20002), ("127.0.0.1", 20003)])

    def test_messages_reach_only_their_connected_peer(self) -> None:
        """A message is encoded and written on its receiver's connection; one
        for a peer that is not connected, or not a member, is dropped."""
        transport, _ = self.connect_last_attempt(20002)
        message = Message(1, 2, AppendEntriesResponse(5, True, 7))
        self.links.send(message)
        self.links.send(Message(1, 3, AppendEntriesResponse(5, True, 7)))
        self.links.send(Message(1, 9, AppendEntriesResponse(5, True, 7)))
        self.assertEqual(transport.value(), netstring(HELLO) + netstring(encode_message(message)))
        self.assertEqual((self.links.links[2].sent, self.links.links[3].dropped), (1, 1))

    def test_reconnect_backoff_grows_and_is_capped(self) -> None:
        """Failed attempts are retried after a delay that doubles from 0.1 s
        up to 1 s, plus at most 1 s of jitter: never a busy loop, never a
        long wait."""
        step = 0.005
        for failure in range(10):
            base = min(0.05 * 2 ** (failure + 1), 1.0)
            self.fail_last_attempt(20002)
            delay = self.wait_for_attempt(20002, limit=base + 1.0 + 2 * step, step=step)
            self.assertGreaterEqual(delay, base - step, f"retry {failure} after {delay:.3f}s")
            self.assertLessEqual(delay, base + 1.0 + step, f"retry {failure} after {delay:.3f}s")

    def test_reconnects_after_a_connection_is_lost(self) -> None:
        """When an established connection drops, messages are dropped until a
        new connection (attempted within about a second) says hello again."""
        transport, protocol = self.connect_last_attempt(20002)
        link = self.links.links[2]
        self.assertIsNotNone(link.protocol)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(link.protocol)
        self.links.send(Message(1, 2, AppendEntriesResponse(5, True, 7)))
        self.assertEqual(link.dropped, 1)
        self.wait_for_attempt(20002, limit=1.2)
        again, _ = self.connect_last_attempt(20002)
        self.assertEqual(again.value(), netstring(HELLO))
        self.links.send(Message(1, 2, AppendEntriesResponse(5, True, 8)))
        self.assertEqual(link.sent, 1)
        self.assertEqual(transport.value(), netstring(HELLO))
