# -*- test-case-name: tests.integration -*-
"""
Real node processes for integration tests: start, kill, restart and talk to
C{twistd kvstore} processes on loopback.

This is test support only.  It uses blocking sockets and polls with
deadlines, which is fine in a test process and never acceptable in a node.

The building blocks:

  - L{wait_until}: poll a condition until it holds or a deadline passes.
  - L{allocate_port} / L{allocate_port_range}: free TCP ports in a range
    outside the ephemeral range (checked by binding).
  - L{Client}: the client library's one-node line connection
    (L{kvstore.client.lines.LineConnection}); L{Client.pipeline} sends many
    requests before reading any reply.  L{ProcessCluster.client} gives the
    library's leader-following L{kvstore.client.Client} instead.
  - L{NodeProcess}: one node process with a fixed id, port and data
    directory, which can be killed (C{SIGKILL} by default) and restarted on
    the same data.
  - L{ProcessCluster}: N such nodes forming one cluster, with helpers to
    wait for a stable leader.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from kvstore.client import Client as LibraryClient
from kvstore.client.lines import LineConnection
from kvstore.protocols.replies import parse_status
from kvstore.tools.ports import allocate_port, allocate_port_range
from kvstore.tools.spawn import ROOT, child_environment, spawn, twistd_command

__all__ = [
    "ROOT",
    "Client",
    "NodeProcess",
    "ProcessCluster",
    "Timeout",
    "allocate_port",
    "allocate_port_range",
    "child_environment",
    "command",
    "parse_status",
    "twistd_command",
    "wait_until",
]

T = TypeVar("T")


#: Options that make elections quick, so tests spend little time waiting.
FAST_ELECTIONS = ("--heartbeat-interval", "50", "--election-timeout", "300-600")


class Timeout(AssertionError):
    """A condition did not hold before its deadline."""


def wait_until(
    condition: Callable[[], T | None],
    timeout: float,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition",
) -> T:
    """
    Call C{condition} until it returns a true value, and return that value.

    Exceptions of type C{OSError} raised by C{condition} (a node that is not
    listening yet, a reset connection) count as "not yet".

    @raise Timeout: if C{timeout} seconds pass first; the message includes
        the last exception, if any.
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    last_error: BaseException | None = None
    while True:
        try:
            result = condition()
        except OSError as e:
            last_error = e
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            suffix = f" (last error: {last_error!r})" if last_error is not None else ""
            raise Timeout(f"timed out after {timeout:g}s waiting for {text}{suffix}")
        pause.wait(interval)


# ---------------------------------------------------------------------------
# Client


class Client(LineConnection):
    """
    The library's one-node line connection (L{LineConnection}: request
    lines in, reply lines out, nothing interpreted), opened by host and port
    as the tests have always done.  For a client that follows the leader
    and retries, use L{ProcessCluster.client}.

    @ivar timeout: seconds any single socket operation may block.
    """

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        super().__init__(f"[{host}]:{port}" if ":" in host else f"{host}:{port}", timeout)


def command(port: int, line: str, host: str = "127.0.0.1", timeout: float = 10.0) -> str:
    """Send one request on a new connection and return the reply."""
    with Client(host, port, timeout) as client:
        return client.request(line)


# ---------------------------------------------------------------------------
# Processes


