# -*- test-case-name: tests.test_admin_wiring -*-
"""
How a node is instrumented, in one object the builder of a node consults at
each place a wrapper may go (L{kvstore.daemon.service.build_service}, and the
tests' in-memory cluster):

  - L{NoInstruments} (the admin endpoint is off): every method hands back
    what it was given, so the node runs exactly as it would without this
    module -- no wrapper, no hook, nothing counted;
  - L{kvstore.admin.endpoint.AdminInstruments} (on): the node's metrics,
    the counting wrappers, the reactor-lag probe, and the HTTP site that
    serves them.

This module imports neither prometheus_client nor twisted.web, so a node
without the endpoint does not load them.
"""

from __future__ import annotations

from typing import Callable, Protocol

from kvstore.node.monitoring import NO_METRICS, NodeMetrics
from kvstore.node.node import PeerSender
from kvstore.protocols.client import ClientFactory, KeyValueService
from kvstore.protocols.commands import DEFAULT_LIMITS, Limits
from kvstore.raft.messages import Message
from kvstore.storage.fs import FileSystem

__all__ = ["FlushReporting", "Instruments", "NoInstruments"]


class FlushReporting(Protocol):
    """A log with the flush hook (L{kvstore.storage.WriteAheadLog},
    L{kvstore.storage.MemoryLog})."""

    on_flush: Callable[[int, int], None] | None


class Instruments(Protocol):
    """Where a node's builder lets monitoring in."""

    @property
    def metrics(self) -> NodeMetrics:
        """The node's L{NodeMetrics}, for L{kvstore.node.build.build_node}."""

    def file_system(self, fs: FileSystem) -> FileSystem:
        """The file system the write-ahead log is opened with."""

    def watch_log(self, log: FlushReporting) -> None:
        """Follow the log's flushes."""

    def peers(self, peers: PeerSender) -> PeerSender:
        """What the node sends its peer messages through."""

    def receive(self, receive: Callable[[Message], None]) -> Callable[[Message], None]:
        """What the peer protocol hands received messages to."""

    def client_factory(self, service: KeyValueService, limits: Limits = DEFAULT_LIMITS) -> ClientFactory:
        """The factory of client connections."""


class NoInstruments:
    """The admin endpoint is off: nothing is wrapped or recorded."""

    metrics: NodeMetrics = NO_METRICS

    def file_system(self, fs: FileSystem) -> FileSystem:
        return fs

    def watch_log(self, log: FlushReporting) -> None:
        pass

    def peers(self, peers: PeerSender) -> PeerSender:
        return peers

    def receive(self, receive: Callable[[Message], None]) -> Callable[[Message], None]:
        return receive

    def client_factory(self, service: KeyValueService, limits: Limits = DEFAULT_LIMITS) -> ClientFactory:
        return ClientFactory(service, limits)
