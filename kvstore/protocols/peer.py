# -*- test-case-name: tests.test_protocols_peer -*-
"""
The peer wire format: one JSON object per netstring, or, for the snapshot
transfer's messages, one binary frame per netstring (docs/protocol.md,
"Peer protocol", is the full specification).

Every peer connection carries Raft messages one way.  A node opens one
outbound connection to each other member and sends its messages on it; it
receives the others' messages on the connections they opened to it.  The
first netstring on a connection is a hello naming the sender's node id,
cluster id and the range of protocol versions it speaks; the receiver checks
the cluster and membership before accepting anything else, so a node of
another cluster (or a stray client typing digits) is refused and logged,
never mixed in.  It then answers with the highest version both speak (a
welcome) or, when they have none in common, with a refusal, and closes.

Versioning lets a cluster be upgraded one node at a time.  A version never
redefines a message: new versions add message types.  A type is either
I{required} (a receiver must understand it; the sender uses it only once the
negotiated version includes it) or I{optional}: its envelope carries
C{"optional": true}, and a receiver that does not know the type logs it and
skips it, keeping the connection.  So the receiver needs no knowledge of a
type to know whether it may skip it.  The hello of a node of release 1
(version 1 only, no range, no answer expected) is still understood, and
this node's hello is still accepted by such a node.

Decoding is pure (L{read_hello}, L{negotiate}, L{decode_message},
L{decode_answer}) and raises L{MalformedMessage} for anything wrong; the
Twisted protocol classes are thin shells that log the fault and drop the
connection, never the node.  L{NetstringReceiver} refuses an announced
length above C{MAX_LENGTH} before buffering any of it.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, NoReturn

from twisted.internet.interfaces import IAddress, ITCPTransport
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import NetstringReceiver

from kvstore.node.forwarding_messages import (
    FORWARDING_SINCE,
    FORWARDING_TYPES,
    ForwardRequest,
    ForwardResponse,
    forwarding_from_dict,
    forwarding_to_dict,
)
from kvstore.raft.messages import (
    MAX_FIELD_VALUE,
    MESSAGE_TYPES,
    AppendEntries,
    AppendEntriesResponse,
    EntryTuple,
    MalformedMessage,
    Message,
    SnapshotChunk,
    SnapshotChunkResponse,
    TimeoutNow,
    check_snapshot_chunk,
    check_snapshot_chunk_response,
    entries_from_json,
    entries_to_json,
    from_dict,
    to_dict,
)

#: The lowest peer protocol version this node speaks.  Version 1 is the
#: format of release 1: a hello without a version range, no answer to it,
#: and every unknown message type closes the connection.
MIN_PROTOCOL_VERSION = 1

#: The highest peer protocol version this node speaks.  Version 2 adds the
#: version range in the hello, the receiver's answer (welcome or refusal),
#: and the skipping of unknown optional message types.  Version 3 adds the
#: binary frames of the snapshot transfer (L{SNAPSHOT_TRANSFER_SINCE}).
#: Version 4 adds write forwarding's two messages (L{FORWARDING_SINCE}).
MAX_PROTOCOL_VERSION = 4

#: The version that introduced the snapshot transfer's two message types,
#: carried in binary frames (see L{encode_message}).
SNAPSHOT_TRANSFER_SINCE = 3

#: The first version whose receivers skip an optional message type they do
#: not know.  A sender may send an optional type to any receiver with which
#: it negotiated this version or a later one (see L{may_send}).
OPTIONAL_TYPES_SKIPPED_SINCE = 2

#: The largest version number a hello or an answer may carry.
MAX_VERSION_NUMBER = 65535

#: The longest type name an optional message of an unknown type may have.
MAX_TYPE_NAME_LENGTH = 64

#: The longest message a receiver accepts (the netstring payload limit).  A
#: sender must never exceed it: the receiver drops the connection, and a
#: leader that resends the same message loses every connection it needs.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# A hello is a small JSON object; nothing longer is read before one.
MAX_HELLO_BYTES = 4096

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)

# Message sizes.  The encoder writes non-ASCII characters as their UTF-8
# bytes (ensure_ascii=False), so a payload byte costs one byte on the wire,
# except those JSON must escape: '"' and '\\' and the five control
# characters with a short escape (\b \f \n \r \t) take two bytes, every
# other control character below 0x20 takes six (\u00XX).  DEL and the C1
# controls are not escaped.
_SHORT_ESCAPES = b"\b\f\n\r\t"
_CONTROLS = bytes(range(0x20))
_ESCAPED = _CONTROLS + b'"\\'
_LARGEST_FIELD = 2**63 - 1  # see kvstore.raft.messages.MAX_FIELD_VALUE

#: The bytes of one entry in an AppendEntries besides its escaped payload,
#: with index and term at their largest: C{[index,term,""]} and a comma.
ENTRY_OVERHEAD_BYTES = len(_encoder.encode([_LARGEST_FIELD, _LARGEST_FIELD, ""])) + 1

#: The largest AppendEntries with no entries: every integer field at its
#: largest.
APPEND_HEADER_BYTES = len(
    _encoder.encode(
        to_dict(
            Message(
                _LARGEST_FIELD,
                _LARGEST_FIELD,
                AppendEntries(_LARGEST_FIELD, _LARGEST_FIELD, _LARGEST_FIELD, (), _LARGEST_FIELD, _LARGEST_FIELD),
            )
        )
    )
)

#: The hard limit on the encoded entries of one AppendEntries (measured by
#: L{encoded_entry_bytes}): what is left of a message after the header.
MAX_ENTRIES_BYTES = MAX_MESSAGE_BYTES - APPEND_HEADER_BYTES

#: How many wire bytes one byte of a key or value the client protocol
#: accepts can take at most: it refuses every control character but TAB, and
#: TAB, '"' and '\\' escape to two bytes.
CLIENT_TEXT_EXPANSION = 2


def encoded_entry_bytes(payload: bytes) -> int:
    """
    The most bytes an entry with C{payload} takes in an AppendEntries, the
    separating comma included: exact for the payload, with index and term
    counted at their largest.  The Raft core counts entries with this so
    that no message it builds exceeds L{MAX_MESSAGE_BYTES}.  One pass in C
    over a payload with nothing to escape (no encoding), three otherwise.
    """
    size = len(payload) + ENTRY_OVERHEAD_BYTES
    escaped = len(payload) - len(payload.translate(None, _ESCAPED))
    if escaped:  # one pass above; the common payload needs no more
        controls = len(payload) - len(payload.translate(None, _CONTROLS))
        short = len(payload) - len(payload.translate(None, _SHORT_ESCAPES)) if controls else 0
        # Each escaped byte takes at least one more byte (a backslash); the
        # controls without a short escape take four more (\u00XX).
        size += escaped + 4 * (controls - short)
    return size


def largest_put_entry_bytes(max_key_bytes: int, max_value_bytes: int) -> int:
    """
    The most wire bytes (as L{encoded_entry_bytes} counts them) that the
    entry of a PUT can take when its key and value are within these limits
    and pass the client protocol's checks: the command is C{P key SP value}
    (see L{kvstore.statemachine.encode_put}).
    """
    return ENTRY_OVERHEAD_BYTES + 2 + CLIENT_TEXT_EXPANSION * (max_key_bytes + max_value_bytes)


@dataclass(frozen=True)
class Membership:
    """Who may talk to this node: its own id, the cluster id, and the ids of
    the other members.

    With C{removed} set (the ids a committed configuration removed), any
    other id of this cluster is accepted too: a member whose configuration
    is out of date must still hear a leader it does not know yet (ids are
    never reused, and the Raft core ignores votes from non-members, so
    accepting the connection changes no safety property).  With C{removed}
    L{None}, only C{peer_ids} are accepted.
    """

    node_id: int
    cluster_id: str
    peer_ids: frozenset[int]
    removed: frozenset[int] | None = None

    def accepts(self, sender: int) -> bool:
        """Whether a hello from node C{sender} is accepted."""
        if sender in self.peer_ids:
            return True
        return self.removed is not None and sender != self.node_id and sender >= 0 and sender not in self.removed


class VersionRange(NamedTuple):
    """The protocol versions a node speaks, both ends included."""

    lowest: int
    highest: int

    def __str__(self) -> str:
        if self.lowest == self.highest:
            return f"version {self.lowest}"
        return f"versions {self.lowest} to {self.highest}"


#: The versions this release speaks.
SUPPORTED_VERSIONS = VersionRange(MIN_PROTOCOL_VERSION, MAX_PROTOCOL_VERSION)


@dataclass(frozen=True)
class WireType:
    """
    A message type as versioning sees it: its C{type} name, the protocol
    version that introduced it, and whether a receiver that does not know
    it may skip it (C{optional}) or must refuse the connection.
    """

    name: str
    since: int
    optional: bool = False


#: The message types of this release: the Raft messages of version 1, and
#: the snapshot transfer's two binary frames of version 3, all required (a
#: receiver that cannot decode a binary frame cannot skip it either).
WIRE_TYPES: dict[str, WireType] = {name: WireType(name, since=1) for name in sorted(MESSAGE_TYPES)}
WIRE_TYPES["snapshot_chunk"] = WireType("snapshot_chunk", since=SNAPSHOT_TRANSFER_SINCE)
WIRE_TYPES["snapshot_chunk_resp"] = WireType("snapshot_chunk_resp", since=SNAPSHOT_TRANSFER_SINCE)
#: The leadership transfer's TimeoutNow (issue 13): version 3, and optional,
#: so a receiver that does not know it (a release before issue 13) skips it
#: and the transfer merely times out, the old leader leading on.
WIRE_TYPES["timeout_now"] = WireType("timeout_now", since=3, optional=True)

#: The JSON message types this release accepts from a peer: the Raft
#: core's, and TimeoutNow.
PEER_MESSAGE_TYPES: frozenset[str] = MESSAGE_TYPES | {"timeout_now"}

#: Write forwarding's request and response (L{kvstore.node.forwarding_messages}),
#: required types of version 4.
WIRE_TYPES.update({name: WireType(name, since=FORWARDING_SINCE) for name in sorted(FORWARDING_TYPES)})

#: The wire types of the bodies that not every version may carry, by body
#: class; every other body is a version 1 type.  Senders check these with
#: L{may_send} (see L{wire_type_of}).
_LATER_BODIES: dict[type, WireType] = {
    SnapshotChunk: WIRE_TYPES["snapshot_chunk"],
    SnapshotChunkResponse: WIRE_TYPES["snapshot_chunk_resp"],
    TimeoutNow: WIRE_TYPES["timeout_now"],
    ForwardRequest: WIRE_TYPES["forward"],
    ForwardResponse: WIRE_TYPES["forward_resp"],
}


def wire_type_of(message: Message) -> WireType | None:
    """The wire type of C{message} if it is one that only later versions
    carry (a sender must check L{may_send}), else C{None}: a version 1
    type, which every receiver understands."""
    return _LATER_BODIES.get(type(message.body))


def may_send(wire_type: WireType, version: int) -> bool:
    """
    Whether a message of C{wire_type} may go to a receiver with which
    C{version} was negotiated: a type the version includes always; an
    optional type also to any receiver that skips the optional types it does
    not know; a required type of a later version never.
    """
    if version >= wire_type.since:
        return True
    return wire_type.optional and version >= OPTIONAL_TYPES_SKIPPED_SINCE


class NoCommonVersion(MalformedMessage):
    """The two ends speak no protocol version in common: the connection is
    refused, but neither end is broken (one of them needs upgrading)."""


class UnknownOptionalType(MalformedMessage):
    """
    A message of a type this node does not know, which its sender marked
    optional: the receiver skips it and keeps the connection.  It is a
    L{MalformedMessage} so that a caller that knows nothing of skipping
    refuses it, as before.
    """

    def __init__(self, type_name: str) -> None:
        super().__init__(f"unknown optional message type {type_name!r}")
        self.type_name = type_name


class PeerRefusal(Exception):
    """The receiver refused this node's hello; the text is its reason."""


