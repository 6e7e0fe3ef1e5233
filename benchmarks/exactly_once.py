"""
Exactly-once sessions under leader failures (issue 14): 8 clients each do
1,250 incr("counter") through kvstore.client on a three-node cluster of real
processes while the leader is killed with SIGKILL twice (at 20 % and 55 %
of the calls) and restarted; each client makes a failed call again until
one returns.  Run once with exactly_once=True and once with
exactly_once=False, each on a fresh cluster, and print both:

    python benchmarks/exactly_once.py [--clients 8] [--increments 1250] [--runs 1]

With sessions the final value is exactly clients x increments and the
values returned are exactly 1..N; without them, every call that raised
OutcomeUnknown after being applied is counted twice.
tests/integration/test_exactly_once_process.py asserts the first half.

    python benchmarks/exactly_once.py --overhead [--calls 4000]

measures instead what sessions cost a sequential caller: one client doing
incr() on a one-node cluster, exactly_once on and off in alternating
blocks of 200 calls on the same node, printing each mode's median and p99
latency per call.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvstore.client import Client  # noqa: E402
from kvstore.testing.counter_run import run_counter  # noqa: E402
from kvstore.testing.processes import NodeProcess, ProcessCluster, allocate_port  # noqa: E402


def overhead(calls: int) -> None:
    """Per-call latency of incr() with and without sessions, alternating."""
    with tempfile.TemporaryDirectory() as root:
        node = NodeProcess(0, allocate_port(), Path(root) / "data", Path(root) / "logs").start()
        try:
            node.wait_ready()
            clients = {mode: Client([node.address], timeout=30, exactly_once=mode) for mode in (True, False)}
            for client in clients.values():
                client.incr("warm-up")
            latencies: dict[bool, list[float]] = {True: [], False: []}
            for block in range(calls // 200):
                mode = block % 2 == 0
                for _ in range(200):
                    start = time.perf_counter()
                    clients[mode].incr("n")
                    latencies[mode].append(time.perf_counter() - start)
            for mode, values in latencies.items():
                values.sort()
                print(f"exactly_once={mode}: {len(values)} incr calls, median "
                      f"{statistics.median(values) * 1000:.3f} ms, p99 {values[int(0.99 * len(values))] * 1000:.3f} ms",
                      flush=True)
            for client in clients.values():
                client.close()
        finally:
            node.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--increments", type=int, default=1250)
    parser.add_argument("--runs", type=int, default=1, help="pairs of runs")
    parser.add_argument("--overhead", action="store_true", help="measure the per-call cost of sessions instead")
    parser.add_argument("--calls", type=int, default=4000, help="calls for --overhead")
    args = parser.parse_args()
    if args.overhead:
        overhead(args.calls)
        return 0
    for _ in range(args.runs):
        for exactly_once in (True, False):
            with tempfile.TemporaryDirectory() as root:
                cluster = ProcessCluster(Path(root), 3).start()
                try:
                    cluster.wait_for_leader()
                    cluster.wait_connected()
                    run = run_counter(cluster, clients=args.clients, increments=args.increments,
                                      exactly_once=exactly_once)
                finally:
                    cluster.kill_all()
                print(run.describe(), flush=True)
                for error in run.errors[:5]:
                    print(f"    {error}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
