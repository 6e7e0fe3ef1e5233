# -*- test-case-name: tests.test_peer_snapshot_frames -*-
"""
The snapshot transfer's binary frames on the peer protocol
(L{kvstore.protocols.peer}, version 3): they round-trip exactly, carry the
data unescaped, every field a peer chooses is checked, and a sender never
sends them to a peer that negotiated an older version (release 1 and 2
receivers keep working with this release).
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.peer import (
    MAX_MESSAGE_BYTES,
    SNAPSHOT_CHUNK_HEADER_BYTES,
    SNAPSHOT_TRANSFER_SINCE,
    SUPPORTED_VERSIONS,
    VersionRange,
    PeerServerProtocol,
    decode_binary,
    decode_message,
    encode_hello,
    encode_message,
    encode_welcome,
    may_send,
    wire_type_of,
)
from kvstore.protocols.peer_links import PeerLinks
from kvstore.raft.messages import (
    MAX_FIELD_VALUE,
    MAX_SNAPSHOT_BYTES,
    MAX_SNAPSHOT_CHUNK_BYTES,
    AppendEntriesResponse,
    MalformedMessage,
    Message,
    SnapshotChunk,
    SnapshotChunkResponse,
)
from tests import release1_peer
from tests.test_protocols_peer_versions import (
    CLUSTER,
    RECEIVER,
    RECEIVER_MEMBERSHIP,
    SENDER,
    Connection,
    _first_byte_server,
    _netstring,
    append_from,
)

HEADER = struct.Struct(">BBQQQQQQQ")
RESPONSE = struct.Struct(">BBQQQQQB")
FIELD = st.integers(min_value=0, max_value=MAX_FIELD_VALUE - 1)


@st.composite
def chunks(draw: st.DrawFn) -> SnapshotChunk:
    data = draw(st.binary(min_size=1, max_size=2048))
    term = draw(st.integers(min_value=1, max_value=MAX_FIELD_VALUE - 1))
    size = draw(st.integers(min_value=len(data), max_value=MAX_SNAPSHOT_BYTES))
    offset = draw(st.integers(min_value=0, max_value=size - len(data)))
    return SnapshotChunk(
        term=term,
        index=draw(st.integers(min_value=1, max_value=MAX_FIELD_VALUE - 1)),
        snapshot_term=draw(st.integers(min_value=1, max_value=term)),
        size=size,
        offset=offset,
        data=data,
    )


@st.composite
def responses(draw: st.DrawFn) -> SnapshotChunkResponse:
    accepted = draw(st.booleans())
    return SnapshotChunkResponse(
        term=draw(FIELD),
        index=draw(FIELD),
        offset=draw(st.integers(min_value=0, max_value=MAX_SNAPSHOT_BYTES)),
        accepted=accepted,
        done=accepted and draw(st.booleans()),
    )


def chunk(**changes: object) -> SnapshotChunk:
    fields: dict[str, object] = dict(term=5, index=100, snapshot_term=4, size=4096, offset=1024, data=b"x" * 512)
    fields.update(changes)
    return SnapshotChunk(**fields)  # type: ignore[arg-type]


def raw_chunk(sender: int = SENDER, receiver: int = RECEIVER, term: int = 5, index: int = 100,
              snapshot_term: int = 4, size: int = 4096, offset: int = 0, data: bytes = b"d" * 16,
              marker: int = 0, kind: int = 1) -> bytes:
    return HEADER.pack(marker, kind, sender, receiver, term, index, snapshot_term, size, offset) + data


def raw_response(flags: int = 1, offset: int = 0, kind: int = 2) -> bytes:
    return RESPONSE.pack(0, kind, SENDER, RECEIVER, 5, 100, offset, flags)


class FrameRoundTripTests(SynchronousTestCase):
    """Encoding then decoding gives back the message, byte for byte."""

    @given(chunks())
    @settings(max_examples=200, deadline=None)
    def test_chunk_round_trip(self, body: SnapshotChunk) -> None:
        """Any valid chunk survives encode_message and decode_message unchanged."""
        message = Message(SENDER, RECEIVER, body)
        payload = encode_message(message)
        self.assertEqual(decode_message(payload, SENDER, RECEIVER_MEMBERSHIP), message)

    @given(responses())
    @settings(max_examples=200, deadline=None)
    def test_response_round_trip(self, body: SnapshotChunkResponse) -> None:
        """Any valid response survives encode_message and decode_message unchanged."""
        message = Message(SENDER, RECEIVER, body)
        self.assertEqual(decode_message(encode_message(message), SENDER, RECEIVER_MEMBERSHIP), message)

    @given(st.binary(min_size=1, max_size=4096))
    @settings(max_examples=100, deadline=None)
    def test_data_travels_unescaped(self, data: bytes) -> None:
        """A chunk's frame is its data plus a fixed 58-byte header, whatever
        the bytes (quotes, backslashes, NULs, invalid UTF-8)."""
        body = chunk(data=data, offset=0, size=len(data))
        payload = encode_message(Message(SENDER, RECEIVER, body))
        self.assertEqual(len(payload), len(data) + SNAPSHOT_CHUNK_HEADER_BYTES)
        self.assertEqual(SNAPSHOT_CHUNK_HEADER_BYTES, 58)
        self.assertTrue(payload.endswith(data))
        self.assertEqual(payload[:1], b"\x00")

    def test_largest_chunk_fits_a_message(self) -> None:
        """The largest chunk a receiver accepts is far below the peer message limit."""
        body = chunk(data=b"\xff" * MAX_SNAPSHOT_CHUNK_BYTES, offset=0, size=MAX_SNAPSHOT_CHUNK_BYTES)
        payload = encode_message(Message(SENDER, RECEIVER, body))
        self.assertLess(len(payload), MAX_MESSAGE_BYTES)
        self.assertEqual(decode_message(payload, SENDER, RECEIVER_MEMBERSHIP).body, body)

    def test_through_the_receiving_protocol(self) -> None:
        """A chunk, a response and an AppendEntries in one stream, split at
        every few bytes, are delivered in order after the hello."""
        delivered: list[Message] = []
        server = PeerServerProtocol(RECEIVER_MEMBERSHIP, delivered.append)
        transport = StringTransport()
        server.makeConnection(transport)
        messages = [
            Message(SENDER, RECEIVER, chunk(data=bytes(range(256)) * 4)),
            Message(SENDER, RECEIVER, SnapshotChunkResponse(5, 100, 2048, True, False)),
            append_from(SENDER),
        ]
        stream = _netstring(encode_hello(SENDER, CLUSTER)) + b"".join(
            _netstring(encode_message(m)) for m in messages
        )
        for start in range(0, len(stream), 7):
            server.dataReceived(stream[start : start + 7])
        self.assertEqual(delivered, messages)
        self.assertFalse(transport.disconnecting)


class FrameValidationTests(SynchronousTestCase):
    """Every field a peer chooses in a binary frame is checked."""

    def assertRejected(self, payload: bytes, fragment: str) -> None:
        with self.assertRaises(MalformedMessage) as caught:
            decode_message(payload, SENDER, RECEIVER_MEMBERSHIP)
        self.assertIn(fragment, str(caught.exception))

    def test_good_raw_frames_decode(self) -> None:
        """The hand-built frames below are valid when left alone (so each
        rejection is due to the one field changed)."""
        decode_message(raw_chunk(), SENDER, RECEIVER_MEMBERSHIP)
        decode_message(raw_response(), SENDER, RECEIVER_MEMBERSHIP)

    def test_chunk_field_bounds(self) -> None:
        """Integers of 2**63 or more, index or snapshot term 0, a snapshot
        term above the term, a size of 0 or above 1 TiB, empty or oversized
        data, and data past the size are refused."""
        cases = {
            "term": (dict(term=2**63), "'term'"),
            "index_large": (dict(index=2**64 - 1), "'index'"),
            "size_large": (dict(size=2**63), "'size'"),
            "offset_large": (dict(offset=2**63), "'offset'"),
            "snapshot_term_large": (dict(snapshot_term=2**63), "'snapshot_term'"),
            "index_zero": (dict(index=0), "at least 1"),
            "snapshot_term_zero": (dict(snapshot_term=0), "at least 1"),
            "snapshot_term_above_term": (dict(snapshot_term=6), "above the sender's term"),
            "size_zero": (dict(size=0, data=b""), "snapshot size 0"),
            "size_above_cap": (dict(size=MAX_SNAPSHOT_BYTES + 1), "outside 1 to"),
            "empty_data": (dict(data=b""), "carries 0 bytes"),
            "oversized_data": (dict(data=b"x" * (MAX_SNAPSHOT_CHUNK_BYTES + 1), size=2**30), "carries"),
            "past_size": (dict(offset=4090, data=b"x" * 7), "runs past the snapshot size"),
        }
        for name, (changes, fragment) in cases.items():
            with self.subTest(name):
                self.assertRejected(raw_chunk(**changes), fragment)  # type: ignore[arg-type]

    def test_response_checks(self) -> None:
        """Unknown flags, done without accepted, a wrong length and an
        offset past the largest snapshot are refused."""
        self.assertRejected(raw_response(flags=4), "unknown flags")
        self.assertRejected(raw_response(flags=2), "done without being accepted")
        self.assertRejected(raw_response() + b"\x00", "43 bytes")
        self.assertRejected(raw_response()[:-1], "43 bytes")
        self.assertRejected(raw_response(offset=MAX_SNAPSHOT_BYTES + 1), "past the largest snapshot")

    def test_frame_shape(self) -> None:
        """An unknown kind byte and a frame too short for its header are refused."""
        self.assertRejected(raw_chunk(kind=9), "unknown binary frame kind 9")
        self.assertRejected(b"\x00", "not a binary frame")
        self.assertRejected(raw_chunk()[:30], "too short")
        self.assertRaises(MalformedMessage, decode_binary, b"{}")

    def test_addressing_is_checked(self) -> None:
        """A binary frame claiming another sender or receiver than the connection's is refused."""
        self.assertRejected(raw_chunk(sender=2), "claims to be from node 2")
        self.assertRejected(raw_chunk(receiver=2), "addressed to node 2")

    def test_malformed_frame_closes_the_connection(self) -> None:
        """A peer sending a bad frame loses its connection, with a warning, as for bad JSON."""
        delivered: list[Message] = []
        server = PeerServerProtocol(RECEIVER_MEMBERSHIP, delivered.append)
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(_netstring(encode_hello(SENDER, CLUSTER)))
        with capturedLogs() as events:
            server.dataReceived(_netstring(raw_chunk(index=0)) + _netstring(encode_message(append_from(SENDER))))
        self.assertEqual(delivered, [])
        self.assertTrue(transport.disconnecting)
        self.assertTrue(any("rejected peer connection" in formatEvent(e) for e in events))