@dataclass(frozen=True)
class Hello:
    """
    A checked hello: the sender's node id, the versions it speaks, and
    whether it reads an answer (release 1 nodes send no range and read
    nothing, so they get none).
    """

    sender: int
    versions: VersionRange
    expects_answer: bool
    #: The sender's advertised peer address (optional; newer releases send
    #: it so that a receiver that does not know the sender can link back).
    address: str | None = None


def _version_number(value: object, what: str) -> int:
    # bool is a subclass of int; true is not a version.
    if type(value) is not int or not 1 <= value <= MAX_VERSION_NUMBER:
        raise MalformedMessage(f"{what} must be an integer from 1 to {MAX_VERSION_NUMBER}, got {_short(value)}")
    return value


def _printable(text: str) -> str:
    """C{text} with every character that is not printable (controls, lone
    surrogates) replaced by C{?}: the peer chose it, and it is logged as is."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _short(value: object) -> str:
    """C{value} for a log line, cut short: the peer chose it."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _EntriesEncoder:
    """
    Encode each batch of entries once, however many followers it goes to.

    A leader sends the same new entries to every follower.  The Raft core
    hands out slices of its own log list, so the slices for different
    followers hold the very same entry objects: the JSON text of a batch is
    remembered for the last few batches, keyed by the identity of its first
    and last entry objects and its length.  Equal keys mean the same run of
    the same list (a truncation would have replaced the last object), and
    holding the objects in the cache keeps their identities from being
    reused.
    """

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._cache: dict[tuple[int, int, int], tuple[object, object, bytes]] = {}

    def encode(self, entries: tuple[tuple[int, int, bytes], ...]) -> bytes:
        if not entries:
            return b"[]"
        first, last = entries[0], entries[-1]
        key = (id(first), id(last), len(entries))
        cached = self._cache.get(key)
        if cached is not None and cached[0] is first and cached[1] is last:
            return cached[2]
        text = _encoder.encode(entries_to_json(entries)).encode("utf-8")
        if len(self._cache) >= self._size:
            del self._cache[next(iter(self._cache))]
        self._cache[key] = (first, last, text)
        return text


