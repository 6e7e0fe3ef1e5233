# -*- test-case-name: tests.test_client_deferred -*-
"""
The Twisted client (L{kvstore.client.deferred.DeferredClient}) driven by a
L{MemoryReactorClock}: each connection attempt is answered by hand with a
L{StringTransport} (or a refusal), and time moves only by C{advance}.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.client import BadRequest, ConnectionFailed, KeyNotFound, NoLeader, OutcomeUnknown, Unavailable
from kvstore.client.deferred import DeferredClient

A, B, C = "127.0.0.1:5000", "127.0.0.1:5001", "127.0.0.1:5002"


class DeferredClientTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        # Plain writes here; tests/test_client_sessions.py has the exactly-once ones.
        self.kv = DeferredClient(self.reactor, [A, B, C], timeout=5, backoff=(0.1, 0.5), exactly_once=False)
        self.addCleanup(self.kv.close)

    def attempts(self) -> list[str]:
        """The addresses of every connection attempt so far."""
        return [f"{host}:{port}" for host, port, *_ in self.reactor.tcpClients]

    def accept(self, index: int = -1) -> tuple[StringTransport, object]:
        """Complete connection attempt C{index}; return its transport and protocol."""
        host, port, factory, *_ = self.reactor.tcpClients[index]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport()
        protocol.makeConnection(transport)
        return transport, protocol

    def refuse(self, index: int = -1) -> None:
        host, port, factory, *_ = self.reactor.tcpClients[index]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))

    def reply(self, protocol: object, *lines: str) -> None:
        protocol.dataReceived(b"".join(line.encode() + b"\n" for line in lines))  # type: ignore[attr-defined]


class RequestTests(DeferredClientTestCase):
    """Requests, replies and errors."""

    def test_put_get_delete(self) -> None:
        """Each method writes its request line and fires with the reply's meaning."""
        put, get, delete = self.kv.put("k", "v w"), self.kv.get("k", stale=True), self.kv.delete("k")
        transport, protocol = self.accept()
        self.assertEqual(transport.value(), b"PUT k v w\nGET k STALE\nDELETE k\n")
        self.reply(protocol, "k added successfully.", "value of k: v w", "k deleted successfully.")
        self.assertIsNone(self.successResultOf(put))
        self.assertEqual(self.successResultOf(get), "v w")
        self.assertIsNone(self.successResultOf(delete))
        self.assertEqual(self.attempts(), [A])

    def test_pipelined_on_one_connection(self) -> None:
        """Calls made before earlier replies arrive share one connection and get their own replies in order."""
        calls = [self.kv.get(f"k{i}") for i in range(5)]
        transport, protocol = self.accept()
        for i in range(5):
            self.assertNoResult(calls[i])
        self.reply(protocol, *[f"value of k{i}: {i}" for i in range(5)])
        self.assertEqual([self.successResultOf(d) for d in calls], [str(i) for i in range(5)])
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_key_not_found(self) -> None:
        """A missing key fails with KeyNotFound."""
        d = self.kv.get("k")
        _, protocol = self.accept()
        self.reply(protocol, "Error: Key k not found")
        self.failureResultOf(d, KeyNotFound)

    def test_bad_request_not_sent(self) -> None:
        """An invalid key fails at once, without connecting."""
        self.failureResultOf(self.kv.put("a b", "v"), BadRequest)
        self.assertEqual(self.reactor.tcpClients, [])

    def test_status(self) -> None:
        """status() fires with the STATUS fields."""
        d = self.kv.status()
        _, protocol = self.accept()
        self.reply(protocol, "node=0 role=follower leader=1")
        self.assertEqual(self.successResultOf(d), {"node": "0", "role": "follower", "leader": "1"})


