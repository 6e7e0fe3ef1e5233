"""
Fixtures for the integration tests, which run real ``twistd kvstore``
processes on loopback.

Every process a test starts through these fixtures is killed (SIGKILL, by
pid) when the test ends, pass or fail; and, on Linux, the kernel sends each
node SIGTERM should this pytest process die first.  The ``integration``
marker is registered in ``tox.ini``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from kvstore.testing.processes import NodeProcess, ProcessCluster, allocate_port


@pytest.fixture
def started_nodes() -> Iterator[list[NodeProcess]]:
    """Every L{NodeProcess} registered here is killed after the test."""
    nodes: list[NodeProcess] = []
    yield nodes
    for node in nodes:
        if node.running:
            node.kill()


@pytest.fixture
def make_node(tmp_path: Path, started_nodes: list[NodeProcess]) -> Callable[..., NodeProcess]:
    """
    A factory of single-node clusters: C{make_node(name="a", data_dir=None,
    port=None)}.  The node is not started.
    """

    def make(name: str = "a", data_dir: Path | None = None, port: int | None = None) -> NodeProcess:
        node = NodeProcess(
            0,
            allocate_port() if port is None else port,
            tmp_path / f"data-{name}" if data_dir is None else data_dir,
            tmp_path / f"logs-{name}",
        )
        started_nodes.append(node)
        return node

    return make


@pytest.fixture
def make_cluster(tmp_path: Path, started_nodes: list[NodeProcess]) -> Callable[..., ProcessCluster]:
    """A factory of L{ProcessCluster}s (not started): C{make_cluster(size=3)}."""
    count = 0

    def make(size: int = 3) -> ProcessCluster:
        nonlocal count
        count += 1
        cluster = ProcessCluster(tmp_path / f"cluster-{count}", size)
        started_nodes.extend(cluster.nodes)
        return cluster

    return make
