"""
Tests for the versioning of the peer protocol (L{kvstore.protocols.peer},
the hello and answer of L{kvstore.protocols.peer_links}): two ends agree on the highest
version both speak, a node of the next release with an extra optional
message works with a node of this release, a node of release 1 works with
this one, and only ends with no version in common are refused.

The two ends of a connection are joined in memory: the sending end is a real
L{PeerClientProtocol} of a L{PeerLink}, the receiving end a real
L{PeerServerProtocol} behind the first-byte dispatcher, and a small pump
moves the bytes between their L{StringTransport}s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.peer_links import PeerClientProtocol, PeerLink
from kvstore.protocols.dispatch import DispatchFactory
from kvstore.protocols.peer import (
    MAX_LOGGED_SKIPPED_TYPES,
    MAX_PROTOCOL_VERSION,
    MIN_PROTOCOL_VERSION,
    PeerRefusal,
    OPTIONAL_TYPES_SKIPPED_SINCE,
    SUPPORTED_VERSIONS,
    WIRE_TYPES,
    Membership,
    PeerServerProtocol,
    VersionRange,
    WireType,
    decode_answer,
    decode_hello,
    decode_message,
    encode_hello,
    encode_message,
    encode_welcome,
    may_send,
    negotiate,
    read_hello,
)
from kvstore.raft.messages import (
    AppendEntries,
    Entry,
    MalformedMessage,
    Message,
    ReadIndexRequest,
    RequestVote,
    to_dict,
)
from tests import release1_peer
from tests.support import parametrize

CLUSTER = "c1"
SENDER, RECEIVER = 1, 0
RECEIVER_MEMBERSHIP = Membership(node_id=RECEIVER, cluster_id=CLUSTER, peer_ids=frozenset({1, 2}))

# ---------------------------------------------------------------------------
# The next release, as far as the wire is concerned: one version more, and
# one extra message type, optional, that this release does not know.

NEXT_RELEASE = VersionRange(MIN_PROTOCOL_VERSION, MAX_PROTOCOL_VERSION + 1)
LEADER_HINT = WireType("leader_hint", since=MAX_PROTOCOL_VERSION + 1, optional=True)


@dataclass(frozen=True)
class LeaderHint:
    """The next release's extra message: a hint, safe to ignore."""

    sender: int
    receiver: int
    leader: int


def encode_hint(hint: LeaderHint) -> bytes:
    """The next release's encoding of its extra message, in the common envelope."""
    return json.dumps(
        {"type": LEADER_HINT.name, "optional": True, "from": hint.sender, "to": hint.receiver, "leader": hint.leader}
    ).encode()


def decode_next_release(payload: bytes, sender: int, membership: Membership) -> Any:
    """The next release's decoder: its extra type, or this release's types."""
    raw = json.loads(payload)
    if isinstance(raw, dict) and raw.get("type") == LEADER_HINT.name:
        return LeaderHint(raw["from"], raw["to"], raw["leader"])
    return decode_message(payload, sender, membership)


def wire_type(item: Message | LeaderHint) -> WireType:
    if isinstance(item, LeaderHint):
        return LEADER_HINT
    return WIRE_TYPES[to_dict(item)["type"]]


def encode_any(item: Message | LeaderHint) -> bytes:
    return encode_hint(item) if isinstance(item, LeaderHint) else encode_message(item)


# ---------------------------------------------------------------------------
# Two ends joined in memory.


def _netstring(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


def _first_byte_server(protocol: PeerServerProtocol) -> Protocol:
    """The receiving end as a node has it: behind the first-byte dispatcher."""
    peer_factory = Factory()
    peer_factory.buildProtocol = lambda addr: protocol  # type: ignore[method-assign]
    dispatch = DispatchFactory(Factory.forProtocol(Protocol), peer_factory)
    return dispatch.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40001))