_entries_encoder = _EntriesEncoder()


# The two messages on every write's path, as templates producing exactly
# the bytes _encoder gives for to_dict's dictionaries (same keys, same
# order, same separators), without building a dictionary or running the
# JSON encoder: every field is an int or a bool.
_APPEND_HEAD = b'{"type":"append","from":%d,"to":%d,"term":%d,"prev_index":%d,"prev_term":%d,"commit":%d,"round":%d,"entries":'
_APPEND_RESPONSE = (
    b'{"type":"append_resp","from":%d,"to":%d,"term":%d,"success":%s,"index":%d,'
    b'"conflict_index":%d,"conflict_term":%d,"round":%d}'
)


# Decoding them: the templates above as patterns.  A payload that matches
# one is decoded without building a dictionary; any other payload (other
# spacing or key order, escapes in a number's place, a value out of range,
# anything wrong at all) goes to the generic decoder, which accepts or
# rejects it as before.  An integer is JSON's canonical form of a
# non-negative number of at most 19 digits (checked below 2**63 after).
_INT = rb"(0|[1-9][0-9]{0,18})"
_APPEND_HEAD_PATTERN = re.compile(
    rb'\{"type":"append","from":%s,"to":%s,"term":%s,"prev_index":%s,"prev_term":%s,"commit":%s,"round":%s,'
    rb'"entries":' % ((_INT,) * 7)
)
_APPEND_RESPONSE_PATTERN = re.compile(
    rb'\{"type":"append_resp","from":%s,"to":%s,"term":%s,"success":(true|false),"index":%s,'
    rb'"conflict_index":%s,"conflict_term":%s,"round":%s\}' % ((_INT,) * 3 + (_INT,) * 4)
)
# Decodes the entries' text, as json.loads does (same scanner, same
# options), but without skipping whitespace: a JSON value, and only that.
_entries_decoder = json.JSONDecoder()


