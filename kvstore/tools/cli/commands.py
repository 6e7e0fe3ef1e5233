# -*- test-case-name: tests.test_tools_cli -*-
"""
What C{kvstore-cli} can be asked, and what it answers: parsing a shell line
or a one-shot command line into an L{Action}, and running it through the
client library into an L{Outcome} (the text a person reads, the JSON a
script reads, and the exit status).

Kept apart from the terminal (L{kvstore.tools.cli.shell}) so that every
command is tested without one, against a fake client.

The text answers are the server's own reply lines (C{k added
successfully.}, C{value of k: v}, C{Error: Key k not found}), so that the
shell reads like an C{nc} session, except that C{Not leader} never shows:
the library follows the leader.

C{INCR} and C{CAS} go through the library's C{incr} and C{cas}, so that
they are exactly-once and retried after an unknown outcome like any other
write; only a malformed one is sent as typed, for the server to refuse
with its own usage line.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, Union

from kvstore.client.errors import (
    BadRequest,
    CasFailed,
    ClientError,
    ConnectionFailed,
    KeyNotFound,
    NoLeader,
    OutcomeUnknown,
    ProtocolError,
    Unavailable,
)
from kvstore.protocols import commands as wire, replies

__all__ = [
    "OK",
    "NO",
    "ERROR",
    "Action",
    "Outcome",
    "UsageError",
    "parse_line",
    "parse_argv",
    "run",
    "help_text",
    "COMMAND_WORDS",
    "INTERRUPTED",
]

#: Exit statuses: done; the answer is no (key not found, CAS found another
#: value); anything else went wrong (usage, cluster, request).
OK, NO, ERROR = 0, 1, 2

#: What a command cut short by Ctrl-C says.
INTERRUPTED = "Interrupted (a write's outcome is unknown: read the key to see)"


class UsageError(Exception):
    """The command is not one the tool can send; C{str()} says how to write it."""


# ---------------------------------------------------------------------------
# Actions


@dataclass(frozen=True)
class Put:
    key: str
    value: str


@dataclass(frozen=True)
class Get:
    key: str
    stale: bool = False


@dataclass(frozen=True)
class Delete:
    key: str


@dataclass(frozen=True)
class Status:
    pass


@dataclass(frozen=True)
class Incr:
    key: str
    delta: int = 1


@dataclass(frozen=True)
class Cas:
    key: str
    expected: str
    new: str


@dataclass(frozen=True)
class Raw:
    """A command the library has no method for, sent as typed (C{MEMBERS}, a malformed C{INCR}, ...)."""

    line: str


@dataclass(frozen=True)
class Help:
    topic: str | None = None


@dataclass(frozen=True)
class Exit:
    pass


Action = Union[Put, Get, Delete, Status, Incr, Cas, Raw, Help, Exit]


@dataclass(frozen=True)
class _Command:
    usage: str
    summary: str


#: Every command, in the order help lists them.  Those marked "passed
#: through" are sent as typed: they work as soon as the server has them.
COMMANDS: dict[str, _Command] = {
    "PUT": _Command("PUT <key> <value>", "store a value (the value may contain spaces)"),
    "GET": _Command("GET <key> [STALE]", "read a value; STALE reads the answering node's copy, which may lag"),
    "DELETE": _Command("DELETE <key>", "remove a key"),
    "STATUS": _Command("STATUS", "the answering node's status (role, term, leader, ...)"),
    "INCR": _Command("INCR <key> [<delta>]", "add to an integer value (a missing key counts as 0)"),
    "CAS": _Command("CAS <key> <expected> <new value>", "set the value only if it is <expected>"),
    "MEMBERS": _Command("MEMBERS", "the cluster's members (passed through to the server)"),
    "HELP": _Command("HELP [<command>]", "this list, or one command's usage"),
    "EXIT": _Command("EXIT", "leave the shell (also QUIT, or Ctrl-D)"),
}

COMMAND_WORDS = tuple(COMMANDS)


def help_text(topic: str | None = None) -> str:
    """The list of commands, or one command's usage."""
    if topic is not None:
        command = COMMANDS.get(topic.upper())
        if command is None:
            return f"No such command: {topic}. Type HELP for the list."
        return f"{command.usage}\n  {command.summary}"
    width = max(len(c.usage) for c in COMMANDS.values())
    lines = ["Commands (the command word in any case; any other command is sent to the server as typed):"]
    lines += [f"  {c.usage:<{width}}  {c.summary}" for c in COMMANDS.values()]
    lines.append("Requests go to the leader, found and followed by the client library.")
    return "\n".join(lines)


