"""
Issue 13's figure "time from --join of an empty node to voter, with 100,000
keys in the cluster", measured on real node processes:

    python benchmarks/join_time.py                 # 100,000 keys
    python benchmarks/join_time.py --keys 10000

Starts a 3-node cluster (fast elections, fsync on), fills it with --keys
keys of small values through one pipelining connection, then starts a
fourth node with an empty data directory and ``--join`` pointing at node 0,
and reports two times from that process's start: until MEMBERS (asked of
any member) lists it as a voter (it joins as a learner and is promoted
automatically once caught up), and until its STATUS shows every key
applied.  Every node is stopped at the end, by PID.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from kvstore.testing.processes import FAST_ELECTIONS, NodeProcess, ProcessCluster, allocate_port, wait_until


def _is_voter(cluster: ProcessCluster, node_id: int) -> bool:
    """Whether any member's MEMBERS reply lists C{node_id} as a voter."""
    for node in cluster.nodes:
        try:
            reply = node.request("MEMBERS", 2)
        except OSError:
            continue
        if f"{node_id}@" in reply and reply.split(f"{node_id}@")[1].split()[0].endswith("/voter"):
            return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=100_000, help="keys written before the join (default 100000)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="kvstore-join-time-"))
    cluster = ProcessCluster(root, 3).start()
    joiner: NodeProcess | None = None
    try:
        leader = cluster.wait_for_leader(30)
        started = time.monotonic()
        with leader.client(timeout=60) as client:
            for first in range(0, args.keys, 1000):
                batch = [f"PUT key{i} value-{i}" for i in range(first, min(first + 1000, args.keys))]
                replies = client.pipeline(batch)
                assert all(r.endswith("added successfully.") for r in replies), replies[:3]
        print(f"filled {args.keys} keys in {time.monotonic() - started:.1f} s", flush=True)
        joiner = NodeProcess(3, allocate_port(), root / "node-3", root / "logs",
                             extra_args=(*FAST_ELECTIONS, "--join", cluster[0].address))
        started = time.monotonic()
        joiner.start()
        wait_until(lambda: _is_voter(cluster, 3), 300, message="the joining node to become a voter")
        to_voter = time.monotonic() - started
        wait_until(lambda: joiner is not None and joiner.status()["keys"] == str(args.keys), 120,
                   message="the joining node to apply every key")
        print(f"--join -> voter {to_voter:.2f} s; --join -> all {args.keys} keys applied "
              f"{time.monotonic() - started:.2f} s", flush=True)
    finally:
        cluster.kill_all()
        if joiner is not None:
            joiner.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
