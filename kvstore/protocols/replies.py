# -*- test-case-name: tests.test_tools_helpers -*-
"""
Reading the client protocol's reply lines, for programs that talk to nodes
(the benchmark, the cluster launcher's tests, the process harness, the
client library): the inverse of L{kvstore.protocols.client.format_status}
and of the C{Not leader} line of L{kvstore.protocols.client.format_error}.
The node itself never parses replies; this lives beside the code that
writes them so that both change together.

The replies of the commands issue 14 added (INCR, CAS, SESSION and the
session errors) are written I{and} read here, each text once, so that the
server's wording and the library's reading cannot drift apart.
"""

from __future__ import annotations

__all__ = [
    "parse_leader_address",
    "parse_status",
    "incr_reply",
    "cas_reply",
    "session_reply",
    "cas_failed_error",
    "not_an_integer_error",
    "overflow_error",
    "session_expired_error",
    "stale_sequence_error",
    "parse_incr_reply",
    "parse_session_reply",
    "parse_cas_failed",
    "SESSION_EXPIRED_PREFIX",
    "STALE_SEQUENCE_PREFIX",
]

#: How every reply to a write tagged with an unknown or expired session starts.
SESSION_EXPIRED_PREFIX = "Error: Session expired: "
#: How every reply to a write tagged with an overtaken sequence number starts.
STALE_SEQUENCE_PREFIX = "Error: Stale sequence number: "


def incr_reply(key: str, value: int) -> str:
    """The reply to a successful C{INCR}: the new value, as a GET shows it."""
    return f"value of {key}: {value}"


def cas_reply(key: str) -> str:
    """The reply to a C{CAS} that set the new value."""
    return f"{key} updated successfully."


def session_reply(session: int) -> str:
    """The reply to C{SESSION}: the new session's id."""
    return f"session {session}"


def cas_failed_error(key: str, actual: str) -> str:
    """A C{CAS} found another value than the expected one (nothing changed)."""
    return f"Error: CAS failed: value of {key} is {actual}"


def not_an_integer_error(key: str) -> str:
    """An C{INCR} found a value that is not an integer (nothing changed)."""
    return f"Error: Value of {key} is not an integer"


def overflow_error(key: str) -> str:
    """An C{INCR} would leave the signed 64-bit range (nothing changed)."""
    return f"Error: Overflow: value of {key} would not fit in a signed 64-bit integer"


def session_expired_error(session: int) -> str:
    """A tagged write's session is unknown or expired: this write was not applied."""
    return f"{SESSION_EXPIRED_PREFIX}session {session} is unknown or has expired (the write was not applied)"


def stale_sequence_error(highest: int) -> str:
    """A tagged write's sequence number is below the session's highest."""
    return (
        f"{STALE_SEQUENCE_PREFIX}the session has applied up to {highest} (not applied now; the reply to an"
        " older request is no longer kept)"
    )


def parse_incr_reply(reply: str, key: str) -> int | None:
    """The new value in a successful C{INCR} reply for C{key}, or L{None}
    if C{reply} is not one."""
    prefix = f"value of {key}: "
    if not reply.startswith(prefix):
        return None
    digits = reply[len(prefix):]
    if not digits.lstrip("-").isdigit() or not digits.isascii() or len(digits) > 20:
        return None
    return int(digits)


def parse_session_reply(reply: str) -> int | None:
    """The id in a C{SESSION} reply, or L{None} if C{reply} is not one."""
    prefix = "session "
    digits = reply[len(prefix):]
    if not reply.startswith(prefix) or not digits.isdigit() or not digits.isascii() or len(digits) > 19:
        return None
    return int(digits)


def parse_cas_failed(reply: str, key: str) -> str | None:
    """The actual value a failed C{CAS} of C{key} reports, or L{None} if
    C{reply} is not that error."""
    prefix = f"Error: CAS failed: value of {key} is "
    return reply[len(prefix):] if reply.startswith(prefix) else None


def parse_status(reply: str) -> dict[str, str]:
    """
    Parse a C{STATUS} reply, C{name=value ...}, into a dict.

    @raise ValueError: if the reply is an error line.
    """
    if reply.startswith("Error"):
        raise ValueError(f"STATUS failed: {reply}")
    return dict(token.partition("=")[::2] for token in reply.split())


def parse_leader_address(reply: str) -> tuple[str, int] | None:
    """
    The C{(host, port)} a C{Not leader} error names (C{... Current leader is
    Node 0 at 127.0.0.1:5000}, or C{[::1]:5000}), or L{None} when it names
    no address.
    """
    marker = " at "
    if marker not in reply:
        return None
    host, _, port = reply.rsplit(marker, 1)[1].strip().rpartition(":")
    try:
        return host, int(port)
    except ValueError:
        return None