class Connection:
    """
    A sender's L{PeerClientProtocol} joined to a receiver's protocol by two
    L{StringTransport}s; L{pump} moves bytes both ways until neither end has
    more to say, then delivers the close if either end asked for it.
    """

    def __init__(self, client: Protocol, server: Protocol) -> None:
        self.client, self.server = client, server
        self.client_transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5000))
        self.server_transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40001))
        self.closed = False
        self.to_client = b""  # everything the receiving end wrote
        server.makeConnection(self.server_transport)
        client.makeConnection(self.client_transport)
        self.pump()

    def pump(self) -> None:
        while not self.closed:
            upstream, downstream = self.client_transport.value(), self.server_transport.value()
            self.client_transport.clear()
            self.server_transport.clear()
            if upstream:
                self.server.dataReceived(upstream)
            if downstream:
                self.to_client += downstream
                self.client.dataReceived(downstream)
            if not upstream and not downstream:
                break
        if not self.closed and (self.client_transport.disconnecting or self.server_transport.disconnecting):
            self.closed = True
            reason = Failure(ConnectionError("closed"))
            self.server.connectionLost(reason)
            self.client.connectionLost(reason)


class Sender:
    """
    The sending side of one node: a L{PeerLink} and its protocol.  It sends
    only what L{may_send} allows at the link's version and keeps the rest in
    C{held_back}, as a node must.
    """

    def __init__(self, versions: VersionRange = SUPPORTED_VERSIONS, node_id: int = SENDER) -> None:
        self.link = PeerLink(RECEIVER, "127.0.0.1:40001", encode_hello(node_id, CLUSTER, versions), versions)
        self.protocol = PeerClientProtocol(self.link)
        self.held_back: list[Message | LeaderHint] = []

    def send(self, item: Message | LeaderHint) -> None:
        version = self.link.version
        assert version is not None, "not connected"
        if may_send(wire_type(item), version):
            self.link.send(encode_any(item))
        else:
            self.held_back.append(item)


def join(
    sender: Sender,
    receiver_versions: VersionRange = SUPPORTED_VERSIONS,
    decode: Callable[[bytes, int, Membership], Any] = decode_message,
) -> tuple[Connection, PeerServerProtocol, list[Any]]:
    """Connect C{sender} to a receiver speaking C{receiver_versions}."""
    delivered: list[Any] = []
    server = PeerServerProtocol(RECEIVER_MEMBERSHIP, delivered.append, receiver_versions, decode)
    return Connection(sender.protocol, _first_byte_server(server)), server, delivered


def append_from(sender: int, index: int = 2) -> Message:
    return Message(sender, RECEIVER, AppendEntries(3, index - 1, 1, (Entry(index, 3, b"Pk v"),), 1, round=4))


def _messages(events: list[dict[str, Any]], level: LogLevel | None = None) -> list[str]:
    from twisted.logger import formatEvent

    return [formatEvent(e) for e in events if level is None or e["log_level"] == level]


# ---------------------------------------------------------------------------


class NextReleaseInteroperationTests(SynchronousTestCase):
    """
    A node speaking version N+1 with an extra optional message works with a
    node speaking N, in both directions, and two N+1 nodes use N+1.
    """

    def test_newer_sender_and_older_receiver_agree_on_the_older_version(self) -> None:
        """The receiver answers with the highest common version, and the sender adopts it."""
        sender = Sender(NEXT_RELEASE)
        connection, server, _ = join(sender)
        self.assertEqual(server.version, MAX_PROTOCOL_VERSION)
        self.assertEqual(sender.link.version, MAX_PROTOCOL_VERSION)
        self.assertEqual(connection.to_client, _netstring(encode_welcome(MAX_PROTOCOL_VERSION)))

    def test_older_receiver_skips_the_extra_optional_message_and_keeps_the_connection(self) -> None:
        """The N+1 node sends its optional message to the N node, which logs it
        once, skips it, and delivers every Raft message around it."""
        sender = Sender(NEXT_RELEASE)
        connection, server, delivered = join(sender)
        with capturedLogs() as events:
            sender.send(append_from(SENDER, 2))
            sender.send(LeaderHint(SENDER, RECEIVER, leader=SENDER))
            sender.send(append_from(SENDER, 3))
            sender.send(LeaderHint(SENDER, RECEIVER, leader=2))
            connection.pump()
        self.assertEqual(sender.held_back, [])
        self.assertEqual(delivered, [append_from(SENDER, 2), append_from(SENDER, 3)])
        self.assertFalse(connection.closed)
        self.assertEqual(server.skipped, 2)
        logged = [m for m in _messages(events) if "leader_hint" in m]
        self.assertEqual(len(logged), 1, logged)
        self.assertIn("marked it optional", logged[0])

    def test_older_sender_to_newer_receiver(self) -> None:
        """An N node's messages reach an N+1 node, at version N."""
        sender = Sender(SUPPORTED_VERSIONS)
        connection, server, delivered = join(sender, NEXT_RELEASE, decode_next_release)
        sender.send(append_from(SENDER))
        sender.send(Message(SENDER, RECEIVER, ReadIndexRequest(3, 9)))
        connection.pump()
        self.assertEqual(server.version, MAX_PROTOCOL_VERSION)
        self.assertEqual(delivered, [append_from(SENDER), Message(SENDER, RECEIVER, ReadIndexRequest(3, 9))])
        self.assertFalse(connection.closed)

    def test_two_newer_nodes_use_the_newer_version_and_its_message(self) -> None:
        """Two N+1 nodes agree on N+1, and the extra message is delivered."""
        sender = Sender(NEXT_RELEASE)
        connection, server, delivered = join(sender, NEXT_RELEASE, decode_next_release)
        hint = LeaderHint(SENDER, RECEIVER, leader=2)
        sender.send(hint)
        sender.send(append_from(SENDER))
        connection.pump()
        self.assertEqual((server.version, sender.link.version), (MAX_PROTOCOL_VERSION + 1,) * 2)
        self.assertEqual(delivered, [hint, append_from(SENDER)])


