"""
A/B of C{kvstore-bench} itself: the tool of another git revision (A, by
default C{main}) against this tree's (B, possibly in several variants), on
the same workloads, in alternating runs within one invocation.

Why: C{kvstore-bench} measures the server, so a change to the tool (such as
moving it onto the client library) must not change its figures.  On a
shared machine the background load moves from minute to minute, so the
tools take turns (A B A B ...) and the medians over the rounds are
compared.  Each run also reports the CPU the tool's own process spent in
its load loop per successful request (C{time.process_time} around
C{run_load}), which the machine's load disturbs far less than throughput:
that is what the tool costs, and what it takes from the servers on a small
machine.

Usage::

    python benchmarks/bench_ab.py --rounds 5 --shape "-c 50 -P 10 -d 8" --shape "-c 1 -P 1 -d 8" \\
        --variant "library=--client library" --variant "pipelined=--client pipelined"

Each run starts its own cluster (C{kvstore-bench}'s default: 3 nodes, fsync
on, free ports from 21000), with C{--warmup 0 --fsync-probe 0} for every
tool so that the CPU figure covers the measured load only.  The baseline is
C{git show <ref>:kvstore/tools/bench.py}, loaded as a module with this
tree's packages.  Prints each run, then per shape and tool the medians and
the difference from A in percent.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import io
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_one(tool: str, argv: list[str]) -> None:
    """In a child process: run one bench (a file path, or 'tree' for this
    tree's module) and print its JSON report with the load loop's CPU."""
    sys.path.insert(0, str(ROOT))
    if tool == "tree":
        module = importlib.import_module("kvstore.tools.bench")
    else:
        spec = importlib.util.spec_from_file_location("bench_baseline", tool)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    cpu = []
    original = module.run_load

    async def timed(*args: object, **kwargs: object) -> object:
        start = time.process_time()
        try:
            return await original(*args, **kwargs)
        finally:
            cpu.append(time.process_time() - start)

    module.run_load = timed
    out = io.StringIO()
    with redirect_stdout(out):
        module.main(argv)
    report = json.loads(out.getvalue())
    report["client_cpu_us_per_request"] = round(cpu[0] / max(1, report["requests_ok"]) * 1e6, 2)
    print(json.dumps(report))


def run(tool: str, argv: list[str]) -> dict:
    command = [sys.executable, __file__, "--run-one", tool, "--", *argv]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="main", help="git revision of the A tool (default main)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shape", action="append", default=[],
                        help='kvstore-bench options of one workload, e.g. "-c 50 -P 10 -d 10" (repeatable)')
    parser.add_argument("--variant", action="append", default=[],
                        help='a B variant, "name=extra options" (repeatable; default: this tree as is)')
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.run_one:
        run_one(args.run_one, [a for a in rest if a != "--"])
        return
    shapes = args.shape or ["-c 50 -P 10 -d 10", "-c 1 -P 1 -d 10"]
    variants = [v.partition("=")[::2] for v in args.variant] or [("this tree", "")]
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "bench_baseline.py"
        old.write_text(subprocess.run(["git", "show", f"{args.baseline}:kvstore/tools/bench.py"], cwd=ROOT,
                                      capture_output=True, text=True, check=True).stdout)
        tools = {f"A {args.baseline}": (str(old), "")}
        tools.update({f"B {name}": ("tree", options) for name, options in variants})
        figures: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        for round_number in range(args.rounds):
            for shape in shapes:
                for name, (tool, options) in tools.items():
                    argv = [*shlex.split(shape), *shlex.split(options), "--json", "--warmup", "0",
                            "--fsync-probe", "0"]
                    report = run(tool, argv)
                    row = (report["throughput_per_s"], report["latency_ms"]["p50"],
                           report["client_cpu_us_per_request"])
                    figures.setdefault((shape, name), []).append(row)
                    print(f"round {round_number + 1} {shape:20} {name:14} {row[0]:9.0f} req/s  p50 {row[1]:7.3f} ms  "
                          f"tool CPU {row[2]:6.1f} us/req  errors {report['errors'] or 'none'}", flush=True)
    print()
    for shape in shapes:
        medians = {}
        for name in tools:
            runs = figures[(shape, name)]
            medians[name] = tuple(statistics.median(r[i] for r in runs) for i in range(3))
            print(f"{shape:20} {name:14} median {medians[name][0]:9.0f} req/s (runs "
                  f"{', '.join(f'{r[0]:.0f}' for r in runs)}); p50 {medians[name][1]:.3f} ms (runs "
                  f"{', '.join(f'{r[1]:.3f}' for r in runs)}); tool CPU {medians[name][2]:.1f} us/req")
        base = medians[next(iter(tools))]
        for name in list(tools)[1:]:
            b = medians[name]
            print(f"{shape:20} {name} vs A: throughput {100 * (b[0] / base[0] - 1):+.1f}%, "
                  f"p50 {100 * (b[1] / base[1] - 1):+.1f}%, tool CPU {b[2] - base[2]:+.1f} us/req")


if __name__ == "__main__":
    main()
