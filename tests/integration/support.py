# -*- test-case-name: tests.integration.test_process_single_node -*-
"""
The base class of the integration tests, which run real C{twistd kvstore}
processes on loopback.

Every process a test makes through L{ProcessTestCase.make_node} or
L{ProcessTestCase.make_cluster} is killed (SIGKILL, by pid) when the test
ends, pass or fail; and, on Linux, the kernel sends each node SIGTERM should
the test process die first.  The C{integration} marker the modules carry for
pytest is registered in C{tox.ini}; trial ignores it.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.processes import NodeProcess, ProcessCluster, allocate_port


class ProcessTestCase(SynchronousTestCase):
    """
    A test with its own temporary directory (C{self.tmp_path}) and factories
    of node processes that are killed after the test.
    """

    def setUp(self) -> None:
        # Absolute, like pytest's tmp_path: processes run in other directories.
        self.tmp_path = Path(self.mktemp()).resolve()
        self.tmp_path.mkdir(parents=True)
        self.started_nodes: list[NodeProcess] = []
        self._clusters = 0
        self.addCleanup(self._kill_started_nodes)

    def _kill_started_nodes(self) -> None:
        for node in self.started_nodes:
            if node.running:
                node.kill()

    def make_node(self, name: str = "a", data_dir: Path | None = None, port: int | None = None) -> NodeProcess:
        """A single-node cluster, not started, killed after the test."""
        node = NodeProcess(
            0,
            allocate_port() if port is None else port,
            self.tmp_path / f"data-{name}" if data_dir is None else data_dir,
            self.tmp_path / f"logs-{name}",
        )
        self.started_nodes.append(node)
        return node

    def make_cluster(self, size: int = 3) -> ProcessCluster:
        """A L{ProcessCluster} of C{size} nodes, not started, killed after the test."""
        self._clusters += 1
        cluster = ProcessCluster(self.tmp_path / f"cluster-{self._clusters}", size)
        self.started_nodes.extend(cluster.nodes)
        return cluster
