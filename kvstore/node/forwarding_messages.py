# -*- test-case-name: tests.test_forwarding_wire -*-
"""
The two peer messages of write forwarding (L{kvstore.node.forwarding}), and
their JSON form on the peer link.

They are not Raft messages: the Raft core never sees them (the node routes
them by type), so they live here, beside the forwarding they serve, and the
peer protocol (L{kvstore.protocols.peer}) only carries them, from version
L{FORWARDING_SINCE} on.

A follower sends a L{ForwardRequest} holding a client's request line, as
the client sent it, to the leader; the leader runs it as a client request
and sends back a L{ForwardResponse} holding its reply line, which the
follower gives the client as it is.  Carrying lines rather than parsed
commands means a command added to the client protocol later (INCR, CAS,
session-tagged writes, membership commands) is forwarded without a change
here or in the forwarding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvstore.raft.messages import MAX_FIELD_VALUE, MalformedMessage, Message, NodeBody

__all__ = [
    "FORWARDING_SINCE",
    "FORWARD_TYPE",
    "FORWARD_RESPONSE_TYPE",
    "FORWARDING_TYPES",
    "ForwardRequest",
    "ForwardResponse",
    "forwarding_to_dict",
    "forwarding_from_dict",
]

#: The peer protocol version that introduced the two message types.  They
#: are required types (not optional): a leader that skipped a forwarded
#: request would leave the follower's client waiting for the commit timeout
#: and then told its write's outcome is unknown, when it was never run.  A
#: follower whose link to the leader negotiated an older version does not
#: forward at all.
FORWARDING_SINCE = 4

FORWARD_TYPE = "forward"
FORWARD_RESPONSE_TYPE = "forward_resp"

#: The C{type} names of the two messages on the wire.
FORWARDING_TYPES: frozenset[str] = frozenset({FORWARD_TYPE, FORWARD_RESPONSE_TYPE})


@dataclass(frozen=True, slots=True)
class ForwardRequest(NodeBody):
    """
    A client's request C{line} (without its LF), forwarded by a follower in
    C{term} to the node it believes leads; C{request_id} pairs it with its
    L{ForwardResponse}.
    """

    term: int
    request_id: int
    line: bytes


@dataclass(frozen=True, slots=True)
class ForwardResponse(NodeBody):
    """
    The leader's C{reply} line (without its LF) to the L{ForwardRequest}
    C{request_id}, sent in the leader's C{term}.
    """

    term: int
    request_id: int
    reply: bytes


def forwarding_to_dict(message: Message) -> dict[str, Any]:
    """The JSON-compatible form of a forwarding message.  Lines are UTF-8
    text (the follower forwards only lines the client protocol parsed, the
    leader's replies are text), so they travel as strings."""
    body = message.body
    if isinstance(body, ForwardRequest):
        kind, text = FORWARD_TYPE, body.line
    elif isinstance(body, ForwardResponse):
        kind, text = FORWARD_RESPONSE_TYPE, body.reply
    else:
        raise TypeError(f"not a forwarding message: {message!r}")
    return {
        "type": kind,
        "from": message.sender,
        "to": message.receiver,
        "term": body.term,
        "id": body.request_id,
        "line": text.decode("utf-8"),
    }


def _int(d: dict[str, Any], name: str) -> int:
    value = d.get(name)
    if type(value) is not int or not 0 <= value < MAX_FIELD_VALUE:
        raise MalformedMessage(f"field {name!r} must be a non-negative integer below 2**63, got {value!r}"[:200])
    return value


def forwarding_from_dict(d: dict[str, Any]) -> Message:
    """
    Validate and convert the decoded JSON object of a forwarding message.

    @raises MalformedMessage: if anything about it is wrong: a bad or
        missing id, term or address, or a line that is not a string of
        valid Unicode text.  (What the line says is the leader's to judge,
        as it judges a client's line: L{kvstore.node.forwarding}.)
    """
    kind = d.get("type")
    sender, receiver, term = _int(d, "from"), _int(d, "to"), _int(d, "term")
    request_id = _int(d, "id")
    text = d.get("line")
    if not isinstance(text, str):
        raise MalformedMessage(f"field 'line' must be a string, got {type(text).__name__}")
    try:
        line = text.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedMessage("field 'line' is not valid Unicode text") from None
    if kind == FORWARD_TYPE:
        return Message(sender, receiver, ForwardRequest(term, request_id, line))
    if kind == FORWARD_RESPONSE_TYPE:
        return Message(sender, receiver, ForwardResponse(term, request_id, line))
    raise MalformedMessage(f"not a forwarding message type: {kind!r}"[:200])
