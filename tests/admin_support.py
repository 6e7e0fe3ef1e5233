"""
What the admin endpoint's tests share: an in-memory cluster whose nodes
are instrumented as C{--admin-listen} instruments a real one, and reading a
node's metrics back the way Prometheus would (rendered text, parsed).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from kvstore.admin.endpoint import AdminInstruments
from kvstore.admin.view import NodeView
from kvstore.testing.memory_cluster import CLUSTER_ID, InMemoryCluster


class Samples:
    """One scrape: every sample by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        self.families: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.families[family.name] = family.type
            for sample in family.samples:
                self.values[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def names(self) -> set[str]:
        """Every sample name (a histogram's _bucket, _sum and _count included)."""
        return {name for name, _ in self.values}

    def value(self, name: str, **labels: str) -> float:
        """The sample C{name} with exactly these labels."""
        key = (name, frozenset(labels.items()))
        if key not in self.values:
            raise KeyError(f"no sample {name}{labels} in:\n{self.text}")
        return self.values[key]

    def bucket(self, name: str, le: str, **labels: str) -> float:
        """A histogram's cumulative count of observations at most C{le}."""
        return self.value(f"{name}_bucket", le=le, **labels)


def scrape(instruments: Any) -> Samples:
    """Render a node's registry as a scrape would, and parse it."""
    return Samples(generate_latest(instruments.registry).decode("utf-8"))


def instrument(node_id: int, clock: Clock, size: int = 3) -> AdminInstruments:
    """A member's instruments, without the process-wide metrics."""
    return AdminInstruments(clock, [i for i in range(size) if i != node_id], process_metrics=False)


class MeteredCluster(InMemoryCluster):
    """
    An L{InMemoryCluster} whose members are instrumented (their metrics
    readable with L{scrape}) and read through a L{NodeView}, anew at each
    start.
    """

    def __init__(self, size: int = 3, seed: int = 0, **options: Any) -> None:
        self.resources: dict[int, Any] = {}
        super().__init__(size, seed, instruments=lambda node_id, clock: instrument(node_id, clock, size), **options)

    def start(self, node_id: int) -> Any:
        node = super().start(node_id)
        view = NodeView(node, CLUSTER_ID, {i: f"127.0.0.1:{5000 + i}" for i in self.ids})
        self.resources[node_id] = self.admin(node_id).attach(view)
        return node

    def admin(self, node_id: int) -> AdminInstruments:
        instruments = self.instruments[node_id]
        assert isinstance(instruments, AdminInstruments)
        return instruments

    def scrape(self, node_id: int) -> Samples:
        return scrape(self.admin(node_id))

    def connect(self, node_id: int) -> "LineClient":
        """A client connection to the member, through its counting client factory."""
        return LineClient(self, self.admin(node_id).client_factory(self.node(node_id)))

    def ask(self, node_id: int, *lines: str, timeout: float = 10.0) -> list[str]:
        """Send C{lines} on a new connection; run until every reply is in."""
        return self.connect(node_id).ask(*lines, timeout=timeout)


class LineClient:
    """One client connection over an in-memory transport."""

    def __init__(self, cluster: InMemoryCluster, factory: Any) -> None:
        self.cluster = cluster
        self.protocol = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self._read = 0

    def send(self, *lines: str) -> None:
        """Send C{lines} in one chunk (pipelined)."""
        self.protocol.dataReceived("".join(line + "\n" for line in lines).encode())

    def replies(self) -> list[str]:
        """Every reply line received so far."""
        return self.transport.value().decode().splitlines()

    def ask(self, *lines: str, timeout: float = 10.0) -> list[str]:
        """Send C{lines}; run the cluster until their replies are in; return them."""
        self.send(*lines)
        want = self._read + len(lines)
        if not self.cluster.run_until(lambda: len(self.replies()) >= want, timeout):
            raise AssertionError(f"no replies to {lines} within {timeout} s: {self.replies()}")
        replies = self.replies()[self._read : want]
        self._read = want
        return replies
