# -*- test-case-name: tests.test_sim_sessions -*-
"""
The simulator's side of exactly-once sessions (issue 14).

L{AuditedStateMachine} is the production L{KeyValueStateMachine} with a
witness on its input: it reads the tag of every session write it applies
(C{T<session> <seq> <stamp> <command>}, decoded here independently of the
production parser) and checks that once a sequence number of a session has
appeared in the applied log, no later entry of that session with that
number or a lower one changes the state: a copy that a client's retry put
in the log is answered from the session's record, never applied again.
Seen from outside, a write applied twice is exactly a copy that changes
the key it writes (an INCR always does; a PUT, DELETE or CAS does when
another write came in between), so this is the property "no session's write
is applied twice", checked on every node at every index.  It knows nothing
of the machine's session table, expiry or cap: a copy refused because its
session expired changes nothing, so it passes too.

The witness starts empty with each state machine, so after a restart it
checks the copies of the entries it has seen applied since.
"""

from __future__ import annotations

from typing import Callable

from kvstore.statemachine import ApplyResult, KeyValueStateMachine

__all__ = ["AuditedStateMachine", "decode_tag"]


def decode_tag(data: bytes) -> tuple[int, int, str] | None:
    """C{(session, seq, key)} of a session write, or L{None} for any other
    entry (or one too malformed to be applied)."""
    if not data.startswith(b"T"):
        return None
    parts = data[1:].split(b" ", 3)
    if len(parts) != 4 or not parts[0].isdigit() or not parts[1].isdigit() or not parts[3]:
        return None
    command = parts[3]
    try:
        text = command[1:].decode("utf-8")
    except UnicodeDecodeError:
        return None
    key = text.split(" ", 1)[0]
    if not key:
        return None
    return int(parts[0]), int(parts[1]), key


class AuditedStateMachine(KeyValueStateMachine):
    """
    A L{KeyValueStateMachine} that reports, through C{violate(detail)}, any
    copy of a session write that changes the state (see the module
    docstring).
    """

    def __init__(self, violate: Callable[[str], None], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]  # the machine's own keyword arguments
        self._violate = violate
        self._highest_seen: dict[int, int] = {}

    def apply(self, index: int, data: bytes) -> ApplyResult:
        tag = decode_tag(data)
        if tag is None:
            return super().apply(index, data)
        session, seq, key = tag
        copy = seq <= self._highest_seen.get(session, 0)
        before = self.get(key)
        result = super().apply(index, data)
        if copy:
            after = self.get(key)
            if after != before:
                self._violate(
                    f"entry {index}: session {session} sequence {seq} (highest seen {self._highest_seen[session]}) "
                    f"changed {key!r} from {before!r} to {after!r}: a write applied twice"
                )
        else:
            self._highest_seen[session] = seq
        return result
