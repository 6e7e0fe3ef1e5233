"""
Tests for L{kvstore.protocols.client}: the client connection protocol, driven
through a L{StringTransport} against a fake node whose Deferreds the tests
fire by hand.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from kvstore.errors import KeyNotFound, NotLeader, OutcomeUnknown, Unavailable
from kvstore.protocols.client import (
    DEFAULT_MAX_PENDING,
    ClientFactory,
    ClientProtocol,
    KeyValueService,
    format_error,
    format_status,
)
from kvstore.protocols.commands import DEFAULT_LIMITS, Limits

from tests.support import parametrize


class FakeService:
    """
    A L{KeyValueService} that records every call.  With C{auto=True} it
    answers at once from a dict; otherwise each call returns a pending
    Deferred, kept in C{calls} for the test to fire.
    """

    def __init__(self, auto: bool = False) -> None:
        self.auto = auto
        #: When set, every PUT fails at once with this error.
        self.fail_writes_with: Exception | None = None
        self.data: dict[str, str] = {}
        self.calls: list[tuple[str, tuple[Any, ...], Deferred[Any]]] = []
        self.status_result: dict[str, object] = {
            "node": 0,
            "role": "leader",
            "term": 3,
            "leader": 0,
            "commit": 10,
            "applied": 10,
            "members": [0, 1, 2],
        }

    def _record(self, name: str, args: tuple[Any, ...], d: Deferred[Any]) -> Deferred[Any]:
        self.calls.append((name, args, d))
        return d

    def put(self, key: str, value: str) -> Deferred[None]:
        if self.fail_writes_with is not None:
            return self._record("put", (key, value), fail(self.fail_writes_with))
        if self.auto:
            self.data[key] = value
            return self._record("put", (key, value), succeed(None))
        return self._record("put", (key, value), Deferred())

    def delete(self, key: str) -> Deferred[None]:
        if self.auto:
            if key not in self.data:
                return self._record("delete", (key,), fail(KeyNotFound(key)))
            del self.data[key]
            return self._record("delete", (key,), succeed(None))
        return self._record("delete", (key,), Deferred())

    def get(self, key: str, stale: bool) -> Deferred[str]:
        if self.auto:
            if key not in self.data:
                return self._record("get", (key, stale), fail(KeyNotFound(key)))
            return self._record("get", (key, stale), succeed(self.data[key]))
        return self._record("get", (key, stale), Deferred())

    def incr(self, key: str, delta: int, session: object = None) -> Deferred[int]:
        args = (key, delta) if session is None else (key, delta, session)
        if self.auto:
            value = int(self.data.get(key, "0")) + delta
            self.data[key] = str(value)
            return self._record("incr", args, succeed(value))
        return self._record("incr", args, Deferred())

    def cas(self, key: str, expected: str, new: str, session: object = None) -> Deferred[None]:
        args = (key, expected, new) if session is None else (key, expected, new, session)
        return self._record("cas", args, Deferred())

    def open_session(self) -> Deferred[int]:
        return self._record("open_session", (), Deferred())

    def status(self) -> dict[str, object]:
        return self.status_result

    def fire(self, index: int, result: object = None) -> None:
        """Complete call C{index} with C{result} (an exception means errback)."""
        d = self.calls[index][2]
        if isinstance(result, BaseException):
            d.errback(Failure(result))
        else:
            d.callback(result)


def connect(
    service: FakeService | None = None,
    limits: Limits = DEFAULT_LIMITS,
    max_pending: int = DEFAULT_MAX_PENDING,
) -> tuple[ClientProtocol, StringTransport, FakeService]:
    """Connect a protocol to a fresh StringTransport."""
    service = service if service is not None else FakeService()
    proto = ClientProtocol(service, limits, max_pending)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport, service


def lines(transport: StringTransport) -> list[str]:
    """Reply lines written so far, asserting each ends in LF."""
    data = transport.value()
    assert data == b"" or data.endswith(b"\n")
    return data.decode("utf-8").split("\n")[:-1]


def talk(data: bytes, service: FakeService | None = None) -> list[str]:
    """Send C{data} to a protocol backed by an auto-answering service; return replies."""
    proto, transport, _ = connect(service if service is not None else FakeService(auto=True))
    proto.dataReceived(data)
    return lines(transport)


SMALL = Limits.for_sizes(max_key_bytes=4, max_value_bytes=8)  # lines up to 28 bytes


class RecordingTransport(StringTransport):
    """A StringTransport that records calls pausing and resuming reading."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def pauseProducing(self) -> None:
        self.events.append("pause")
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self.events.append("resume")
        super().resumeProducing()


