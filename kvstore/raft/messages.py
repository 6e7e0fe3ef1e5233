# -*- test-case-name: tests.test_raft_messages -*-
"""
The messages Raft peers exchange, as plain immutable data, and their
JSON-compatible dictionary form.

The core (L{kvstore.raft.core}) only ever sees these classes; the peer
protocol (L{kvstore.protocols.peer}) turns them into netstrings of JSON.  The
dictionary form lives here, next to the fields it describes, so that changing
the schema is a change to one file.  L{from_dict} is the single validation
point for everything that arrives from the network: it rejects missing
fields, wrong types and unknown message types with L{MalformedMessage}, and
never trusts a peer to send well-formed data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple, Union

from kvstore.raft.membership import (
    Configuration,
    MalformedConfiguration,
    decode_configuration_entry,
    is_raft_payload,
)


#: How the Raft core stores and hands out log entries: a plain
#: C{(index, term, payload)} tuple.  Plain tuples of plain values are
#: untracked by Python's cyclic garbage collector, so a log of millions of
#: entries adds nothing to collection pauses; a named tuple (a tuple
#: subclass) would stay tracked.  L{Entry} has the same shape, for code that
#: prefers names; the two compare equal.
EntryTuple = tuple[int, int, bytes]


class Entry(NamedTuple):
    """
    One Raft log entry.  An empty C{payload} is the leader's no-op entry that
    starts each term (thesis section 6.4); a payload starting with C{0x00}
    is Raft's own (a configuration entry, L{kvstore.raft.membership}); any
    other payload is a state machine command, opaque to Raft.  It has the same fields as the storage
    layer's C{LogEntry}, so entries pass between the two unconverted.
    """

    index: int  # type: ignore[assignment]  # shadows tuple.index, deliberately
    term: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class RequestVote:
    """
    A candidate asks for a vote.  With C{pre_vote} set this is the Pre-Vote
    round (thesis section 9.6): the receiver answers whether it I{would} vote
    for C{term} but changes no state, so a node rejoining after a partition
    cannot disrupt a healthy leader by inflating terms.  With
    C{leadership_transfer} set the candidate campaigns because the leader
    asked it to (L{TimeoutNow}): receivers that heard from that leader
    recently answer anyway instead of ignoring it (leader stickiness).
    """

    term: int
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    leadership_transfer: bool = False


@dataclass(frozen=True, slots=True)
class RequestVoteResponse:
    """The answer to L{RequestVote}; C{term} is the voter's term (or the
    requested term for a granted pre-vote)."""

    term: int
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """
    Replicate entries after C{prev_log_index}, or just assert leadership (a
    heartbeat) when C{entries} is empty.  C{round} is the leader's broadcast
    counter, echoed by the follower, which lets the leader confirm its
    leadership for a whole batch of ReadIndex requests with one round.
    """

    term: int
    prev_log_index: int
    prev_log_term: int
    entries: tuple[EntryTuple, ...]
    leader_commit: int
    round: int = 0


@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    """
    The follower's answer.  On success C{index} is the last index the
    follower has durably stored in agreement with the leader; on a
    consistency-check failure it is the C{prev_log_index} that failed, which
    lets the leader ignore stale rejections.  On failure,
    C{conflict_index}/C{conflict_term} are the fast back-off hint: the first
    index the follower holds of the conflicting term, or the follower's last
    index plus one (with C{conflict_term} 0) when its log is simply short.
    """

    term: int
    success: bool
    index: int = 0
    conflict_index: int = 0
    conflict_term: int = 0
    round: int = 0


@dataclass(frozen=True, slots=True)
class ReadIndexRequest:
    """A follower asks the leader for a read index on behalf of its
    clients (thesis section 6.4)."""

    term: int
    request_id: int


@dataclass(frozen=True, slots=True)
class ReadIndexResponse:
    """The leader's answer: C{index} once leadership is confirmed, or
    C{None} if the leader could not serve it (it is no longer leader)."""

    term: int
    request_id: int
    index: int | None


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """
    The leader's snapshot through C{index}, whose entry had C{snapshot_term}
    (log compaction, Raft paper section 7).  The core never sends the
    snapshot itself: a leader's core emits this body to ask its node to
    transfer the snapshot file to a follower whose next entry was compacted
    away, and a follower's node steps it into its core only once the whole
    file is received and verified on disk.  It is a local message between a
    node and its core, so it is not one of the L{MESSAGE_TYPES} a peer may
    send; its dictionary form exists for validation and inspection.
    """

    term: int
    index: int
    snapshot_term: int
    #: The configuration as of C{index}, which the snapshot carries; L{None}
    #: only from a node that does not know it (before membership changes
    #: reached the node), and then the follower keeps its own.
    configuration: Configuration | None = None


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """
    The leader hands over leadership (thesis section 3.10): the receiver,
    whose log the leader has just brought up to date, starts an election at
    once, without Pre-Vote and flagged as a leadership transfer.
    """

    term: int


#: The most data one L{SnapshotChunk} may carry: the 1 MiB chunks a sender
#: reads, plus slack for a sender configured with slightly larger ones.  A
#: receiver refuses more, so a peer cannot make it hold a message of
#: arbitrary size (the peer protocol's own limit is 16 MiB).
MAX_SNAPSHOT_CHUNK_BYTES = (1 << 20) + (64 << 10)

#: The largest snapshot file a receiver accepts to receive (1 TiB): far
#: above any state this store can hold in memory, far below what would let
#: a peer's announced size overflow anything.
MAX_SNAPSHOT_BYTES = 1 << 40


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """
    One piece of the leader's snapshot file on its way to a follower
    (InstallSnapshot, thesis section 5.3, in chunks).  C{index} and
    C{snapshot_term} name the snapshot (its last included entry), C{size}
    is the whole file's length in bytes, and C{data} the bytes at
    C{offset}.  C{term} is the leader's term: a follower accepts chunks only
    from the leader of its current term.  The Raft core never sees chunks:
    the node hands them to L{kvstore.node.snapshot_transfer}, which steps the
    core once the whole file is received and verified.
    """

    term: int
    index: int
    snapshot_term: int
    size: int
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class SnapshotChunkResponse:
    """
    The follower's answer to a L{SnapshotChunk} of the transfer of the
    snapshot at C{index} in the leader's C{term}.  C{offset} is cumulative:
    the next byte the follower expects (everything before it is written).
    C{accepted} says whether the chunk answered was written; a refusal still
    carries the follower's position, so the sender knows where to go on
    from (or that it must start over, at 0).  C{done} says the whole file
    is received, verified and installed here.
    """

    term: int
    index: int
    offset: int
    accepted: bool
    done: bool = False


class NodeBody:
    """
    Base of the bodies of node-level messages that travel on the peer link
    but are not Raft messages, so the Raft core never sees them: the node
    routes them by type (L{kvstore.node.node.Node.route}) to the module that
    defines them (write forwarding, L{kvstore.node.forwarding_messages}).  Like
    every body they carry the sender's C{term}.
    """

    __slots__ = ()
    term: int


Body = Union[
    NodeBody,
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    ReadIndexRequest,
    ReadIndexResponse,
    InstallSnapshot,
    SnapshotChunk,
    SnapshotChunkResponse,
    TimeoutNow,
]


@dataclass(frozen=True, slots=True)
class Message:
    """A L{Body} addressed from one member to another."""

    sender: int
    receiver: int
    body: Body


class MalformedMessage(ValueError):
    """A peer sent data that is not a valid message.  The fault is the
    peer's; the receiver logs it and drops the message or connection."""


