"""
A/B of C{kvstore-bench} itself: the tool of this tree against the tool of
another git revision (by default C{main}), on the same workload, in
alternating runs within one invocation.

Why: C{kvstore-bench} measures the server, so a change to the tool (such as
moving it onto the client library) must not change its figures.  On a
shared machine the background load moves from minute to minute, so the two
tools take turns (A B A B ...) and the medians over the rounds are compared.

Usage::

    python benchmarks/bench_ab.py --rounds 3 --shape "-c 50 -P 10 -d 10" --shape "-c 1 -P 1 -d 10"

Each run starts its own cluster (C{kvstore-bench}'s default: 3 nodes, fsync
on, free ports from 21000) and is stopped by the tool.  The baseline is
C{git show <ref>:kvstore/tools/bench.py}, run as a script with this tree's
Python and packages.  Prints, per shape, each run's throughput and p50, then
the medians and B's difference from A in percent.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str]) -> dict:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="main", help="git revision of the A tool (default main)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shape", action="append", default=[],
                        help='kvstore-bench options of one workload, e.g. "-c 50 -P 10 -d 10" (repeatable)')
    args = parser.parse_args()
    shapes = args.shape or ["-c 50 -P 10 -d 10", "-c 1 -P 1 -d 10"]
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "bench_baseline.py"
        old.write_text(subprocess.run(["git", "show", f"{args.baseline}:kvstore/tools/bench.py"], cwd=ROOT,
                                      capture_output=True, text=True, check=True).stdout)
        tools = {f"A ({args.baseline})": [sys.executable, str(old)],
                 "B (this tree)": [sys.executable, "-m", "kvstore.tools.bench"]}
        figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for round_number in range(args.rounds):
            for shape in shapes:
                for name, tool in tools.items():
                    report = run([*tool, *shlex.split(shape), "--json", "--fsync-probe", "0"])
                    pair = (report["throughput_per_s"], report["latency_ms"]["p50"])
                    figures.setdefault((shape, name), []).append(pair)
                    print(f"round {round_number + 1} {shape:22} {name:14} {pair[0]:9.0f} req/s  p50 {pair[1]:.3f} ms "
                          f"errors {report['errors'] or 'none'}", flush=True)
    print()
    for shape in shapes:
        medians = {}
        for name in tools:
            runs = figures[(shape, name)]
            medians[name] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
            print(f"{shape:22} {name:14} median {medians[name][0]:9.0f} req/s "
                  f"(runs {', '.join(f'{r[0]:.0f}' for r in runs)}), p50 {medians[name][1]:.3f} ms "
                  f"(runs {', '.join(f'{r[1]:.3f}' for r in runs)})")
        (a_rate, a_p50), (b_rate, b_p50) = medians.values()
        print(f"{shape:22} B vs A: throughput {100 * (b_rate / a_rate - 1):+.1f}%, p50 {100 * (b_p50 / a_p50 - 1):+.1f}%")


if __name__ == "__main__":
    main()