class ClientCommandTests(SynchronousTestCase):
    """Each command's reply when the node answers."""

    def test_put_reply(self) -> None:
        """PUT stores through the service and replies '<key> added successfully.'."""
        service = FakeService(auto=True)
        assert talk(b"PUT k hello world\n", service) == ["k added successfully."]
        assert service.data == {"k": "hello world"}

    def test_get_reply(self) -> None:
        """GET replies 'value of <key>: <value>' with the value verbatim."""
        service = FakeService(auto=True)
        service.data["k"] = "a  b"
        assert talk(b"GET k\n", service) == ["value of k: a  b"]

    def test_get_empty_value(self) -> None:
        """GET of an empty value replies with nothing after the colon and space."""
        assert talk(b"PUT k \nGET k\n") == ["k added successfully.", "value of k: "]

    def test_get_is_linearizable_by_default(self) -> None:
        """A plain GET asks the service for a non-stale read."""
        proto, _, service = connect()
        proto.dataReceived(b"GET k\n")
        assert service.calls[0][:2] == ("get", ("k", False))

    def test_get_stale(self) -> None:
        """GET <key> STALE asks the service for a stale read and replies the same way."""
        proto, transport, service = connect()
        proto.dataReceived(b"GET k STALE\n")
        assert service.calls[0][:2] == ("get", ("k", True))
        service.fire(0, "v")
        assert lines(transport) == ["value of k: v"]

    def test_delete_reply(self) -> None:
        """DELETE replies '<key> deleted successfully.'."""
        service = FakeService(auto=True)
        service.data["k"] = "v"
        assert talk(b"DELETE k\n", service) == ["k deleted successfully."]
        assert service.data == {}

    def test_ping(self) -> None:
        """PING replies PONG without calling the service."""
        proto, transport, service = connect()
        proto.dataReceived(b"PING\n")
        assert lines(transport) == ["PONG"]
        assert service.calls == []

    def test_status(self) -> None:
        """STATUS replies one line of name=value tokens in the service's order."""
        assert talk(b"STATUS\n") == [
            "node=0 role=leader term=3 leader=0 commit=10 applied=10 members=0,1,2"
        ]

    def test_format_status_value_rendering(self) -> None:
        """Status values render None, booleans, sets, empties and inner spaces without breaking tokens."""
        line = format_status(
            {"leader": None, "ok": True, "set": {2, 1}, "empty": "", "note": "a b\nc"}
        )
        assert line == "leader=none ok=true set=1,2 empty=- note=a_b_c"

    def test_unicode_key_and_value(self) -> None:
        """Non-ASCII keys and values are carried as UTF-8 both ways."""
        replies = talk("PUT clé 💾 données\nGET clé\n".encode())
        assert replies == ["clé added successfully.", "value of clé: 💾 données"]


class ClientFramingTests(SynchronousTestCase):
    """How lines are delimited, split and decoded."""

    def test_lf_and_crlf(self) -> None:
        """Requests may end in LF or CRLF, mixed on one connection."""
        replies = talk(b"PUT a 1\r\nPUT b 2\nGET a\r\nGET b\n")
        assert replies == [
            "a added successfully.",
            "b added successfully.",
            "value of a: 1",
            "value of b: 2",
        ]

    def test_replies_end_in_lf_only(self) -> None:
        """Replies are terminated by a bare LF even for CRLF clients."""
        proto, transport, _ = connect(FakeService(auto=True))
        proto.dataReceived(b"PING\r\n")
        assert transport.value() == b"PONG\n"

    def test_case_insensitive(self) -> None:
        """Command words are accepted in any case."""
        replies = talk(b"put k v\nGeT k\ndElEtE k\nping\nget k stale\n")
        assert replies == [
            "k added successfully.",
            "value of k: v",
            "k deleted successfully.",
            "PONG",
            "Error: Key k not found",
        ]

    def test_request_split_across_chunks(self) -> None:
        """A request arriving in several pieces is handled once complete."""
        proto, transport, _ = connect(FakeService(auto=True))
        for piece in [b"PU", b"T k ", b"v", b"\r", b"\nPI", b"NG\n"]:
            proto.dataReceived(piece)
        assert lines(transport) == ["k added successfully.", "PONG"]

    def test_partial_line_waits(self) -> None:
        """Nothing is executed until the line's LF arrives."""
        proto, transport, service = connect()
        proto.dataReceived(b"PUT k v")
        assert service.calls == []
        assert transport.value() == b""


