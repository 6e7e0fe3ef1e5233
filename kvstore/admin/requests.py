# -*- test-case-name: tests.test_admin_metrics_requests -*-
"""
Counting client requests and connections, at the least cost per request.

L{CountingClientFactory} builds client protocols (a subclass of the real
one) that count each request where the protocol already handles its
outcome: a success in C{_succeeded}, keyed by the function that renders its
reply (one per command; C{GET key STALE} has its own), a failure in
C{_failed}, which knows the command.  That costs one extra call per request
and no Deferred callback of its own (a wrapper around the node adding one
callback per request cost about 10 % of the node's CPU per request:
docs/performance.md, "The cost of metrics").  Writes in flight are the
protocols' own count, summed when scraped.

Counts are plain integers in one L{RequestCounts}, changed only on the
reactor thread and read by the collector when a scrape renders (also on the
reactor thread): no lock.

A node started without C{--admin-listen} uses none of this: its client
factory is the plain L{ClientFactory}.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from kvstore.errors import KeyNotFound, NotLeader, OutcomeUnknown, Unavailable
from kvstore.protocols import client as _client
from kvstore.protocols.client import DEFAULT_MAX_PENDING, ClientFactory, ClientProtocol, KeyValueService
from kvstore.protocols.commands import (
    DEFAULT_LIMITS,
    AddNode,
    Cas,
    Delete,
    Get,
    Incr,
    Limits,
    Members,
    OpenSession,
    Put,
    RemoveNode,
    Tagged,
    Transfer,
)

__all__ = ["COMMANDS", "RESULTS", "CountingClientFactory", "RequestCounts", "result_label"]

#: The C{command} label's values: C{get_stale} is C{GET key STALE}.
COMMANDS = ("put", "delete", "get", "get_stale", "status")
#: The C{result} label's values.  C{not_found} is a successful request whose
#: key had no value; C{error} is anything unexpected (C{Error: Internal error}).
RESULTS = ("ok", "not_found", "not_leader", "outcome_unknown", "unavailable", "error")

_ERROR_LABELS: dict[type, str] = {
    KeyNotFound: "not_found",
    NotLeader: "not_leader",
    OutcomeUnknown: "outcome_unknown",
    Unavailable: "unavailable",
}

#: The client protocol's reply renderers, one per command: what a success
#: is counted by.  Private to the protocol module, deliberately shared: the
#: renderer is what identifies the command of a result at no cost.
_RENDERERS: dict[Callable[[str, object], bytes], str] = {
    _client._put_reply: "put",
    _client._delete_reply: "delete",
    _client._get_reply: "get",
    _client._stale_get_reply: "get_stale",
    _client._incr_reply: "incr",
    _client._cas_reply: "cas",
    _client._session_reply: "session",
    _client._members_reply: "members",
    _client._added_reply: "addnode",
    _client._removed_reply: "removenode",
    _client._transferred_reply: "transfer",
}

#: The commands that propose a log entry (a tagged one is its command's).
_PROPOSALS = (Put, Delete, Incr, Cas, OpenSession, Tagged)


def result_label(result: object) -> str:
    """The C{result} label of a request's outcome (a value or a L{Failure})."""
    if not isinstance(result, Failure):
        return "ok"
    label = _ERROR_LABELS.get(type(result.value))
    if label is None:  # a subclass, or something unexpected
        label = next((name for kind, name in _ERROR_LABELS.items() if isinstance(result.value, kind)), "error")
    return label


def command_label(command: object) -> str:
    """The C{command} label of a parsed request."""
    kind = type(command)
    if kind is Tagged:
        return command_label(command.command)  # type: ignore[attr-defined]  # checked: a Tagged
    if kind is Get:
        return "get_stale" if command.stale else "get"  # type: ignore[attr-defined]  # checked: a Get
    if kind is Put:
        return "put"
    if kind is Delete:
        return "delete"
    if kind is Incr:
        return "incr"
    if kind is Cas:
        return "cas"
    if kind is OpenSession:
        return "session"
    if kind is Members:
        return "members"
    if kind is AddNode:
        return "addnode"
    if kind is RemoveNode:
        return "removenode"
    if kind is Transfer:
        return "transfer"
    return "status"