_TYPE_NAMES: dict[type, str] = {
    RequestVote: "vote",
    RequestVoteResponse: "vote_resp",
    AppendEntries: "append",
    AppendEntriesResponse: "append_resp",
    ReadIndexRequest: "read",
    ReadIndexResponse: "read_resp",
    InstallSnapshot: "install_snapshot",
    TimeoutNow: "timeout_now",
}

#: The C{type} names L{from_dict} knows but a peer never sends: a node and
#: its core exchange them (see L{InstallSnapshot}).
LOCAL_TYPES: frozenset[str] = frozenset({"install_snapshot"})

#: Peer message types whose place in the peer protocol's versions is not
#: decided yet, so a peer may not send them: L{TimeoutNow} (issue 13's node
#: integration gives it a protocol version, as an optional type, so an older
#: receiver skips it and the leadership transfer merely times out).
UNRELEASED_TYPES: frozenset[str] = frozenset({"timeout_now"})

#: The C{type} names a peer may send (every type L{from_dict} knows except
#: the L{LOCAL_TYPES} and L{UNRELEASED_TYPES}).  The peer protocol checks a
#: message's type against them before validating it, so that a type this
#: node does not know can be told apart (and skipped when its sender marked
#: it optional) from a malformed message of a known type.
MESSAGE_TYPES: frozenset[str] = frozenset(_TYPE_NAMES.values()) - LOCAL_TYPES - UNRELEASED_TYPES