class ClientParseErrorTests(SynchronousTestCase):
    """Replies to malformed requests and the key and value limits."""

    @parametrize(
        "request_, reply",
        [
            (b"FOO\n", "Error: Unknown command 'FOO'"),
            (b"\n", "Error: Empty command"),
            (b"\r\n", "Error: Empty command"),
            (b"PUT k\n", "Error: Usage: PUT <key> <value>"),
            (b"GET\n", "Error: Usage: GET <key> [STALE]"),
            (b"DELETE\n", "Error: Usage: DELETE <key>"),
            (b"PING x\n", "Error: Usage: PING"),
            (b"PUT k \x01\n", "Error: Control character 0x01 not allowed"),
            (b"PUT k \xff\xfe\n", "Error: Invalid UTF-8 at byte 6"),
        ],
    )
    def test_bad_request_replies(self, request_: bytes, reply: str) -> None:
        """Each invalid request gets one 'Error: ' reply and the connection stays open."""
        proto, transport, service = connect(FakeService(auto=True))
        proto.dataReceived(request_ + b"PING\n")
        assert lines(transport) == [reply, "PONG"]
        assert not transport.disconnecting
        assert [c[0] for c in service.calls] == []

    def test_bad_utf8_changes_nothing(self) -> None:
        """A PUT with invalid UTF-8 reaches no service call and leaves stored data alone."""
        service = FakeService(auto=True)
        service.data["k"] = "old"
        assert talk(b"PUT k \xc3\x28\nGET k\n", service) == [
            "Error: Invalid UTF-8 at byte 6",
            "value of k: old",
        ]

    def test_key_and_value_limits(self) -> None:
        """Over-long keys and values get an error reply and the connection stays usable."""
        limits = Limits.for_sizes(max_key_bytes=4, max_value_bytes=8)
        proto, transport, _ = connect(FakeService(auto=True), limits=limits)
        proto.dataReceived(b"PUT kkkkk v\nPUT k 123456789\nPUT kkkk 12345678\n")
        assert lines(transport) == [
            "Error: Key too long (maximum 4 bytes)",
            "Error: Value too long (maximum 8 bytes)",
            "kkkk added successfully.",
        ]
        assert not transport.disconnecting

    def test_max_length_follows_limits(self) -> None:
        """The framing limit is the configured maximum line length."""
        proto, _, _ = connect(limits=Limits.for_sizes(10, 20))
        assert proto.MAX_LENGTH == 46


class ClientLineLengthTests(SynchronousTestCase):
    """A line over the maximum length closes the connection, after the replies already owed."""

    def test_line_too_long_closes(self) -> None:
        """A complete over-long line gets an error reply, then the connection closes."""
        proto, transport, service = connect(FakeService(auto=True), limits=SMALL)
        proto.dataReceived(b"PUT k " + b"v" * 40 + b"\nPING\n")
        assert lines(transport) == ["Error: Line too long (maximum 28 bytes)"]
        assert transport.disconnecting
        assert service.calls == []

    def test_line_at_max_length_accepted(self) -> None:
        """A line of exactly the maximum length (CR included) is processed normally."""
        proto, transport, _ = connect(FakeService(auto=True), limits=SMALL)
        proto.dataReceived(b"X" * 27 + b"\r\n")
        assert lines(transport) == ["Error: Unknown command '" + "X" * 27 + "'"]
        assert not transport.disconnecting

    def test_partial_line_too_long_closes(self) -> None:
        """A buffered partial line over the limit gets the error and closes before its LF arrives."""
        proto, transport, service = connect(FakeService(auto=True), limits=SMALL)
        proto.dataReceived(b"PUT k " + b"v" * 40)
        assert lines(transport) == ["Error: Line too long (maximum 28 bytes)"]
        assert transport.disconnecting

    def test_rest_of_long_line_never_executed(self) -> None:
        """Data after an over-long partial line, even a well-formed request, is never executed."""
        proto, transport, service = connect(FakeService(auto=True), limits=SMALL)
        proto.dataReceived(b"X" * 40)
        proto.dataReceived(b"\nPUT k v\n")
        assert service.calls == []
        assert lines(transport) == ["Error: Line too long (maximum 28 bytes)"]

    def test_line_too_long_after_pending_replies(self) -> None:
        """The line-too-long error follows earlier pending replies, and the close waits for them."""
        proto, transport, service = connect(limits=SMALL)
        proto.dataReceived(b"PUT k v\n" + b"X" * 40)
        assert transport.value() == b""
        assert not transport.disconnecting
        service.fire(0)
        assert lines(transport) == [
            "k added successfully.",
            "Error: Line too long (maximum 28 bytes)",
        ]
        assert transport.disconnecting