def _decode_fast(payload: bytes) -> Message | None:
    """
    The AppendEntries or response in C{payload} if it is exactly in the
    form this release's encoder writes (L{_APPEND_HEAD},
    L{_APPEND_RESPONSE}) and valid, else C{None}: the caller then decodes
    it with L{decode_message_generic}, whose answer this always equals
    (C{tests/test_protocols_peer_fast_decoding.py} checks it).  Several
    times faster than parsing JSON into a dictionary and validating that,
    on the path of every write.
    """
    if payload[2:8] == b"type\":":
        match = _APPEND_HEAD_PATTERN.match(payload)
        if match is not None:
            return _decode_fast_append(payload, match)
        match = _APPEND_RESPONSE_PATTERN.fullmatch(payload)
        if match is not None:
            sender, receiver, term, success, index, conflict_index, conflict_term, round_ = match.groups()
            fields = (int(sender), int(receiver), int(term), int(index), int(conflict_index),
                      int(conflict_term), int(round_))
            if max(fields) >= MAX_FIELD_VALUE:
                return None
            return Message(
                fields[0], fields[1],
                AppendEntriesResponse(fields[2], success == b"true", fields[3], fields[4], fields[5], fields[6]),
            )
    return None


def _decode_fast_append(payload: bytes, head: re.Match[bytes]) -> Message | None:
    """The rest of L{_decode_fast} for an AppendEntries whose head matched."""
    fields = tuple(map(int, head.groups()))
    if max(fields) >= MAX_FIELD_VALUE or payload[-1:] != b"}":
        return None
    sender, receiver, term, prev_index, prev_term, commit, round_ = fields
    text = payload[head.end() : -1]
    if text == b"[]":
        entries: tuple[EntryTuple, ...] = ()
    else:
        try:
            # As json.loads decodes bytes it has detected as UTF-8.
            chars = text.decode("utf-8", "surrogatepass")
            raw, end = _entries_decoder.raw_decode(chars)
        except (ValueError, RecursionError):
            return None
        if end != len(chars):
            return None
        try:
            entries = entries_from_json(raw, prev_index, prev_term, term)
        except MalformedMessage:
            return None
    return Message(sender, receiver, AppendEntries(term, prev_index, prev_term, entries, commit, round_))


# The binary frames (version 3).  A JSON message as any kvstore writes it
# starts with "{"; a binary frame starts with a NUL byte, then a byte naming
# its kind, then fixed big-endian fields.  A chunk's data follows its header
# raw: not escaped, not base64, so a 1 MiB chunk costs 1 MiB plus 58 bytes.
BINARY_FRAME_MARKER = 0x00
_CHUNK_KIND = 1
_CHUNK_RESPONSE_KIND = 2
#: marker, kind, from, to, term, index, snapshot_term, size, offset; data.
_CHUNK_HEADER = struct.Struct(">BBQQQQQQQ")
#: marker, kind, from, to, term, index, offset, flags.
_CHUNK_RESPONSE = struct.Struct(">BBQQQQQB")
_ACCEPTED, _DONE = 1, 2

#: The bytes a snapshot chunk's frame adds to its data.
SNAPSHOT_CHUNK_HEADER_BYTES = _CHUNK_HEADER.size


def _encode_binary(message: Message) -> bytes | None:
    """The binary frame for a snapshot transfer message, or C{None} for any
    other message."""
    body = message.body
    if type(body) is SnapshotChunk:
        return (
            _CHUNK_HEADER.pack(
                BINARY_FRAME_MARKER, _CHUNK_KIND, message.sender, message.receiver, body.term, body.index,
                body.snapshot_term, body.size, body.offset,
            )
            + body.data
        )
    if type(body) is SnapshotChunkResponse:
        flags = (_ACCEPTED if body.accepted else 0) | (_DONE if body.done else 0)
        return _CHUNK_RESPONSE.pack(
            BINARY_FRAME_MARKER, _CHUNK_RESPONSE_KIND, message.sender, message.receiver, body.term, body.index,
            body.offset, flags,
        )
    return None


