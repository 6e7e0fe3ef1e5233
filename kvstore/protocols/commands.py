# -*- test-case-name: tests.test_protocols_commands -*-
"""
The client request language, as a pure function from one line of bytes to
one immutable command.

Parsing lives apart from the Twisted protocol (h11 style) so that everything
a hostile or careless client can send is decided in one place with no I/O:
L{parse_command} either returns a frozen dataclass or raises L{CommandError},
whose text becomes the C{Error: ...} reply.  That makes the whole grammar,
including every limit, checkable with property tests, and keeps the protocol
shell in L{kvstore.protocols.client} down to framing, ordering and flow
control.  See C{docs/protocol.md} for the user-facing description.

Grammar (one request per line, the LF already removed by framing)::

    line    = [ tag SP ] word *( SP arg ) [CR]
    PUT     = "PUT" SP key SP value        ; value is the rest of the line
    GET     = "GET" SP key [ SP "STALE" ]
    DELETE  = "DELETE" SP key
    INCR    = "INCR" SP key [ SP delta ]   ; delta = ["-"] 1*DIGIT, signed 64-bit
    CAS     = "CAS" SP key SP expected SP value   ; expected has no whitespace
    SESSION / EXIT / PING / STATUS / MEMBERS take no arguments
    tag     = "@" session ":" sequence     ; 1 to 2**63-1 each, no leading zero;
                                           ; only before PUT, DELETE, INCR, CAS
    ADDNODE    = "ADDNODE" SP id SP address   ; address is HOST:PORT or [IPV6]:PORT
    REMOVENODE = "REMOVENODE" SP id
    TRANSFER   = "TRANSFER" SP id              ; id is a decimal node id

Words are separated by exactly one space; command words and C{STALE} are
ASCII case-insensitive.  A line must be UTF-8 and must not contain ASCII
control characters other than TAB (and TAB only inside a PUT or CAS value).
Keys, and a CAS's expected value, are non-empty and contain no whitespace.
The tag is a prefix that a plain C{nc} user never types, so the untagged
syntax is unchanged (issue 14, exactly-once sessions).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

__all__ = [
    "Put",
    "Get",
    "Delete",
    "Incr",
    "Cas",
    "OpenSession",
    "Tagged",
    "Write",
    "Exit",
    "Ping",
    "Status",
    "Members",
    "AddNode",
    "RemoveNode",
    "Transfer",
    "MEMBERSHIP_COMMANDS",
    "parse_address",
    "Command",
    "CommandError",
    "LineTooLong",
    "Limits",
    "DEFAULT_LIMITS",
    "PUT_OVERHEAD_BYTES",
    "parse_command",
    "encode_command",
]


@dataclass(frozen=True, slots=True)
class Put:
    """Store C{value} under C{key}, replacing any previous value."""

    key: str
    value: str


@dataclass(frozen=True, slots=True)
class Get:
    """
    Read C{key}.  C{stale=False} asks for a linearizable read; C{stale=True}
    allows the node to answer from its local state machine, which may lag.
    """

    key: str
    stale: bool = False


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove C{key}; it is an error if it does not exist."""

    key: str


@dataclass(frozen=True, slots=True)
class Incr:
    """Add C{delta} (signed 64-bit) to the integer stored in C{key} (a
    missing key counts as 0); the reply carries the new value."""

    key: str
    delta: int = 1


@dataclass(frozen=True, slots=True)
class Cas:
    """Set C{key} to C{new} if, and only if, its value is C{expected}."""

    key: str
    expected: str
    new: str


@dataclass(frozen=True, slots=True)
class OpenSession:
    """Register an exactly-once session; the reply carries its id."""


Write = Union[Put, Delete, Incr, Cas]


@dataclass(frozen=True, slots=True)
class Tagged:
    """
    A write tagged with an exactly-once session and a sequence number: the
    cluster applies it at most once whatever the number of copies that
    reach the log, and answers a copy with the first one's reply.
    """

    session: int
    seq: int
    command: Write


