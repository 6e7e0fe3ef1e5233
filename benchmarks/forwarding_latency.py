"""
What write forwarding (C{--forward-writes}) costs in latency: sequential
PUTs sent to a follower, which forwards them, against the same PUTs sent to
the leader directly, on one 3-node cluster of real processes.

Why: a forwarded write adds a round trip between the follower and the
leader, and the follower's and the leader's work on it, to the leader's own
commit; this measures that price.  On a shared machine the background load
moves from second to second, so the two variants alternate in rounds of
C{--requests} requests within one run, and the report pools the rounds.

Each request is one blocking socket round trip (a raw line, as C{nc}
sends), timed with C{time.perf_counter}; the load average is printed before
and after.

Usage::

    python benchmarks/forwarding_latency.py --requests 500 --rounds 6 [--no-fsync]

Prints, per variant, the p50, p90 and p99 latency in milliseconds and the
requests per second, and the difference of the medians.  The nodes run on
free ports in a temporary directory and are stopped by PID.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kvstore.testing.processes import FAST_ELECTIONS, ProcessCluster  # noqa: E402


def timed_puts(port: int, prefix: str, n: int) -> list[float]:
    """Send C{n} PUTs one at a time; return each one's latency in seconds."""
    latencies = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(n):
            request = f"PUT {prefix}{i % 100} value-{i}\n".encode()
            start = time.perf_counter()
            sock.sendall(request)
            buffer = b""
            while not buffer.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                buffer += chunk
            latencies.append(time.perf_counter() - start)
            if not buffer.endswith(b"added successfully.\n"):
                raise RuntimeError(buffer)
    return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="PUTs per variant per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--no-fsync", action="store_true", help="run the nodes with --unsafe-no-fsync")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="kvstore-forwarding-"))
    extra = FAST_ELECTIONS + ("--forward-writes",) + (("--unsafe-no-fsync",) if args.no_fsync else ())
    cluster = ProcessCluster(root, 3, extra_args=extra)
    try:
        cluster.start()
        leader = cluster.wait_for_leader()
        cluster.wait_connected()
        follower = cluster.followers(leader)[0]
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        results: dict[str, list[float]] = {"leader": [], "forwarded": []}
        timed_puts(leader.port, "warm", 50)
        timed_puts(follower.port, "warm", 50)
        for round_number in range(args.rounds):
            order = [("leader", leader.port), ("forwarded", follower.port)]
            if round_number % 2:
                order.reverse()
            for name, port in order:
                results[name] += timed_puts(port, name, args.requests)
        print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        fsync = "off (--unsafe-no-fsync)" if args.no_fsync else "on"
        print(f"{args.rounds} rounds x {args.requests} sequential PUTs per variant, fsync {fsync}")
        for name, values in results.items():
            ms = [v * 1000 for v in values]
            print(
                f"{name:>10}: p50 {percentile(ms, 50):6.2f} ms  p90 {percentile(ms, 90):6.2f} ms"
                f"  p99 {percentile(ms, 99):6.2f} ms  {len(ms) / sum(values):7.0f} req/s"
            )
        p50 = {name: statistics.median(values) * 1000 for name, values in results.items()}
        print(f"forwarding adds {p50['forwarded'] - p50['leader']:.2f} ms at the median")
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
