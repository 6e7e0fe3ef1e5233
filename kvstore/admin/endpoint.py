# -*- test-case-name: tests.test_admin_wiring -*-
"""
The admin endpoint's instruments and HTTP site for one node
(C{--admin-listen}): see L{kvstore.admin.wiring} for where they go.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource

from kvstore.admin.collector import NodeCollector
from kvstore.admin.health import HealthChecks
from kvstore.admin.instruments import MeteredPeers, ReactorLagProbe, RoundTrips, metered_receive, timed_file_system
from kvstore.admin.metrics import AdminMetrics
from kvstore.admin.requests import CountingClientFactory, RequestCounts
from kvstore.admin.view import NodeView
from kvstore.admin.web import AdminSite, admin_root
from kvstore.admin.wiring import FlushReporting
from kvstore.node.monitoring import NodeMetrics
from kvstore.node.node import PeerSender
from kvstore.protocols.client import ClientFactory, KeyValueService
from kvstore.protocols.commands import DEFAULT_LIMITS, Limits
from kvstore.raft.messages import Message
from kvstore.storage.fs import FileSystem

__all__ = ["AdminInstruments"]


class _ProbeService(Service):
    """Runs the reactor-lag probe while the node's service runs."""

    def __init__(self, probe: ReactorLagProbe) -> None:
        self._probe = probe

    def startService(self) -> None:
        super().startService()
        self._probe.start()

    def stopService(self) -> Any:
        self._probe.stop()
        return super().stopService()


class AdminInstruments:
    """
    A node's instruments with the admin endpoint on.

    @param clock: the node's reactor (or a C{task.Clock} in tests).
    @param peers: the other members' ids.
    @param process_metrics: export the process' own metrics (see
        L{AdminMetrics}).

    @ivar counts: the client request counts.
    @ivar probe: the reactor-lag probe (started by L{service}).
    """

    def __init__(self, clock: IReactorTime, peers: Iterable[int], *, process_metrics: bool = True) -> None:
        self._clock = clock
        self.admin_metrics = AdminMetrics(peers, process=process_metrics)
        self.counts = RequestCounts()
        self.round_trips = RoundTrips(clock, self.admin_metrics.round_trip)
        self.probe = ReactorLagProbe(clock, self.admin_metrics.reactor_late)
        self.checks: HealthChecks | None = None

    @property
    def metrics(self) -> NodeMetrics:
        return self.admin_metrics

    @property
    def registry(self) -> Any:
        """The node's prometheus_client registry."""
        return self.admin_metrics.registry

    def file_system(self, fs: FileSystem) -> FileSystem:
        return timed_file_system(fs, self.admin_metrics.fsync_timed)

    def watch_log(self, log: FlushReporting) -> None:
        log.on_flush = self.admin_metrics.wal_flushed

    def peers(self, peers: PeerSender) -> PeerSender:
        return MeteredPeers(peers, self.round_trips)

    def receive(self, receive: Callable[[Message], None]) -> Callable[[Message], None]:
        return metered_receive(receive, self.round_trips)

    def client_factory(self, service: KeyValueService, limits: Limits = DEFAULT_LIMITS) -> ClientFactory:
        return CountingClientFactory(service, self.counts, limits)

    def attach(self, view: NodeView) -> Resource:
        """Read the built node through C{view} from now on; return the
        admin endpoint's resource tree."""
        self.admin_metrics.registry.register(NodeCollector(view, self.counts))
        self.checks = HealthChecks(view, self._clock, self.probe)
        return admin_root(self.admin_metrics.registry, self.checks, view)

    def site(self, view: NodeView) -> AdminSite:
        """L{attach}, as an HTTP site."""
        return AdminSite(self.attach(view), reactor=self._clock)

    def service(self) -> Service:
        """A service that runs the reactor-lag probe while it runs."""
        return _ProbeService(self.probe)
