# -*- test-case-name: tests.test_protocols_peer_fast_framing -*-
"""
Differential tests of the peer receiver's fast framing: a stream of
netstrings (well formed or not, valid messages or not), cut anywhere,
leaves a receiver with fast framing exactly where Twisted's netstring
parser alone leaves it: the same messages delivered, the same answer
written, the same rejection logged, the same connection state.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.peer import (
    MAX_HELLO_BYTES,
    Membership,
    PeerServerProtocol,
    encode_hello,
    encode_message,
)
from kvstore.raft.messages import AppendEntriesResponse, Message

from tests.test_protocols_peer_fast_decoding import _mutated

MEMBERSHIP = Membership(node_id=0, cluster_id="c", peer_ids=frozenset({1, 2, 7}))
HELLO = encode_hello(1, "c")


class _Recording(PeerServerProtocol):
    """Records what it delivers and the reasons it logs for rejecting."""

    def __init__(self, generic_framing: bool) -> None:
        self.delivered: list[Message] = []
        self.rejections: list[str] = []
        super().__init__(MEMBERSHIP, self.delivered.append)
        if generic_framing:
            self.dataReceived = self._data_received_generic  # type: ignore[method-assign]

    def _log_rejection(self, reason: str) -> None:
        self.rejections.append(reason)
        super()._log_rejection(reason)


def _netstring(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


@st.composite
def _frame(draw: st.DrawFn) -> bytes:
    """One piece of a stream: mostly a netstring of a payload (valid or
    mutated), sometimes broken framing."""
    payload, _, _ = draw(_mutated())
    kind = draw(st.integers(0, 12))
    if kind == 0:  # a length off by a little
        return b"%d:%s," % (max(0, len(payload) + draw(st.integers(-3, 3))), payload)
    if kind == 1:  # no comma, or another byte in its place
        return b"%d:%s%s" % (len(payload), payload, draw(st.sampled_from([b"", b";", b"0", b":"])))
    if kind == 2:  # lengths Twisted refuses or must look at twice
        return draw(st.sampled_from([b"01:x,", b"-1:", b":", b"a:", b"99999999999:", b"16777217:", b"4097:",
                                     b"4096:", b"0:,", b"00:", b" 1:x,", b"1 :x,", b"123456789:"]))
    if kind == 3:
        return draw(st.binary(max_size=12))
    if kind == 4:
        return _netstring(HELLO)
    return _netstring(payload)


@st.composite
def _stream(draw: st.DrawFn) -> bytes:
    start = draw(st.sampled_from([_netstring(HELLO), _netstring(HELLO), b""]))
    return start + b"".join(draw(st.lists(_frame(), max_size=6)))


def _feed(protocol: _Recording, data: bytes, cuts: list[int]) -> tuple[object, ...]:
    transport = StringTransport()
    protocol.makeConnection(transport)
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for a, b in zip(points, points[1:]):
        protocol.dataReceived(data[a:b])
    return (protocol.delivered, protocol.rejections, transport.value(), transport.disconnecting,
            protocol.brokenPeer, protocol.skipped, protocol.version, protocol.MAX_LENGTH)


class FastFramingTests(SynchronousTestCase):
    @settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_stream(), st.lists(st.integers(0, 10**6), max_size=5))
    def test_same_outcome_as_twisteds_parser(self, data: bytes, cuts: list[int]) -> None:
        """However a stream is cut into reads, the fast framing delivers,
        answers, logs and closes exactly as Twisted's parser does."""
        self.assertEqual(_feed(_Recording(False), data, cuts), _feed(_Recording(True), data, cuts))

    def test_whole_netstrings_skip_twisteds_parser(self) -> None:
        """Whole netstrings in one read are delivered without touching
        Twisted's buffer (so the test above compares two parsers), and a
        partial one is left to it."""
        message = Message(1, 0, AppendEntriesResponse(1, True, 3, 0, 0, 0))
        frame = _netstring(encode_message(message))
        protocol = _Recording(False)
        protocol.makeConnection(StringTransport())
        protocol._data_received_generic = None  # type: ignore[assignment,method-assign]  # must not be called
        protocol.dataReceived(_netstring(HELLO) + frame + frame)
        self.assertEqual(protocol.delivered, [message, message])
        del protocol._data_received_generic
        protocol.dataReceived(frame + frame[:5])
        self.assertEqual(protocol.delivered, [message] * 3)
        self.assertEqual(protocol._state, protocol._PARSING_PAYLOAD)  # Twisted's parser holds the partial one

    def test_the_hello_limit_holds_before_the_hello(self) -> None:
        """Before a hello, a netstring longer than the hello limit is
        refused even when it arrives whole."""
        protocol = _Recording(False)
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(_netstring(b" " * (MAX_HELLO_BYTES + 1)))
        self.assertTrue(protocol.brokenPeer)
        self.assertEqual(protocol.rejections, ["invalid netstring framing or length over the limit"])

    def test_a_failing_delivery_leaves_the_rest_where_twisted_would(self) -> None:
        """If handing a message over raises, the exception propagates and
        the netstrings after it stay buffered, as with Twisted's parser."""
        frame = _netstring(encode_message(Message(1, 0, AppendEntriesResponse(1, True, 3, 0, 0, 0))))
        outcomes = []
        for generic in (False, True):
            protocol = _Recording(generic)
            protocol.makeConnection(StringTransport())
            protocol.dataReceived(_netstring(HELLO))
            protocol._deliver = lambda message: 1 / 0  # type: ignore[assignment,method-assign]
            self.assertRaises(ZeroDivisionError, protocol.dataReceived, frame + frame + b"3:")
            outcomes.append((protocol._remainingData, protocol._state))
        self.assertEqual(outcomes[0], outcomes[1])