def to_dict(message: Message) -> dict[str, Any]:
    """
    Return the JSON-compatible dictionary form of C{message}.  Entry payloads
    must be UTF-8 text (kvstore's commands are); it travels as a string.
    """
    body = message.body
    out: dict[str, Any] = {
        "type": _TYPE_NAMES[type(body)],
        "from": message.sender,
        "to": message.receiver,
        "term": body.term,
    }
    if isinstance(body, AppendEntries):
        out["prev_index"] = body.prev_log_index
        out["prev_term"] = body.prev_log_term
        out["commit"] = body.leader_commit
        out["round"] = body.round
        out["entries"] = entries_to_json(body.entries)
    elif isinstance(body, AppendEntriesResponse):
        out["success"] = body.success
        out["index"] = body.index
        out["conflict_index"] = body.conflict_index
        out["conflict_term"] = body.conflict_term
        out["round"] = body.round
    elif isinstance(body, RequestVote):
        out["last_index"] = body.last_log_index
        out["last_term"] = body.last_log_term
        out["pre_vote"] = body.pre_vote
        if body.leadership_transfer:  # absent otherwise: the usual vote is unchanged on the wire
            out["transfer"] = True
    elif isinstance(body, RequestVoteResponse):
        out["granted"] = body.granted
        out["pre_vote"] = body.pre_vote
    elif isinstance(body, ReadIndexRequest):
        out["id"] = body.request_id
    elif isinstance(body, ReadIndexResponse):
        out["id"] = body.request_id
        out["index"] = body.index
    elif isinstance(body, InstallSnapshot):
        out["index"] = body.index
        out["snapshot_term"] = body.snapshot_term
        if body.configuration is not None:
            out["configuration"] = body.configuration.to_text()
    return out


def entries_to_json(entries: Iterable[EntryTuple]) -> list[list[Any]]:
    """
    Log entries in their JSON-compatible form, C{[index, term, text]}: the
    one encoding of entries on the wire (L{to_dict} and the peer protocol's
    encoder use it; L{from_dict} reads it back).  Payloads must be UTF-8
    text, as kvstore's commands are.
    """
    return [[index, term, payload.decode("utf-8")] for index, term, payload in entries]


#: Exclusive bound on every integer field: the WAL stores terms and indexes
#: as u64, so a larger term from a peer would be adopted and then crash the
#: first log append (this bound leaves 2**63 elections of headroom).
MAX_FIELD_VALUE = 2**63


def _int(d: dict[str, Any], name: str) -> int:
    value = d.get(name)
    # bool is a subclass of int; a peer sending true for an index is wrong.
    if type(value) is not int or not 0 <= value < MAX_FIELD_VALUE:
        raise MalformedMessage(f"field {name!r} must be a non-negative integer below 2**63, got {value!r}")
    return value