def _usage(word: str) -> UsageError:
    return UsageError(f"Usage: {COMMANDS[word].usage}")


def _key(word: str, key: str) -> str:
    if not key or any(c.isspace() for c in key):
        raise _usage(word)
    return key


def parse_line(line: str) -> Action | None:
    """
    The action a shell line asks for, split as the server splits a request
    (C{PUT k a  b} stores C{"a  b"}); L{None} for a blank line.

    @raise UsageError: for a known command with the wrong arguments.
    """
    text = line.rstrip("\r\n").lstrip()
    if not text.strip():
        return None
    word, _, rest = text.partition(" ")
    upper = word.upper()
    if upper in ("EXIT", "QUIT"):
        return Exit()
    if upper in ("HELP", "?"):
        return Help(rest.strip() or None)
    if upper == "PUT":
        # The value is everything after the key's space, as typed: spaces
        # inside or at its end are part of it, as for the server.
        key, separator, value = rest.partition(" ")
        if not separator:
            raise _usage("PUT")
        return Put(_key("PUT", key), value)
    rest = rest.strip()
    if upper == "GET":
        parts = rest.split()
        if len(parts) == 1:
            return Get(_key("GET", parts[0]))
        if len(parts) == 2 and parts[1].upper() == "STALE":
            return Get(_key("GET", parts[0]), stale=True)
        raise _usage("GET")
    if upper == "DELETE":
        return Delete(_key("DELETE", rest))
    if upper == "STATUS":
        if rest:
            raise _usage("STATUS")
        return Status()
    if upper in ("INCR", "CAS"):
        return _incr_or_cas(text)
    return Raw(text)


#: Sizes are the server's to check (its limits are its own): the line is
#: parsed here for its syntax only.
_SYNTAX_ONLY = wire.Limits.for_sizes(1 << 40, 1 << 40)


def _incr_or_cas(text: str) -> Action:
    """An INCR or CAS line as the server parses it, for the library's
    C{incr}/C{cas}; a line the server would refuse is sent as typed, so
    that the server's own error line answers it, as before."""
    try:
        command = wire.parse_command(text.encode("utf-8"), _SYNTAX_ONLY)
    except wire.CommandError:
        return Raw(text)
    if isinstance(command, wire.Incr):
        return Incr(command.key, command.delta)
    if isinstance(command, wire.Cas):
        return Cas(command.key, command.expected, command.new)
    return Raw(text)


def parse_argv(words: Sequence[str]) -> Action:
    """
    The action of a one-shot command line (C{put k some value}): the words
    after the command are joined with single spaces, as a shell would have
    typed them.

    @raise UsageError: if there is no command or it has the wrong arguments.
    """
    if not words:
        raise UsageError("no command given")
    word, *args = words
    upper = word.upper()
    if upper == "PUT" and len(args) >= 2:
        return Put(_key("PUT", args[0]), " ".join(args[1:]))
    action = parse_line(" ".join([word, *args]))
    if action is None:
        raise UsageError("no command given")
    return action


# ---------------------------------------------------------------------------
# Running an action


class ClientLike(Protocol):
    """The part of L{kvstore.client.Client} the tool uses."""

    def put(self, key: str, value: str) -> None: ...

    def get(self, key: str, stale: bool = False) -> str: ...

    def delete(self, key: str) -> None: ...

    def status(self) -> dict[str, str]: ...

    def incr(self, key: str, delta: int = 1) -> int: ...

    def cas(self, key: str, expected: str, new: str, *, raise_on_mismatch: bool = False) -> bool: ...

    def raw_command(self, line: str) -> str: ...

    def close(self) -> None: ...

    @property
    def node(self) -> str | None: ...


@dataclass
class Outcome:
    """
    What one action came to.

    @ivar status: L{OK}, L{NO} or L{ERROR} (the one-shot exit status).
    @ivar text: what the shell prints: the server's reply line, or an
        C{Error:} line.
    @ivar data: the JSON object C{--json} prints.
    @ivar node: C{host:port} of the node that answered, if any did.
    @ivar seconds: how long the call took, retries included.
    """

    status: int
    text: str
    data: dict[str, Any] = field(default_factory=dict)
    node: str | None = None
    seconds: float = 0.0