class ClientNodeErrorTests(SynchronousTestCase):
    """How the node's errors and unexpected failures become one-line error replies."""

    @parametrize(
        "error, reply",
        [
            (KeyNotFound("k"), "Error: Key k not found"),
            (
                NotLeader(2, "10.0.0.2:7000"),
                "Error: Not leader. Current leader is Node 2 at 10.0.0.2:7000",
            ),
            (NotLeader(None, None), "Error: Not leader. No leader elected yet"),
            (NotLeader(2, None), "Error: Not leader. Current leader is Node 2"),
            (
                OutcomeUnknown("leadership lost"),
                "Error: Outcome unknown: leadership lost "
                "(the write may or may not have been applied)",
            ),
            (Unavailable("no quorum"), "Error: Unavailable: no quorum"),
        ],
    )
    def test_node_error_replies(self, error: Exception, reply: str) -> None:
        """Each node error from a Deferred becomes its exact protocol reply."""
        proto, transport, service = connect()
        proto.dataReceived(b"PUT k v\nPING\n")
        service.fire(0, error)
        assert lines(transport) == [reply, "PONG"]
        assert not transport.disconnecting

    def test_delete_missing_key(self) -> None:
        """DELETE of a missing key replies 'Error: Key <key> not found'."""
        assert talk(b"DELETE nope\n") == ["Error: Key nope not found"]

    def test_get_missing_key(self) -> None:
        """GET of a missing key replies 'Error: Key <key> not found'."""
        assert talk(b"GET nope\n") == ["Error: Key nope not found"]

    def test_error_text_kept_on_one_line(self) -> None:
        """A node error reason with a newline cannot split the reply into two lines."""
        assert format_error(Unavailable("a\nb")) == "Error: Unavailable: a\\nb"

    def test_value_with_newline_kept_on_one_line(self) -> None:
        """A stored value containing a newline (not writable via PUT) still yields one reply line."""
        proto, transport, service = connect()
        proto.dataReceived(b"GET k\n")
        service.fire(0, "a\nb\r")
        assert lines(transport) == ["value of k: a\\nb\\r"]

    def test_synchronous_node_error(self) -> None:
        """A node error raised synchronously by the service is replied like a failed Deferred."""

        class Refusing(FakeService):
            def put(self, key: str, value: str) -> Deferred[None]:
                raise NotLeader(None, None)

        assert talk(b"PUT k v\nPING\n", Refusing()) == [
            "Error: Not leader. No leader elected yet",
            "PONG",
        ]

    def test_unexpected_failure_is_internal_error(self) -> None:
        """An unexpected failure is logged and replied as 'Error: Internal error'; the connection stays usable."""
        proto, transport, service = connect()
        with capturedLogs() as events:
            proto.dataReceived(b"PUT k v\n")
            service.fire(0, ZeroDivisionError("boom"))
        assert lines(transport) == ["Error: Internal error"]
        failures = [e for e in events if "log_failure" in e]
        assert len(failures) == 1
        assert failures[0]["log_failure"].check(ZeroDivisionError)
        self.flushLoggedErrors(ZeroDivisionError)
        proto.dataReceived(b"PING\n")
        assert lines(transport)[-1] == "PONG"
        assert not transport.disconnecting

    def test_synchronous_unexpected_exception_is_internal_error(self) -> None:
        """An unexpected exception raised by the service call is logged and replied as an internal error."""

        class Broken(FakeService):
            def get(self, key: str, stale: bool) -> Deferred[str]:
                raise KeyError(key)

        with capturedLogs() as events:
            replies = talk(b"GET k\nPING\n", Broken())
        assert replies == ["Error: Internal error", "PONG"]
        assert any(e.get("log_failure") is not None and e["log_failure"].check(KeyError) for e in events)
        self.flushLoggedErrors(KeyError)

    def test_status_exception_is_internal_error(self) -> None:
        """A status() that raises gives an internal error reply, not a dropped connection."""

        class Broken(FakeService):
            def status(self) -> dict[str, object]:
                raise RuntimeError("no status")

        with capturedLogs():
            assert talk(b"STATUS\nPING\n", Broken()) == ["Error: Internal error", "PONG"]
        self.flushLoggedErrors(RuntimeError)

    def test_unrenderable_result_is_internal_error(self) -> None:
        """A result that cannot be rendered yields an internal error and later replies still flow."""

        class Unprintable:
            def __str__(self) -> str:
                raise ValueError("cannot print")

        proto, transport, service = connect()
        with capturedLogs() as events:
            proto.dataReceived(b"GET k\nPING\n")
            service.fire(0, Unprintable())
        assert lines(transport) == ["Error: Internal error", "PONG"]
        assert any("log_failure" in e for e in events)
        self.flushLoggedErrors(ValueError)
        assert service.calls[0][2].result is None  # consumed, nothing unhandled


