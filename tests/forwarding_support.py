# -*- test-case-name: tests.test_forwarding -*-
"""
An in-memory cluster (L{kvstore.testing.memory_cluster}) whose nodes have
write forwarding attached, and client connections to them on in-memory
transports: what the write forwarding tests drive.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.testing import StringTransport

from kvstore.node.forwarding import ForwardChannel, Forwarding, attach_forwarding
from kvstore.protocols.client import ClientFactory, ClientProtocol
from kvstore.protocols.commands import DEFAULT_LIMITS, Limits
from kvstore.testing.memory_cluster import InMemoryCluster


class Connection:
    """One client connection to a node, on an in-memory transport."""

    def __init__(self, protocol: ClientProtocol) -> None:
        self.protocol = protocol
        self.transport = StringTransport()
        protocol.makeConnection(self.transport)

    def send(self, *lines: str) -> None:
        self.protocol.dataReceived(b"".join(line.encode("utf-8") + b"\n" for line in lines))

    def replies(self) -> list[str]:
        return self.transport.value().decode("utf-8").splitlines()


class ForwardingCluster:
    """
    C{size} members with forwarding attached; members listed in C{forward}
    (all by default) forward the writes they refuse.
    """

    def __init__(
        self,
        size: int = 3,
        seed: int = 0,
        *,
        forward: tuple[int, ...] | None = None,
        max_in_flight: int = 1000,
        limits: Limits = DEFAULT_LIMITS,
        commit_timeout: float = 2.0,
        **options: Any,
    ) -> None:
        self.cluster = InMemoryCluster(size, seed, commit_timeout=commit_timeout, **options)
        self.forward = forward if forward is not None else self.cluster.ids
        self.max_in_flight = max_in_flight
        self.limits = limits
        self.factories: dict[int, ClientFactory] = {}
        self.forwarding: dict[int, Forwarding] = {}
        self.channels: dict[int, ForwardChannel] = {}
        for node_id in self.cluster.ids:
            self.attach(node_id)

    def attach(self, node_id: int, channel: ForwardChannel | None = None) -> Forwarding:
        """(Re)attach forwarding to the running member C{node_id}."""
        node = self.cluster.node(node_id)
        factory = ClientFactory(node, self.limits)
        forwarding = attach_forwarding(
            node, factory, self.cluster.network, self.cluster.clock,
            forward_writes=node_id in self.forward, channel=channel, max_in_flight=self.max_in_flight,
            rng=random.Random(node_id),
        )
        self.factories[node_id] = factory
        self.forwarding[node_id] = forwarding
        return forwarding

    def connect(self, node_id: int) -> Connection:
        protocol = self.factories[node_id].buildProtocol(None)
        return Connection(protocol)

    def leader_and_follower(self) -> tuple[int, int]:
        leader = self.cluster.wait_for_leader()
        follower = next(i for i in self.cluster.ids if i != leader)
        return leader, follower

    def run_until_replies(self, connection: Connection, count: int, timeout: float = 10.0) -> list[str]:
        if not self.cluster.run_until(lambda: len(connection.replies()) >= count, timeout):
            raise AssertionError(f"only {connection.replies()!r} within {timeout} simulated seconds")
        return connection.replies()
