"""
Client requests and connections are counted by the real client protocol
when the admin endpoint is on (L{kvstore.admin.requests}), and the replies
are unchanged.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.admin.requests import CountingClientFactory, RequestCounts, command_label, result_label
from kvstore.errors import KeyNotFound, NotLeader, OutcomeUnknown, Unavailable
from kvstore.protocols.client import ClientFactory, ClientProtocol
from kvstore.protocols.commands import Delete, Get, Limits, Put, Status


class _Service:
    """A node answering from a dict; writes to C{refuse} fail as not leader,
    and C{pending} writes wait for the test."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.pending: list[Deferred[None]] = []
        self.refuse = False

    def put(self, key: str, value: str) -> Deferred[None]:
        if self.refuse:
            return fail(NotLeader(1, "127.0.0.1:5001"))
        if key == "slow":
            d: Deferred[None] = Deferred()
            self.pending.append(d)
            return d
        self.data[key] = value
        return succeed(None)

    def delete(self, key: str) -> Deferred[None]:
        if key not in self.data:
            return fail(KeyNotFound(key))
        del self.data[key]
        return succeed(None)

    def get(self, key: str, stale: bool) -> Deferred[str]:
        if key == "cut-off":
            return fail(Unavailable("no leader elected yet"))
        if key not in self.data:
            return fail(KeyNotFound(key))
        return succeed(self.data[key])

    def status(self) -> dict[str, object]:
        return {"node": 0, "role": "leader"}


class CountingProtocolTests(SynchronousTestCase):
    """Requests through the client protocol, as a client sends them."""

    def setUp(self) -> None:
        self.service = _Service()
        self.counts = RequestCounts()
        self.factory = CountingClientFactory(self.service, self.counts)

    def connect(self) -> tuple[ClientProtocol, StringTransport]:
        proto = self.factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport

    def test_replies_are_unchanged(self) -> None:
        """The client gets the same replies as without counting."""
        proto, transport = self.connect()
        proto.dataReceived(b"PUT a 1\nGET a\nGET b\nDELETE a\nGET a STALE\nSTATUS\nPING\n")
        self.assertEqual(
            transport.value().decode().splitlines(),
            [
                "a added successfully.",
                "value of a: 1",
                "Error: Key b not found",
                "a deleted successfully.",
                "Error: Key a not found",
                "node=0 role=leader",
                "PONG",
            ],
        )

    def test_requests_are_counted_by_command_and_result(self) -> None:
        """Each request counts once under its command and its result's label."""
        proto, _ = self.connect()
        proto.dataReceived(b"PUT a 1\nGET a\nGET b\nGET cut-off\nDELETE a\nGET a STALE\nSTATUS\n")
        self.service.refuse = True
        proto.dataReceived(b"PUT c 3\n")
        self.assertEqual(
            {key: n for key, n in self.counts.requests().items() if n},
            {
                ("put", "ok"): 1,
                ("get", "ok"): 1,
                ("get", "not_found"): 1,
                ("get", "unavailable"): 1,
                ("delete", "ok"): 1,
                ("get_stale", "not_found"): 1,
                ("status", "ok"): 1,
                ("put", "not_leader"): 1,
            },
        )
        self.assertEqual(self.counts.linearizable_reads(), {"ok": 2, "unavailable": 1})
        self.assertEqual(self.counts.failed_proposals, 0)

    def test_pending_and_failed_writes(self) -> None:
        """A write is pending until it is answered; one whose outcome is unknown is a failed proposal."""
        proto, transport = self.connect()
        proto.dataReceived(b"PUT slow 1\nPUT slow 2\n")
        self.assertEqual(self.counts.pending_writes, 2)
        other, _ = self.connect()
        other.dataReceived(b"PUT slow 3\n")
        self.assertEqual(self.counts.pending_writes, 3, "summed over connections")
        self.service.pending.pop().callback(None)
        self.service.pending[0].callback(None)
        self.service.pending[1].errback(Failure(OutcomeUnknown("the write did not commit in time")))
        self.assertEqual(self.counts.pending_writes, 0)
        self.assertEqual(self.counts.failed_proposals, 1)
        self.assertEqual(self.counts.requests()[("put", "outcome_unknown")], 1)
        self.assertEqual(self.counts.requests()[("put", "ok")], 2)
        self.assertIn(b"Error: Outcome unknown", transport.value())

    def test_connections(self) -> None:
        """Open connections are counted while they are open, and every accepted one in the total."""
        first, _ = self.connect()
        second, _ = self.connect()
        self.assertEqual((self.counts.connections, self.counts.connections_accepted), (2, 2))
        first.connectionLost(Failure(ConnectionError()))
        first.connectionLost(Failure(ConnectionError()))  # told twice: still one connection less
        self.assertEqual((self.counts.connections, self.counts.connections_accepted), (1, 2))
        second.connectionLost(Failure(ConnectionError()))
        self.assertEqual(self.counts.connections, 0)

    def test_limits_and_backlog_are_kept(self) -> None:
        """The counting factory builds protocols with the limits and backlog it is given, as a ClientFactory does."""
        limits = Limits.for_sizes(max_key_bytes=4, max_value_bytes=8)
        factory = CountingClientFactory(self.service, self.counts, limits, max_pending=7)
        self.assertIsInstance(factory, ClientFactory)
        proto = factory.buildProtocol(None)
        self.assertEqual((proto.MAX_LENGTH, proto._max_pending), (limits.max_line_bytes, 7))


class ResultLabelTests(SynchronousTestCase):
    """The result label of each outcome."""

    def test_labels(self) -> None:
        """Values are ok; each error kind has its label; anything else is error."""
        self.assertEqual(result_label("value"), "ok")
        self.assertEqual(result_label(None), "ok")
        for error, label in [
            (KeyNotFound("k"), "not_found"),
            (NotLeader(None, None), "not_leader"),
            (OutcomeUnknown("r"), "outcome_unknown"),
            (Unavailable("r"), "unavailable"),
            (ValueError("bug"), "error"),
        ]:
            self.assertEqual(result_label(Failure(error)), label)

    def test_command_labels(self) -> None:
        """Each parsed request has its command label; GET STALE its own."""
        self.assertEqual(
            [command_label(c) for c in (Put("k", "v"), Delete("k"), Get("k", False), Get("k", True), Status())],
            ["put", "delete", "get", "get_stale", "status"],
        )