def _bool(d: dict[str, Any], name: str) -> bool:
    value = d.get(name)
    if type(value) is not bool:
        raise MalformedMessage(f"field {name!r} must be a boolean, got {value!r}")
    return value


def _entries(d: dict[str, Any], prev_index: int, prev_term: int, term: int) -> tuple[Entry, ...]:
    return entries_from_json(d.get("entries"), prev_index, prev_term, term)


def entries_from_json(raw: Any, prev_index: int, prev_term: int, term: int) -> tuple[Entry, ...]:
    """
    The entries of an AppendEntries from their decoded JSON value C{raw},
    checked for the shape of a log: indexes consecutive after
    C{prev_index}, terms never decreasing from C{prev_term} and never above
    the sender's C{term}.  A log that breaks these cannot come from a
    correct leader, and storing it would fail.  L{from_dict} and the peer
    protocol's fast decoder both check entries here, so they cannot differ.

    @raises MalformedMessage: naming the first thing wrong.
    """
    if not isinstance(raw, list):
        raise MalformedMessage("field 'entries' must be a list")
    result = []
    expected = prev_index + 1
    for item in raw:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or type(item[0]) is not int
            or type(item[1]) is not int
            or not isinstance(item[2], str)
        ):
            raise MalformedMessage("each entry must be [index, term, data]")
        if item[0] != expected or not 0 <= item[1] < MAX_FIELD_VALUE:
            raise MalformedMessage(f"entry index {item[0]} out of sequence (expected {expected})")
        if not prev_term <= item[1] <= term:
            raise MalformedMessage(
                f"entry {item[0]} has term {item[1]}, outside [{prev_term}, {term}] for this message"
            )
        prev_term = item[1]
        expected += 1
        try:
            payload = item[2].encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedMessage(f"entry {item[0]} is not valid Unicode text") from None
        if is_raft_payload(payload):
            try:
                decode_configuration_entry(payload)
            except MalformedConfiguration as e:
                raise MalformedMessage(f"entry {item[0]} is not a valid Raft entry: {e}") from None
        result.append(Entry(item[0], item[1], payload))
    return tuple(result)


def from_dict(d: Any) -> Message:
    """
    Validate and convert a decoded JSON value into a L{Message}.

    @raises MalformedMessage: if anything about C{d} is wrong.
    """
    if not isinstance(d, dict):
        raise MalformedMessage("a message must be a JSON object")
    kind = d.get("type")
    sender = _int(d, "from")
    receiver = _int(d, "to")
    term = _int(d, "term")
    body: Body
    if kind == "append":
        prev_index = _int(d, "prev_index")
        prev_term = _int(d, "prev_term")
        body = AppendEntries(
            term=term,
            prev_log_index=prev_index,
            prev_log_term=prev_term,
            entries=_entries(d, prev_index, prev_term, term),
            leader_commit=_int(d, "commit"),
            round=_int(d, "round"),
        )
    elif kind == "append_resp":
        body = AppendEntriesResponse(
            term=term,
            success=_bool(d, "success"),
            index=_int(d, "index"),
            conflict_index=_int(d, "conflict_index"),
            conflict_term=_int(d, "conflict_term"),
            round=_int(d, "round"),
        )
    elif kind == "vote":
        body = RequestVote(
            term=term,
            last_log_index=_int(d, "last_index"),
            last_log_term=_int(d, "last_term"),
            pre_vote=_bool(d, "pre_vote"),
            leadership_transfer=_bool(d, "transfer") if "transfer" in d else False,
        )
    elif kind == "vote_resp":
        body = RequestVoteResponse(term=term, granted=_bool(d, "granted"), pre_vote=_bool(d, "pre_vote"))
    elif kind == "read":
        body = ReadIndexRequest(term=term, request_id=_int(d, "id"))
    elif kind == "read_resp":
        index = d.get("index")
        if index is not None:
            index = _int(d, "index")
        body = ReadIndexResponse(term=term, request_id=_int(d, "id"), index=index)
    elif kind == "install_snapshot":
        snapshot_term = _int(d, "snapshot_term")
        if snapshot_term > term:
            raise MalformedMessage(f"snapshot term {snapshot_term} is above the sender's term {term}")
        configuration = None
        if "configuration" in d:
            text = d["configuration"]
            if not isinstance(text, str):
                raise MalformedMessage(f"field 'configuration' must be a string, got {text!r}")
            try:
                configuration = Configuration.from_text(text)
            except MalformedConfiguration as e:
                raise MalformedMessage(f"field 'configuration': {e}") from None
        body = InstallSnapshot(
            term=term, index=_int(d, "index"), snapshot_term=snapshot_term, configuration=configuration
        )
    elif kind == "timeout_now":
        body = TimeoutNow(term=term)
    else:
        raise MalformedMessage(f"unknown message type {kind!r}")
    return Message(sender=sender, receiver=receiver, body=body)