class RequestCounts:
    """
    What the counting protocols counted.

    @ivar succeeded: successes by reply renderer (see L{_RENDERERS}).
    @ivar failed: failures by C{(command, result)}.
    @ivar statuses: C{STATUS} requests answered.
    @ivar failed_proposals: PUTs and DELETEs whose outcome is unknown (the
        entry was appended, then leadership was lost, or it did not commit
        in time) or that the node could no longer serve.
    @ivar open: the client connections open now.
    @ivar connections_accepted: client connections accepted since start.
    """

    def __init__(self) -> None:
        self.succeeded: dict[Callable[[str, object], bytes], int] = dict.fromkeys(_RENDERERS, 0)
        self.failed: dict[tuple[str, str], int] = {}
        self.statuses = 0
        self.failed_proposals = 0
        self.open: set[ClientProtocol] = set()
        self.connections_accepted = 0

    def requests(self) -> dict[tuple[str, str], int]:
        """Completed requests by C{(command, result)}."""
        counts = {(_RENDERERS[render], "ok"): n for render, n in self.succeeded.items()}
        counts[("status", "ok")] = self.statuses
        for key, n in self.failed.items():
            counts[key] = counts.get(key, 0) + n
        return counts

    def linearizable_reads(self) -> dict[str, int]:
        """Linearizable GETs by outcome: C{ok} (served, the key found or
        not) or the failure's label (C{unavailable})."""
        reads = {"ok": self.succeeded[_client._get_reply], "unavailable": 0}
        for (command, result), n in self.failed.items():
            if command == "get":
                label = "ok" if result == "not_found" else result
                reads[label] = reads.get(label, 0) + n
        return reads

    @property
    def connections(self) -> int:
        """Client connections open now."""
        return len(self.open)

    @property
    def pending_writes(self) -> int:
        """PUTs and DELETEs started on the node and not yet answered."""
        return sum(protocol._writes_in_flight for protocol in self.open)


class _CountedClientProtocol(ClientProtocol):
    """A client connection counting its requests and itself in C{counts}."""

    counts: RequestCounts

    def connectionMade(self) -> None:
        self.counts.open.add(self)
        self.counts.connections_accepted += 1
        super().connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.counts.open.discard(self)
        super().connectionLost(reason)

    def _succeeded(self, result: object, slot: Any, render: Callable[[str, object], bytes], key: str) -> None:
        self.counts.succeeded[render] += 1
        return super()._succeeded(result, slot, render, key)

    def _failed(self, failure: Failure, slot: Any, command: Any) -> None:
        counts = self.counts
        label = result_label(failure)
        key = (command_label(command), label)
        counts.failed[key] = counts.failed.get(key, 0) + 1
        if (label == "outcome_unknown" or label == "unavailable") and type(command) in _PROPOSALS:
            counts.failed_proposals += 1
        return super()._failed(failure, slot, command)


class _StatusCounting:
    """
    The node as the counting protocols see it: its own C{put}, C{delete} and
    C{get} (bound methods: not even a call more), and C{status} counted.
    """

    def __init__(self, service: KeyValueService, counts: RequestCounts) -> None:
        self.put = service.put
        self.delete = service.delete
        self.get = service.get
        self._service = service
        self._status = service.status
        self._counts = counts

    def incr(self, key: str, delta: int, session: Any = None) -> Deferred[int]:
        return self._service.incr(key, delta, session=session)

    def cas(self, key: str, expected: str, new: str, session: Any = None) -> Deferred[None]:
        return self._service.cas(key, expected, new, session=session)

    def open_session(self) -> Deferred[int]:
        return self._service.open_session()

    # The membership admin commands (issue 13), for a node that has them.

    def members_text(self) -> str:
        return self._service.members_text()  # type: ignore[attr-defined, no-any-return]  # a MembershipService

    def add_node(self, node_id: int, address: str) -> Deferred[None]:
        return self._service.add_node(node_id, address)  # type: ignore[attr-defined, no-any-return]  # a MembershipService

    def remove_node(self, node_id: int) -> Deferred[None]:
        return self._service.remove_node(node_id)  # type: ignore[attr-defined, no-any-return]  # a MembershipService

    def transfer_leadership(self, node_id: int) -> Deferred[None]:
        return self._service.transfer_leadership(node_id)  # type: ignore[attr-defined, no-any-return]  # a MembershipService

    def status(self) -> dict[str, object]:
        self._counts.statuses += 1
        return self._status()


class CountingClientFactory(ClientFactory):
    """
    A L{ClientFactory} whose protocols count their requests and connections
    in C{counts}.  Built exactly as a L{ClientFactory} otherwise (limits,
    backlog), so it can stand wherever one does.
    """

    protocol = _CountedClientProtocol

    def __init__(
        self,
        service: KeyValueService,
        counts: RequestCounts,
        limits: Limits = DEFAULT_LIMITS,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        super().__init__(_StatusCounting(service, counts), limits, max_pending)
        self.counts = counts

    def buildProtocol(self, addr: object) -> ClientProtocol:
        proto = super().buildProtocol(addr)
        assert isinstance(proto, _CountedClientProtocol)
        proto.counts = self.counts
        return proto