@dataclass(frozen=True, slots=True)
class Exit:
    """Say goodbye and close the connection once earlier replies are sent."""


@dataclass(frozen=True, slots=True)
class Ping:
    """Liveness check answered by the connection itself."""


@dataclass(frozen=True, slots=True)
class Status:
    """Report the node's status dictionary on one line."""


@dataclass(frozen=True, slots=True)
class Members:
    """Report the cluster's members (admin, issue 13)."""


@dataclass(frozen=True, slots=True)
class AddNode:
    """Add node C{node_id} at C{address} (C{host:port}) as a learner."""

    node_id: int
    address: str


@dataclass(frozen=True, slots=True)
class RemoveNode:
    """Remove node C{node_id} from the cluster for good."""

    node_id: int


@dataclass(frozen=True, slots=True)
class Transfer:
    """Hand leadership to the voter C{node_id}."""

    node_id: int


Command = Union[Put, Get, Delete, Incr, Cas, OpenSession, Tagged, Exit, Ping, Status, Members, AddNode, RemoveNode, Transfer]

#: The membership admin commands: answered by the leader only (a follower
#: replies C{Not leader} as to a write), in the connection's write order.
MEMBERSHIP_COMMANDS = (Members, AddNode, RemoveNode, Transfer)


class CommandError(Exception):
    """
    The client sent a request that is not a valid command.

    C{str(error)} is the human-readable reason I{without} the C{"Error: "}
    prefix; the protocol adds the prefix.  Nothing has been executed.
    """


class LineTooLong(CommandError):
    """
    The request line is longer than L{Limits.max_line_bytes}.

    Unlike other L{CommandError}s this one is fatal to the connection: the
    server cannot know where the over-long line really ends, so anything that
    follows it cannot be trusted to be a request.
    """

    def __init__(self, max_line_bytes: int) -> None:
        super().__init__(f"Line too long (maximum {max_line_bytes} bytes)")
        self.max_line_bytes = max_line_bytes


#: Bytes of a PUT line that are neither key nor value: C{"PUT"}, two spaces
#: and an optional CR.
PUT_OVERHEAD_BYTES = len(b"PUT  \r")


@dataclass(frozen=True, slots=True)
class Limits:
    """
    Per-request size limits, all counted in bytes of UTF-8.

    They bound how much memory one client can make the server buffer (the
    line limit is also the framing limit) and how large the replicated log
    entries can get.

    @ivar max_key_bytes: longest accepted key (default 1 KiB).
    @ivar max_value_bytes: longest accepted value (default 64 KiB).
    @ivar max_line_bytes: longest accepted request line, excluding the LF but
        including a CR (default C{max_key_bytes + max_value_bytes + 16}).  It
        must leave room for the largest PUT; use L{Limits.for_sizes} to derive
        it.
    """

    max_key_bytes: int = 1024
    max_value_bytes: int = 64 * 1024
    max_line_bytes: int = 1024 + 64 * 1024 + 16

    def __post_init__(self) -> None:
        if self.max_key_bytes < 1 or self.max_value_bytes < 0:
            raise ValueError(f"invalid limits: {self!r}")
        needed = self.max_key_bytes + self.max_value_bytes + PUT_OVERHEAD_BYTES
        if self.max_line_bytes < needed:
            raise ValueError(
                f"max_line_bytes={self.max_line_bytes} cannot hold a PUT with "
                f"a maximal key and value; it must be at least {needed}"
            )

    @classmethod
    def for_sizes(cls, max_key_bytes: int, max_value_bytes: int) -> Limits:
        """
        Limits for the given key and value sizes, with a line limit just
        large enough (plus the usual slack) for the largest PUT.
        """
        return cls(
            max_key_bytes=max_key_bytes,
            max_value_bytes=max_value_bytes,
            max_line_bytes=max_key_bytes + max_value_bytes + 16,
        )