#: The JSON name of each error, most specific first.
_ERROR_NAMES: tuple[tuple[type[ClientError], str], ...] = (
    (KeyNotFound, "not_found"),
    (CasFailed, "cas_failed"),
    (BadRequest, "bad_request"),
    (NoLeader, "no_leader"),
    (ConnectionFailed, "connection_failed"),
    (Unavailable, "unavailable"),
    (OutcomeUnknown, "outcome_unknown"),
    (ProtocolError, "protocol_error"),
    (ClientError, "client_error"),
)

_NOT_FOUND = re.compile(r"Key (\S+) not found\Z")
_VALUE = re.compile(r"value of (\S+): (.*)\Z", re.DOTALL)


def _failure(command: str, error: ClientError) -> Outcome:
    name = next(n for kind, n in _ERROR_NAMES if isinstance(error, kind))
    message = str(error)
    status = ERROR
    if isinstance(error, KeyNotFound):
        text = f"Error: Key {error.key} not found"
        status = NO
        if command == "cas":  # the message a CAS sent as typed used to carry: the server's
            message = text[len("Error: "):]
    elif isinstance(error, CasFailed):
        text = f"Error: {message}"
        status = NO
    else:
        text = f"Error: {message}"
        # A passed-through command's refusals arrive as BadRequest with the
        # server's text: a missing key or a CAS that found another value
        # are answers, not failures.
        if isinstance(error, BadRequest) and (_NOT_FOUND.match(message) or message.startswith("CAS failed")):
            status = NO
            name = "not_found" if _NOT_FOUND.match(message) else "cas_failed"
    data: dict[str, Any] = {"ok": False, "command": command, "error": name, "message": message}
    if isinstance(error, OutcomeUnknown):
        data["may_have_been_applied"] = True
    return Outcome(status, text, data)


def run(action: Action, client: ClientLike) -> Outcome:
    """
    Run C{action} (not L{Help} or L{Exit}, which the caller handles) and
    say how it went.  Library errors become outcomes; nothing else is
    caught.
    """
    command = type(action).__name__.lower()
    start = time.monotonic()
    try:
        outcome = _run(action, client)
    except ClientError as error:
        outcome = _failure(command if not isinstance(action, Raw) else action.line.split()[0].lower(), error)
    outcome.seconds = time.monotonic() - start
    outcome.node = client.node
    outcome.data["node"] = outcome.node
    return outcome


def _run(action: Action, client: ClientLike) -> Outcome:
    if isinstance(action, Put):
        client.put(action.key, action.value)
        return Outcome(OK, f"{action.key} added successfully.", {"ok": True, "command": "put", "key": action.key})
    if isinstance(action, Get):
        value = client.get(action.key, stale=action.stale)
        return Outcome(OK, f"value of {action.key}: {value}",
                       {"ok": True, "command": "get", "key": action.key, "value": value})
    if isinstance(action, Delete):
        client.delete(action.key)
        return Outcome(OK, f"{action.key} deleted successfully.",
                       {"ok": True, "command": "delete", "key": action.key})
    if isinstance(action, Status):
        fields = client.status()
        return Outcome(OK, " ".join(f"{k}={v}" for k, v in fields.items()),
                       {"ok": True, "command": "status", "status": fields})
    if isinstance(action, Incr):
        number = client.incr(action.key, action.delta)
        reply = replies.incr_reply(action.key, number)
        return Outcome(OK, reply, {"ok": True, "command": "incr", "reply": reply, "key": action.key,
                                   "value": str(number)})
    if isinstance(action, Cas):
        client.cas(action.key, action.expected, action.new, raise_on_mismatch=True)
        reply = replies.cas_reply(action.key)
        return Outcome(OK, reply, {"ok": True, "command": "cas", "reply": reply})
    if isinstance(action, Raw):
        reply = client.raw_command(action.line)
        data: dict[str, Any] = {"ok": True, "command": action.line.split()[0].lower(), "reply": reply}
        match = _VALUE.match(reply)
        if match is not None:
            data["key"], data["value"] = match.groups()
        return Outcome(OK, reply, data)
    raise TypeError(f"not a command to send: {action!r}")
