# -*- test-case-name: tests.integration.test_cluster_launcher -*-
"""
C{kvstore-cluster} (also installed as plain C{kvstore}, the seed's
C{./kvstore}): run a whole kvstore cluster on this machine, in the
foreground, for development and demonstrations.

Starts N real node processes (C{twistd -n kvstore ...}) on consecutive ports
of one host, prints where each listens and logs, and waits.  A node that
cannot start (its port in use, say) writes why to its C{node-<id>.out},
which the launcher prints.  Ctrl-C (SIGINT)
or SIGTERM stops them all in order: SIGTERM to every node, a grace period,
then SIGKILL for any that remain; the launcher then exits 0.  A node that
exits on its own is reported and the others keep running (killing one node
is a good way to watch a failover); when none is left the launcher exits 1.

Each node runs in its own session, so a Ctrl-C at the terminal reaches only
the launcher, which stops the nodes itself.  On Linux each node also asks
the kernel for SIGTERM should the launcher die without stopping it (even by
SIGKILL), so no node outlives its launcher.

This is a plain blocking program (subprocess and signals), not a reactor
program: it only supervises; the nodes are ordinary twistd processes.

Each node also serves its admin HTTP endpoint (Prometheus C{/metrics},
C{/livez}, C{/readyz}, C{/status}; see docs/operations.md) on a fixed port,
C{--admin-base-port} + its id (5100-5102 by default), and the launcher prints
the URLs; C{--no-admin} turns it off.

Example::

    kvstore-cluster                                  # nodes on 5000-5002
    kvstore-cluster --nodes 5 --base-port 7000 -- --heartbeat-interval 50 \\
        --election-timeout 300-600
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from kvstore.tools.spawn import node_argv, spawn

__all__ = ["main"]

#: Seconds the nodes get to stop after SIGTERM before they are killed.
STOP_GRACE = 10.0


def _program_name() -> str:
    """C{kvstore} or C{kvstore-cluster}, whichever name this was run by."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name in ("kvstore", "kvstore-cluster") else "kvstore-cluster"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_program_name(),
        description=(
            "Run a kvstore cluster of N node processes on consecutive ports of "
            "one host, in the foreground, until Ctrl-C or SIGTERM. Arguments "
            "after '--' are passed to every node (see 'twistd kvstore --help')."
        ),
    )
    parser.add_argument("--nodes", type=int, default=3, help="number of nodes (default: 3)")
    parser.add_argument("--base-port", type=int, default=5000,
                        help="port of node 0; node i listens on base-port + i (default: 5000)")
    parser.add_argument("--host", default="127.0.0.1", help="address every node binds to and advertises "
                        "(default: 127.0.0.1)")
    parser.add_argument("--data-dir", default="./kvstore-cluster-data",
                        help="root of the data directories, one node-<id> per node "
                        "(default: ./kvstore-cluster-data)")
    parser.add_argument("--log-dir", default=None,
                        help="directory for the node-<id>.log files (default: the data root)")
    parser.add_argument("--admin-base-port", type=int, default=None,
                        help="admin HTTP port (metrics, health, status) of node 0; node i uses "
                        "admin-base-port + i (default: base-port + 100, so 5100-5102)")
    parser.add_argument("--no-admin", action="store_true",
                        help="do not serve the nodes' admin HTTP endpoints")
    parser.add_argument("--node-option", action="append", default=[], metavar="OPTION",
                        help="an option for every node, e.g. --node-option=--heartbeat-interval=50; "
                        "may be repeated")
    return parser


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    parser = _parser()
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    if not 1 <= args.base_port <= 65536 - args.nodes:
        parser.error(f"--base-port must leave room for {args.nodes} ports below 65536")
    if args.no_admin:
        args.admin_base_port = None
    else:
        if args.admin_base_port is None:
            args.admin_base_port = args.base_port + 100
        if not 1 <= args.admin_base_port <= 65536 - args.nodes:
            parser.error(f"--admin-base-port must leave room for {args.nodes} ports below 65536")
        if abs(args.admin_base_port - args.base_port) < args.nodes:
            parser.error("--admin-base-port's ports overlap the nodes' ports; choose another, or --no-admin")
    return args, list(args.node_option) + extra


def _admin_listen(host: str, port: int) -> str:
    """The --admin-listen endpoint of a node on C{host}, at C{port}."""
    if ":" in host:
        return "tcp6:{}:interface={}".format(port, host.replace(":", "\\:"))
    return f"tcp:{port}:interface={host}"