DEFAULT_LIMITS = Limits()

# ASCII control characters except TAB (LF never reaches us; a trailing CR is
# removed before this check, so any remaining CR is rejected too).
_FORBIDDEN = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
_WHITESPACE = re.compile(r"\s")
_SHOWN_WORD_CHARS = 32

_PUT_USAGE = "Usage: PUT <key> <value>"
_GET_USAGE = "Usage: GET <key> [STALE]"
_DELETE_USAGE = "Usage: DELETE <key>"
_INCR_USAGE = "Usage: INCR <key> [<delta>]"
_CAS_USAGE = "Usage: CAS <key> <expected> <new value>"
_TAG_USAGE = "Usage: @<session>:<sequence> PUT|DELETE|INCR|CAS ..."

#: The range of an INCR's delta, and of a session id and sequence number
#: (those are positive).
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
_DELTA_RANGE = f"Delta must be an integer from {INT64_MIN} to {INT64_MAX}"
_TAG_RANGE = f"Session and sequence numbers must be integers from 1 to {INT64_MAX}"
_DELTA = re.compile(r"-?[0-9]{1,19}\Z")
_POSITIVE = re.compile(r"[1-9][0-9]{0,18}\Z")

_ADDNODE_USAGE = "Usage: ADDNODE <id> <host>:<port>"
_REMOVENODE_USAGE = "Usage: REMOVENODE <id>"
_TRANSFER_USAGE = "Usage: TRANSFER <id>"
# A node id as the configuration entries write it (kvstore.raft.membership):
# decimal, no sign, no leading zero, below 2**63.
_NODE_ID = re.compile(r"^(0|[1-9][0-9]{0,18})$")
_MAX_NODE_ID = 2**63 - 1
_PORT = re.compile(r"^[0-9]{1,5}$")
_HOST = re.compile(r"^[A-Za-z0-9._%-]+$")
_IPV6_HOST = re.compile(r"^[0-9A-Fa-f:.%A-Za-z]+$")

_EXIT = Exit()
_MEMBERS = Members()
_PING = Ping()
_STATUS = Status()
_OPEN_SESSION = OpenSession()


