"""
Sequential-client latency of two kvstore builds, measured side by side.

Why: on a shared machine the noise between two runs (other processes'
CPU and disk load) is larger than most latency improvements.  This script
starts one 3-node cluster per build at the same time and measures them in
alternating slices of C{--slice} seconds, so that both see the same
background load, and reports per-build percentiles and their ratio.

Each slice sends one request at a time (a blocking socket, no event loop)
and times it with C{CLOCK_MONOTONIC}: PUTs to the leader, linearizable GETs
to the leader and to a follower.  It also reports the CPU time the three
node processes used per request (from C{/proc}), which background load
disturbs far less than wall-clock latency.

Usage::

    python benchmarks/paired_latency.py --seconds 20 A=/path/to/checkout-a B=/path/to/checkout-b
    python benchmarks/paired_latency.py --no-fsync ...

Each build is a kvstore source checkout; its nodes run with that checkout
first on C{PYTHONPATH} (and this interpreter, which must have Twisted).
Every process started is stopped by PID and its directory removed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from kvstore.tools.bench import percentile  # noqa: E402
from kvstore.tools.ports import allocate_port_range  # noqa: E402

# The builds compared may predate kvstore/tools/ (kvstore.cluster then).
LAUNCH = (
    "try:\n    from kvstore.tools.spawn import run_twistd_child\n"
    "except ImportError:\n    from kvstore.cluster import run_twistd_child\n"
    "run_twistd_child()"
)


class Build:
    """One build's cluster."""

    def __init__(self, name: str, checkout: str, fsync: bool, base_port: int) -> None:
        self.name = name
        self.directory = tempfile.mkdtemp(prefix=f"kvstore-paired-{name}-")
        self.ports = [base_port + i for i in range(3)]
        env = dict(os.environ, PYTHONPATH=checkout)
        self.processes = []
        for i, port in enumerate(self.ports):
            peers = ",".join(str(p) for p in self.ports if p != port)
            argv = [sys.executable, "-c", LAUNCH, "-n", "--pidfile=", f"--logfile={self.directory}/node-{i}.log",
                    "kvstore", f"--node-id={i}", f"--port={port}", f"--data-dir={self.directory}/node-{i}",
                    f"--peers={peers}", *([] if fsync else ["--unsafe-no-fsync"])]
            self.processes.append(subprocess.Popen(argv, env=env, cwd=checkout, stdin=subprocess.DEVNULL,
                                                   start_new_session=True))
        self.leader, self.follower = self._find_roles()
        self.sockets = {role: socket.create_connection(("127.0.0.1", port)) for role, port in
                        (("leader", self.leader), ("follower", self.follower))}
        for s in self.sockets.values():
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffers = {role: b"" for role in self.sockets}
        self.request("leader", b"PUT k " + b"v" * 100 + b"\n")

    def _find_roles(self) -> tuple[int, int]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for port in self.ports:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                        s.sendall(b"STATUS\n")
                        line = s.makefile().readline()
                except OSError:
                    continue
                if " role=leader " in f" {line} ":
                    return port, next(p for p in self.ports if p != port)
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: no leader")

    def request(self, role: str, line: bytes) -> tuple[int, bytes]:
        """Send one request; return its latency in ns and the reply."""
        s = self.sockets[role]
        sent = time.monotonic_ns()
        s.sendall(line)
        buffer = self.buffers[role]
        while b"\n" not in buffer:
            data = s.recv(65536)
            if not data:
                raise ConnectionError("node closed the connection")
            buffer += data
        elapsed = time.monotonic_ns() - sent
        reply, _, self.buffers[role] = buffer.partition(b"\n")
        return elapsed, reply

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the three node processes used so far."""
        ticks = 0
        for p in self.processes:
            with open(f"/proc/{p.pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        for s in self.sockets.values():
            s.close()
        for p in self.processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


WORKLOADS = {
    "put": ("leader", lambda i: b"PUT key%d %s\n" % (i % 1000, b"v" * 100)),
    "get-leader": ("leader", lambda i: b"GET k\n"),
    "get-follower": ("follower", lambda i: b"GET k\n"),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("builds", nargs="+", help="NAME=CHECKOUT")
    p.add_argument("--seconds", type=float, default=20.0, help="measured time per build and workload")
    p.add_argument("--slice", type=float, default=0.5, help="seconds per alternating slice")
    p.add_argument("--workloads", default="put,get-leader,get-follower")
    p.add_argument("--no-fsync", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    builds: list[Build] = []
    try:
        base = allocate_port_range(3 * len(args.builds), low=24000)
        for n, spec in enumerate(args.builds):
            name, _, checkout = spec.partition("=")
            builds.append(Build(name, os.path.abspath(checkout), not args.no_fsync, base + 3 * n))
        samples: dict[tuple[str, str], list[int]] = {}
        cpu: dict[tuple[str, str], float] = {}
        for workload in args.workloads.split(","):
            role, make = WORKLOADS[workload]
            for build in builds:  # warm-up, unmeasured
                for i in range(50):
                    build.request(role, make(i))
            measured = 0.0
            turn = 0
            i = 0
            while measured < args.seconds:
                order = builds if turn % 2 == 0 else builds[::-1]
                for build in order:
                    until = time.monotonic() + args.slice
                    bucket = samples.setdefault((workload, build.name), [])
                    cpu_before = build.cpu_seconds()
                    while time.monotonic() < until:
                        elapsed, reply = build.request(role, make(i))
                        i += 1
                        if reply.startswith(b"Error"):
                            raise RuntimeError(f"{build.name} {workload}: {reply.decode()}")
                        bucket.append(elapsed)
                    cpu[workload, build.name] = cpu.get((workload, build.name), 0.0) + build.cpu_seconds() - cpu_before
                measured += args.slice
                turn += 1
        report = []
        for (workload, name), values in samples.items():
            values.sort()
            report.append({
                "workload": workload, "build": name, "fsync": not args.no_fsync, "requests": len(values),
                "server_cpu_us_per_request": round(cpu[workload, name] / len(values) * 1e6, 1),
                **{f"p{q}_ms": round(percentile(values, q / 100) / 1e6, 3) for q in (50, 90, 99)},
            })
    finally:
        for build in builds:
            build.stop()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        first = {r["workload"]: r for r in report if r["build"] == builds[0].name}
        for r in report:
            ratio = r["p50_ms"] / first[r["workload"]]["p50_ms"]
            print(f"{r['workload']:13} {r['build']:8} fsync={'on ' if r['fsync'] else 'off'} n={r['requests']:6d}  "
                  f"p50 {r['p50_ms']:.3f}  p90 {r['p90_ms']:.3f}  p99 {r['p99_ms']:.3f} ms   p50 ratio {ratio:.2f}  "
                  f"server CPU {r['server_cpu_us_per_request']:.0f} us/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