class _Node:
    def __init__(self, node_id: int, address: str, log_file: Path, out_file: Path, data_dir: Path) -> None:
        self.node_id = node_id
        self.address = address
        self.log_file = log_file
        self.out_file = out_file
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.reported = False


def _say(text: str) -> None:
    print(f"{_program_name()}: {text}", flush=True)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _kill_all(nodes: list[_Node]) -> None:
    """SIGKILL every running node without waiting (safe in a signal handler)."""
    for node in nodes:
        if node.process is not None and node.process.returncode is None:
            try:
                os.kill(node.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _stop_all(nodes: list[_Node], grace: float) -> None:
    """SIGTERM every running node, wait up to C{grace}, then SIGKILL."""
    live = [n for n in nodes if n.process is not None and n.process.poll() is None]
    for node in live:
        try:
            node.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]  # live holds only nodes whose process is set
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for node in live:
        assert node.process is not None
        try:
            node.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _say(f"node {node.node_id} (pid {node.process.pid}) did not stop in {grace:g}s; killing it")
            node.process.kill()
            node.process.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """The C{kvstore-cluster} console script."""
    args, extra = _parse(sys.argv[1:] if argv is None else argv)
    root = Path(args.data_dir)
    log_dir = Path(args.log_dir) if args.log_dir is not None else root
    root.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    ports = [args.base_port + i for i in range(args.nodes)]

    # Signals only set a flag and wake the loop below through the pipe.
    stop_signal: list[int] = []
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)

    def on_stop(signum: int, frame: object) -> None:
        stop_signal.append(signum)

    previous = {s: signal.signal(s, on_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda s, f: None)
    old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)

    nodes: list[_Node] = []
    try:
        for i, port in enumerate(ports):
            host = f"[{args.host}]" if ":" in args.host else args.host
            node = _Node(i, f"{host}:{port}", log_dir / f"node-{i}.log", log_dir / f"node-{i}.out",
                         root / f"node-{i}")
            nodes.append(node)
            admin = [] if args.admin_base_port is None else [
                f"--admin-listen={_admin_listen(args.host, args.admin_base_port + i)}"
            ]
            with open(node.out_file, "ab") as out:
                node.process = spawn(
                    node_argv(i, ports, args.host, str(node.data_dir), str(node.log_file), admin + extra),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            metrics = "" if args.admin_base_port is None else f", metrics http://{host}:{args.admin_base_port + i}/metrics"
            _say(f"node {i} (pid {node.process.pid}) listening on {node.address}, "
                 f"log {node.log_file}, data {node.data_dir}{metrics}")
        _say(f"{len(nodes)} nodes started; press Ctrl-C to stop them")
        if args.admin_base_port is not None:
            _say("admin endpoints (/metrics, /livez, /readyz?verbose, /status): "
                 + ", ".join(f"http://{n.address.rsplit(':', 1)[0]}:{args.admin_base_port + n.node_id}/"
                             for n in nodes))

        while not stop_signal:
            for node in nodes:
                assert node.process is not None
                code = node.process.poll()
                if code is not None and not node.reported:
                    node.reported = True
                    _say(f"node {node.node_id} (pid {node.process.pid}) exited unexpectedly "
                         f"({_describe_exit(code)}); see {node.log_file} and {node.out_file}")
                    tail = _tail(node.out_file)
                    if tail:
                        print(tail, flush=True)
            if all(n.reported for n in nodes):
                _say("every node has exited; stopping")
                return 1
            select.select([wake_r], [], [], 1.0)
            try:
                while os.read(wake_r, 4096):
                    pass
            except BlockingIOError:
                pass

        name = signal.Signals(stop_signal[0]).name
        _say(f"received {name}; stopping {sum(1 for n in nodes if not n.reported)} nodes")
        # A second Ctrl-C during the grace period means "now".
        signal.signal(signal.SIGINT, lambda s, f: _kill_all(nodes))
        _stop_all(nodes, STOP_GRACE)
        for node in nodes:
            if not node.reported and node.process is not None:
                code = node.process.returncode
                # twistd re-raises the signal that stopped it, so a clean
                # stop on SIGTERM shows as "killed by SIGTERM".
                how = "cleanly" if code in (0, -signal.SIGTERM) else f"({_describe_exit(code)})"
                _say(f"node {node.node_id} stopped {how}")
        _say("stopped")
        return 0
    finally:
        # Whatever happened (an exception, a failed start), leave no node behind.
        _stop_all(nodes, STOP_GRACE)
        signal.set_wakeup_fd(old_wakeup)
        for s, handler in previous.items():
            signal.signal(s, handler)
        os.close(wake_r)
        os.close(wake_w)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
