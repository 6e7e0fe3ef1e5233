# -*- test-case-name: tests.test_client_deferred_redirects -*-
"""
The Twisted client (L{kvstore.client.deferred.DeferredClient}) closes a
connection it leaves for another node (a C{Not leader} redirect, a retry
elsewhere) once the calls still waiting on it have their replies: it used
to keep it open for good, one leaked connection per redirect while calls
were pipelined.  Driven by a L{MemoryReactorClock} and L{StringTransport}s.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.client import Unavailable
from kvstore.client.deferred import DeferredClient

A, B = "127.0.0.1:5000", "127.0.0.1:5001"
ADDRESSES = {A: B, B: A}


class RedirectLeakTests(SynchronousTestCase):
    """Connections left behind by redirects are closed once nobody waits on them."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.kv = DeferredClient(self.reactor, [A, B], timeout=5, backoff=(0.1, 0.5), exactly_once=False)
        self.addCleanup(self.kv.close)
        self.transports: list[StringTransport] = []

    def accept(self, index: int = -1) -> object:
        """Complete connection attempt C{index}; return its protocol."""
        host, port, factory, *_ = self.reactor.tcpClients[index]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.transports.append(transport)
        return protocol

    def reply(self, protocol: object, *lines: str) -> None:
        protocol.dataReceived(b"".join(line.encode() + b"\n" for line in lines))  # type: ignore[attr-defined]

    def open_transports(self) -> int:
        return sum(not transport.disconnecting for transport in self.transports)

    def test_no_connection_left_open_after_n_redirects(self) -> None:
        """After N redirects, each while a read waits on the connection being left, only one connection is
        open once every call has its reply."""
        rounds = 6
        protocol = None
        address = A
        for n in range(rounds):
            put, get = self.kv.put(f"k{n}", "v"), self.kv.get("a", stale=True)
            if protocol is None:
                protocol = self.accept()
            # The node no longer leads: the write goes to the other node, the read is answered here later.
            leader = ADDRESSES[address]
            self.reply(protocol, f"Error: Not leader. Current leader is Node 9 at {leader}")
            new = self.accept()
            self.reply(new, f"k{n} added successfully.")
            self.assertIsNone(self.successResultOf(put))
            self.reply(protocol, "value of a: 1")
            self.assertEqual(self.successResultOf(get), "1")
            protocol, address = new, leader
        self.assertEqual(len(self.transports), rounds + 1)
        self.assertEqual(self.open_transports(), 1, "connections left open after their calls were answered")
        self.assertEqual(self.kv.node, address)

    def test_left_connection_closes_when_its_waiting_call_times_out(self) -> None:
        """A connection left while a call waits on it is closed when that call gives up (its timeout), even if
        the node never answers it."""
        put, get = self.kv.put("k", "v"), self.kv.get("a", stale=True)
        first = self.accept()
        self.reply(first, f"Error: Not leader. Current leader is Node 2 at {B}")
        second = self.accept()
        self.reply(second, "k added successfully.")
        self.successResultOf(put)
        self.assertEqual(self.open_transports(), 2)  # the read still waits on the first connection
        self.reactor.advance(5)
        self.failureResultOf(get, Unavailable)
        self.assertEqual(self.open_transports(), 1)
        # A late reply on the closed connection, then its loss, disturb nothing.
        self.reply(first, "value of a: 1")
        first.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        later = self.kv.get("b", stale=True)
        self.reply(second, "value of b: 2")
        self.assertEqual(self.successResultOf(later), "2")