def _answer(links: PeerLinks, peer: int, version: int | None) -> StringTransport:
    """Connect C{links}' link to C{peer} on a memory transport and, unless
    C{version} is None, deliver the receiver's welcome choosing it."""
    link = links.links[peer]
    from kvstore.protocols.peer_links import PeerClientProtocol

    protocol = PeerClientProtocol(link)
    transport = StringTransport()
    protocol.makeConnection(transport)
    if version is not None:
        protocol.dataReceived(_netstring(encode_welcome(version)))
    return transport


class VersionGatingTests(SynchronousTestCase):
    """L{PeerLinks.send} sends snapshot frames only where version 3 was negotiated."""

    def setUp(self) -> None:
        self.links = PeerLinks(MemoryReactorClock(), 1, CLUSTER, {2: ("127.0.0.1", 20002)})
        self.unsendable: list[Message] = []
        self.links.unsendable.append(self.unsendable.append)
        self.chunk = Message(1, 2, chunk())
        self.response = Message(1, 2, SnapshotChunkResponse(5, 100, 0, False))

    def test_the_new_types_need_version_three(self) -> None:
        """Both frames are required types of version 3; other messages have no gate."""
        self.assertGreaterEqual(SUPPORTED_VERSIONS.highest, SNAPSHOT_TRANSFER_SINCE)
        for message in (self.chunk, self.response):
            wire_type = wire_type_of(message)
            assert wire_type is not None
            self.assertEqual((wire_type.since, wire_type.optional), (3, False))
            self.assertFalse(may_send(wire_type, 2))
            self.assertTrue(may_send(wire_type, 3))
        self.assertIsNone(wire_type_of(Message(1, 2, AppendEntriesResponse(5, True, 7))))

    def test_sent_at_version_three(self) -> None:
        """After a welcome choosing version 3, chunks and responses go out as binary frames."""
        transport = _answer(self.links, 2, 3)
        before = transport.value()
        self.links.send(self.chunk)
        self.links.send(self.response)
        self.assertEqual(
            transport.value()[len(before):],
            _netstring(encode_message(self.chunk)) + _netstring(encode_message(self.response)),
        )
        self.assertEqual(self.unsendable, [])

    def test_refused_at_version_two_logged_once_and_reported(self) -> None:
        """A peer that chose version 2 is sent no frame; the link logs it
        once per connection and tells the observers of each message."""
        transport = _answer(self.links, 2, 2)
        before = transport.value()
        with capturedLogs() as events:
            for _ in range(3):
                self.links.send(self.chunk)
            self.links.send(Message(1, 2, AppendEntriesResponse(5, True, 7)))
        self.assertEqual(
            transport.value()[len(before):], _netstring(encode_message(Message(1, 2, AppendEntriesResponse(5, True, 7))))
        )
        self.assertEqual(self.unsendable, [self.chunk] * 3)
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("not sending snapshot_chunk messages to peer node 2", warnings[0])
        self.assertIn("need version 3", warnings[0])
        self.assertEqual(self.links.links[2].dropped, 3)

    def test_dropped_silently_until_the_welcome(self) -> None:
        """Before the answer to the hello the version is not known: a frame
        is dropped like one for a disconnected peer, and nobody is told."""
        transport = _answer(self.links, 2, None)
        before = transport.value()
        with capturedLogs() as events:
            self.links.send(self.chunk)
        self.assertEqual(transport.value(), before)
        self.assertEqual(self.unsendable, [])
        self.assertEqual([e for e in events if e["log_level"] >= LogLevel.warn], [])
        self.assertEqual(self.links.links[2].dropped, 1)

    def test_not_connected_is_dropped(self) -> None:
        """No connection: dropped and counted, nobody told."""
        self.links.send(self.chunk)
        self.assertEqual((self.links.links[2].dropped, self.unsendable), (1, []))


