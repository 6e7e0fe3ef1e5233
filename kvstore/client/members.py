# -*- test-case-name: tests.test_client_members -*-
"""
The C{MEMBERS} reply as data: C{Client.members()},
C{DeferredClient.members()} and C{AsyncClient.members()} return it parsed, one L{Member} per token of
C{<id>@<host>:<port>/<role>}, in the server's id order (docs/protocol.md).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from kvstore.client.errors import ProtocolError

__all__ = ["Member", "parse_members"]

_TOKEN = re.compile(r"(0|[1-9][0-9]*)@(\S+)/(voter|learner)")


class Member(NamedTuple):
    """One member of the cluster: its id, its client address, and its role
    (C{"voter"} or C{"learner"})."""

    id: int
    address: str
    role: str


def parse_members(line: str) -> list[Member]:
    """
    The members named by a C{MEMBERS} reply line.

    @raise ProtocolError: if a token is not C{<id>@<host>:<port>/<role>}.
    """
    members = []
    for token in line.split():
        match = _TOKEN.fullmatch(token)
        if match is None:
            raise ProtocolError(f"not a member in a MEMBERS reply: {token[:80]!r}")
        members.append(Member(int(match.group(1)), match.group(2), match.group(3)))
    return members