def _printable(text: str) -> str:
    """Escape characters that would garble a one-line reply."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _check_key(key: str, usage: str, limits: Limits) -> None:
    """
    Raise L{CommandError} unless C{key} is a non-empty, whitespace-free key
    within the size limit.
    """
    if not key:
        raise CommandError(usage)
    size = len(key) if key.isascii() else len(key.encode("utf-8"))
    if size > limits.max_key_bytes:
        raise CommandError(f"Key too long (maximum {limits.max_key_bytes} bytes)")
    if _WHITESPACE.search(key) is not None:
        raise CommandError("Key must not contain whitespace")


def _check_value(value: str, what: str, limits: Limits) -> None:
    """Raise L{CommandError} unless C{value} is within the value limit."""
    if len(value) > limits.max_value_bytes or (
        not value.isascii() and len(value.encode("utf-8")) > limits.max_value_bytes
    ):
        raise CommandError(f"{what} too long (maximum {limits.max_value_bytes} bytes)")


def _positive(text: str) -> int:
    """A session id or sequence number: 1 to 2**63-1, no sign, no leading zero."""
    if _POSITIVE.match(text) is None or int(text) > INT64_MAX:
        raise CommandError(_TAG_RANGE)
    return int(text)


def _parse_tagged(text: str, limits: Limits) -> Tagged:
    """C{@<session>:<seq> <write>}, the C{@} already seen."""
    tag, sep, rest = text.partition(" ")
    session, colon, seq = tag[1:].partition(":")
    if not sep or not colon or not rest.strip():
        raise CommandError(_TAG_USAGE)
    session_id, seq_number = _positive(session), _positive(seq)
    command = _parse_words(rest, limits)
    if not isinstance(command, (Put, Delete, Incr, Cas)):
        raise CommandError("Only PUT, DELETE, INCR and CAS take a session tag")
    return Tagged(session_id, seq_number, command)


def _parse_node_id(text: str) -> int:
    if not text.isascii() or _NODE_ID.match(text) is None or int(text) > _MAX_NODE_ID:
        raise CommandError(f"Invalid node id '{_printable(text[:_SHOWN_WORD_CHARS])}'")
    return int(text)


def parse_address(text: str) -> tuple[str, int]:
    """
    Split a member's address, C{HOST:PORT} or C{[IPV6]:PORT}, into host
    and port: what C{ADDNODE} accepts and what the node connects its peer
    links to.

    @raise ValueError: if C{text} is not such an address; C{str()} says why.
    """
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":") or not host or _IPV6_HOST.match(host) is None:
            raise ValueError(f"Invalid address '{_printable(text)}': write IPv6 as [HOST]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host or ":" in host or _HOST.match(host) is None:
            raise ValueError(f"Invalid address '{_printable(text)}': expected HOST:PORT")
    if _PORT.match(port_text) is None or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"Invalid address '{_printable(text)}': the port must be 1 to 65535")
    return host, int(port_text)


def parse_command(line: bytes, limits: Limits = DEFAULT_LIMITS) -> Command:
    """
    Parse one request line.

    @param line: the request without its terminating LF.  One trailing CR,
        if present, is ignored.
    @param limits: the size limits to enforce.
    @return: the parsed command.
    @raise LineTooLong: if C{line} exceeds C{limits.max_line_bytes}.
    @raise CommandError: for any other invalid request; C{str()} of it is
        the reply text without the C{"Error: "} prefix.  No other exception
        escapes for any input.
    """
    if len(line) > limits.max_line_bytes:
        raise LineTooLong(limits.max_line_bytes)
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CommandError(f"Invalid UTF-8 at byte {e.start}") from None
    bad = _FORBIDDEN.search(text)
    if bad is not None:
        raise CommandError(
            f"Control character 0x{ord(bad.group()):02x} not allowed"
        )
    if text.startswith("@"):
        return _parse_tagged(text, limits)
    return _parse_words(text, limits)


def _parse_words(text: str, limits: Limits) -> Command:
    """Parse a decoded, checked request without a tag."""
    parts = text.split(" ", 2)
    word = parts[0]
    upper = word.upper() if word.isascii() else ""
    nargs = len(parts)

    if upper == "GET":
        if nargs == 2:
            _check_key(parts[1], _GET_USAGE, limits)
            return Get(parts[1])
        if nargs == 3 and parts[2].upper() == "STALE":
            _check_key(parts[1], _GET_USAGE, limits)
            return Get(parts[1], True)
        raise CommandError(_GET_USAGE)

    if upper == "PUT":
        if nargs != 3:
            raise CommandError(_PUT_USAGE)
        key = parts[1]
        _check_key(key, _PUT_USAGE, limits)
        value = parts[2]
        _check_value(value, "Value", limits)
        return Put(key, value)

    if upper == "DELETE":
        if nargs != 2:
            raise CommandError(_DELETE_USAGE)
        _check_key(parts[1], _DELETE_USAGE, limits)
        return Delete(parts[1])

    if upper == "INCR":
        if nargs == 2:
            _check_key(parts[1], _INCR_USAGE, limits)
            return Incr(parts[1], 1)
        if nargs != 3 or not parts[2] or " " in parts[2]:
            raise CommandError(_INCR_USAGE)
        _check_key(parts[1], _INCR_USAGE, limits)
        if _DELTA.match(parts[2]) is None:
            raise CommandError(_DELTA_RANGE)
        delta = int(parts[2])
        if not INT64_MIN <= delta <= INT64_MAX:
            raise CommandError(_DELTA_RANGE)
        return Incr(parts[1], delta)

    if upper == "CAS":
        if nargs != 3:
            raise CommandError(_CAS_USAGE)
        key = parts[1]
        _check_key(key, _CAS_USAGE, limits)
        expected, sep, new = parts[2].partition(" ")
        if not sep or not expected:
            raise CommandError(_CAS_USAGE)
        if _WHITESPACE.search(expected) is not None:
            raise CommandError("Expected value must not contain whitespace")
        _check_value(expected, "Expected value", limits)
        _check_value(new, "Value", limits)
        return Cas(key, expected, new)

    if upper == "SESSION":
        if nargs != 1:
            raise CommandError("Usage: SESSION")
        return _OPEN_SESSION

    if upper == "PING":
        if nargs != 1:
            raise CommandError("Usage: PING")
        return _PING

    if upper == "STATUS":
        if nargs != 1:
            raise CommandError("Usage: STATUS")
        return _STATUS

    if upper == "EXIT":
        if nargs != 1:
            raise CommandError("Usage: EXIT")
        return _EXIT

    if upper == "MEMBERS":
        if nargs != 1:
            raise CommandError("Usage: MEMBERS")
        return _MEMBERS

    if upper == "ADDNODE":
        if nargs != 3 or " " in parts[2]:
            raise CommandError(_ADDNODE_USAGE)
        node_id = _parse_node_id(parts[1])
        try:
            parse_address(parts[2])
        except ValueError as e:
            raise CommandError(str(e)) from None
        return AddNode(node_id, parts[2])

    if upper == "REMOVENODE":
        if nargs != 2:
            raise CommandError(_REMOVENODE_USAGE)
        return RemoveNode(_parse_node_id(parts[1]))

    if upper == "TRANSFER":
        if nargs != 2:
            raise CommandError(_TRANSFER_USAGE)
        return Transfer(_parse_node_id(parts[1]))

    if not text.strip():
        raise CommandError("Empty command")
    shown = word[:_SHOWN_WORD_CHARS]
    if len(word) > _SHOWN_WORD_CHARS:
        shown += "..."
    raise CommandError(f"Unknown command '{_printable(shown)}'")


def encode_command(command: Command) -> bytes:
    """
    Serialize C{command} as a request line, including the terminating LF.

    This is the inverse of L{parse_command} for valid commands; clients,
    benchmarks and tests use it.  It does not validate the command.
    """
    if isinstance(command, Put):
        return f"PUT {command.key} {command.value}\n".encode("utf-8")
    if isinstance(command, Get):
        suffix = " STALE" if command.stale else ""
        return f"GET {command.key}{suffix}\n".encode("utf-8")
    if isinstance(command, Delete):
        return f"DELETE {command.key}\n".encode("utf-8")
    if isinstance(command, Incr):
        return f"INCR {command.key} {command.delta}\n".encode("utf-8")
    if isinstance(command, Cas):
        return f"CAS {command.key} {command.expected} {command.new}\n".encode("utf-8")
    if isinstance(command, OpenSession):
        return b"SESSION\n"
    if isinstance(command, Tagged):
        return f"@{command.session}:{command.seq} ".encode("ascii") + encode_command(command.command)
    if isinstance(command, Exit):
        return b"EXIT\n"
    if isinstance(command, Ping):
        return b"PING\n"
    if isinstance(command, Status):
        return b"STATUS\n"
    if isinstance(command, Members):
        return b"MEMBERS\n"
    if isinstance(command, AddNode):
        return f"ADDNODE {command.node_id} {command.address}\n".encode("utf-8")
    if isinstance(command, RemoveNode):
        return f"REMOVENODE {command.node_id}\n".encode("utf-8")
    if isinstance(command, Transfer):
        return f"TRANSFER {command.node_id}\n".encode("utf-8")
    raise TypeError(f"not a command: {command!r}")
