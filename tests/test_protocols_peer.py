"""
Tests for L{kvstore.protocols.peer}: the hello handshake, message decoding
and the rejection of anything a non-member or a broken peer sends.
"""

from __future__ import annotations

import json

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.logger import LogLevel, capturedLogs

from kvstore.protocols.peer import (
    MAX_MESSAGE_BYTES,
    Membership,
    PeerServerFactory,
    decode_hello,
    decode_message,
    encode_hello,
    encode_message,
)
from kvstore.raft.messages import AppendEntries, Entry, MalformedMessage, Message, RequestVote

from tests.support import parametrize

MEMBERSHIP = Membership(node_id=0, cluster_id="c1", peer_ids=frozenset({1, 2}))


def netstring(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


def connect() -> tuple[list[Message], object, StringTransport]:
    delivered: list[Message] = []
    factory = PeerServerFactory(MEMBERSHIP, delivered.append)
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
    transport = StringTransport()
    protocol.makeConnection(transport)
    return delivered, protocol, transport


def append_from(sender: int) -> Message:
    return Message(sender, 0, AppendEntries(3, 1, 1, (Entry(2, 3, b"Pk v"),), 1, round=4))


class PeerProtocolTests(SynchronousTestCase):
    """
    The peer protocol's handshake, decoding and refusals, over a StringTransport.
    """

    def test_hello_then_messages_are_delivered(self) -> None:
        """After a valid hello, each netstring becomes one delivered message."""
        delivered, protocol, transport = connect()
        message = append_from(1)
        protocol.dataReceived(netstring(encode_hello(1, "c1")) + netstring(encode_message(message)) * 2)
        assert delivered == [message, message]
        assert not transport.disconnecting

    def test_message_split_across_chunks(self) -> None:
        """A message arriving a byte at a time is delivered once, intact."""
        delivered, protocol, _ = connect()
        data = netstring(encode_hello(2, "c1")) + netstring(encode_message(append_from(2)))
        for i in range(len(data)):
            protocol.dataReceived(data[i : i + 1])
        assert delivered == [append_from(2)]

    @parametrize(
        "hello",
        [
            encode_hello(1, "other-cluster"),
            encode_hello(7, "c1"),
            encode_hello(0, "c1"),
            b'{"type":"hello","version":99,"cluster":"c1","from":1}',
            b'{"type":"vote","from":1}',
            b"not json",
            b"[1,2,3]",
        ],
    )
    def test_bad_hello_is_rejected_and_logged(self, hello: bytes) -> None:
        """A hello from another cluster, a non-member, a wrong version or garbage
        closes the connection with a logged warning and delivers nothing."""
        delivered, protocol, transport = connect()
        with capturedLogs() as events:
            protocol.dataReceived(netstring(hello) + netstring(encode_message(append_from(1))))
        assert transport.disconnecting
        assert delivered == []
        assert any(e["log_level"] == LogLevel.warn and "rejected peer" in e["log_format"] for e in events)

    @parametrize(
        "payload",
        [
            b"\xff\xfe invalid utf-8",
            b"{not json",
            b'{"type":"append"}',
            b'{"type":"nonsense","from":1,"to":0,"term":1}',
            b'{"type":"append","from":1,"to":0,"term":1,"prev_index":0,"prev_term":0,"commit":0,"round":0,"entries":[[5,1,"x"]]}',
            b'{"type":"vote","from":1,"to":0,"term":true,"last_index":0,"last_term":0,"pre_vote":false}',
            b'{"type":"vote","from":1,"to":0,"term":-1,"last_index":0,"last_term":0,"pre_vote":false}',
            b"[" * 100000 + b"]" * 100000,
        ],
    )
    def test_malformed_messages_close_the_connection(self, payload: bytes) -> None:
        """Invalid JSON, wrong shapes, unknown types and absurd nesting are
        refused: nothing is delivered and the connection closes."""
        delivered, protocol, transport = connect()
        protocol.dataReceived(netstring(encode_hello(1, "c1")) + netstring(payload))
        assert delivered == []
        assert transport.disconnecting

    def test_message_claiming_another_sender_is_refused(self) -> None:
        """A message whose sender differs from the connection's hello is refused."""
        delivered, protocol, transport = connect()
        protocol.dataReceived(netstring(encode_hello(1, "c1")) + netstring(encode_message(append_from(2))))
        assert delivered == [] and transport.disconnecting

    def test_message_for_another_node_is_refused(self) -> None:
        """A message addressed to another node id is refused."""
        delivered, protocol, transport = connect()
        wrong = Message(1, 2, RequestVote(1, 0, 0))
        protocol.dataReceived(netstring(encode_hello(1, "c1")) + netstring(encode_message(wrong)))
        assert delivered == [] and transport.disconnecting

    def test_absurd_length_is_refused_without_buffering(self) -> None:
        """A netstring announcing more than the limit is refused at once, before
        any of its payload is buffered."""
        delivered, protocol, transport = connect()
        with capturedLogs() as events:
            protocol.dataReceived(b"%d:" % (MAX_MESSAGE_BYTES * 1000) + b"x" * 100)
        assert transport.disconnecting
        assert delivered == []
        assert len(protocol._remainingData) < 1000  # type: ignore[attr-defined]
        assert any("rejected peer" in e["log_format"] for e in events)

    def test_truncated_netstring_delivers_nothing(self) -> None:
        """A connection that ends mid-netstring delivers nothing of it."""
        delivered, protocol, transport = connect()
        data = netstring(encode_hello(1, "c1")) + netstring(encode_message(append_from(1)))
        protocol.dataReceived(data[:-5])
        protocol.connectionLost(None)  # type: ignore[arg-type]
        assert delivered == []

    def test_decode_helpers(self) -> None:
        """The pure decoders accept valid input and raise MalformedMessage otherwise."""
        assert decode_hello(encode_hello(2, "c1"), MEMBERSHIP) == 2
        assert decode_message(encode_message(append_from(2)), 2, MEMBERSHIP) == append_from(2)
        with self.assertRaises(MalformedMessage):
            decode_message(json.dumps({"type": "append"}).encode(), 2, MEMBERSHIP)

    def test_entries_are_encoded_once_for_all_followers(self) -> None:
        """The same batch sent to two followers is encoded once, and each
        message still decodes to exactly what was sent."""
        from kvstore.protocols import peer as peer_module

        entries = ((5, 2, b"Pa 1"), (6, 2, b"Pb \xc3\xa9"))
        to_1 = Message(0, 1, AppendEntries(2, 4, 2, entries, 3, round=1))
        to_2 = Message(0, 2, AppendEntries(2, 4, 2, entries, 3, round=1))
        calls: list[object] = []
        real = peer_module._encoder.encode
        peer_module._encoder.encode = lambda value: (calls.append(value), real(value))[1]  # type: ignore[method-assign]
        try:
            one, two = encode_message(to_1), encode_message(to_2)
        finally:
            peer_module._encoder.encode = real  # type: ignore[method-assign]
        entry_lists = [c for c in calls if isinstance(c, list)]
        assert len(entry_lists) == 1  # encoded on its own, once
        for payload, original, receiver in ((one, to_1, 1), (two, to_2, 2)):
            membership = Membership(receiver, "c1", frozenset({0}))
            decoded = decode_message(payload, 0, membership)
            assert decoded == Message(0, receiver, original.body) or (
                decoded.body.entries == entries and decoded.receiver == receiver
            )

    @parametrize(
        "entries, prev_term, term",
        [
            ([[2, 3, "a"], [3, 2, "b"]], 1, 3),  # terms decrease
            ([[2, 4, "a"]], 1, 3),  # entry term above the message term
            ([[2, 1, "a"]], 2, 3),  # entry term below prev_term
        ],
    )
    def test_entries_that_no_leader_could_send_are_malformed(self, entries: list, prev_term: int, term: int) -> None:
        """AppendEntries whose entry terms are not a valid log (decreasing, above
        the sender's term, below prev_term) is refused before it reaches storage."""
        raw = {"type": "append", "from": 1, "to": 0, "term": term, "prev_index": 1, "prev_term": prev_term,
               "commit": 0, "round": 0, "entries": entries}
        with self.assertRaises(MalformedMessage):
            decode_message(json.dumps(raw).encode(), 1, MEMBERSHIP)

    def test_before_hello_only_small_netstrings_are_accepted(self) -> None:
        """Before a valid hello, a netstring longer than a hello could be is
        refused at its length prefix; after it, full-size messages are read."""
        from kvstore.protocols.peer import MAX_HELLO_BYTES

        delivered, protocol, transport = connect()
        protocol.dataReceived(b"%d:" % (MAX_HELLO_BYTES + 1) + b"x" * 100)
        assert transport.disconnecting and delivered == []
        delivered, protocol, transport = connect()
        big = Message(1, 0, AppendEntries(3, 1, 1, (Entry(2, 3, b"P" + b"v" * 100_000),), 1))
        protocol.dataReceived(netstring(encode_hello(1, "c1")) + netstring(encode_message(big)))
        assert delivered == [big] and not transport.disconnecting