def decode_binary(payload: bytes) -> Message:
    """
    Decode a binary frame (a payload starting with the NUL marker) into a
    checked L{Message}.  The chunk's data is the one copy made of the
    payload; nothing here is proportional to anything but its length.

    @raises MalformedMessage: if the frame is of an unknown kind, has the
        wrong length, or its fields fail the body's checks
        (L{check_snapshot_chunk}, L{check_snapshot_chunk_response}).
    """
    if len(payload) < 2 or payload[0] != BINARY_FRAME_MARKER:
        raise MalformedMessage("not a binary frame")
    kind = payload[1]
    try:
        if kind == _CHUNK_KIND:
            _, _, sender, receiver, term, index, snapshot_term, size, offset = _CHUNK_HEADER.unpack_from(payload)
            body = check_snapshot_chunk(
                SnapshotChunk(term, index, snapshot_term, size, offset, payload[_CHUNK_HEADER.size :])
            )
            return Message(sender, receiver, body)
        if kind == _CHUNK_RESPONSE_KIND:
            if len(payload) != _CHUNK_RESPONSE.size:
                raise MalformedMessage(
                    f"a snapshot chunk response frame is {_CHUNK_RESPONSE.size} bytes, got {len(payload)}"
                )
            _, _, sender, receiver, term, index, offset, flags = _CHUNK_RESPONSE.unpack(payload)
            if flags & ~(_ACCEPTED | _DONE):
                raise MalformedMessage(f"unknown flags {flags:#x} in a snapshot chunk response")
            response = check_snapshot_chunk_response(
                SnapshotChunkResponse(term, index, offset, bool(flags & _ACCEPTED), bool(flags & _DONE))
            )
            return Message(sender, receiver, response)
    except struct.error:
        raise MalformedMessage(f"binary frame of kind {kind} is too short ({len(payload)} bytes)") from None
    raise MalformedMessage(f"unknown binary frame kind {kind}")


def encode_message(message: Message) -> bytes:
    """The netstring payload for C{message}: JSON text, or a binary frame
    for the snapshot transfer's messages (send those only where
    L{may_send} allows their L{wire_type_of})."""
    body = message.body
    if type(body) is AppendEntries:
        # The entries' text is shared by every follower the batch goes to.
        return (
            _APPEND_HEAD
            % (message.sender, message.receiver, body.term, body.prev_log_index, body.prev_log_term,
               body.leader_commit, body.round)
            + _entries_encoder.encode(body.entries)
            + b"}"
        )
    if type(body) is AppendEntriesResponse:
        return _APPEND_RESPONSE % (
            message.sender, message.receiver, body.term, b"true" if body.success else b"false", body.index,
            body.conflict_index, body.conflict_term, body.round,
        )
    binary = _encode_binary(message)
    if binary is not None:
        return binary
    if type(body) is TimeoutNow:
        # Optional (see WIRE_TYPES): a receiver that does not know it skips it.
        return _encoder.encode({**to_dict(message), "optional": True}).encode("utf-8")
    if type(body) is ForwardRequest or type(body) is ForwardResponse:
        return _encoder.encode(forwarding_to_dict(message)).encode("utf-8")
    return _encoder.encode(to_dict(message)).encode("utf-8")


def encode_hello(
    node_id: int, cluster_id: str, versions: VersionRange = SUPPORTED_VERSIONS, address: str | None = None
) -> bytes:
    """
    The first payload on every outbound peer connection.  C{version} is the
    lowest version of the range: what the sender speaks until it is
    answered, and what a release 1 receiver checks (it requires 1).
    C{address}, the sender's advertised C{host:port}, is an optional field
    (older receivers ignore fields they do not read): a receiver whose
    configuration does not name the sender yet links back to it there.
    """
    hello: dict[str, Any] = {
        "type": "hello",
        "version": versions.lowest,
        "versions": [versions.lowest, versions.highest],
        "cluster": cluster_id,
        "from": node_id,
    }
    if address is not None:
        hello["address"] = address
    return _encoder.encode(hello).encode("utf-8")


def _load(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, ValueError) as e:
        raise MalformedMessage(f"invalid JSON: {e}") from None
    except RecursionError:
        raise MalformedMessage("JSON nested too deeply") from None


def _hello_versions(hello: dict[str, Any]) -> VersionRange:
    """The version range a hello announces; a hello without one is release
    1's, which speaks exactly version 1."""
    version = _version_number(hello.get("version"), "field 'version'")
    if "versions" not in hello:
        if version != 1:
            raise MalformedMessage(f"a hello without a version range must be version 1, got {version}")
        return VersionRange(1, 1)
    pair = hello["versions"]
    if not isinstance(pair, list) or len(pair) != 2:
        raise MalformedMessage(f"field 'versions' must be [lowest, highest], got {_short(pair)}")
    lowest = _version_number(pair[0], "the lowest version")
    highest = _version_number(pair[1], "the highest version")
    if lowest > highest:
        raise MalformedMessage(f"version range [{lowest}, {highest}] is empty")
    if version != lowest:
        raise MalformedMessage(f"field 'version' ({version}) must be the lowest of 'versions' ({lowest})")
    return VersionRange(lowest, highest)


