"""
The C{kvstore-cluster} launcher (L{kvstore.tools.cluster}), run as a real process.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from unittest import SkipTest

import pytest

from kvstore.testing.processes import (
    ROOT,
    allocate_port_range,
    command,
    parse_status,
    wait_until,
)

from tests.integration.support import ProcessTestCase

pytestmark = pytest.mark.integration

_STARTED = re.compile(r"node (\d+) \(pid (\d+)\) listening on 127\.0\.0\.1:(\d+), log (\S+),")


def _alive(pid: int) -> bool:
    """Whether C{pid} exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _gauge(url: str, name: str) -> float:
    """The value of an unlabelled metric at a /metrics URL."""
    with urllib.request.urlopen(url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no {name} at {url}")


class Launcher:
    """A running C{python -m kvstore.tools.cluster} and what it has printed."""

    def __init__(self, tmp_path: Path, nodes: int = 3) -> None:
        # The admin endpoints are on base-port + 100 + id by default.
        self.base_port = allocate_port_range(nodes, also=tuple(100 + i for i in range(nodes)))
        self.data_dir = tmp_path / "cluster-data"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "kvstore.tools.cluster",
                "--nodes", str(nodes),
                "--base-port", str(self.base_port),
                "--data-dir", str(self.data_dir),
                "--node-option=--heartbeat-interval=50",
                "--", "--election-timeout", "300-600",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
            # Its own session: a signal sent to the launcher reaches only it.
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.nodes: dict[int, tuple[int, int]] = {}  # id -> (pid, port)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_started(self, count: int = 3, timeout: float = 15.0) -> None:
        wait_until(lambda: any("nodes started" in line for line in self.lines) or self.process.poll() is not None,
                   timeout, message=lambda: f"the launcher to start its nodes:\n{self.output}")
        for line in self.lines:
            match = _STARTED.search(line)
            if match:
                self.nodes[int(match[1])] = (int(match[2]), int(match[3]))
        assert sorted(self.nodes) == list(range(count)), self.output
        assert [port for _, port in sorted(self.nodes.values(), key=lambda v: v[1])] == [
            self.base_port + i for i in range(count)
        ]

    def leader_port(self) -> int | None:
        statuses = [parse_status(command(port, "STATUS", timeout=2)) for _, port in self.nodes.values()]
        leaders = [s for s in statuses if s["role"] == "leader"]
        if len(leaders) == 1 and all(s["leader"] == leaders[0]["node"] for s in statuses):
            return self.nodes[int(leaders[0]["node"])][1]
        return None

    def kill_everything(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for pid, _ in self.nodes.values():
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._reader.join(10)


class _NodeExited(Exception):
    """A node of the launcher exited before the test made it (not an OSError: wait_until does not retry it)."""


class ClusterLauncherTests(ProcessTestCase):
    """
    The kvstore-cluster launcher as a real process, and the nodes it starts.
    """

    def start_launcher(self, directory: Path | None = None) -> Launcher:
        """A running launcher, killed with all its nodes after the test."""
        launcher = Launcher(directory if directory is not None else self.tmp_path)
        self.addCleanup(launcher.kill_everything)
        return launcher

    def start_cluster(self, attempts: int = 3) -> tuple[Launcher, int]:
        """
        A launcher whose three nodes have elected a leader, and the leader's
        port.  A node that exits before that fails the test at once with the
        launcher's report, instead of a wait for a leader that cannot come
        (it used to time out after 15 s and say only "a leader"); if it exited
        because a port was taken (by another program, between the port's
        allocation and the node's bind: other test runs share the machine),
        the cluster is started again on other ports.
        """
        for attempt in range(attempts):
            directory = self.tmp_path / f"attempt-{attempt}"
            directory.mkdir()
            launcher = self.start_launcher(directory)
            launcher.wait_started()

            def leader_port() -> int | None:
                if "exited unexpectedly" in launcher.output:
                    raise _NodeExited(launcher.output)
                return launcher.leader_port()

            try:
                # A deadline, not a pause: three nodes starting on a loaded
                # machine (load 10-20) took 2-6 s here.
                return launcher, wait_until(leader_port, 60, message=lambda: f"a leader\n{launcher.output}")
            except _NodeExited:
                if "Address already in use" not in launcher.output or attempt == attempts - 1:
                    raise AssertionError(f"a node exited before the test touched it:\n{launcher.output}") from None
                launcher.kill_everything()
        raise AssertionError("unreachable")

    def test_launcher_runs_a_cluster_and_stops_it_on_sigint(self) -> None:
        """
        The launcher starts three nodes that elect a leader and serve requests,
        logs each to <data-dir>/node-<id>.log, and on SIGINT stops them all and
        exits 0.
        """
        launcher, leader = self.start_cluster()
        assert command(leader, "PUT planet mars") == "planet added successfully."
        for _, port in launcher.nodes.values():
            wait_until(lambda: command(port, "GET planet STALE") == "value of planet: mars", 10)
        for node_id in launcher.nodes:
            assert (launcher.data_dir / f"node-{node_id}").is_dir()
        leader_log = launcher.data_dir / f"node-{leader - launcher.base_port}.log"
        assert "became leader" in leader_log.read_text()
        # Each node's admin endpoint is where the launcher says: exactly one leader.
        urls = [f"http://127.0.0.1:{launcher.base_port + 100 + i}/metrics" for i in range(3)]
        assert all(url in launcher.output for url in urls), launcher.output
        assert sum(_gauge(url, "kvstore_is_leader") for url in urls) == 1

        launcher.process.send_signal(signal.SIGINT)
        assert launcher.process.wait(30) == 0, launcher.output
        for pid, _ in launcher.nodes.values():
            assert not _alive(pid), f"node pid {pid} outlived the launcher\n{launcher.output}"
        launcher._reader.join(10)
        assert "received SIGINT" in launcher.output
        assert all(f"node {i} stopped cleanly" in launcher.output for i in launcher.nodes), launcher.output

    def test_launcher_reports_a_node_that_dies(self) -> None:
        """A node killed behind the launcher's back is reported; SIGTERM then
        stops the rest and the launcher exits 0."""
        launcher, _ = self.start_cluster()
        pid, _ = launcher.nodes[1]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: "node 1" in launcher.output and "exited unexpectedly (killed by SIGKILL)" in launcher.output,
                   10, message=lambda: f"the report of node 1's death\n{launcher.output}")
        launcher.process.send_signal(signal.SIGTERM)
        assert launcher.process.wait(30) == 0, launcher.output
        assert not any(_alive(p) for p, _ in launcher.nodes.values())

    def test_nodes_die_with_a_killed_launcher(self) -> None:
        """Even SIGKILL of the launcher leaves no orphan node."""
        if not sys.platform.startswith("linux"):
            raise SkipTest("relies on PR_SET_PDEATHSIG")
        launcher, _ = self.start_cluster()
        launcher.process.kill()
        launcher.process.wait(10)
        wait_until(lambda: not any(_alive(p) for p, _ in launcher.nodes.values()), 15,
                   message=lambda: f"the nodes to exit\n{launcher.output}")

    def test_entry_point_and_help(self) -> None:
        """setup.py declares the console script, and --help works."""
        assert "kvstore-cluster=kvstore.tools.cluster:main" in (ROOT / "setup.py").read_text()
        result = subprocess.run(
            [sys.executable, "-m", "kvstore.tools.cluster", "--help"],
            capture_output=True, text=True, timeout=30, cwd=self.tmp_path,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        assert result.returncode == 0, result.stderr
        assert "--base-port" in result.stdout and "--node-option" in result.stdout
        assert "--admin-base-port" in result.stdout and "--no-admin" in result.stdout
