# -*- test-case-name: tests.test_client_raw -*-
"""
A request line passed through as typed: L{Raw}, what
C{Client.raw_command} sends.

Why: C{kvstore-cli} (and any tool) must be able to send commands the
library has no method for yet, or never will (C{INCR}, C{CAS}, C{MEMBERS},
a newer server's commands), and still have the library follow the leader,
retry what is safe to retry and turn C{Error:} replies into exceptions.  The
library knows nothing of such a command's meaning, so it assumes the worst:
any command whose first word is not a known read is a write, never retried
once it may have reached a node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kvstore.client.errors import BadRequest

__all__ = ["Raw", "READ_WORDS"]

#: First words of commands that change nothing, so that retrying them after
#: a lost connection is harmless.  Anything else counts as a write.
READ_WORDS = frozenset({"GET", "STATUS", "PING", "MEMBERS"})

# Any control character but TAB would end the line early or be refused.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Raw:
    """
    One request line, sent as given; its reply line is returned as given
    (an C{Error:} reply is interpreted like any other request's).  C{write}
    is whether the command may change state; L{Raw.of} derives it.
    """

    line: str
    write: bool = True

    @classmethod
    def of(cls, line: str) -> "Raw":
        """
        The request for C{line} (without its LF).

        @raise BadRequest: if C{line} is empty or holds a control character,
            so that it could not travel as one request line.
        """
        if not isinstance(line, str):
            raise BadRequest(f"a command must be a str, not {type(line).__name__}")
        if not line.strip():
            raise BadRequest("empty command")
        if _CONTROL.search(line):
            raise BadRequest("a command must not contain control characters other than TAB")
        word = line.split(None, 1)[0].upper()
        return cls(line, write=word not in READ_WORDS)

    def encode(self) -> bytes:
        """The request line, LF included."""
        return self.line.encode("utf-8") + b"\n"