def _check_bound(name: str, value: object) -> int:
    if type(value) is not int or not 0 <= value < MAX_FIELD_VALUE:
        raise MalformedMessage(f"field {name!r} must be a non-negative integer below 2**63, got {value!r}")
    return value


def check_snapshot_chunk(body: SnapshotChunk) -> SnapshotChunk:
    """
    Check everything a peer chose in a L{SnapshotChunk}: integers in
    bounds, a snapshot that exists (index and term at least 1, its term not
    above the sender's), a size under L{MAX_SNAPSHOT_BYTES}, and 1 to
    L{MAX_SNAPSHOT_CHUNK_BYTES} bytes of data that lie within the file.
    The peer protocol's decoder calls it, and so does the receiver (the
    simulator's network carries messages undecoded).

    @raises MalformedMessage: naming the first thing wrong.
    """
    for name in ("term", "index", "snapshot_term", "size", "offset"):
        _check_bound(name, getattr(body, name))
    if not isinstance(body.data, bytes):
        raise MalformedMessage("a snapshot chunk's data must be bytes")
    if body.index < 1 or body.snapshot_term < 1:
        raise MalformedMessage(f"snapshot index {body.index} and term {body.snapshot_term} must be at least 1")
    if body.snapshot_term > body.term:
        raise MalformedMessage(f"snapshot term {body.snapshot_term} is above the sender's term {body.term}")
    if not 1 <= body.size <= MAX_SNAPSHOT_BYTES:
        raise MalformedMessage(f"snapshot size {body.size} is outside 1 to {MAX_SNAPSHOT_BYTES} bytes")
    if not 1 <= len(body.data) <= MAX_SNAPSHOT_CHUNK_BYTES:
        raise MalformedMessage(
            f"a snapshot chunk carries {len(body.data)} bytes, outside 1 to {MAX_SNAPSHOT_CHUNK_BYTES}"
        )
    if body.offset + len(body.data) > body.size:
        raise MalformedMessage(
            f"chunk at offset {body.offset} of {len(body.data)} bytes runs past the snapshot size {body.size}"
        )
    return body


def check_snapshot_chunk_response(body: SnapshotChunkResponse) -> SnapshotChunkResponse:
    """
    Check a L{SnapshotChunkResponse}: integers in bounds, an offset within
    the largest snapshot, booleans that are booleans, and C{done} only with
    C{accepted}.

    @raises MalformedMessage: naming the first thing wrong.
    """
    for name in ("term", "index", "offset"):
        _check_bound(name, getattr(body, name))
    if type(body.accepted) is not bool or type(body.done) is not bool:
        raise MalformedMessage("a snapshot chunk response's accepted and done must be booleans")
    if body.offset > MAX_SNAPSHOT_BYTES:
        raise MalformedMessage(f"offset {body.offset} is past the largest snapshot ({MAX_SNAPSHOT_BYTES} bytes)")
    if body.done and not body.accepted:
        raise MalformedMessage("a snapshot chunk response cannot be done without being accepted")
    return body