class ReleaseOneInteroperationTests(SynchronousTestCase):
    """
    A rolling upgrade from release 1: a node of this release and one of the
    previous release (its peer protocol kept verbatim in
    L{tests.release1_peer}) exchange messages in both directions.
    """

    def test_this_release_sender_is_accepted_by_a_release_one_receiver(self) -> None:
        """Release 1 accepts this release's hello (it carries version 1), sends
        no answer, and the sender stays at version 1 and is understood."""
        sender = Sender(SUPPORTED_VERSIONS)
        delivered: list[Message] = []
        old = release1_peer.PeerServerProtocol(
            release1_peer.Membership(RECEIVER, CLUSTER, frozenset({1, 2})), delivered.append
        )
        connection = Connection(sender.protocol, old)
        messages = [append_from(SENDER), Message(SENDER, RECEIVER, RequestVote(4, 2, 3, pre_vote=True))]
        for message in messages:
            sender.send(message)
        connection.pump()
        self.assertEqual(sender.link.version, 1)
        self.assertEqual(connection.to_client, b"")
        self.assertEqual(delivered, messages)
        self.assertFalse(connection.closed)

    def test_next_release_holds_optional_messages_back_from_release_one(self) -> None:
        """At version 1 the receiver may not skip unknown types, so an optional
        message is not sent to it, and the connection survives."""
        sender = Sender(NEXT_RELEASE)
        delivered: list[Message] = []
        old = release1_peer.PeerServerProtocol(
            release1_peer.Membership(RECEIVER, CLUSTER, frozenset({1, 2})), delivered.append
        )
        connection = Connection(sender.protocol, old)
        hint = LeaderHint(SENDER, RECEIVER, leader=1)
        sender.send(hint)
        sender.send(append_from(SENDER))
        connection.pump()
        self.assertEqual(sender.held_back, [hint])
        self.assertEqual(delivered, [append_from(SENDER)])
        self.assertFalse(connection.closed)

    def test_release_one_sender_is_accepted_and_gets_no_answer(self) -> None:
        """A release 1 hello is version 1 exactly: accepted, with nothing
        written back (release 1 senders read nothing), and its messages
        delivered."""
        delivered: list[Message] = []
        server = PeerServerProtocol(RECEIVER_MEMBERSHIP, delivered.append)
        transport = StringTransport()
        protocol = _first_byte_server(server)
        protocol.makeConnection(transport)
        hello = release1_peer.encode_hello(SENDER, CLUSTER)
        self.assertEqual(hello, b'{"type":"hello","version":1,"cluster":"c1","from":1}')
        protocol.dataReceived(_netstring(hello) + _netstring(release1_peer.encode_message(append_from(SENDER))))
        self.assertEqual(delivered, [append_from(SENDER)])
        self.assertEqual(server.version, 1)
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting)

    def test_release_one_hello_to_a_receiver_without_version_one_is_refused(self) -> None:
        """Once a later release drops version 1, a release 1 node is refused
        with a log line, and sent nothing it could not read."""
        server = PeerServerProtocol(RECEIVER_MEMBERSHIP, lambda m: None, VersionRange(2, 3))
        transport = StringTransport()
        server.makeConnection(transport)
        with capturedLogs() as events:
            server.dataReceived(_netstring(release1_peer.encode_hello(SENDER, CLUSTER)))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        self.assertIn(
            "no peer protocol version in common: node 1 speaks version 1, node 0 speaks versions 2 to 3",
            " ".join(_messages(events, LogLevel.warn)),
        )


