"""
A real three-node cluster started from etc/kvstore.toml.example, with its
addresses moved to free loopback ports in a temporary copy: the same file for
every node, C{--node-id} picking each.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kvstore.testing.processes import ROOT, NodeProcess, allocate_port_range, wait_until

from tests.integration.custom_process import CustomNodeProcess
from tests.integration.support import ProcessTestCase

pytestmark = pytest.mark.integration

EXAMPLE = ROOT / "etc" / "kvstore.toml.example"


def adjusted_example(ports: list[int]) -> str:
    """The example with member i at 127.0.0.1:ports[i] and quick elections."""
    text = EXAMPLE.read_text(encoding="utf-8")
    for node_id, port in enumerate(ports):
        text, count = re.subn(rf'^{node_id} = "10\.0\.0\.{node_id + 1}:5000"$', f'{node_id} = "127.0.0.1:{port}"', text, flags=re.M)
        assert count == 1, f"member {node_id} not found in the example"
    text, count = re.subn(r"^heartbeat-interval = 100 ", "heartbeat-interval = 50 ", text, flags=re.M)
    assert count == 1
    text, count = re.subn(r'^election-timeout = "1000-2000"', 'election-timeout = "300-600"', text, flags=re.M)
    assert count == 1
    return text


def _agreed_leader(nodes: list[CustomNodeProcess]) -> NodeProcess | None:
    """The leader every node names in one term, if there is one."""
    statuses = [node.status(timeout=2.0) for node in nodes]
    leaders = {(s["leader"], s["term"]) for s in statuses}
    if len(leaders) != 1:
        return None
    ((leader, _),) = leaders
    return nodes[int(leader)] if leader.isdigit() else None


class ConfigFileClusterTests(ProcessTestCase):
    """A cluster configured by one TOML file."""

    def test_example_cluster_serves_a_write(self) -> None:
        """Three nodes started with the example file (ports adjusted) elect a leader that takes a write, readable on every node."""
        base = allocate_port_range(3)
        ports = [base + i for i in range(3)]
        config = self.tmp_path / "kvstore.toml"
        config.write_text(adjusted_example(ports), encoding="utf-8")
        nodes = []
        for node_id, port in enumerate(ports):
            node = CustomNodeProcess(
                node_id,
                port,
                self.tmp_path / "logs",
                # As the unit does: the file, the id, and the data directory on the command line.
                ["--config", str(config), "--node-id", str(node_id), "--data-dir", str(self.tmp_path / f"node-{node_id}")],
                twistd_args=["--pidfile=", f"--logfile={self.tmp_path / 'logs' / f'node-{node_id}.log'}"],
            )
            self.started_nodes.append(node)
            nodes.append(node.start())
        leader = wait_until(lambda: _agreed_leader(nodes), 30, message=lambda: "\n".join(n.describe() for n in nodes))
        assert leader.request("PUT greeting hello") == "greeting added successfully."
        status = leader.status()
        assert status["cluster"] == "example-1", status
        assert status["members"] == "0,1,2", status
        for node in nodes:
            wait_until(lambda: node.request("GET greeting STALE") == "value of greeting: hello", 15, message=node.describe)
        for node in nodes:
            assert Path(self.tmp_path / f"node-{node.node_id}" / "metadata.json").exists()
