# -*- test-case-name: tests.test_peers_reconnect_on_hello_bursts -*-
"""
Hellos that arrive while this node's link to their sender is already trying
to connect leave that attempt alone
(L{kvstore.protocols.peer_links.PeerLinks.reconnect_now}): each accepted hello
used to cancel the attempt under way and start another, so a burst of hellos
(a peer with several connections, or anybody who can reach the peer port
and names a member in a hello) restarted the link's handshake again and
again, and a link whose connect takes longer than the gap between two
hellos never came up.  On in-memory transports and a L{MemoryReactorClock}.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.peer_links import PeerLinks

PORT = 20004
CLUSTER = "c1"


class HelloBurstTests(SynchronousTestCase):
    """PeerLinks.reconnect_now under repeated hellos."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.links = PeerLinks(self.reactor, 1, CLUSTER, {2: ("127.0.0.1", PORT)}, clock=self.reactor)
        self.links.startService()
        self.addCleanup(self.links.stopService)

    def attempts(self) -> int:
        return sum(1 for c in self.reactor.tcpClients if c[1] == PORT)

    def fail_last_attempt(self) -> None:
        connector = self.reactor.connectors[-1]
        self.reactor.tcpClients[-1][2].clientConnectionFailed(connector, Failure(ConnectionDone()))

    def test_a_burst_of_hellos_makes_one_attempt(self) -> None:
        """While the link waits out its back-off, a burst of hellos starts one attempt, not one per hello."""
        self.fail_last_attempt()  # now waiting out the back-off
        before = self.attempts()
        self.assertTrue(self.links.reconnect_now(2))
        for _ in range(10):
            self.assertFalse(self.links.reconnect_now(2))
        self.assertEqual(self.attempts(), before + 1)

    def test_the_attempt_under_way_is_not_cancelled(self) -> None:
        """A hello during the link's first attempt neither cancels it nor starts another, and the attempt still connects."""
        before = self.attempts()
        self.assertFalse(self.links.reconnect_now(2))
        self.assertEqual(self.attempts(), before)
        protocol = self.reactor.tcpClients[-1][2].buildProtocol(None)
        protocol.makeConnection(StringTransport())
        self.assertIsNotNone(self.links.links[2].protocol)

    def test_a_link_lost_again_is_retried_at_once(self) -> None:
        """After its attempt failed again, the next hello retries the link at once once more."""
        self.fail_last_attempt()
        self.assertTrue(self.links.reconnect_now(2))
        self.fail_last_attempt()
        before = self.attempts()
        self.assertTrue(self.links.reconnect_now(2))
        self.assertEqual(self.attempts(), before + 1)