class NoCommonVersionTests(SynchronousTestCase):
    """Ends with no version in common are refused, with a clear log line at both ends."""

    def test_refused_with_a_log_line_at_both_ends(self) -> None:
        """The receiver logs why, answers with a refusal and closes; the
        sender logs the receiver's reason; nothing is delivered."""
        sender = Sender(VersionRange(MAX_PROTOCOL_VERSION + 1, MAX_PROTOCOL_VERSION + 2))
        with capturedLogs() as events:
            connection, server, delivered = join(sender)
        self.assertTrue(connection.closed)
        self.assertIsNone(server.version)
        self.assertEqual(delivered, [])
        warnings = _messages(events, LogLevel.warn)
        expected = (
            f"no peer protocol version in common: node 1 speaks versions {MAX_PROTOCOL_VERSION + 1} to"
            f" {MAX_PROTOCOL_VERSION + 2}, node 0 speaks versions {MIN_PROTOCOL_VERSION} to {MAX_PROTOCOL_VERSION}"
        )
        receiver_lines = [w for w in warnings if w.startswith("rejected peer connection")]
        sender_lines = [w for w in warnings if "refused this node's connection" in w]
        self.assertEqual(len(receiver_lines), 1, warnings)
        self.assertIn(expected, receiver_lines[0])
        self.assertEqual(len(sender_lines), 1, warnings)
        self.assertIn(expected, sender_lines[0])

    def test_sender_logs_a_repeated_refusal_once(self) -> None:
        """A link that reconnects and is refused again for the same reason
        does not log it again."""
        link = Sender(VersionRange(7, 8)).link
        with capturedLogs() as events:
            for _ in range(3):  # what the link's reconnecting service does
                server = PeerServerProtocol(RECEIVER_MEMBERSHIP, lambda m: None)
                connection = Connection(PeerClientProtocol(link), server)
                self.assertTrue(connection.closed)
        refusals = [m for m in _messages(events, LogLevel.warn) if "refused this node's connection" in m]
        self.assertEqual(len(refusals), 1, refusals)

    def test_negotiate_picks_the_highest_common_version(self) -> None:
        """negotiate returns the highest version both ranges include, or raises."""
        self.assertEqual(negotiate(VersionRange(1, 5), VersionRange(3, 9)), 5)
        self.assertEqual(negotiate(VersionRange(4, 4), VersionRange(1, 4)), 4)
        self.assertEqual(negotiate(VersionRange(1, 1), VersionRange(1, 2)), 1)
        with self.assertRaises(MalformedMessage):
            negotiate(VersionRange(1, 2), VersionRange(3, 4))
        with self.assertRaises(MalformedMessage):
            decode_hello(encode_hello(SENDER, CLUSTER, VersionRange(5, 6)), RECEIVER_MEMBERSHIP)