def read_hello(payload: bytes, membership: Membership) -> Hello:
    """
    Check a hello's shape, cluster id and sender; not yet whether this node
    speaks one of its versions (L{negotiate}).

    @raises MalformedMessage: if it is not a well-formed hello, or the
        sender is not a member of this cluster.
    """
    hello = _load(payload)
    if not isinstance(hello, dict) or hello.get("type") != "hello":
        raise MalformedMessage("the first message must be a hello")
    versions = _hello_versions(hello)
    if hello.get("cluster") != membership.cluster_id:
        raise MalformedMessage(
            f"cluster id {_short(hello.get('cluster'))} is not this cluster's ({membership.cluster_id!r})"
        )
    sender = hello.get("from")
    if type(sender) is not int or not membership.accepts(sender):
        raise MalformedMessage(f"node {_short(sender)} is not a member of this cluster")
    address = hello.get("address")
    if address is not None and (type(address) is not str or len(address) > MAX_HELLO_ADDRESS):
        raise MalformedMessage(f"field 'address' must be a short string, got {_short(address)}")
    return Hello(sender, versions, expects_answer="versions" in hello, address=address)


#: The longest advertised address a hello may carry.
MAX_HELLO_ADDRESS = 300


def negotiate(theirs: VersionRange, ours: VersionRange, sender: object = "?", receiver: object = "?") -> int:
    """
    The highest version both ranges include: C{theirs} of the node
    C{sender}, C{ours} of C{receiver} (the ids only label the error).

    @raises NoCommonVersion: if they have none in common; its text says
        which versions each node speaks, for the operators of both (the
        receiver sends it to the sender).
    """
    highest = min(theirs.highest, ours.highest)
    if highest < max(theirs.lowest, ours.lowest):
        raise NoCommonVersion(
            f"no peer protocol version in common: node {sender} speaks {theirs}, node {receiver} speaks {ours}"
        )
    return highest


def decode_hello(payload: bytes, membership: Membership, versions: VersionRange = SUPPORTED_VERSIONS) -> int:
    """
    Check a hello, and that this node speaks one of its versions, and return
    the sender's node id.

    @raises MalformedMessage: if it is not a hello, the sender is not a
        member of this cluster, or the two have no version in common.
    """
    hello = read_hello(payload, membership)
    negotiate(hello.versions, versions, hello.sender, membership.node_id)
    return hello.sender


def encode_welcome(version: int) -> bytes:
    """The receiver's answer to an accepted hello: the version to use."""
    return _encoder.encode({"type": "welcome", "version": version}).encode("utf-8")


def encode_refusal(versions: VersionRange, reason: str) -> bytes:
    """The receiver's answer to a hello with no version in common, sent
    before it closes the connection, so that both ends can log why."""
    return _encoder.encode(
        {"type": "refused", "versions": [versions.lowest, versions.highest], "reason": reason[:200]}
    ).encode("utf-8")


def decode_answer(payload: bytes, ours: VersionRange) -> int:
    """
    Read the receiver's answer to this node's hello and return the version
    it chose.

    @raises PeerRefusal: if the receiver refused the hello.
    @raises MalformedMessage: if the answer is not a welcome or a refusal,
        or names a version outside C{ours}.
    """
    answer = _load(payload)
    if not isinstance(answer, dict):
        raise MalformedMessage("the answer to a hello must be a JSON object")
    kind = answer.get("type")
    if kind == "refused":
        reason = answer.get("reason")
        raise PeerRefusal(_printable(reason[:200]) if isinstance(reason, str) else "no reason given")
    if kind != "welcome":
        raise MalformedMessage(f"the answer to a hello must be a welcome or a refusal, got type {_short(kind)}")
    version = _version_number(answer.get("version"), "the welcome's version")
    if not ours.lowest <= version <= ours.highest:
        raise MalformedMessage(f"the welcome chose version {version}, but this node speaks {ours}")
    return version


def _unknown_type(raw: dict[str, Any], sender: int, membership: Membership) -> NoReturn:
    """
    Decide about a message whose type this node does not know: skippable
    (L{UnknownOptionalType}) if its sender marked it optional and its
    envelope is sound, malformed otherwise.
    """
    kind = raw.get("type")
    if raw.get("optional") is not True:
        raise MalformedMessage(f"unknown message type {_short(kind)}, not marked optional")
    if not isinstance(kind, str) or not 1 <= len(kind) <= MAX_TYPE_NAME_LENGTH:
        raise MalformedMessage(
            f"an optional message's type must be a name of 1 to {MAX_TYPE_NAME_LENGTH} characters, got {_short(kind)}"
        )
    if raw.get("from") != sender or type(raw.get("from")) is not int:
        raise MalformedMessage(f"message claims to be from node {_short(raw.get('from'))} on node {sender}'s connection")
    if raw.get("to") != membership.node_id or type(raw.get("to")) is not int:
        raise MalformedMessage(f"message addressed to node {_short(raw.get('to'))}, this is node {membership.node_id}")
    raise UnknownOptionalType(kind)


