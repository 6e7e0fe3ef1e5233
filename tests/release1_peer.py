# The peer protocol of release 1, kept verbatim from kvstore/protocols/peer.py
# at commit ba2740b (only its test-case-name line is replaced by this
# comment), so that the tests can run a node of this release against a
# receiver of the previous one: a rolling upgrade mixes the two.  Do not edit
# it to follow later changes; it stands for code already deployed.  It shares
# the message schema (kvstore.raft.messages) with the current code, whose
# version 1 messages are unchanged.
"""
The peer wire format: one JSON object per netstring.

Every peer connection is one-way.  A node opens one outbound connection to
each other member and sends its messages on it; it receives the others'
messages on the connections they opened to it.  The first netstring on a
connection is a hello naming the sender's node id and cluster id; the
receiver checks both against its configured membership before accepting
anything else, so a node of another cluster (or a stray client typing
digits) is refused and logged, never mixed in.

Decoding is pure (L{decode_message}, L{decode_hello}) and raises
L{MalformedMessage} for anything wrong; the Twisted protocol classes are thin
shells that log the fault and drop the connection, never the node.
L{NetstringReceiver} refuses an announced length above C{MAX_LENGTH} before
buffering any of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Callable

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import NetstringReceiver

from kvstore.raft.messages import AppendEntries, MalformedMessage, Message, from_dict, to_dict

PROTOCOL_VERSION = 1

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
    the other members."""

    node_id: int
    cluster_id: str
    peer_ids: frozenset[int]


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
        text = _encoder.encode(
            [[index, term, payload.decode("utf-8")] for index, term, payload in entries]
        ).encode("utf-8")
        if len(self._cache) >= self._size:
            del self._cache[next(iter(self._cache))]
        self._cache[key] = (first, last, text)
        return text


_entries_encoder = _EntriesEncoder()


def encode_message(message: Message) -> bytes:
    """The netstring payload for C{message}."""
    body = message.body
    if isinstance(body, AppendEntries) and body.entries:
        head = to_dict(Message(message.sender, message.receiver, replace(body, entries=())))
        del head["entries"]
        # Splice the shared entries text into the object's JSON.
        return _encoder.encode(head).encode("utf-8")[:-1] + b',"entries":' + _entries_encoder.encode(body.entries) + b"}"
    return _encoder.encode(to_dict(message)).encode("utf-8")


def encode_hello(node_id: int, cluster_id: str) -> bytes:
    """The first payload on every outbound peer connection."""
    return _encoder.encode(
        {"type": "hello", "version": PROTOCOL_VERSION, "cluster": cluster_id, "from": node_id}
    ).encode("utf-8")


def _load(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, ValueError) as e:
        raise MalformedMessage(f"invalid JSON: {e}") from None
    except RecursionError:
        raise MalformedMessage("JSON nested too deeply") from None


def decode_hello(payload: bytes, membership: Membership) -> int:
    """
    Check a hello and return the sender's node id.

    @raises MalformedMessage: if it is not a hello, or the sender is not a
        member of this cluster.
    """
    hello = _load(payload)
    if not isinstance(hello, dict) or hello.get("type") != "hello":
        raise MalformedMessage("the first message must be a hello")
    if hello.get("version") != PROTOCOL_VERSION:
        raise MalformedMessage(f"unsupported peer protocol version {hello.get('version')!r}")
    if hello.get("cluster") != membership.cluster_id:
        raise MalformedMessage(
            f"cluster id {hello.get('cluster')!r} is not this cluster's ({membership.cluster_id!r})"
        )
    sender = hello.get("from")
    if type(sender) is not int or sender not in membership.peer_ids:
        raise MalformedMessage(f"node {sender!r} is not a member of this cluster")
    return sender


def decode_message(payload: bytes, sender: int, membership: Membership) -> Message:
    """
    Decode one Raft message from the connection opened by C{sender}.

    @raises MalformedMessage: if the payload is not a valid message, or its
        addressing does not match the connection.
    """
    message = from_dict(_load(payload))
    if message.sender != sender:
        raise MalformedMessage(f"message claims to be from node {message.sender} on node {sender}'s connection")
    if message.receiver != membership.node_id:
        raise MalformedMessage(f"message addressed to node {message.receiver}, this is node {membership.node_id}")
    return message


class PeerServerProtocol(NetstringReceiver):
    """
    Receives one member's messages and hands them to the node.

    Until a valid hello arrives, the connection is anybody's, so a netstring
    may be only L{MAX_HELLO_BYTES} long: an unauthenticated connection cannot
    make the node buffer megabytes.  After the hello the limit rises to
    L{MAX_MESSAGE_BYTES}.
    """

    MAX_LENGTH = MAX_HELLO_BYTES
    log = Logger()

    def __init__(self, membership: Membership, deliver: Callable[[Message], None]) -> None:
        self._membership = membership
        self._deliver = deliver
        self._sender: int | None = None
        self._logged_rejection = False

    def stringReceived(self, payload: bytes) -> None:
        if self.brokenPeer:
            return  # rejected earlier in this chunk of data
        try:
            if self._sender is None:
                self._sender = decode_hello(payload, self._membership)
                self.MAX_LENGTH = MAX_MESSAGE_BYTES
                self.log.info(
                    "peer node {peer} connected from {address}", peer=self._sender, address=self._peer_address()
                )
                return
            message = decode_message(payload, self._sender, self._membership)
        except MalformedMessage as e:
            self._reject(str(e))
            return
        self._deliver(message)

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
        super().dataReceived(data)
        if self.brokenPeer and not self._logged_rejection:
            # NetstringReceiver found bad framing or an over-long length
            # prefix (refused before buffering) and closed the connection.
            self._log_rejection("invalid netstring framing or length over the limit")


class PeerServerFactory(Factory):
    """Builds L{PeerServerProtocol}s (used by the first-byte dispatcher)."""

    noisy = False

    def __init__(self, membership: Membership, deliver: Callable[[Message], None]) -> None:
        self.membership = membership
        self.deliver = deliver

    def buildProtocol(self, addr: IAddress) -> PeerServerProtocol:
        return PeerServerProtocol(self.membership, self.deliver)