class MessageTypeTests(SynchronousTestCase):
    """
    A receiver that does not know a message's type skips it if, and only
    if, its envelope marks it optional.
    """

    def connect(self) -> tuple[list[Message], PeerServerProtocol, StringTransport]:
        delivered: list[Message] = []
        server = PeerServerProtocol(RECEIVER_MEMBERSHIP, delivered.append)
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(_netstring(encode_hello(SENDER, CLUSTER)))
        self.assertFalse(transport.disconnecting)
        return delivered, server, transport

    def test_unknown_optional_type_is_logged_ignored_and_the_connection_kept(self) -> None:
        """An unknown type marked optional is skipped with one info log line
        per type, and later messages are still delivered."""
        delivered, server, transport = self.connect()
        skip = {"type": "install_snapshot_hint", "optional": True, "from": SENDER, "to": RECEIVER, "x": [1, 2]}
        with capturedLogs() as events:
            for _ in range(3):
                server.dataReceived(_netstring(json.dumps(skip).encode()))
            server.dataReceived(_netstring(encode_message(append_from(SENDER))))
        self.assertEqual(delivered, [append_from(SENDER)])
        self.assertFalse(transport.disconnecting)
        self.assertEqual(server.skipped, 3)
        logged = [m for m in _messages(events, LogLevel.info) if "install_snapshot_hint" in m]
        self.assertEqual(len(logged), 1, logged)

    def test_unknown_required_type_closes_the_connection(self) -> None:
        """An unknown type without the optional mark closes the connection
        with a warning that names the type."""
        delivered, server, transport = self.connect()
        required = {"type": "install_snapshot", "from": SENDER, "to": RECEIVER, "term": 3}
        with capturedLogs() as events:
            server.dataReceived(_netstring(json.dumps(required).encode()))
            server.dataReceived(_netstring(encode_message(append_from(SENDER))))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(delivered, [])
        self.assertIn("unknown message type 'install_snapshot', not marked optional",
                      " ".join(_messages(events, LogLevel.warn)))

    @parametrize(
        "envelope",
        [
            {"type": "hint", "optional": 1, "from": SENDER, "to": RECEIVER},
            {"type": "hint", "optional": "true", "from": SENDER, "to": RECEIVER},
            {"type": "hint", "optional": False, "from": SENDER, "to": RECEIVER},
            {"type": "hint", "optional": True, "from": 2, "to": RECEIVER},
            {"type": "hint", "optional": True, "from": True, "to": RECEIVER},
            {"type": "hint", "optional": True, "to": RECEIVER},
            {"type": "hint", "optional": True, "from": SENDER, "to": 2},
            {"type": "hint", "optional": True, "from": SENDER, "to": False},
            {"type": "h" * 65, "optional": True, "from": SENDER, "to": RECEIVER},
            {"type": "", "optional": True, "from": SENDER, "to": RECEIVER},
            {"type": ["vote"], "optional": True, "from": SENDER, "to": RECEIVER},
            {"optional": True, "from": SENDER, "to": RECEIVER},
        ],
        ids=["optional_1", "optional_string", "optional_false", "other_sender", "sender_bool", "no_sender",
             "other_receiver", "receiver_bool", "long_type", "empty_type", "type_list", "no_type"],
    )
    def test_unsound_optional_envelope_closes_the_connection(self, envelope: dict[str, Any]) -> None:
        """Only an envelope with optional exactly true, a type name of 1 to
        64 characters and this connection's addressing may be skipped."""
        delivered, server, transport = self.connect()
        server.dataReceived(_netstring(json.dumps(envelope).encode()))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(server.skipped, 0)

    def test_known_type_marked_optional_is_delivered(self) -> None:
        """The optional mark matters only for unknown types: a known one is
        validated and delivered as usual."""
        delivered, server, transport = self.connect()
        raw = to_dict(append_from(SENDER))
        raw["optional"] = True
        server.dataReceived(_netstring(json.dumps(raw).encode()))
        self.assertEqual(delivered, [append_from(SENDER)])
        self.assertFalse(transport.disconnecting)

    def test_skipped_types_logged_are_bounded(self) -> None:
        """A peer sending many distinct optional types gets a bounded number of log lines."""
        delivered, server, transport = self.connect()
        with capturedLogs() as events:
            for n in range(MAX_LOGGED_SKIPPED_TYPES * 3):
                envelope = {"type": f"t{n}", "optional": True, "from": SENDER, "to": RECEIVER}
                server.dataReceived(_netstring(json.dumps(envelope).encode()))
        self.assertEqual(server.skipped, MAX_LOGGED_SKIPPED_TYPES * 3)
        self.assertEqual(len(_messages(events, LogLevel.info)), MAX_LOGGED_SKIPPED_TYPES)
        self.assertFalse(transport.disconnecting)

    def test_every_type_of_this_release_is_required_and_only_snapshot_frames_are_new(self) -> None:
        """This release's types are release 1's six, which every receiver
        understands, plus the snapshot transfer's two frames of version 3
        and write forwarding's two messages of version 4, all required, and the leadership transfer's TimeoutNow of version
        3, optional (an older receiver skips it)."""
        self.assertEqual(
            sorted(WIRE_TYPES),
            ["append", "append_resp", "forward", "forward_resp", "read", "read_resp", "snapshot_chunk",
             "snapshot_chunk_resp", "timeout_now", "vote", "vote_resp"],
        )
        self.assertEqual([name for name, t in WIRE_TYPES.items() if t.optional], ["timeout_now"])
        self.assertEqual(
            {name: t.since for name, t in WIRE_TYPES.items() if t.since != 1},
            {"snapshot_chunk": 3, "snapshot_chunk_resp": 3, "timeout_now": 3, "forward": 4, "forward_resp": 4},
        )

    @parametrize(
        "wire_type, version, allowed",
        [
            (WireType("old", since=1), 1, True),
            (WireType("new", since=3), 2, False),
            (WireType("new", since=3), 3, True),
            (WireType("opt", since=3, optional=True), OPTIONAL_TYPES_SKIPPED_SINCE, True),
            (WireType("opt", since=3, optional=True), 1, False),
            (WireType("opt", since=3, optional=True), 4, True),
        ],
        ids=["old_type", "required_too_new", "required_at_its_version", "optional_to_skipping_receiver",
             "optional_to_release_one", "optional_later"],
    )
    def test_may_send(self, wire_type: WireType, version: int, allowed: bool) -> None:
        """A required type goes only to receivers of its version or later; an
        optional one also to any receiver that skips unknown optional types."""
        self.assertEqual(may_send(wire_type, version), allowed)