class ClientPipeliningTests(SynchronousTestCase):
    """Pipelined requests are answered in request order, whatever order they finish in."""

    def test_out_of_order_completion_replies_in_order(self) -> None:
        """Replies follow request order even when later requests finish first."""
        proto, transport, service = connect()
        proto.dataReceived(b"PUT a 1\nPUT b 2\nDELETE c\n")
        service.fire(2)
        service.fire(1)
        assert transport.value() == b""
        service.fire(0)
        assert lines(transport) == [
            "a added successfully.",
            "b added successfully.",
            "c deleted successfully.",
        ]

    def test_read_waits_for_earlier_writes_on_the_connection(self) -> None:
        """A pipelined GET starts only after the connection's earlier writes
        finish (so it sees them), while consecutive writes start at once."""
        proto, transport, service = connect()
        proto.dataReceived(b"PUT a 1\nDELETE b\nGET a\nGET b\nPUT a 2\n")
        assert [call[0] for call in service.calls] == ["put", "delete"]
        service.fire(0)
        assert len(service.calls) == 2
        service.fire(1, KeyNotFound("b"))
        assert [call[0] for call in service.calls] == ["put", "delete", "get", "get"]
        service.fire(3, "x")
        assert len(service.calls) == 4  # the PUT waits for both earlier reads
        service.fire(2, "1")
        assert [call[0] for call in service.calls][-1] == "put"
        service.fire(4)
        assert lines(transport) == [
            "a added successfully.",
            "Error: Key b not found",
            "value of a: 1",
            "value of b: x",
            "a added successfully.",
        ]

    def test_status_waits_for_earlier_writes(self) -> None:
        """STATUS reflects the connection's earlier writes: it waits for them."""
        proto, transport, service = connect()
        proto.dataReceived(b"PUT a 1\nSTATUS\n")
        assert transport.value() == b""
        service.fire(0)
        assert lines(transport)[0] == "a added successfully."
        assert len(lines(transport)) == 2

    def test_immediate_reply_waits_behind_pending(self) -> None:
        """A reply available at once (PING, errors) still waits behind an earlier pending one."""
        proto, transport, service = connect()
        proto.dataReceived(b"GET a\nPING\nFOO\n")
        assert transport.value() == b""
        service.fire(0, "x")
        assert lines(transport) == ["value of a: x", "PONG", "Error: Unknown command 'FOO'"]

    def test_partial_flush(self) -> None:
        """Completing the head writes every ready reply up to the next pending one."""
        proto, transport, service = connect()
        proto.dataReceived(b"GET a\nPING\nGET b\nPING\n")
        service.fire(0, "1")
        assert lines(transport) == ["value of a: 1", "PONG"]
        service.fire(1, "2")
        assert lines(transport) == ["value of a: 1", "PONG", "value of b: 2", "PONG"]

    @given(st.permutations(list(range(8))))
    def test_any_completion_order_gives_request_order(self, order: list[int]) -> None:
        """Whatever order the node completes eight pipelined GETs in, replies come in request order."""
        proto, transport, service = connect()
        proto.dataReceived(b"".join(b"GET k%d\n" % i for i in range(8)))
        for i in order:
            service.fire(i, str(i))
        assert lines(transport) == [f"value of k{i}: {i}" for i in range(8)]

    def test_pipelined_replies_batched(self) -> None:
        """Replies produced while handling one chunk of input are written together, once."""
        writes: list[int] = []  # the replies (lines) each write call carried

        class Counting(StringTransport):
            def write(self, data: bytes) -> None:
                writes.append(data.count(b"\n"))
                super().write(data)

            def writeSequence(self, seq: Any) -> None:
                writes.append(sum(part.count(b"\n") for part in seq))
                super().writeSequence(seq)

        proto = ClientProtocol(FakeService(auto=True))
        transport = Counting()
        proto.makeConnection(transport)
        proto.dataReceived(b"PING\n" * 50)
        assert writes == [50]
        assert lines(transport) == ["PONG"] * 50

    def test_thousands_of_immediately_finished_requests_behind_a_pending_one(self) -> None:
        """A pending GET followed by thousands of pipelined writes that fail at
        once (a follower's NotLeader) does not overflow the stack: every request
        gets its reply and the connection stays usable."""
        proto, transport, service = connect()
        service.fail_writes_with = NotLeader(None, None)
        proto.dataReceived(b"GET k\n" + b"PUT k v\n" * 3000)
        service.fire(0, "x")
        proto.dataReceived(b"PING\n")
        replies = lines(transport)
        assert replies[0] == "value of k: x"
        assert replies[1:-1] == ["Error: Not leader. No leader elected yet"] * 3000
        assert replies[-1] == "PONG"


