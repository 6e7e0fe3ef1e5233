# -*- test-case-name: tests.test_protocols_half_close -*-
"""
A client that shuts down its sending side right after its last request (as
C{printf ... | nc -N} does) gets every reply, then the node closes.

The real-process test (tests/integration/test_half_close.py) used to repeat
its exchange twenty times because the race it guards against -- where the
half-close lands relative to the bytes and to the commit -- was
timing-dependent.  Here every interleaving is played deterministically: the
byte stream is cut at every position, the half-close follows the last
piece, and commit happens on a L{Clock} only afterwards.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.client import ClientFactory
from kvstore.protocols.dispatch import DispatchFactory
from kvstore.testing.memory_cluster import InMemoryCluster

REQUESTS = b"PING\nPUT k v\nGET k\nSTATUS\n"


class HalfCloseTests(SynchronousTestCase):
    """Every split of the requests, then a half-close, through the first-byte dispatcher to a real node."""

    def exchange(self, pieces: list[bytes]) -> tuple[list[str], bool]:
        cluster = InMemoryCluster(1)
        node = cluster.node(cluster.wait_for_leader())
        factory = DispatchFactory(ClientFactory(node), Factory.forProtocol(Protocol))
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = StringTransport()
        protocol.makeConnection(transport)
        for piece in pieces:
            protocol.dataReceived(piece)
        protocol.readConnectionLost()  # type: ignore[attr-defined]
        closed_before_commit = transport.disconnecting
        cluster.run_until(lambda: transport.disconnecting, timeout=5.0)
        return transport.value().decode().splitlines(), closed_before_commit

    def test_every_split_gets_every_reply(self) -> None:
        """Wherever the byte stream is cut, all four replies arrive in order and only then does the node close."""
        for cut in range(len(REQUESTS) + 1):
            with self.subTest(cut=cut):
                lines, closed_early = self.exchange([REQUESTS[:cut], REQUESTS[cut:]])
                self.assertFalse(closed_early)
                self.assertEqual(lines[:3], ["PONG", "k added successfully.", "value of k: v"])
                self.assertTrue(lines[3].startswith("node=") and len(lines) == 4, lines)

    def test_byte_by_byte(self) -> None:
        """One byte per read, then the half-close: the same four replies."""
        lines, closed_early = self.exchange([REQUESTS[i:i + 1] for i in range(len(REQUESTS))])
        self.assertFalse(closed_early)
        self.assertEqual(len(lines), 4)
        self.assertEqual(lines[1], "k added successfully.")