def decode_message(payload: bytes, sender: int, membership: Membership) -> Message:
    """
    Decode one Raft message from the connection opened by C{sender}.

    @raises UnknownOptionalType: if the message is of a type this node does
        not know and its sender marked it optional: skip it.
    @raises MalformedMessage: if the payload is not a valid message, or its
        addressing does not match the connection.
    """
    message = _decode_fast(payload)
    if message is None:
        return decode_message_generic(payload, sender, membership)
    if message.sender != sender:
        raise MalformedMessage(f"message claims to be from node {message.sender} on node {sender}'s connection")
    if message.receiver != membership.node_id:
        raise MalformedMessage(f"message addressed to node {message.receiver}, this is node {membership.node_id}")
    return message


def decode_message_generic(payload: bytes, sender: int, membership: Membership) -> Message:
    """
    L{decode_message} without its fast path: every message type, in any
    form JSON allows, through L{from_dict}.  The reference that the fast
    path must agree with, result for result and error for error.
    """
    if payload[:1] == b"\x00":
        message = decode_binary(payload)
    else:
        raw = _load(payload)
        if isinstance(raw, dict) and isinstance(raw.get("type"), str) and raw["type"] in FORWARDING_TYPES:
            message = forwarding_from_dict(raw)
        else:
            if isinstance(raw, dict):
                kind = raw.get("type")
                if not (isinstance(kind, str) and kind in PEER_MESSAGE_TYPES):
                    _unknown_type(raw, sender, membership)
            message = from_dict(raw)
    if message.sender != sender:
        raise MalformedMessage(f"message claims to be from node {message.sender} on node {sender}'s connection")
    if message.receiver != membership.node_id:
        raise MalformedMessage(f"message addressed to node {message.receiver}, this is node {membership.node_id}")
    return message


# A netstring's length prefix as Twisted's parser accepts it (no leading
# zeros), up to 8 digits (MAX_MESSAGE_BYTES has 8); longer ones, and every
# other case, are left to that parser.
_NETSTRING_HEAD = re.compile(rb"(0|[1-9][0-9]{0,7}):")
_COMMA = ord(",")

#: How a receiver turns a payload into what it delivers (L{decode_message}
#: for this release; a test stands in a later release's decoder).
Decoder = Callable[[bytes, int, Membership], Message]

#: How many distinct unknown optional types one connection logs; later
#: ones are skipped without a log line, so a peer cannot flood the log.
MAX_LOGGED_SKIPPED_TYPES = 16


