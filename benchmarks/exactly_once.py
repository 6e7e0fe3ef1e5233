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
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvstore.testing.counter_run import run_counter  # noqa: E402
from kvstore.testing.processes import ProcessCluster  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--increments", type=int, default=1250)
    parser.add_argument("--runs", type=int, default=1, help="pairs of runs")
    args = parser.parse_args()
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
