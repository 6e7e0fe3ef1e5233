# -*- test-case-name: tests.test_admin_metrics_requests -*-
"""
Counting client requests and connections without touching the client
protocol or the node.

L{CountingService} stands between the client protocol and the node (it is
the protocol's L{KeyValueService}) and counts each request by command and
result when its Deferred fires; L{CountingClientFactory} builds client
protocols that count their connections.  Counts are plain integers in one
L{RequestCounts}, changed only on the reactor thread and read by the
collector when a scrape renders (also on the reactor thread): one dict
increment per request, no lock, far cheaper than a prometheus_client
counter with labels.

A node started without C{--admin-listen} uses neither: the protocol talks to
the node directly.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from kvstore.errors import KeyNotFound, NotLeader, OutcomeUnknown, Unavailable
from kvstore.protocols.client import DEFAULT_MAX_PENDING, ClientFactory, ClientProtocol, KeyValueService
from kvstore.protocols.commands import DEFAULT_LIMITS, Limits

__all__ = ["COMMANDS", "RESULTS", "CountingClientFactory", "CountingService", "RequestCounts", "result_label"]

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


def result_label(result: object) -> str:
    """The C{result} label of a request's outcome (a value or a L{Failure})."""
    if not isinstance(result, Failure):
        return "ok"
    label = _ERROR_LABELS.get(type(result.value))
    if label is None:  # a subclass, or something unexpected
        label = next((name for kind, name in _ERROR_LABELS.items() if isinstance(result.value, kind)), "error")
    return label


class RequestCounts:
    """
    What L{CountingService} and L{CountingClientFactory} counted.

    @ivar requests: C{(command, result) -> count}.
    @ivar linearizable_reads: C{result -> count} of linearizable GETs:
        C{ok} (served, whether or not the key had a value) or C{unavailable}.
    @ivar pending_writes: PUTs and DELETEs proposed and not yet answered.
    @ivar failed_proposals: PUTs and DELETEs whose outcome is unknown (the
        entry was appended, then leadership was lost, or it did not commit
        in time) or that the node could no longer serve.
    @ivar connections: client connections open now.
    @ivar connections_accepted: client connections accepted since start.
    """

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {(command, "ok"): 0 for command in COMMANDS}
        self.linearizable_reads: dict[str, int] = {"ok": 0, "unavailable": 0}
        self.pending_writes = 0
        self.failed_proposals = 0
        self.connections = 0
        self.connections_accepted = 0


class CountingService:
    """
    A L{KeyValueService} that passes every request to C{service} (the node)
    and counts it in C{counts} when it completes.  Results pass through
    unchanged.
    """

    def __init__(self, service: KeyValueService, counts: RequestCounts) -> None:
        self._service = service
        self.counts = counts

    def put(self, key: str, value: str) -> Deferred[None]:
        self.counts.pending_writes += 1
        return self._service.put(key, value).addBoth(self._write_done, "put")

    def delete(self, key: str) -> Deferred[None]:
        self.counts.pending_writes += 1
        return self._service.delete(key).addBoth(self._write_done, "delete")

    def get(self, key: str, stale: bool) -> Deferred[str]:
        if stale:
            return self._service.get(key, stale).addBoth(self._stale_read_done)
        return self._service.get(key, stale).addBoth(self._read_done)

    def status(self) -> dict[str, object]:
        status = self._service.status()
        self._count("status", "ok")
        return status

    def _count(self, command: str, result: str) -> None:
        requests = self.counts.requests
        key = (command, result)
        requests[key] = requests.get(key, 0) + 1

    def _write_done(self, result: Any, command: str) -> Any:
        counts = self.counts
        counts.pending_writes -= 1
        label = result_label(result)
        if label == "outcome_unknown" or label == "unavailable":
            counts.failed_proposals += 1
        self._count(command, label)
        return result

    def _read_done(self, result: Any) -> Any:
        label = result_label(result)
        self._count("get", label)
        reads = self.counts.linearizable_reads
        served = "ok" if label in ("ok", "not_found") else label
        reads[served] = reads.get(served, 0) + 1
        return result

    def _stale_read_done(self, result: Any) -> Any:
        self._count("get_stale", result_label(result))
        return result


class _CountedClientProtocol(ClientProtocol):
    """A client connection that keeps its factory's L{RequestCounts}."""

    counts: RequestCounts

    def connectionMade(self) -> None:
        self.counts.connections += 1
        self.counts.connections_accepted += 1
        super().connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.counts.connections -= 1
        super().connectionLost(reason)


class CountingClientFactory(ClientFactory):
    """
    A L{ClientFactory} whose requests go through a L{CountingService} and
    whose protocols count their connections, both in C{counts}.  Built
    exactly as a L{ClientFactory} otherwise (limits, backlog), so it can
    stand wherever one does.
    """

    protocol = _CountedClientProtocol

    def __init__(
        self,
        service: KeyValueService,
        counts: RequestCounts,
        limits: Limits = DEFAULT_LIMITS,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        super().__init__(CountingService(service, counts), limits, max_pending)
        self.counts = counts

    def buildProtocol(self, addr: object) -> ClientProtocol:
        proto = super().buildProtocol(addr)
        assert isinstance(proto, _CountedClientProtocol)
        proto.counts = self.counts
        return proto
