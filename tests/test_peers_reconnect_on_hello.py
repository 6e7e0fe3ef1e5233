"""
A peer that connects to a node gets the node's own link back at once
(L{kvstore.protocols.peer_links.PeerLinks.reconnect_now}, called from
L{kvstore.protocols.peer.PeerServerFactory.on_hello}): a restarted follower
hears from the leader as soon as it listens, not when the leader's link
ends its back-off (up to 2 s), which was most of the restart-to-serving
time left after recovery (docs/performance.md, "Log compaction", figure 3).
On in-memory transports and a L{MemoryReactorClock}.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.peer import Membership, PeerServerFactory, encode_hello, encode_refusal, VersionRange
from kvstore.protocols.peer_links import PeerLinks

PORT = 20003
CLUSTER = "c1"


def netstring(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


class ReconnectNowTests(SynchronousTestCase):
    """PeerLinks.reconnect_now."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.links = PeerLinks(self.reactor, 1, CLUSTER, {2: ("127.0.0.1", PORT)}, clock=self.reactor)
        self.links.startService()
        self.addCleanup(self.links.stopService)

    def attempts(self) -> int:
        return sum(1 for c in self.reactor.tcpClients if c[1] == PORT)

    def fail_attempts(self, count: int) -> None:
        """Let C{count} attempts fail, each followed by the link's back-off."""
        for _ in range(count):
            before = self.attempts()
            connector = self.reactor.connectors[-1]
            self.reactor.tcpClients[-1][2].clientConnectionFailed(connector, Failure(ConnectionDone()))
            while self.attempts() == before and self.reactor.seconds() < 600:
                self.reactor.advance(0.01)

    def test_a_down_link_is_tried_at_once(self) -> None:
        """A link waiting out its back-off makes a new attempt at once, with no time passing."""
        self.fail_attempts(5)
        connector = self.reactor.connectors[-1]
        self.reactor.tcpClients[-1][2].clientConnectionFailed(connector, Failure(ConnectionDone()))
        before = self.attempts()
        self.assertTrue(self.links.reconnect_now(2))
        self.assertEqual(self.attempts(), before + 1)

    def test_a_connected_link_is_left_alone(self) -> None:
        """A link that is up is not touched."""
        protocol = self.reactor.tcpClients[-1][2].buildProtocol(None)
        protocol.makeConnection(StringTransport())
        before = self.attempts()
        self.assertFalse(self.links.reconnect_now(2))
        self.assertEqual(self.attempts(), before)

    def test_unknown_peer_and_refused_link(self) -> None:
        """An unknown peer, or a link the peer refused (its own back-off), is not retried."""
        self.assertFalse(self.links.reconnect_now(9))
        protocol = self.reactor.tcpClients[-1][2].buildProtocol(None)
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(netstring(encode_refusal(VersionRange(7, 8), "no common version")))
        protocol.connectionLost(Failure(ConnectionDone()))
        before = self.attempts()
        self.assertFalse(self.links.reconnect_now(2))
        self.assertEqual(self.attempts(), before)


class OnHelloTests(SynchronousTestCase):
    """PeerServerFactory.on_hello."""

    def test_told_the_sender_once_its_hello_is_accepted(self) -> None:
        """The factory's on_hello hears the sender's id when its hello is accepted, not before."""
        told: list[int] = []
        factory = PeerServerFactory(Membership(node_id=1, cluster_id=CLUSTER, peer_ids=frozenset({2, 3})), lambda m: None)
        factory.on_hello = told.append
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        self.assertEqual(told, [])
        protocol.dataReceived(netstring(encode_hello(2, CLUSTER)))
        self.assertEqual(told, [2])

    def test_a_refused_hello_tells_nobody(self) -> None:
        """A hello from another cluster is refused and on_hello is not called."""
        told: list[int] = []
        factory = PeerServerFactory(Membership(node_id=1, cluster_id=CLUSTER, peer_ids=frozenset({2, 3})), lambda m: None)
        factory.on_hello = told.append
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(netstring(encode_hello(2, "other")))
        self.assertEqual(told, [])


class ServiceWiringTests(SynchronousTestCase):
    """build_service wires on_hello to the node's links."""

    def test_peer_server_reconnects_the_links(self) -> None:
        """The node's peer server tells its PeerLinks.reconnect_now of each accepted hello."""
        from pathlib import Path

        from kvstore.daemon.options import Options
        from kvstore.daemon.service import build_service

        options = Options()
        options.parseOptions(["--data-dir", str(Path(self.mktemp()) / "data"), "--node-id", "2", "--port", "24997", "--peers", "24995,24996"])
        service = build_service(options.config, MemoryReactorClock())
        self.addCleanup(service._lock.release)  # type: ignore[attr-defined]
        factory = service.listener.factory
        peer_server = next(f for f in vars(factory).values() if isinstance(f, PeerServerFactory))
        self.assertEqual(peer_server.on_hello, service.peer_links.reconnect_now)