class HelloFormatTests(SynchronousTestCase):
    """The hello carries a version range that a receiver checks before anything else."""

    def test_hello_announces_the_range_and_starts_at_its_lowest(self) -> None:
        """This release's hello: version 1 (for release 1 receivers), the
        range, the cluster and the sender."""
        hello = json.loads(encode_hello(SENDER, CLUSTER))
        self.assertEqual(
            hello,
            {"type": "hello", "version": MIN_PROTOCOL_VERSION,
             "versions": [MIN_PROTOCOL_VERSION, MAX_PROTOCOL_VERSION], "cluster": CLUSTER, "from": SENDER},
        )
        self.assertEqual(read_hello(encode_hello(SENDER, CLUSTER), RECEIVER_MEMBERSHIP).versions, SUPPORTED_VERSIONS)

    @parametrize(
        "fields",
        [
            {"version": 2},  # a hello without a range is release 1's: version 1
            {"version": 0},
            {"version": True},
            {"version": "1"},
            {"version": 1, "versions": [1]},
            {"version": 1, "versions": "1-2"},
            {"version": 1, "versions": [1, 2, 3]},
            {"version": 2, "versions": [2, 1]},
            {"version": 1, "versions": [1, 65536]},
            {"version": 1, "versions": [1, True]},
            {"version": 2, "versions": [1, 2]},  # 'version' must be the lowest
            {"versions": [1, 2]},
        ],
        ids=["no_range_version_2", "version_0", "version_bool", "version_string", "range_one_item",
             "range_string", "range_three_items", "range_empty", "range_too_high", "range_bool",
             "version_not_lowest", "version_missing"],
    )
    def test_malformed_version_fields_are_refused(self, fields: dict[str, Any]) -> None:
        """A hello whose version fields are missing, of the wrong type, out of
        bounds or inconsistent is refused and the connection closed."""
        hello = {"type": "hello", "cluster": CLUSTER, "from": SENDER, **fields}
        with self.assertRaises(MalformedMessage):
            read_hello(json.dumps(hello).encode(), RECEIVER_MEMBERSHIP)
        server = PeerServerProtocol(RECEIVER_MEMBERSHIP, lambda m: None)
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(_netstring(json.dumps(hello).encode()))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_non_member_gets_no_answer(self) -> None:
        """A hello from another cluster is refused before any answer is
        written: a stranger learns nothing."""
        server = PeerServerProtocol(RECEIVER_MEMBERSHIP, lambda m: None)
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(_netstring(encode_hello(SENDER, "another", VersionRange(9, 9))))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")


