# -*- test-case-name: tests.test_client_protocol -*-
"""
The client side of the text protocol, without I/O (h11 style): requests in,
bytes out; bytes in, reply lines out; a reply line plus its request in, one
immutable reply event out.

Both the blocking and the Twisted client are thin shells around this module
and L{kvstore.client._policy}, so the whole reading of the protocol (which
reply means what, see C{docs/protocol.md}) is in one place and testable
with property tests.

Requests are the server's own command dataclasses
(L{kvstore.protocols.commands}); L{encode_request} refuses, before anything
is sent, what could not travel as one request line (an empty key, whitespace
in a key, control characters), because such text would otherwise be split
into several requests by the server.  Size limits are the server's to check:
they are configurable per cluster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Union

from kvstore.client._raw import Raw
from kvstore.client.errors import BadRequest, ProtocolError
from kvstore.protocols import replies
from kvstore.protocols.commands import (
    INT64_MAX,
    INT64_MIN,
    Cas,
    Delete,
    Get,
    Incr,
    OpenSession,
    Ping,
    Put,
    Status,
    Tagged,
    Write,
    encode_command,
)

__all__ = [
    "Request",
    "Put",
    "Get",
    "Delete",
    "Incr",
    "Cas",
    "OpenSession",
    "Tagged",
    "Write",
    "Ping",
    "Status",
    "encode_request",
    "is_write",
    "retry_safe",
    "ReplyReader",
    "Reply",
    "Done",
    "Value",
    "Number",
    "CasMismatch",
    "SessionOpened",
    "SessionExpired",
    "StaleSequence",
    "StatusFields",
    "NotFound",
    "NotLeader",
    "Unavailable",
    "OutcomeUnknown",
    "RequestError",
    "InternalError",
    "interpret_reply",
    "MAX_REPLY_BYTES",
]

Request = Union[Put, Get, Delete, Incr, Cas, OpenSession, Tagged, Ping, Status, Raw]

#: Longest reply line accepted.  A GET reply is bounded by the server's
#: key and value limits; this is far above the defaults (1 KiB + 64 KiB)
#: and only protects the client from a runaway peer.
MAX_REPLY_BYTES = 16 * 1024 * 1024

# Whitespace in keys: Python's str.split() notion, which is the server's.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_CONTROL_OR_TAB = re.compile(r"[\x00-\x1f\x7f]")


def _check_key(key: str) -> None:
    if not isinstance(key, str):
        raise BadRequest(f"key must be a str, not {type(key).__name__}")
    if not key:
        raise BadRequest("key must not be empty")
    if _CONTROL_OR_TAB.search(key):
        raise BadRequest(f"key {key!r} contains a control character")
    if len(key.split()) != 1 or key.split()[0] != key:
        raise BadRequest(f"key {key!r} must not contain whitespace")


def _check_value(value: object, what: str = "value") -> None:
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a str, not {type(value).__name__}")
    if _CONTROL.search(value):
        raise BadRequest(f"{what} must not contain control characters other than TAB")


def check_request(request: Request) -> None:
    """
    Refuse, before anything is sent, what could not travel as one valid
    request line.

    @raise BadRequest: if the request could not be sent as one valid line.
    """
    if isinstance(request, Tagged):
        request = request.command
    if isinstance(request, (Put, Get, Delete, Incr, Cas)):
        _check_key(request.key)
    if isinstance(request, Put):
        _check_value(request.value)
    elif isinstance(request, Incr):
        if not isinstance(request.delta, int) or isinstance(request.delta, bool):
            raise BadRequest(f"delta must be an int, not {type(request.delta).__name__}")
        if not INT64_MIN <= request.delta <= INT64_MAX:
            raise BadRequest(f"delta {request.delta} is outside the signed 64-bit range")
    elif isinstance(request, Cas):
        if not isinstance(request.expected, str) or not request.expected:
            raise BadRequest("the expected value must be a non-empty str")
        if _CONTROL_OR_TAB.search(request.expected) or len(request.expected.split()) != 1 or (
                request.expected.split()[0] != request.expected):
            raise BadRequest(f"the expected value {request.expected!r} must not contain whitespace")
        _check_value(request.new, "the new value")


def encode_request(request: Request) -> bytes:
    """
    The request line for C{request}, LF included.

    @raise BadRequest: if the request could not be sent as one valid line.
    """
    if isinstance(request, Raw):  # checked when made (Raw.of)
        return request.encode()
    check_request(request)
    return encode_command(request)


def is_write(request: Request) -> bool:
    """Whether C{request} changes state, so that retrying it is not free
    (unless L{retry_safe})."""
    if isinstance(request, Raw):
        return request.write
    return isinstance(request, (Put, Delete, Incr, Cas, Tagged, OpenSession))


def retry_safe(request: Request) -> bool:
    """
    Whether sending C{request} again after an unknown outcome is safe: a
    tagged write (the cluster applies a tag at most once and answers a copy
    with the first reply) or C{SESSION} (a second session costs only a slot
    that expires).  Reads are always safe.
    """
    return isinstance(request, (Tagged, OpenSession)) or not is_write(request)


class ReplyReader:
    """
    Split a byte stream into reply lines (LF-terminated, UTF-8, the LF
    removed).  L{feed} buffers; it never blocks and never fails except on a
    reply longer than L{MAX_REPLY_BYTES} or invalid UTF-8, which are
    protocol errors.
    """

    def __init__(self, max_line_bytes: int = MAX_REPLY_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_line_bytes

    def feed(self, data: bytes) -> list[str]:
        """Add C{data}; return the complete reply lines it finished."""
        self._buffer += data
        if b"\n" not in data:
            if len(self._buffer) > self._max:
                raise ProtocolError(f"reply longer than {self._max} bytes")
            return []
        *lines, rest = self._buffer.split(b"\n")
        self._buffer = bytearray(rest)
        try:
            return [line.decode("utf-8") for line in lines]
        except UnicodeDecodeError as e:
            raise ProtocolError(f"reply is not UTF-8: {e}") from None

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished line held back."""
        return len(self._buffer)