class ClientExitTests(SynchronousTestCase):
    """EXIT closes the connection after the replies already owed."""

    def test_exit(self) -> None:
        """EXIT replies 'Goodbye.' and closes the connection."""
        proto, transport, _ = connect()
        proto.dataReceived(b"EXIT\n")
        assert lines(transport) == ["Goodbye."]
        assert transport.disconnecting

    def test_exit_after_pending_replies(self) -> None:
        """EXIT's Goodbye and the close wait until earlier pending replies are written."""
        proto, transport, service = connect()
        proto.dataReceived(b"PUT k v\nEXIT\n")
        assert transport.value() == b""
        assert not transport.disconnecting
        service.fire(0)
        assert lines(transport) == ["k added successfully.", "Goodbye."]
        assert transport.disconnecting

    def test_nothing_read_after_exit(self) -> None:
        """Requests after EXIT, in the same chunk or later, are neither executed nor answered."""
        proto, transport, service = connect()
        proto.dataReceived(b"GET a\nEXIT\nPUT b 1\n")
        proto.dataReceived(b"PUT c 2\n")
        assert [c[0] for c in service.calls] == ["get"]
        assert transport.producerState == "paused"
        service.fire(0, "x")
        assert lines(transport) == ["value of a: x", "Goodbye."]

    def test_input_after_exit_discarded(self) -> None:
        """Input after EXIT is discarded rather than buffered while earlier replies are pending."""
        proto, transport, service = connect()
        proto.dataReceived(b"GET a\nEXIT\nPUT b 1\nPART")
        proto.dataReceived(b"IAL" * 1000)
        assert proto.clearLineBuffer() == b""

    def test_close_unregisters_producer(self) -> None:
        """The protocol unregisters as the transport's producer before closing, so a TCP close can complete."""
        proto, transport, _ = connect()
        assert transport.producer is proto
        assert transport.streaming
        proto.dataReceived(b"EXIT\n")
        assert transport.producer is None
        assert transport.disconnecting

    def test_existing_producer_tolerated(self) -> None:
        """If the transport already has a producer, the protocol warns and still works."""
        transport = StringTransport()
        other = object()
        transport.registerProducer(other, True)
        proto = ClientProtocol(FakeService(auto=True))
        with capturedLogs() as events:
            proto.makeConnection(transport)
        assert any(e.get("log_level").name == "warn" for e in events)
        proto.dataReceived(b"PING\nEXIT\n")
        assert lines(transport) == ["PONG", "Goodbye."]
        assert transport.producer is other