class PeerServerProtocol(NetstringReceiver):
    """
    Receives one member's messages and hands them to the node.

    Until a valid hello arrives, the connection is anybody's, so a netstring
    may be only L{MAX_HELLO_BYTES} long: an unauthenticated connection cannot
    make the node buffer megabytes.  After the hello the limit rises to
    L{MAX_MESSAGE_BYTES}.

    @ivar version: the protocol version negotiated with the sender, once
        its hello is accepted.
    @ivar skipped: how many messages of unknown optional types were skipped.
    """

    # Set by makeConnection before any callback runs, and always a TCP (or
    # TCP-like) transport: narrows Protocol's Optional[ITransport].
    transport: ITCPTransport

    MAX_LENGTH = MAX_HELLO_BYTES
    log = Logger()

    def __init__(
        self,
        membership: Membership,
        deliver: Callable[[Message], None],
        versions: VersionRange = SUPPORTED_VERSIONS,
        decode: Decoder = decode_message,
    ) -> None:
        self._membership = membership
        self._deliver = deliver
        self._versions = versions
        self._decode = decode
        self._sender: int | None = None
        #: Told the sender's id once its hello is accepted (set by the factory).
        self.on_hello: Callable[[int], object] | None = None
        #: Told the sender's id and advertised address (or None) when an
        #: accepted sender is not among the members (set by the factory).
        self.on_stranger: Callable[[int, str | None], object] | None = None
        self._logged_rejection = False
        self._logged_skipped_types: set[str] = set()
        self.version: int | None = None
        self.skipped = 0

    def stringReceived(self, payload: bytes) -> None:
        if self.brokenPeer:
            return  # rejected earlier in this chunk of data
        try:
            if self._sender is None:
                self._accept_hello(payload)
                return
            message = self._decode(payload, self._sender, self._membership)
        except UnknownOptionalType as e:
            self._skip(e.type_name)
            return
        except MalformedMessage as e:
            self._reject(str(e))
            return
        self._deliver(message)

    def _accept_hello(self, payload: bytes) -> None:
        """Check the hello, agree on a version and answer; or refuse."""
        hello = read_hello(payload, self._membership)
        try:
            version = negotiate(hello.versions, self._versions, hello.sender, self._membership.node_id)
        except NoCommonVersion as e:
            if hello.expects_answer:
                self.sendString(encode_refusal(self._versions, str(e)))
            raise
        self._sender = hello.sender
        self.version = version
        self.MAX_LENGTH = MAX_MESSAGE_BYTES
        if hello.expects_answer:
            self.sendString(encode_welcome(version))
        self.log.info(
            "peer node {peer} connected from {address}, peer protocol version {version}",
            peer=self._sender,
            address=self._peer_address(),
            version=version,
        )
        if self.on_hello is not None:
            self.on_hello(hello.sender)
        if self.on_stranger is not None and hello.sender not in self._membership.peer_ids:
            self.on_stranger(hello.sender, hello.address)

    def _skip(self, type_name: str) -> None:
        self.skipped += 1
        if type_name in self._logged_skipped_types or len(self._logged_skipped_types) >= MAX_LOGGED_SKIPPED_TYPES:
            return
        self._logged_skipped_types.add(type_name)
        self.log.info(
            "ignoring messages of type {type} from peer node {peer}: this node does not know the type and"
            " the sender marked it optional (peer protocol version {version}); later ones are not logged",
            type=_short(type_name),
            peer=self._sender,
            version=self.version,
        )

    def _reject(self, reason: str) -> None:
        self._log_rejection(reason)
        self.transport.loseConnection()
        self.brokenPeer = 1

    def _log_rejection(self, reason: str) -> None:
        self._logged_rejection = True
        self.log.warn(
            "rejected peer connection from {address} (node {peer}): {reason}",
            address=self._peer_address(),
            peer=self._sender,
            reason=reason,
        )

    def _peer_address(self) -> str:
        peer: IAddress | None = self.transport.getPeer() if self.transport else None
        host, port = getattr(peer, "host", "?"), getattr(peer, "port", "?")
        return f"{host}:{port}"

    def dataReceived(self, data: bytes) -> None:
        if self.brokenPeer:
            return  # the connection is closing; ignore what is still arriving
        if self._state == self._PARSING_LENGTH and not self._remainingData:
            data = self._receive_whole_netstrings(data)
            if not data or self.brokenPeer:
                return
        self._data_received_generic(data)

    def _receive_whole_netstrings(self, data: bytes) -> bytes:
        """
        Hand over the well-formed netstrings at the start of C{data} and
        return the rest, from the first one that is incomplete, malformed
        or over the length limit: the generic parser takes it from there,
        in the state it would be in had it parsed those netstrings itself
        (between two netstrings, nothing buffered).  A peer's messages
        usually arrive whole, one or a few per read; Twisted's parser
        spends as much time framing each one (a buffer, a BytesIO, several
        method calls) as decoding it.  Called only between netstrings with
        nothing buffered.
        """
        position, size = 0, len(data)
        match_head = _NETSTRING_HEAD.match
        while position < size:
            head = match_head(data, position)
            if head is None:
                break
            start = head.end()
            end = start + int(head.group(1))
            if end - start > self.MAX_LENGTH or end >= size or data[end] != _COMMA:
                break
            position = end + 1
            try:
                self.stringReceived(data[start:end])
            except BaseException:
                self._remainingData = data[position:]  # where the generic parser would have left it
                raise
            if self.brokenPeer:
                return b""  # the connection is closing; ignore the rest
        return data[position:]

    def _data_received_generic(self, data: bytes) -> None:
        """Twisted's netstring parser, for whatever the fast framing of
        L{dataReceived} leaves (and, in tests, for everything)."""
        if self.brokenPeer:
            return
        super().dataReceived(data)
        if self.brokenPeer and not self._logged_rejection:
            # NetstringReceiver found bad framing or an over-long length
            # prefix (refused before buffering) and closed the connection.
            self._log_rejection("invalid netstring framing or length over the limit")


class PeerServerFactory(Factory):
    """Builds L{PeerServerProtocol}s (used by the first-byte dispatcher)."""

    noisy = False

    def __init__(
        self,
        membership: Membership,
        deliver: Callable[[Message], None],
        versions: VersionRange = SUPPORTED_VERSIONS,
    ) -> None:
        self.membership = membership
        self.deliver = deliver
        self.versions = versions
        #: Told a peer's id each time its hello is accepted (the node's
        #: outbound link to it may then retry at once: L{kvstore.daemon.service}).
        self.on_hello: Callable[[int], object] | None = None
        #: Told a non-member's id and advertised address when its hello is
        #: accepted (L{Membership.removed}): the node may link back to it.
        self.on_stranger: Callable[[int, str | None], object] | None = None

    def buildProtocol(self, addr: IAddress | None) -> PeerServerProtocol:
        protocol = PeerServerProtocol(self.membership, self.deliver, self.versions)
        protocol.on_hello = self.on_hello
        protocol.on_stranger = self.on_stranger
        return protocol