class LeaderTests(DeferredClientTestCase):
    """Leader discovery and safe retries."""

    def test_follows_not_leader(self) -> None:
        """A Not leader reply naming the leader sends the write there, once, and the old connection is closed."""
        d = self.kv.put("k", "v")
        first, protocol = self.accept()
        self.reply(protocol, f"Error: Not leader. Current leader is Node 2 at {C}")
        self.assertEqual(self.attempts(), [A, C])
        second, leader = self.accept()
        self.assertEqual(second.value(), b"PUT k v\n")
        self.reply(leader, "k added successfully.")
        self.successResultOf(d)
        self.assertTrue(first.disconnecting)
        self.assertEqual(self.kv.node, C)

    def test_refused_connection_tries_next_node(self) -> None:
        """A node that refuses the connection is skipped."""
        d = self.kv.put("k", "v")
        self.refuse()
        self.assertEqual(self.attempts(), [A, B])
        _, protocol = self.accept()
        self.reply(protocol, "k added successfully.")
        self.successResultOf(d)

    def test_no_node_reachable(self) -> None:
        """With every node refusing, the call keeps trying with backoff and fails with ConnectionFailed at the deadline."""
        d = self.kv.put("k", "v")
        refused = 0
        for _ in range(200):
            if d.called:
                break
            while refused < len(self.reactor.tcpClients):
                self.refuse(refused)
                refused += 1
            self.reactor.advance(0.05)
        self.failureResultOf(d, ConnectionFailed)
        self.assertGreater(len(self.reactor.tcpClients), 3)

    def test_no_leader_backs_off_then_fails(self) -> None:
        """No leader elected yet: retried on another node after a pause; NoLeader when the timeout passes."""
        d = self.kv.put("k", "v")
        _, protocol = self.accept()
        self.reply(protocol, "Error: Not leader. No leader elected yet")
        self.assertEqual(self.attempts(), [A], "retried before the backoff")
        self.reactor.advance(0.2)
        self.assertEqual(self.attempts(), [A, B])
        accepted = 2
        transport, protocol = self.accept()
        self.assertEqual(transport.value(), b"PUT k v\n")
        for _ in range(100):
            if d.called:
                break
            if protocol is not None:
                self.reply(protocol, "Error: Not leader. No leader elected yet")
                protocol = None
            self.reactor.advance(0.1)
            if len(self.attempts()) >= accepted + 1:
                accepted += 1
                _, protocol = self.accept()
        self.failureResultOf(d, NoLeader)
        self.assertGreater(accepted, 4)

    def test_outcome_unknown_not_retried(self) -> None:
        """Outcome unknown fails the write at once, which is sent only once."""
        d = self.kv.put("k", "v")
        transport, protocol = self.accept()
        self.reply(protocol, "Error: Outcome unknown: leadership lost (the write may or may not have been applied)")
        self.failureResultOf(d, OutcomeUnknown)
        self.assertEqual(transport.value(), b"PUT k v\n")
        self.assertEqual(self.attempts(), [A])

    def test_lost_connection_write_not_retried_read_retried(self) -> None:
        """A connection lost after sending fails a write with OutcomeUnknown but sends a read again."""
        put, get = self.kv.put("k", "v"), self.kv.get("k")
        transport, protocol = self.accept()
        protocol.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        self.failureResultOf(put, OutcomeUnknown)
        self.assertNoResult(get)
        self.assertEqual(self.attempts(), [A, B])
        transport2, protocol2 = self.accept()
        self.assertEqual(transport2.value(), b"GET k\n")
        self.reply(protocol2, "value of k: v")
        self.assertEqual(self.successResultOf(get), "v")

    def test_timeouts(self) -> None:
        """No reply by the deadline: a write fails with OutcomeUnknown, a read with Unavailable; late replies are dropped."""
        put, get = self.kv.put("k", "v"), self.kv.get("k")
        _, protocol = self.accept()
        self.reactor.advance(5)
        self.failureResultOf(put, OutcomeUnknown)
        self.failureResultOf(get, Unavailable)
        self.reply(protocol, "k added successfully.", "value of k: v")
        later = self.kv.get("k")
        self.reply(protocol, "value of k: w")
        self.assertEqual(self.successResultOf(later), "w")