class ClientDisconnectTests(SynchronousTestCase):
    """A half-closed connection still gets its replies; a lost one leaves the node and other
    connections unharmed."""

    def test_disconnect_mid_line(self) -> None:
        """A client that disconnects mid-line executes nothing."""
        proto, transport, service = connect()
        proto.dataReceived(b"PUT k v")
        proto.connectionLost(Failure(ConnectionError()))
        assert service.calls == []
        assert transport.value() == b""

    def test_late_results_after_disconnect(self) -> None:
        """Results and failures arriving after a disconnect are dropped and consumed, with nothing written."""
        proto, transport, service = connect()
        proto.dataReceived(b"GET b\nPUT a 1\nDELETE c\n")
        proto.connectionLost(Failure(ConnectionError()))
        service.fire(0, "x")
        assert len(service.calls) == 1  # nothing held starts after a disconnect
        proto, transport, service = connect()
        proto.dataReceived(b"PUT a 1\nDELETE c\nGET b\n")
        proto.connectionLost(Failure(ConnectionError()))
        service.fire(0, OutcomeUnknown("lost"))
        service.fire(1, ZeroDivisionError())
        assert transport.value() == b""
        for _, _, d in service.calls:
            assert d.result is None  # consumed: no "Unhandled error in Deferred"

    def test_data_after_disconnect_ignored(self) -> None:
        """Data delivered after connectionLost is ignored."""
        proto, transport, service = connect()
        proto.connectionLost(Failure(ConnectionError()))
        proto.dataReceived(b"PUT k v\n")
        assert service.calls == []
        assert transport.value() == b""

    def test_one_client_garbage_does_not_affect_another(self) -> None:
        """Garbage and an over-long line on one connection leave another connection and the data intact."""
        service = FakeService(auto=True)
        good, good_transport, _ = connect(service, limits=SMALL)
        bad, bad_transport, _ = connect(service, limits=SMALL)
        good.dataReceived(b"PUT k v\n")
        bad.dataReceived(b"\xff\x00\nPUT k ")
        bad.dataReceived(b"x" * 100)
        good.dataReceived(b"GET k\n")
        assert lines(good_transport) == ["k added successfully.", "value of k: v"]
        assert bad_transport.disconnecting
        assert service.data == {"k": "v"}

    def test_half_close_answers_pending_requests_then_closes(self) -> None:
        """When the client shuts down its sending side, requests already read are
        still answered, then the connection closes; a partial line is dropped."""
        proto, transport, service = connect()
        proto.dataReceived(b"PUT a 1\nPING\nGET b")
        proto.readConnectionLost()
        assert not transport.disconnecting
        service.fire(0)
        assert lines(transport) == ["a added successfully.", "PONG"]
        assert transport.disconnecting
        assert [call[0] for call in service.calls] == ["put"]


