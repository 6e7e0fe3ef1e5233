"""
The cost of the admin endpoint's metrics: C{kvstore-bench} throughput with
the endpoint off and on, A/B in one run.

Why this shape: on a shared machine the throughput of two runs minutes apart
differs by more than the few per cent being measured.  So the two variants
alternate, round after round (off-on, then on-off, ... so neither always
goes first), each round a fresh 3-node cluster started by C{kvstore-bench};
the report gives every run, the median of each variant and the median of
the per-round ratios (each pair ran within a minute of each other).  It
also gives the CPU time the nodes used per request (from C{/proc}, over the
measured seconds), which other processes' load disturbs far less than
throughput.

"On" is C{kvstore-bench --admin-scrape SECONDS}: every node runs with
C{--admin-listen} (all its instruments: request counting, fsync timing,
round trips, the reactor-lag probe) and every node's C{/metrics} is scraped
every SECONDS (1 s by default: fifteen times Prometheus' default rate).
"Off" is the same command without it: no endpoint, no instrument.

Usage::

    python benchmarks/metrics_cost.py --rounds 8 --duration 8 -- -c 50 -P 10

Arguments after C{--} go to both variants' C{kvstore-bench}.  Every cluster
is started and stopped by C{kvstore-bench} itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def bench(extra: list[str], duration: float, scrape: float | None) -> dict[str, object]:
    """One C{kvstore-bench} run's JSON report."""
    argv = [
        sys.executable, "-m", "kvstore.tools.bench", "--json", "--fsync-probe", "0",
        "--duration", str(duration), *extra,
    ]
    if scrape is not None:
        argv += ["--admin-scrape", str(scrape)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=duration * 10 + 120)
    if result.returncode != 0:
        raise SystemExit(f"kvstore-bench failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8, help="pairs of runs (default 8)")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per run (default 8)")
    parser.add_argument("--scrape", type=float, default=1.0, help="seconds between scrapes when on (default 1)")
    parser.add_argument("--json-out", help="also write every run's report here")
    args = parser.parse_args(argv)
    extra = extra or ["-c", "50", "-P", "10"]
    runs: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    ratios: list[float] = []
    cpu_ratios: list[float] = []
    reports: list[dict[str, object]] = []
    started = time.time()
    for round_number in range(args.rounds):
        order = ["off", "on"] if round_number % 2 == 0 else ["on", "off"]
        pair: dict[str, float] = {}
        pair_cpu: dict[str, float] = {}
        for variant in order:
            report = bench(extra, args.duration, args.scrape if variant == "on" else None)
            throughput = float(report["throughput_per_s"])  # type: ignore[arg-type]
            pair[variant] = throughput
            runs[variant].append(throughput)
            cpu_per_request = float(report.get("server_cpu_us_per_request", 0.0))  # type: ignore[arg-type]
            pair_cpu[variant] = cpu_per_request
            cpu[variant].append(cpu_per_request)
            scrapes = report.get("admin_scrapes", {})
            reports.append({"round": round_number, "variant": variant, "report": report})
            errors = report.get("errors") or {}
            print(
                f"round {round_number + 1:2d} {variant:3s} {throughput:9.0f} requests/s"
                f"  {cpu_per_request:6.1f} us CPU/request"
                + (f"  ({scrapes['count']} scrapes, mean {scrapes['mean_ms']} ms)" if scrapes else "")  # type: ignore[index]
                + (f"  errors {errors}" if errors else ""),
                flush=True,
            )
        ratios.append(pair["on"] / pair["off"])
        if pair_cpu["off"] > 0:
            cpu_ratios.append(pair_cpu["on"] / pair_cpu["off"])
    median_off = statistics.median(runs["off"])
    median_on = statistics.median(runs["on"])
    median_ratio = statistics.median(ratios)
    print()
    print(f"kvstore-bench {' '.join(extra)}, {args.rounds} rounds of {args.duration:g} s, "
          f"scrape every {args.scrape:g} s when on; {time.time() - started:.0f} s in all")
    print(f"median throughput   off {median_off:9.0f}   on {median_on:9.0f}   on/off {median_on / median_off:.3f}")
    print(f"per-round on/off    median {median_ratio:.3f}   min {min(ratios):.3f}   max {max(ratios):.3f}")
    print(f"cost (median of per-round ratios): {100 * (1 - median_ratio):.1f} % of throughput")
    if cpu_ratios:
        print(f"node CPU per request (all nodes)   off {statistics.median(cpu['off']):.1f} us   "
              f"on {statistics.median(cpu['on']):.1f} us   per-round on/off median {statistics.median(cpu_ratios):.3f} "
              f"(min {min(cpu_ratios):.3f}, max {max(cpu_ratios):.3f})")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"extra": extra, "runs": reports, "ratios": ratios, "cpu_ratios": cpu_ratios}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