class AnswerTests(SynchronousTestCase):
    """The sender reads exactly one answer to its hello, and closes on anything else."""

    @parametrize(
        "answer",
        [
            encode_welcome(MAX_PROTOCOL_VERSION + 1),
            encode_welcome(0),
            b'{"type":"welcome","version":true}',
            b'{"type":"welcome"}',
            b'{"type":"append","from":0,"to":1,"term":1}',
            b"[1]",
            b"not json",
            b"!012:{},",  # '!': written as is, not framed; a leading zero is bad framing
        ],
        ids=["above_range", "zero", "bool", "no_version", "a_message", "a_list", "garbage", "bad_framing"],
    )
    def test_invalid_answer_closes_the_connection(self, answer: bytes) -> None:
        """An answer that is not a welcome to a version this node speaks
        (or a refusal), or is not a netstring, closes the connection with a
        warning."""
        unframed = answer.startswith(b"!")
        framed = answer[1:] if unframed else _netstring(answer)
        if not unframed:
            with self.assertRaises(MalformedMessage):
                decode_answer(answer, SUPPORTED_VERSIONS)
        sender = Sender()
        transport = StringTransport()
        with capturedLogs() as events:
            sender.protocol.makeConnection(transport)
            sender.protocol.dataReceived(framed)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(sender.protocol.version, MIN_PROTOCOL_VERSION)
        self.assertIn("invalid answer to the hello", " ".join(_messages(events, LogLevel.warn)))

    def test_refusal_closes_the_connection(self) -> None:
        """A refused sender closes its end too, even if the receiver does not."""
        sender = Sender()
        transport = StringTransport()
        sender.protocol.makeConnection(transport)
        sender.protocol.dataReceived(_netstring(b'{"type":"refused","versions":[7,8],"reason":"too old"}'))
        self.assertTrue(transport.disconnecting)

    def test_second_answer_closes_the_connection(self) -> None:
        """A receiver answers once; a second answer is a protocol error."""
        sender = Sender()
        transport = StringTransport()
        sender.protocol.makeConnection(transport)
        sender.protocol.dataReceived(_netstring(encode_welcome(2)))
        self.assertFalse(transport.disconnecting)
        self.assertEqual(sender.link.version, 2)
        sender.protocol.dataReceived(_netstring(encode_welcome(2)))
        self.assertTrue(transport.disconnecting)

    def test_oversized_answer_is_refused_from_its_length(self) -> None:
        """An answer longer than a hello could be closes the connection
        before it is buffered."""
        sender = Sender()
        transport = StringTransport()
        sender.protocol.makeConnection(transport)
        with capturedLogs() as events:
            sender.protocol.dataReceived(b"100000000:" + b"x" * 100)
        self.assertTrue(transport.disconnecting)
        self.assertIn("invalid netstring framing or length over the limit",
                      " ".join(_messages(events, LogLevel.warn)))

    def test_version_before_the_answer_is_the_lowest(self) -> None:
        """Until answered (and forever, toward release 1), a link speaks the
        lowest version of its range, which every receiver accepting its
        hello understands."""
        sender = Sender(NEXT_RELEASE)
        self.assertIsNone(sender.link.version)
        sender.protocol.makeConnection(StringTransport())
        self.assertEqual(sender.link.version, NEXT_RELEASE.lowest)


_json_leaf = st.none() | st.booleans() | st.integers(-2, 70000) | st.sampled_from(
    [0, 1, 2, 3, 65535, 65536, 2**63, "hello", "welcome", "refused", "c1", "vote", "x" * 70]) | st.text(max_size=4)
_json = st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=3), max_leaves=6)
# Each field either plausible (so that the checks after it are reached) or
# any JSON value.
_envelopes = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["hello", "welcome", "refused", "vote", "hint", ""]) | _json,
        "version": st.integers(0, 3) | _json,
        "versions": st.lists(st.integers(0, 3), max_size=3) | _json,
        "cluster": st.just(CLUSTER) | _json,
        "from": st.sampled_from([SENDER, RECEIVER, 2]) | _json,
        "to": st.sampled_from([SENDER, RECEIVER, 2]) | _json,
        "optional": st.just(True) | _json,
        "reason": _json,
        "term": st.integers(0, 3) | _json,
    },
)