class ClientFlowControlTests(SynchronousTestCase):
    """Reading pauses while too many replies are owed or the transport is full."""

    def test_backlog_pauses_reading(self) -> None:
        """With more than max_pending replies outstanding the protocol stops reading, even lines already buffered."""
        proto, transport, service = connect(max_pending=4)
        proto.dataReceived(b"".join(b"GET k%d\n" % i for i in range(10)))
        assert len(service.calls) == 5
        assert transport.producerState == "paused"

    def test_backlog_resumes_at_half(self) -> None:
        """Reading resumes once outstanding replies drop to half of max_pending, delivering buffered lines."""
        service = FakeService()
        proto = ClientProtocol(service, max_pending=4)
        transport = RecordingTransport()
        proto.makeConnection(transport)
        proto.dataReceived(b"".join(b"GET k%d\n" % i for i in range(10)))
        service.fire(0, "0")
        service.fire(1, "1")
        assert transport.events == ["pause"]  # 3 outstanding, more than 4 // 2
        assert len(service.calls) == 5
        service.fire(2, "2")
        # Resumed at 2 outstanding, read k5..k7 from the buffer, paused again at 5.
        assert transport.events == ["pause", "resume", "pause"]
        assert len(service.calls) == 8
        for i in range(3, 10):
            service.fire(i, str(i))
        assert len(service.calls) == 10
        assert lines(transport) == [f"value of k{i}: {i}" for i in range(10)]
        assert transport.events[-1] == "resume"
        assert not proto.paused

    def test_backlog_counts_ready_replies_behind_pending(self) -> None:
        """Ready replies waiting behind a pending one count towards the backlog limit."""
        proto, transport, service = connect(max_pending=4)
        proto.dataReceived(b"GET a\n" + b"PING\n" * 10)
        assert transport.producerState == "paused"
        service.fire(0, "x")
        assert lines(transport) == ["value of a: x"] + ["PONG"] * 10
        assert transport.producerState == "producing"

    def test_send_buffer_backpressure(self) -> None:
        """When the transport pauses us (send buffer full) no lines are read until it resumes us."""
        proto, transport, service = connect(FakeService(auto=True))
        proto.pauseProducing()
        assert transport.producerState == "paused"
        proto.dataReceived(b"PUT k v\nGET k\n")
        assert service.calls == []
        proto.resumeProducing()
        assert transport.producerState == "producing"
        assert lines(transport) == ["k added successfully.", "value of k: v"]

    def test_both_pause_reasons_must_clear(self) -> None:
        """Reading resumes only when both the backlog and the send buffer allow it."""
        proto, transport, service = connect(max_pending=2)
        proto.dataReceived(b"GET a\nGET b\nGET c\nGET d\n")
        assert len(service.calls) == 3
        proto.pauseProducing()
        for i in range(3):
            service.fire(i, "v")
        assert transport.producerState == "paused"
        assert len(service.calls) == 3
        proto.resumeProducing()
        assert transport.producerState == "producing"
        assert len(service.calls) == 4

    def test_large_chunk_lets_transport_pause_midway(self) -> None:
        """Big replies are handed over before the whole chunk is handled, so a full send buffer stops reading mid-chunk."""

        class Tiny(StringTransport):
            def write(self, data: bytes) -> None:
                super().write(data)
                if self.producer is not None:
                    self.producer.pauseProducing()  # send buffer now "full"

        service = FakeService(auto=True)
        service.data["big"] = "v" * 1000
        proto = ClientProtocol(service)
        transport = Tiny()
        proto.makeConnection(transport)
        proto.dataReceived(b"GET big\n" * 500)
        assert 50 < len(service.calls) < 100
        assert len(lines(transport)) == len(service.calls)

    def test_many_small_replies_let_transport_pause_midway(self) -> None:
        """Many small immediate replies in one chunk are handed over in bounded batches, so backpressure applies mid-chunk."""

        class Tiny(StringTransport):
            def write(self, data: bytes) -> None:
                super().write(data)
                if self.producer is not None:
                    self.producer.pauseProducing()

        proto = ClientProtocol(FakeService())
        transport = Tiny()
        proto.makeConnection(transport)
        proto.dataReceived(b"PING\n" * 20000)  # 100 KB of replies
        assert 0 < len(lines(transport)) < 20000
        proto.resumeProducing()
        assert len(lines(transport)) == 20000

    def test_resume_after_disconnect_is_harmless(self) -> None:
        """A resume arriving after the connection is lost reads nothing and touches no transport."""
        proto, transport, service = connect(FakeService(auto=True))
        proto.pauseProducing()
        proto.dataReceived(b"PING\n")
        proto.connectionLost(Failure(ConnectionError()))
        proto.resumeProducing()
        assert transport.value() == b""
        assert transport.producerState == "paused"

    def test_stop_producing_stops_reading(self) -> None:
        """After the transport calls stopProducing no more requests are executed."""
        proto, transport, service = connect(FakeService(auto=True))
        proto.stopProducing()
        proto.dataReceived(b"PUT k v\n")
        assert service.calls == []

    def test_max_pending_must_be_positive(self) -> None:
        """A max_pending below one is refused."""
        with self.assertRaises(ValueError):
            ClientProtocol(FakeService(), max_pending=0)


class ClientFactoryTests(SynchronousTestCase):
    """The interfaces the protocol provides and the factory that configures it."""

    def test_push_producer_interface(self) -> None:
        """ClientProtocol provides IPushProducer, since it registers as one."""
        proto, _, _ = connect()
        assert verifyObject(IPushProducer, proto)

    def test_fake_service_matches_interface(self) -> None:
        """The test fake has every method of KeyValueService, so the tests exercise the real contract."""
        assert isinstance(FakeService(), KeyValueService)

    def test_factory_builds_configured_protocols(self) -> None:
        """ClientFactory gives each connection its own protocol sharing the service, limits and backlog size."""
        service = FakeService()
        limits = Limits.for_sizes(4, 8)
        factory = ClientFactory(service, limits, max_pending=7)
        one = factory.buildProtocol(None)
        two = factory.buildProtocol(None)
        assert one is not two
        assert isinstance(one, ClientProtocol)
        assert one.factory is factory
        assert one.MAX_LENGTH == limits.max_line_bytes
        transport = StringTransport()
        one.makeConnection(transport)
        one.dataReceived(b"".join(b"GET k%d\n" % i for i in range(20)))
        assert len(service.calls) == 8  # paused once more than 7 are outstanding
        one.dataReceived(b"")
        two.makeConnection(StringTransport())
        two.dataReceived(b"GET k\n")
        assert service.calls[-1][:2] == ("get", ("k", False))

    def test_factory_defaults(self) -> None:
        """ClientFactory defaults to the default limits and backlog size."""
        factory = ClientFactory(FakeService())
        proto = factory.buildProtocol(None)
        assert proto.MAX_LENGTH == DEFAULT_LIMITS.max_line_bytes
        assert factory.max_pending == DEFAULT_MAX_PENDING == 1000