class NodeProcess:
    """
    One C{twistd -n kvstore} process with a fixed id, port and data
    directory.  L{start} may be called again after the process has exited;
    the node then recovers from the same data directory.

    twistd's own log goes to C{<log_dir>/node-<id>.log} (appended to across
    restarts); stdout and stderr, where start-up errors appear, go to
    C{<log_dir>/node-<id>.out}.
    """

    def __init__(
        self,
        node_id: int,
        port: int,
        data_dir: Path,
        log_dir: Path,
        peers: Sequence[int] = (),
        extra_args: Sequence[str] = FAST_ELECTIONS,
        host: str = "127.0.0.1",
    ) -> None:
        self.node_id = node_id
        self.port = port
        self.host = host
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir)
        self.peers = tuple(peers)
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.log_dir / f"node-{node_id}.log"
        self.out_path = self.log_dir / f"node-{node_id}.out"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def argv(self) -> list[str]:
        args = [
            *twistd_command(),
            "-n",
            "--pidfile=",
            f"--logfile={self.log_path}",
            "kvstore",
            "--node-id",
            str(self.node_id),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.extra_args,
        ]
        if self.peers:
            args += ["--peers", ",".join(f"{self.host}:{p}" for p in self.peers)]
        return args

    def start(self) -> "NodeProcess":
        """Start the process (it must not be running)."""
        assert not self.running, f"node {self.node_id} is already running"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_path, "ab") as out:
            self.process = spawn(self.argv(), stdout=out, stderr=subprocess.STDOUT)
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> int:
        """Send C{sig} (default SIGKILL) and wait for the exit; return the
        exit status (negative for a signal, as in L{subprocess})."""
        assert self.process is not None
        if self.process.poll() is None:
            try:
                self.process.send_signal(sig)
            except ProcessLookupError:
                pass
        return self.process.wait(timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """
        Stop gracefully (SIGTERM), or with SIGKILL after C{timeout}.  Safe to
        call at any time, including when never started.
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            try:
                return self.kill(signal.SIGTERM, timeout)
            except subprocess.TimeoutExpired:
                return self.kill(signal.SIGKILL, timeout)
        return self.process.returncode

    def restart(self) -> "NodeProcess":
        """SIGKILL if running, then start again on the same data."""
        if self.running:
            self.kill()
        return self.start()

    def output(self) -> str:
        """What the process wrote to stdout and stderr (all runs)."""
        try:
            return self.out_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log(self) -> str:
        """twistd's log (all runs)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def describe(self) -> str:
        """A diagnostic: state and the tail of the output and log."""
        state = "not started" if self.process is None else (
            "running" if self.running else f"exited {self.process.returncode}")
        return (
            f"node {self.node_id} at {self.address} ({state})\n"
            f"--- output ---\n{self.output()[-2000:]}\n"
            f"--- log ---\n{self.log()[-4000:]}"
        )

    def client(self, timeout: float = 10.0) -> Client:
        return Client(self.host, self.port, timeout)

    def request(self, line: str, timeout: float = 10.0) -> str:
        """One request on a new connection."""
        if not self.running:
            raise ConnectionRefusedError(f"node {self.node_id} is not running")
        return command(self.port, line, self.host, timeout)

    def status(self, timeout: float = 5.0) -> dict[str, str]:
        return parse_status(self.request("STATUS", timeout))

    def wait_ready(self, timeout: float = 15.0) -> dict[str, str]:
        """Wait until the node answers STATUS; fail at once if it exits."""

        def ready() -> dict[str, str] | None:
            if not self.running:
                raise Timeout(f"node exited during start-up\n{self.describe()}")
            return self.status()

        return wait_until(ready, timeout, message=lambda: f"node {self.node_id} to listen\n{self.describe()}")


class ProcessCluster:
    """
    C{size} nodes on consecutive free ports, data in C{root/node-<id>},
    logs in C{root/logs}.
    """

    def __init__(self, root: Path, size: int = 3, extra_args: Sequence[str] = FAST_ELECTIONS) -> None:
        self.root = Path(root)
        base = allocate_port_range(size)
        ports = [base + i for i in range(size)]
        # Ids follow the sorted-address convention: node i listens on ports[i].
        self.nodes = [
            NodeProcess(
                i,
                ports[i],
                self.root / f"node-{i}",
                self.root / "logs",
                peers=[p for p in ports if p != ports[i]],
                extra_args=extra_args,
            )
            for i in range(size)
        ]

    def __getitem__(self, node_id: int) -> NodeProcess:
        return self.nodes[node_id]

    def start(self) -> "ProcessCluster":
        for node in self.nodes:
            node.start()
        return self

    def stop(self) -> None:
        """Stop every node; SIGKILL whatever does not stop in time."""
        for node in self.nodes:
            if node.running:
                node.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]  # a running node has a process
        for node in self.nodes:
            node.stop()

    def kill_all(self) -> None:
        for node in self.nodes:
            if node.running:
                node.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]  # a running node has a process
        for node in self.nodes:
            if node.process is not None:
                node.process.wait(10)

    @property
    def running(self) -> list[NodeProcess]:
        return [n for n in self.nodes if n.running]

    def statuses(self) -> dict[int, dict[str, str]]:
        """STATUS of every running node that answers."""
        result = {}
        for node in self.running:
            try:
                result[node.node_id] = node.status(timeout=2.0)
            except (OSError, ValueError):
                pass
        return result

    def stable_leader(self) -> NodeProcess | None:
        """
        The leader, if every running node answers STATUS, exactly one says
        it is the leader, and every running node names it as leader in the
        same term; otherwise None.
        """
        running = self.running
        statuses = self.statuses()
        if not running or len(statuses) != len(running):
            return None
        leaders = [i for i, s in statuses.items() if s["role"] == "leader"]
        if len(leaders) != 1:
            return None
        leader = leaders[0]
        term = statuses[leader]["term"]
        if all(s["leader"] == str(leader) and s["term"] == term for s in statuses.values()):
            return self.nodes[leader]
        return None

    def wait_for_leader(self, timeout: float = 15.0) -> NodeProcess:
        """Wait for L{stable_leader}."""
        return wait_until(
            self.stable_leader,
            timeout,
            message=lambda: "a stable leader\n" + "\n".join(n.describe() for n in self.nodes),
        )

    def fully_connected(self) -> bool:
        """
        Whether every running node reports (STATUS C{connected}) an outgoing
        link to every other running node.  A node sends only over its own
        outgoing links and drops what it cannot send; a follower's forwarded
        read index request is not retried, so a linearizable GET on a
        follower whose link to the leader is still down waits for the whole
        read timeout and fails.
        """
        running = self.running
        statuses = self.statuses()
        if len(statuses) != len(running):
            return False
        ids = {n.node_id for n in running}
        for node_id, status in statuses.items():
            connected = {int(i) for i in status.get("connected", "none").split(",") if i.isdigit()}
            if not (ids - {node_id}) <= connected:
                return False
        return True

    def wait_connected(self, timeout: float = 15.0) -> None:
        """Wait for L{fully_connected}."""
        wait_until(
            self.fully_connected,
            timeout,
            message=lambda: "every link to connect\n" + "\n".join(n.describe() for n in self.nodes),
        )

    def followers(self, leader: NodeProcess) -> list[NodeProcess]:
        return [n for n in self.running if n is not leader]

    @property
    def addresses(self) -> list[str]:
        """Every node's C{host:port}, running or not."""
        return [n.address for n in self.nodes]

    def client(self, timeout: float = 10.0, **options: Any) -> LibraryClient:
        """A L{kvstore.client.Client} of the whole cluster (the caller closes
        it): it follows the leader and retries, as applications do."""
        return LibraryClient(self.addresses, timeout=timeout, **options)

