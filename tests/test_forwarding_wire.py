"""
Write forwarding's two messages on the peer protocol (version 4): they
round-trip exactly, a bad one closes the connection, and a sender never
sends them to a peer that negotiated an older version, which a forwarding
follower treats as "do not forward" (L{kvstore.node.forwarding.PeerLinksChannel}).
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.forwarding import PeerLinksChannel
from kvstore.node.forwarding_messages import FORWARDING_SINCE, ForwardRequest, ForwardResponse
from kvstore.protocols.peer import (
    MAX_PROTOCOL_VERSION,
    VersionRange,
    PeerServerProtocol,
    decode_message,
    encode_message,
    may_send,
    wire_type_of,
)
from kvstore.protocols.peer_links import PeerClientProtocol, PeerLinks
from kvstore.raft.messages import MAX_FIELD_VALUE, MalformedMessage, Message
from tests.test_peer_snapshot_frames import _answer
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

FIELD = st.integers(min_value=0, max_value=MAX_FIELD_VALUE - 1)
# Text as a request or reply line may hold it: any character but LF (a
# lone surrogate is not text and cannot be a parsed line).
LINE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=200)


def request(line: bytes = b"PUT k v", request_id: int = 7) -> Message:
    return Message(SENDER, RECEIVER, ForwardRequest(3, request_id, line))


class EncodingTests(SynchronousTestCase):
    """The JSON form of C{forward} and C{forward_resp}."""

    @given(term=FIELD, request_id=FIELD, text=LINE, response=st.booleans())
    def test_round_trip(self, term: int, request_id: int, text: str, response: bool) -> None:
        """Every forwarding message decodes to what was encoded, whatever its line holds."""
        body = (ForwardResponse if response else ForwardRequest)(term, request_id, text.encode("utf-8"))
        message = Message(SENDER, RECEIVER, body)
        self.assertEqual(decode_message(encode_message(message), SENDER, RECEIVER_MEMBERSHIP), message)

    def test_documented_form(self) -> None:
        """The wire form is the one docs/protocol.md shows."""
        self.assertEqual(
            json.loads(encode_message(Message(1, 0, ForwardRequest(3, 3019523, b"PUT key1 value1")))),
            {"type": "forward", "from": 1, "to": 0, "term": 3, "id": 3019523, "line": "PUT key1 value1"},
        )
        self.assertEqual(
            json.loads(encode_message(Message(0, 1, ForwardResponse(3, 3019523, b"key1 added successfully.")))),
            {"type": "forward_resp", "from": 0, "to": 1, "term": 3, "id": 3019523, "line": "key1 added successfully."},
        )

    def test_bad_fields_are_malformed(self) -> None:
        """A bad id, term, line, type or address is a malformed message."""
        good = json.loads(encode_message(request()))
        for field, value in [
            ("id", -1), ("id", True), ("id", MAX_FIELD_VALUE), ("id", 1.0), ("id", None), ("term", "3"),
            ("line", 5), ("line", None), ("line", ["PUT k v"]), ("line", "\udc80"), ("from", RECEIVER),
            ("to", 9),
        ]:
            with self.subTest(field=field, value=value):
                raw = dict(good, **{field: value})
                payload = json.dumps(raw).encode("utf-8")
                self.assertRaises(MalformedMessage, decode_message, payload, SENDER, RECEIVER_MEMBERSHIP)
        del good["id"]
        self.assertRaises(MalformedMessage, decode_message, json.dumps(good).encode(), SENDER, RECEIVER_MEMBERSHIP)

    def test_a_type_that_is_not_a_string_is_malformed(self) -> None:
        """A message whose type is a list or an object is malformed, not a crash of the decoder."""
        for kind in ([], {}, ["forward"]):
            payload = json.dumps({"type": kind, "from": SENDER, "to": RECEIVER}).encode()
            self.assertRaises(MalformedMessage, decode_message, payload, SENDER, RECEIVER_MEMBERSHIP)


class VersionGatingTests(SynchronousTestCase):
    """Forwarding messages go only where version 4 was negotiated."""

    def setUp(self) -> None:
        self.links = PeerLinks(MemoryReactorClock(), 1, CLUSTER, {2: ("127.0.0.1", 20002)})
        self.channel = PeerLinksChannel(self.links)
        self.message = Message(1, 2, ForwardRequest(3, 7, b"PUT k v"))

    def test_required_types_of_version_four(self) -> None:
        """Both messages are required types of version 4, which this release speaks."""
        self.assertEqual(FORWARDING_SINCE, 4)
        self.assertGreaterEqual(MAX_PROTOCOL_VERSION, 4)
        for body in (ForwardRequest(1, 1, b""), ForwardResponse(1, 1, b"")):
            wire_type = wire_type_of(Message(1, 2, body))
            assert wire_type is not None
            self.assertEqual((wire_type.since, wire_type.optional), (4, False))
            self.assertFalse(may_send(wire_type, 3))
            self.assertTrue(may_send(wire_type, 4))

    def test_not_known_before_the_welcome(self) -> None:
        """Before a connection and its welcome, the follower may not forward yet (and nothing is sent)."""
        self.assertIsNone(self.channel.may_forward(2))
        self.assertIsNone(self.channel.connection(2))
        transport = _answer(self.links, 2, None)
        self.assertIsNone(self.channel.may_forward(2))
        before = transport.value()
        self.links.send(self.message)
        self.assertEqual(transport.value(), before)

    def test_version_three_peer_is_not_forwarded_to(self) -> None:
        """A leader that chose version 3 gets no forwarding message; the follower is told not to forward, and it is logged once."""
        transport = _answer(self.links, 2, 3)
        before = transport.value()
        with capturedLogs() as events:
            self.assertIs(self.channel.may_forward(2), False)
            self.links.send(self.message)
        self.assertEqual(transport.value(), before)
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("not sending forward messages to peer node 2", warnings[0])

    def test_version_four_peer_gets_them(self) -> None:
        """After a welcome choosing version 4 the request goes out, and a new connection is a different one."""
        transport = _answer(self.links, 2, 4)
        before = transport.value()
        self.assertIs(self.channel.may_forward(2), True)
        first = self.channel.connection(2)
        self.assertIsNotNone(first)
        self.links.send(self.message)
        self.assertEqual(transport.value()[len(before):], _netstring(encode_message(self.message)))
        _answer(self.links, 2, 4)
        self.assertIsNot(self.channel.connection(2), first)


class InteroperationTests(SynchronousTestCase):
    """A node of this release and a receiver of this release or of release 3."""

    def links_to(self, server: object) -> tuple[PeerLinks, Connection]:
        links = PeerLinks(MemoryReactorClock(), SENDER, CLUSTER, {RECEIVER: ("127.0.0.1", 20000)})
        connection = Connection(PeerClientProtocol(links.links[RECEIVER]), server)  # type: ignore[arg-type]
        return links, connection

    def test_this_release_pair_delivers_forwarding_messages(self) -> None:
        """Two nodes of this release agree on version 4 and a forwarded request arrives intact."""
        delivered: list[Message] = []
        server = PeerServerProtocol(RECEIVER_MEMBERSHIP, delivered.append)
        links, connection = self.links_to(_first_byte_server(server))
        connection.pump()  # hello and welcome
        message = Message(SENDER, RECEIVER, ForwardRequest(2, 11, 'PUT k "é"\t\\'.encode("utf-8")))
        links.send(message)
        connection.pump()
        self.assertEqual(server.version, 4)
        self.assertEqual(delivered, [message])

    def test_release_three_receiver_never_gets_one(self) -> None:
        """A receiver speaking versions 1 to 3 gets the Raft messages and never a forwarding message."""
        delivered: list[Message] = []
        server = PeerServerProtocol(RECEIVER_MEMBERSHIP, delivered.append, VersionRange(1, 3))
        links, connection = self.links_to(_first_byte_server(server))
        connection.pump()
        with capturedLogs():
            links.send(append_from(SENDER, 2))
            links.send(request())
            links.send(append_from(SENDER, 3))
        connection.pump()
        self.assertEqual(server.version, 3)
        self.assertEqual(delivered, [append_from(SENDER, 2), append_from(SENDER, 3)])
        self.assertFalse(connection.closed)
        self.assertIs(PeerLinksChannel(links).may_forward(RECEIVER), False)
