# -*- test-case-name: tests.test_join -*-
"""
C{--join}: ask an existing cluster to add this node (issue 13).

Runs at start-up, before the reactor (as recovery does), with plain
blocking sockets and the client protocol's own commands: C{STATUS} on a
member gives the cluster id, C{ADDNODE <id> <host>:<port>} asks for the
change (following C{Not leader} to the leader, waiting out elections and
other changes in progress), and C{MEMBERS} on the leader gives the members
to link to until the leader's entries arrive.  C{ADDNODE} is idempotent, so
a node whose first start died half-way simply joins again.

Refusals (L{JoinRefused}, whose text is an C{Error:} line): the id is taken
by another address or was removed, the cluster id differs from
C{--cluster-id}, or no member answered before the deadline.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from twisted.logger import Logger

from kvstore.daemon.options import format_address
from kvstore.protocols.commands import parse_address
from kvstore.protocols.replies import parse_leader_address, parse_status

__all__ = ["JoinRefused", "Joined", "join_cluster"]

_log = Logger()

#: Replies after which asking again later may succeed.
_RETRY_PREFIXES = (
    "Error: Not leader. No leader elected yet",
    "Error: Membership change in progress",
    "Error: Membership change refused",
    "Error: Outcome unknown",
    "Error: Unavailable",
    "Error: Leadership",
)


class JoinRefused(Exception):
    """Joining failed; C{str()} is the C{Error:} line to log."""


@dataclass
class Joined:
    """What joining learnt: the cluster's id and the members (id ->
    address) to link to until the configuration arrives."""

    cluster_id: str
    members: dict[int, str] = field(default_factory=dict)


class Connection(Protocol):
    """One client connection to a member: a request line in, its reply
    line out (blocking)."""

    def ask(self, line: str) -> str: ...

    def close(self) -> None: ...


#: The longest reply line read from a member: a C{MEMBERS} reply of a
#: thousand members is tens of kilobytes; without a cap, something that is
#: not a kvstore node listening at a C{--join} address could make the
#: joining process buffer without end.
MAX_REPLY_BYTES = 1024 * 1024


class _Connection:
    """A L{Connection} over a plain blocking TCP socket."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self._socket = socket.create_connection((host, port), timeout=timeout)
        self._buffer = b""

    def ask(self, line: str) -> str:
        self._socket.sendall(line.encode("utf-8") + b"\n")
        while b"\n" not in self._buffer:
            data = self._socket.recv(65536)
            if not data:
                raise ConnectionError("connection closed")
            self._buffer += data
            if len(self._buffer) > MAX_REPLY_BYTES and b"\n" not in self._buffer:
                raise ConnectionError(f"reply longer than {MAX_REPLY_BYTES} bytes: not a kvstore node?")
        reply, _, self._buffer = self._buffer.partition(b"\n")
        return reply.decode("utf-8", "replace")

    def close(self) -> None:
        self._socket.close()


def _members(reply: str) -> dict[int, str]:
    """The id -> address of a C{MEMBERS} reply (empty for an error)."""
    members: dict[int, str] = {}
    if reply.startswith("Error"):
        return members
    for token in reply.split():
        head, _, _role = token.rpartition("/")
        node, _, address = head.partition("@")
        if node.isdigit() and address:
            members[int(node)] = address
    return members


def join_cluster(
    through: Sequence[tuple[str, int]],
    node_id: int,
    address: str,
    cluster_id: str | None,
    *,
    deadline: float = 30.0,
    timeout: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    connect: Callable[[str, int, float], Connection] = _Connection,
) -> Joined:
    """
    Ask the cluster reached C{through} these members to add C{node_id} at
    C{address} as a learner; return once the change is committed.

    @param cluster_id: the cluster id this node must join (C{--cluster-id}),
        or L{None} to take the cluster's.
    @param sleep: waits between attempts; C{clock} tells the time against
        C{deadline}; C{connect(host, port, timeout)} opens a L{Connection}
        or raises L{OSError} (the tests replace all three).
    @raises JoinRefused: see the module docstring.
    """
    end = clock() + deadline
    queue = list(through)
    answered = False
    last = ""
    seed: dict[int, str] = {}
    while clock() < end:
        if not queue:
            queue = list(through)
            # A pause between rounds over every address, bounded by the
            # deadline: joining runs in makeService, before the reactor
            # starts, so this blocks nothing but the start-up it belongs to.
            sleep(0.3)
        host, port = queue.pop(0)
        where = format_address(host, port)
        try:
            connection = connect(host, port, timeout)
        except OSError as e:
            last = f"{where}: {e}"
            continue
        try:
            status = parse_status(connection.ask("STATUS"))
            answered = True
            theirs = status.get("cluster", "")
            if cluster_id is not None and theirs != cluster_id:
                raise JoinRefused(
                    f"Error: the node at {where} belongs to cluster {theirs!r}, not {cluster_id!r}; refusing to join"
                )
            if status.get("node", "").isdigit():
                seed[int(status["node"])] = where
            reply = connection.ask(f"ADDNODE {node_id} {address}")
            if reply == f"Node {node_id} added successfully.":
                members = _members(connection.ask("MEMBERS")) or seed
                members.pop(node_id, None)
                _log.info("joined cluster {cluster} through {where}", cluster=theirs, where=where)
                return Joined(theirs, members)
            last = f"{where}: {reply}"
            leader = parse_leader_address(reply) if reply.startswith("Error: Not leader.") else None
            if leader is not None:
                queue.insert(0, leader)
            elif reply.startswith(_RETRY_PREFIXES) or reply.startswith("Error: Not leader."):
                sleep(0.2)  # retry after a pause, bounded by the deadline; before the reactor starts (see above)
            elif reply.startswith("Error:"):
                raise JoinRefused(f"{reply} (from the cluster at {where})")
        except (OSError, ValueError) as e:
            last = f"{where}: {e}"
        finally:
            connection.close()
    if not answered:
        tried = ", ".join(format_address(h, p) for h, p in through)
        raise JoinRefused(f"Error: no member of the cluster answered at {tried} within {deadline:g} s ({last})")
    raise JoinRefused(f"Error: could not join the cluster within {deadline:g} s; last reply: {last}")


def check_address(address: str) -> None:
    """@raises JoinRefused: if C{address} is not C{HOST:PORT}."""
    try:
        parse_address(address)
    except ValueError as e:
        raise JoinRefused(f"Error: {e}") from None
