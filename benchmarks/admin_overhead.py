"""
In-process costs of the admin endpoint, without a cluster: what counting
client requests adds to the client protocol per request, and what
rendering one node's C{/metrics} costs the reactor.

Why: the end-to-end A/B (C{benchmarks/metrics_cost.py}) is noisy on a
shared machine; these two are the parts of the endpoint's cost that scale
with requests and with scrapes, measured alone, as CPU time.

  - Counting: 100 pipelined C{PUT}s per chunk through a client protocol
    whose node answers later (as a real one does), with the plain
    L{ClientFactory} and with the counting one, alternated C{--rounds}
    times; the median CPU time per request of each.
  - Rendering: C{generate_latest} of a 3-node cluster member's registry
    (process metrics and both peer links included), C{--renders} times.

Usage::

    python benchmarks/admin_overhead.py --rounds 40 --renders 200
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from prometheus_client import generate_latest  # noqa: E402
from twisted.internet.defer import Deferred, succeed  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402

from kvstore.admin.endpoint import AdminInstruments  # noqa: E402
from kvstore.admin.requests import CountingClientFactory, RequestCounts  # noqa: E402
from kvstore.admin.view import NodeView  # noqa: E402
from kvstore.protocols.client import ClientFactory  # noqa: E402
from kvstore.protocols.peer_links import PeerLink  # noqa: E402
from kvstore.testing.memory_cluster import CLUSTER_ID, InMemoryCluster  # noqa: E402

CHUNK = b"".join(b"PUT key%d value%d\n" % (i, i) for i in range(100))


class _LaterNode:
    """Answers each PUT when told to, as a node does after the commit."""

    def __init__(self) -> None:
        self.pending: list[Deferred[None]] = []

    def put(self, key: str, value: str) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.pending.append(d)
        return d

    def delete(self, key: str) -> Deferred[None]:
        return succeed(None)

    def get(self, key: str, stale: bool) -> Deferred[str]:
        return succeed("v")

    def status(self) -> dict[str, object]:
        return {}


def cpu_per_request(counting: bool, chunks: int = 200) -> float:
    """CPU microseconds per request through one connection."""
    node = _LaterNode()
    factory = CountingClientFactory(node, RequestCounts()) if counting else ClientFactory(node)
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    started = time.process_time()
    for _ in range(chunks):
        protocol.dataReceived(CHUNK)
        answered, node.pending = node.pending, []
        for d in answered:
            d.callback(None)
        transport.clear()
    return (time.process_time() - started) / (chunks * 100) * 1e6


def render_ms(renders: int) -> float:
    """CPU milliseconds to render a cluster member's /metrics once."""
    cluster = InMemoryCluster(3)
    admin = AdminInstruments(cluster.clock, [1, 2], process_metrics=True)
    links = {peer: PeerLink(peer, f"127.0.0.1:{5000 + peer}", b"hello") for peer in (1, 2)}
    admin.attach(NodeView(cluster.node(0), CLUSTER_ID, {i: f"127.0.0.1:{5000 + i}" for i in range(3)}, links))
    generate_latest(admin.registry)
    started = time.process_time()
    for _ in range(renders):
        generate_latest(admin.registry)
    return (time.process_time() - started) / renders * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--renders", type=int, default=200)
    args = parser.parse_args()
    plain, counted = [], []
    for _ in range(args.rounds):
        plain.append(cpu_per_request(False))
        counted.append(cpu_per_request(True))
    p, c = statistics.median(plain), statistics.median(counted)
    print(f"client protocol CPU per request: plain {p:.3f} us, counting {c:.3f} us (+{c - p:.3f} us), "
          f"medians of {args.rounds} alternated rounds of 20,000 requests")
    print(f"rendering /metrics of a 3-node cluster member: {render_ms(args.renders):.2f} ms CPU "
          f"(mean of {args.renders})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