class HandshakePropertyTests(SynchronousTestCase):
    """Whatever JSON object arrives, the handshake and envelope decoders fail only as documented."""

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_envelopes)
    def test_decoders_raise_only_their_documented_errors(self, document: dict[str, Any]) -> None:
        """read_hello, decode_answer and decode_message return a valid result
        or raise MalformedMessage (or PeerRefusal for a refusal); and the two
        protocol ends never let an exception escape."""
        payload = json.dumps(document).encode()
        try:
            hello = read_hello(payload, RECEIVER_MEMBERSHIP)
        except MalformedMessage:
            pass
        else:
            self.assertIn(hello.sender, RECEIVER_MEMBERSHIP.peer_ids)
            self.assertTrue(1 <= hello.versions.lowest <= hello.versions.highest <= 65535)
        try:
            version = decode_answer(payload, SUPPORTED_VERSIONS)
        except (MalformedMessage, PeerRefusal):
            pass
        else:
            self.assertTrue(MIN_PROTOCOL_VERSION <= version <= MAX_PROTOCOL_VERSION)
        try:
            message = decode_message(payload, SENDER, RECEIVER_MEMBERSHIP)
        except MalformedMessage:
            pass
        else:
            self.assertEqual((message.sender, message.receiver), (SENDER, RECEIVER))
        server = PeerServerProtocol(RECEIVER_MEMBERSHIP, lambda m: None)
        server.makeConnection(StringTransport())
        server.dataReceived(_netstring(encode_hello(SENDER, CLUSTER)) + _netstring(payload))
        sender = Sender()
        sender.protocol.makeConnection(StringTransport())
        sender.protocol.dataReceived(_netstring(payload))


class DocumentationTests(SynchronousTestCase):
    """docs/protocol.md states the peer protocol's numbers as the code has them."""

    def setUp(self) -> None:
        from pathlib import Path

        text = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
        self.peer_part = text[text.index("## Peer protocol"):]

    def test_limits_match_the_code(self) -> None:
        """Every limit the document gives is the one the code enforces."""
        from kvstore.protocols.peer_links import MAX_BUFFERED_WHILE_PAUSED
        from kvstore.protocols.peer import (
            APPEND_HEADER_BYTES,
            ENTRY_OVERHEAD_BYTES,
            MAX_ENTRIES_BYTES,
            MAX_HELLO_BYTES,
            MAX_MESSAGE_BYTES,
            MAX_TYPE_NAME_LENGTH,
            MAX_VERSION_NUMBER,
        )

        for phrase in [
            f"{MAX_HELLO_BYTES} bytes (4 KiB)",
            f"{MAX_MESSAGE_BYTES:,} bytes (16 MiB)",
            f"{MAX_ENTRIES_BYTES:,} bytes: 16 MiB minus the largest possible header ({APPEND_HEADER_BYTES} bytes)",
            f"{ENTRY_OVERHEAD_BYTES} bytes of overhead",
            f"8 MiB ({MAX_BUFFERED_WHILE_PAUSED:,} bytes)",
            f"1 to {MAX_VERSION_NUMBER}",
            f"1 to {MAX_TYPE_NAME_LENGTH} characters",
            f"{MAX_LOGGED_SKIPPED_TYPES} types per connection",
        ]:
            self.assertIn(phrase, self.peer_part)

    def test_examples_and_tables_match_the_code(self) -> None:
        """The example hello and welcome are what the code writes, every
        message type has a row, and every supported version is described."""
        self.assertIn(encode_hello(1, "3f2a9c0d1e4b5a67").decode(), self.peer_part)
        self.assertIn(encode_welcome(MAX_PROTOCOL_VERSION).decode(), self.peer_part)
        for name in WIRE_TYPES:
            self.assertIn(f"| `{name}` |", self.peer_part)
        for version in range(MIN_PROTOCOL_VERSION, MAX_PROTOCOL_VERSION + 1):
            self.assertRegex(self.peer_part, rf"\n\| {version} \| ")
        self.assertIn(f"versions {MIN_PROTOCOL_VERSION} to {MAX_PROTOCOL_VERSION}", self.peer_part)