# ---------------------------------------------------------------------------
# Reply events


@dataclass(frozen=True, slots=True)
class Done:
    """The request succeeded and the reply carries no data (PUT, DELETE, PING)."""

    text: str


@dataclass(frozen=True, slots=True)
class Value:
    """A GET's value."""

    value: str


@dataclass(frozen=True, slots=True)
class Number:
    """An INCR's new value."""

    value: int


@dataclass(frozen=True, slots=True)
class CasMismatch:
    """C{Error: CAS failed: value of <key> is <actual>}: nothing changed."""

    actual: str


@dataclass(frozen=True, slots=True)
class SessionOpened:
    """A SESSION's id."""

    session: int


@dataclass(frozen=True, slots=True)
class SessionExpired:
    """C{Error: Session expired: ...}: this tagged write was not applied;
    its session is gone."""

    message: str


@dataclass(frozen=True, slots=True)
class StaleSequence:
    """C{Error: Stale sequence number: ...}: the session has applied a later
    write; whether this one was applied earlier is lost."""

    message: str


@dataclass(frozen=True, slots=True)
class StatusFields:
    """A STATUS reply, C{name=value} tokens in the server's order."""

    fields: dict[str, str] = field(hash=False)


@dataclass(frozen=True, slots=True)
class NotFound:
    """C{Error: Key <key> not found}."""

    key: str


@dataclass(frozen=True, slots=True)
class NotLeader:
    """
    C{Error: Not leader ...}: refused, certainly not applied.  C{leader_id}
    is L{None} when no leader is elected yet; C{address} (C{host:port}) is
    L{None} when the node does not know the leader's client address.
    """

    leader_id: int | None
    address: str | None


@dataclass(frozen=True, slots=True)
class Unavailable:
    """C{Error: Unavailable: <reason>}: nothing changed; retry later or elsewhere."""

    reason: str