class OlderReleaseInteroperationTests(SynchronousTestCase):
    """A node of this release with a receiver of release 1 or 2: Raft
    messages flow, snapshot frames are never sent, connections survive."""

    def links_to(self, server: object) -> tuple[PeerLinks, Connection, list[Message]]:
        links = PeerLinks(MemoryReactorClock(), SENDER, CLUSTER, {RECEIVER: ("127.0.0.1", 20000)})
        unsendable: list[Message] = []
        links.unsendable.append(unsendable.append)
        from kvstore.protocols.peer_links import PeerClientProtocol

        connection = Connection(PeerClientProtocol(links.links[RECEIVER]), server)  # type: ignore[arg-type]
        return links, connection, unsendable

    def test_release_one_receiver_never_gets_a_frame(self) -> None:
        """Release 1 never answers, so the link stays at version 1: the chunk is
        dropped, the AppendEntries around it delivered, the connection kept."""
        delivered: list[Message] = []
        old = release1_peer.PeerServerProtocol(
            release1_peer.Membership(RECEIVER, CLUSTER, frozenset({1, 2})), delivered.append
        )
        links, connection, unsendable = self.links_to(old)
        links.send(append_from(SENDER, 2))
        links.send(Message(SENDER, RECEIVER, chunk()))
        links.send(append_from(SENDER, 3))
        connection.pump()
        self.assertEqual(delivered, [append_from(SENDER, 2), append_from(SENDER, 3)])
        self.assertFalse(connection.closed)
        self.assertEqual(links.links[RECEIVER].version, 1)

    def test_release_two_receiver_never_gets_a_frame(self) -> None:
        """A receiver speaking versions 1 to 2 chooses 2: chunks are refused
        at the sender (and reported), everything else is delivered."""
        delivered: list[Message] = []
        server = PeerServerProtocol(RECEIVER_MEMBERSHIP, delivered.append, VersionRange(1, 2))
        links, connection, unsendable = self.links_to(_first_byte_server(server))
        message = Message(SENDER, RECEIVER, chunk())
        with capturedLogs():
            links.send(append_from(SENDER, 2))
            links.send(message)
            links.send(append_from(SENDER, 3))
        connection.pump()
        self.assertEqual(server.version, 2)
        self.assertEqual(delivered, [append_from(SENDER, 2), append_from(SENDER, 3)])
        self.assertEqual(unsendable, [message])
        self.assertFalse(connection.closed)

    def test_this_release_pair_exchanges_frames(self) -> None:
        """Two nodes of this release agree on their highest version (3 or later) and the chunk arrives intact."""
        delivered: list[Message] = []
        server = PeerServerProtocol(RECEIVER_MEMBERSHIP, delivered.append)
        links, connection, unsendable = self.links_to(_first_byte_server(server))
        message = Message(SENDER, RECEIVER, chunk(data=b'"\\\x00\xff' * 128))
        links.send(message)
        connection.pump()
        self.assertEqual(server.version, SUPPORTED_VERSIONS.highest)
        self.assertEqual(delivered, [message])
        self.assertEqual(unsendable, [])