@dataclass(frozen=True, slots=True)
class OutcomeUnknown:
    """C{Error: Outcome unknown: <reason> ...}: the write may have been applied."""

    reason: str


@dataclass(frozen=True, slots=True)
class RequestError:
    """Any other C{Error:} reply: something about the request itself."""

    message: str


@dataclass(frozen=True, slots=True)
class InternalError:
    """C{Error: Internal error}: a server bug; a write's outcome is unknown."""


Reply = Union[Done, Value, Number, CasMismatch, SessionOpened, SessionExpired, StaleSequence, StatusFields, NotFound,
              NotLeader, Unavailable, OutcomeUnknown, RequestError, InternalError]

_NOT_LEADER = re.compile(r"Error: Not leader\. (?:Current leader is Node (\d+)(?: at (\S+))?|No leader elected yet)\Z")
_OUTCOME_SUFFIX = " (the write may or may not have been applied)"


def _interpret_error(request: Request, message: str) -> Reply:
    if message.startswith("Error: Not leader"):
        match = _NOT_LEADER.match(message)
        if match is None:
            return NotLeader(None, None)
        leader, address = match.groups()
        return NotLeader(None if leader is None else int(leader), address)
    if message.startswith("Error: Outcome unknown: "):
        reason = message[len("Error: Outcome unknown: "):]
        if reason.endswith(_OUTCOME_SUFFIX):
            reason = reason[: -len(_OUTCOME_SUFFIX)]
        return OutcomeUnknown(reason)
    if message.startswith("Error: Unavailable: "):
        return Unavailable(message[len("Error: Unavailable: "):])
    if message == "Error: Internal error":
        return InternalError()
    if isinstance(request, (Get, Delete, Cas)) and message == f"Error: Key {request.key} not found":
        return NotFound(request.key)
    if isinstance(request, Cas):
        actual = replies.parse_cas_failed(message, request.key)
        if actual is not None:
            return CasMismatch(actual)
    return RequestError(message[len("Error: "):])


def interpret_reply(request: Request, line: str) -> Reply:
    """
    The meaning of reply C{line} to C{request}.

    @raise ProtocolError: if the line is not a possible reply to C{request}
        (the connection is then out of step and must be dropped).
    """
    if isinstance(request, Tagged):
        if line.startswith(replies.SESSION_EXPIRED_PREFIX):
            return SessionExpired(line[len("Error: "):])
        if line.startswith(replies.STALE_SEQUENCE_PREFIX):
            return StaleSequence(line[len("Error: "):])
        request = request.command
    if line.startswith("Error: "):
        return _interpret_error(request, line)
    if isinstance(request, Raw):  # any other line is the command's answer, as typed
        return Value(line)
    if isinstance(request, Get):
        prefix = f"value of {request.key}: "
        if line.startswith(prefix):
            return Value(line[len(prefix):])
    elif isinstance(request, Put):
        if line == f"{request.key} added successfully.":
            return Done(line)
    elif isinstance(request, Delete):
        if line == f"{request.key} deleted successfully.":
            return Done(line)
    elif isinstance(request, Incr):
        number = replies.parse_incr_reply(line, request.key)
        if number is not None:
            return Number(number)
    elif isinstance(request, Cas):
        if line == replies.cas_reply(request.key):
            return Done(line)
    elif isinstance(request, OpenSession):
        session = replies.parse_session_reply(line)
        if session is not None:
            return SessionOpened(session)
    elif isinstance(request, Ping):
        if line == "PONG":
            return Done(line)
    elif isinstance(request, Status):
        fields = {}
        for token in line.split(" "):
            name, equals, value = token.partition("=")
            if not equals or not name:
                break
            fields[name] = value
        else:
            if fields:
                return StatusFields(fields)
    raise ProtocolError(f"unexpected reply {line[:200]!r} to {encode_command(request)[:200]!r}")
