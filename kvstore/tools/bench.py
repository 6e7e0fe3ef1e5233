# -*- test-case-name: tests.test_bench -*-
"""
C{kvstore-bench}: load generator and latency report for kvstore clusters,
in the spirit of C{redis-benchmark} and etcd's C{benchmark}.

It runs on asyncio, not Twisted (so the tool and the server never share
an event loop implementation's quirks), keeps C{--pipeline} requests in
flight on each of C{--connections} connections, sends writes to the leader
(following C{Not leader} replies) and reads to every node, and prints a
live rate line, then a table of throughput, latency percentiles and errors
by kind (or JSON with C{--json}).

Every request goes through the client library, in one of two ways
(C{--client}): by default a loop that sends the next request as each reply
arrives, on the library's codec (L{kvstore.tools.bench_pipelined}: encode,
frame and read replies with L{kvstore.client._protocol}); or, with
C{--client library}, as calls of L{kvstore.client.asyncio.AsyncClient},
which follows the leader and retries as applications do but costs the tool
about 2-3 us of CPU more per request (measured with
C{benchmarks/bench_ab.py}, see C{docs/client.md}), CPU a small machine
takes from the servers being measured.

Without C{--nodes} it starts its own local cluster of real node processes
in a temporary directory and removes it afterwards.  C{--target trivial}
instead starts a server that answers every line at once without doing
anything: the rate against it is the tool's own ceiling on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from kvstore import trace
from kvstore.client.asyncio import AsyncClient
from kvstore.client.errors import (
    BadRequest,
    ClientError,
    ConnectionFailed,
    KeyNotFound,
    NoLeader,
    OutcomeUnknown,
    Unavailable,
)
from kvstore.tools.bench_pipelined import address_text, pipelined_worker
from kvstore.tools.ports import allocate_port_range
from kvstore.tools.procinfo import cpu_seconds, rss_kib
from kvstore.tools.spawn import spawn, twistd_command


@dataclass
class Results:
    """Everything measured in one run."""

    started: float = 0.0
    finished: float = 0.0
    ok: int = 0
    writes: int = 0
    reads: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    # With --trace: (sent, received) CLOCK_MONOTONIC nanoseconds of each
    # successful write, to line up with the nodes' trace events.
    write_times: list[tuple[int, int]] = field(default_factory=list)
    # With --admin-scrape: how long each scrape of a node's /metrics took.
    scrapes: list[float] = field(default_factory=list)
    scrape_errors: int = 0
    # CPU seconds each started node used during the measured run.
    server_cpu: list[float] = field(default_factory=list)

    def record_error(self, reply: str) -> None:
        kind = reply[len("Error: ") :].split(".")[0].split(":")[0][:60] if reply.startswith("Error: ") else reply[:60]
        self.errors[kind] = self.errors.get(kind, 0) + 1


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The value at C{fraction} (0..1) of C{sorted_values} (nearest rank)."""
    if not sorted_values:
        return float("nan")
    # Nearest rank: the smallest value with at least this fraction of the
    # samples at or below it.
    rank = math.ceil(fraction * len(sorted_values))
    return sorted_values[min(len(sorted_values), max(1, rank)) - 1]


def summarize(results: Results, settings: dict[str, Any]) -> dict[str, Any]:
    """The report as a JSON-compatible dictionary (latencies in ms)."""
    elapsed = max(1e-9, results.finished - results.started)
    lat = sorted(results.latencies)
    ms = 1000.0
    return {
        "settings": settings,
        "elapsed_s": round(elapsed, 3),
        "requests_ok": results.ok,
        "writes_ok": results.writes,
        "reads_ok": results.reads,
        "throughput_per_s": round(results.ok / elapsed, 1),
        "latency_ms": {
            "p50": round(percentile(lat, 0.50) * ms, 3),
            "p90": round(percentile(lat, 0.90) * ms, 3),
            "p99": round(percentile(lat, 0.99) * ms, 3),
            "p99.9": round(percentile(lat, 0.999) * ms, 3),
            "max": round((lat[-1] if lat else float("nan")) * ms, 3),
        },
        "errors": dict(sorted(results.errors.items())),
        "nodes": results.nodes,
        **(
            {
                "server_cpu_s": [round(c, 3) for c in results.server_cpu],
                "server_cpu_us_per_request": round(sum(results.server_cpu) / max(1, results.ok) * 1e6, 2),
            }
            if results.server_cpu
            else {}
        ),
        **(
            {
                "admin_scrapes": {
                    "interval_s": settings.get("admin_scrape"),
                    "count": len(results.scrapes),
                    "errors": results.scrape_errors,
                    "mean_ms": round(sum(results.scrapes) / len(results.scrapes) * ms, 3),
                    "max_ms": round(max(results.scrapes) * ms, 3),
                }
            }
            if results.scrapes
            else {}
        ),
    }


def format_table(report: dict[str, Any]) -> str:
    """A human-readable table of L{summarize}'s report."""
    s = report["settings"]
    lines = [
        f"target       {s['target']}",
        f"workload     {s['connections']} connections x {s['pipeline']} pipelined, "
        f"{int(s['writes'] * 100)}% writes, {s['keys']} keys, {s['value_size']}-byte values, "
        f"{s['consistency']} reads from {s.get('read_from', 'all')}",
        f"fsync        {s['fsync']}",
        f"elapsed      {report['elapsed_s']:.2f} s",
        f"throughput   {report['throughput_per_s']:.0f} requests/s "
        f"({report['writes_ok']} writes, {report['reads_ok']} reads ok)",
        "latency ms   " + "  ".join(f"{k} {v:.3f}" for k, v in report["latency_ms"].items()),
        "errors       " + (", ".join(f"{k}: {v}" for k, v in report["errors"].items()) or "none"),
    ]
    if "server_cpu_us_per_request" in report:
        lines.append(
            f"server CPU   {report['server_cpu_us_per_request']:.1f} us per request (all nodes; "
            + ", ".join(f"{c:.2f}" for c in report["server_cpu_s"]) + " s)"
        )
    scrapes = report.get("admin_scrapes")
    if scrapes:
        lines.append(
            f"metrics      /metrics of every node scraped every {scrapes['interval_s']:g} s: {scrapes['count']} "
            f"scrapes ({scrapes['errors']} failed), mean {scrapes['mean_ms']:.1f} ms, max {scrapes['max_ms']:.1f} ms"
        )
    for node in report.get("nodes", []):
        fsyncs = node.get("fsyncs_during_run")
        per = f", {report['writes_ok'] / fsyncs:.1f} acknowledged writes per fsync" if fsyncs else ""
        lines.append(
            f"node         {node['address']} {node['role']}: "
            f"{fsyncs if fsyncs is not None else '?'} fsyncs{per}, "
            f"term changes {node.get('term_during_run', '?')}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------
# The per-stage trace (--trace)

TraceEvent = tuple[int, str, "int | None"]

#: Stages a write passes on the leader and on the follower whose
#: acknowledgement completed the majority (see L{kvstore.trace}).  Stages
#: without an index (client bytes received, reply written) are matched by
#: time alone.
LEADER_STAGES = (
    "client.received",
    "propose",
    "wal.enqueue",
    "ae.sent",
    "flush.start",
    "flush.end",
    "wal.durable",
    "ack.received",
    "commit",
    "apply",
    "reply.written",
)
FOLLOWER_STAGES = ("ae.received", "wal.enqueue", "flush.start", "flush.end", "wal.durable", "ack.sent")


class _StageTimes:
    """One node's events, by stage, sorted by time, for window look-ups."""

    def __init__(self, events: Sequence[TraceEvent]) -> None:
        self.by_stage: dict[str, tuple[list[int], list[int | None]]] = {}
        for t, stage, index in sorted(events, key=lambda e: e[0]):
            times, indexes = self.by_stage.setdefault(stage, ([], []))
            times.append(t)
            indexes.append(index)

    def first(self, stage: str, start: int, end: int, index: int | None) -> int | None:
        """The first time in [start, end] of C{stage} for C{index} or a later
        one (any, if C{index} is None)."""
        times, indexes = self.by_stage.get(stage, ([], []))
        i = bisect.bisect_left(times, start)
        while i < len(times) and times[i] <= end:
            if index is None or indexes[i] is None or indexes[i] >= index:  # type: ignore[operator]  # indexes[i] is checked for None just before
                return times[i]
            i += 1
        return None

    def last(self, stage: str, start: int, end: int) -> int | None:
        """The last time in [start, end] of C{stage}."""
        times, _ = self.by_stage.get(stage, ([], []))
        i = bisect.bisect_right(times, end) - 1
        return times[i] if i >= 0 and times[i] >= start else None


def stage_breakdown(
    write_times: Sequence[tuple[int, int]],
    node_events: Mapping[str, Sequence[TraceEvent]],
    leader: str,
) -> list[dict[str, Any]]:
    """
    The median time from the client's send to each stage of a write.

    Meant for one sequential client (C{-c 1 -P 1}): each write is found by
    the leader's C{propose} event inside the client's send..receive window,
    and every other stage by the first event for that index (or a later one:
    a batch) inside the same window.  The follower is, for each write, the
    one whose acknowledgement was sent first (the one that made the
    majority).  Events of all processes share C{CLOCK_MONOTONIC}.

    @return: rows C{{"stage", "p50_us", "samples"}}, in order of C{p50_us},
        ending with the client's receipt of the reply.
    """
    leader_times = _StageTimes(node_events.get(leader, ()))
    followers = [_StageTimes(events) for name, events in sorted(node_events.items()) if name != leader]
    offsets: dict[str, list[float]] = {}

    def note(label: str, t: int | None, sent: int) -> None:
        if t is not None:
            offsets.setdefault(label, []).append((t - sent) / 1000.0)

    for sent, received in write_times:
        index = None
        proposed = leader_times.first("propose", sent, received, None)
        if proposed is None:
            continue
        times, indexes = leader_times.by_stage["propose"]
        index = indexes[bisect.bisect_left(times, proposed)]
        for stage in LEADER_STAGES:
            if stage == "reply.written":
                t = leader_times.last(stage, sent, received)
            elif stage == "client.received":
                t = leader_times.first(stage, sent, received, None)
            else:
                t = leader_times.first(stage, sent, received, index)
            note(f"leader   {stage}", t, sent)
        acks = [(f.first("ack.sent", sent, received, index), n) for n, f in enumerate(followers)]
        acks = [(t, n) for t, n in acks if t is not None]
        if acks:
            follower = followers[min(acks)[1]]
            for stage in FOLLOWER_STAGES:
                note(f"follower {stage}", follower.first(stage, sent, received, index), sent)
        note("client   reply received", received, sent)
    rows = [
        {"stage": label, "p50_us": round(percentile(sorted(values), 0.5), 1), "samples": len(values)}
        for label, values in offsets.items()
    ]
    rows.sort(key=lambda row: row["p50_us"])  # type: ignore[arg-type,return-value]  # p50_us is always a number
    return rows


def read_trace_file(path: str) -> list[TraceEvent]:
    """The events a node dumped (see L{kvstore.trace.dump})."""
    events: list[TraceEvent] = []
    with open(path) as f:
        for line in f:
            t, stage, index = json.loads(line)
            events.append((t, stage, index))
    return events


def format_breakdown(rows: Sequence[dict[str, Any]]) -> str:
    """The breakdown as a table: time since the client sent, and since the
    previous stage."""
    lines = ["stage (p50 of each, µs since the client sent)      since send   step   samples"]
    previous = 0.0
    for row in rows:
        lines.append(f"  {row['stage']:<45} {row['p50_us']:10.1f} {row['p50_us'] - previous:8.1f} {row['samples']:8d}")
        previous = row["p50_us"]
    return "\n".join(lines)


# ----------------------------------------------------------------------
# The load


class TargetNodes:
    """What the tool knows of the target: node addresses and the leader."""

    def __init__(self, addresses: list[tuple[str, int]]) -> None:
        self.addresses = addresses
        self.leader: tuple[str, int] | None = None

    async def find_leader(self, deadline: float) -> tuple[str, int]:
        """Ask every node's STATUS until one says it leads."""
        while time.monotonic() < deadline:
            for address in self.addresses:
                if (await read_status(address, timeout=1.0)).get("role") == "leader":
                    self.leader = address
                    return address
            await asyncio.sleep(0.05)
        raise RuntimeError("no leader found before the deadline")

    def nodes_leader_first(self) -> list[str]:
        """Every node's C{host:port}, the known leader first: what a writing
        client is given, so that it connects to the leader straight away and
        finds the next one by itself after a failover."""
        ordered = sorted(self.addresses, key=lambda a: a != self.leader)
        return [address_text(a) for a in ordered]


#: How a failed call is counted in the report's errors.
ERROR_KINDS: tuple[tuple[type[ClientError], str], ...] = (
    (KeyNotFound, "Key not found"),
    (OutcomeUnknown, "Outcome unknown"),
    (NoLeader, "No leader"),
    (ConnectionFailed, "Connection failed"),
    (Unavailable, "Unavailable"),
    (BadRequest, "Bad request"),
    (ClientError, "Client error"),
)


def error_kind(error: ClientError) -> str:
    """The report's name for C{error}'s kind."""
    for kind, name in ERROR_KINDS:
        if isinstance(error, kind):
            return name
    return type(error).__name__


class Worker:
    """
    One connection (one L{AsyncClient}) with C{pipeline} calls in flight:
    C{pipeline} lanes, each making one call after another, whose requests
    the client pipelines on its connection.  Writers follow the leader
    (the client does); readers stay on their node.
    """

    def __init__(
        self,
        cluster: TargetNodes,
        target: tuple[str, int] | None,
        writes: bool,
        args: argparse.Namespace,
        results: Results,
        rng: random.Random,
        stop_at: list[float],
        budget: list[int],
    ) -> None:
        self.cluster = cluster
        self.target = target  # None: follow the leader
        self.writes = writes
        self.args = args
        self.results = results
        self.rng = rng
        self.stop_at = stop_at
        self.budget = budget
        self.value = "v" * args.value_size
        self.stale = args.consistency == "stale"

    def _may_send(self) -> bool:
        if time.monotonic() >= self.stop_at[0]:
            return False
        if self.budget[0] <= 0:
            return False
        self.budget[0] -= 1
        return True

    async def run(self) -> None:
        if self.args.client == "pipelined":
            await pipelined_worker(self)
            return
        # A client per run (warm-up, measurement), as the tool always opened
        # its connections: closed when the run ends.
        nodes = [address_text(self.target)] if self.target else self.cluster.nodes_leader_first()
        client = AsyncClient(nodes, timeout=self.args.timeout, exactly_once=False)  # plain writes, as measured
        try:
            await asyncio.gather(*(self._lane(client) for _ in range(self.args.pipeline)))
        finally:
            client.close()

    async def _lane(self, client: AsyncClient) -> None:
        results = self.results
        keys, rng = self.args.keys, self.rng
        write, value, stale = self.writes, self.value, self.stale
        keep_times = self.args.trace
        monotonic_ns = time.monotonic_ns
        while self._may_send():
            key = f"key{rng.randrange(keys)}"
            sent = monotonic_ns()
            try:
                if write:
                    await client.put(key, value)
                else:
                    await client.get(key, stale)
            except ClientError as e:
                kind = error_kind(e)
                results.errors[kind] = results.errors.get(kind, 0) + 1
                if not isinstance(e, (KeyNotFound, BadRequest)):
                    await asyncio.sleep(0.05)  # the cluster is failing over: do not spin
                continue
            now = monotonic_ns()
            results.ok += 1
            results.latencies.append((now - sent) / 1e9)
            if write:
                results.writes += 1
                if keep_times:
                    results.write_times.append((sent, now))
            else:
                results.reads += 1


async def read_status(address: tuple[str, int], timeout: float = 2.0) -> dict[str, str]:
    """One node's STATUS as a dictionary (empty if it does not answer)."""
    client = AsyncClient([address_text(address)], timeout=timeout)
    try:
        return await client.status()
    except ClientError:
        return {}
    finally:
        client.close()


async def preload(cluster: TargetNodes, keys: int, value_size: int, quiet: bool) -> None:
    """
    Write every key of the key space once, so that reads find values.  Uses
    16 clients with 100 writes in flight each; fails loudly if a write fails.
    """
    value = "v" * value_size
    connections = 16
    window = 100
    started = time.monotonic()
    if cluster.leader is None:
        await cluster.find_leader(time.monotonic() + 30)

    async def one(first: int) -> None:
        async with AsyncClient(cluster.nodes_leader_first(), timeout=30, exactly_once=False) as client:
            indexes = list(range(first, keys, connections))
            for start in range(0, len(indexes), window):
                chunk = indexes[start : start + window]
                try:
                    await asyncio.gather(*(client.put(f"key{i}", value) for i in chunk))
                except ClientError as e:
                    raise RuntimeError(f"preload failed: {e}") from None

    await asyncio.gather(*(one(i) for i in range(connections)))
    if not quiet:
        sys.stderr.write(f"preloaded {keys} keys in {time.monotonic() - started:.1f} s\n")


async def scrape_metrics(ports: Sequence[int], interval: float, results: Results) -> None:
    """
    Fetch every node's C{/metrics} (C{--admin-scrape}) every C{interval}
    seconds until cancelled, as Prometheus would, recording how long each
    took.
    """
    while True:
        for port in ports:
            started = time.monotonic()
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5.0)
                writer.write(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                response = await asyncio.wait_for(reader.read(), 10.0)
                writer.close()
            except (OSError, asyncio.TimeoutError):
                results.scrape_errors += 1
                continue
            if response.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")) and b"kvstore_is_leader" in response:
                results.scrapes.append(time.monotonic() - started)
            else:
                results.scrape_errors += 1
        await asyncio.sleep(interval)


async def run_load(cluster: TargetNodes, args: argparse.Namespace, quiet: bool) -> Results:
    """Run the workload against C{cluster} and collect results."""
    results = Results()
    rng = random.Random(args.seed)
    await cluster.find_leader(time.monotonic() + 30)
    if args.preload:
        await preload(cluster, args.keys, args.value_size, quiet)
    write_conns = round(args.connections * args.writes)
    if args.writes > 0 and write_conns == 0:
        write_conns = 1
    workers = []
    stop_at = [float("inf")]
    budget = [args.requests if args.requests else 1 << 62]
    read_targets = read_addresses(cluster, args.read_from)
    for i in range(args.connections):
        writes = i < write_conns
        target = None if writes else read_targets[i % len(read_targets)]
        workers.append(Worker(cluster, target, writes, args, results, random.Random(rng.random()), stop_at, budget))
    if args.warmup > 0:
        stop_at[0] = time.monotonic() + args.warmup
        await asyncio.gather(*(w.run() for w in workers))
        results.__init__()  # type: ignore[misc]  # reset the results in place: the workers hold this object
        budget[0] = args.requests if args.requests else 1 << 62
    before = await asyncio.gather(*(read_status(a) for a in cluster.addresses))
    server_pids = getattr(args, "server_pids", ())
    cpu_before = [_cpu_seconds_or_zero(pid) for pid in server_pids]
    results.started = time.monotonic()
    stop_at[0] = results.started + args.duration if not args.requests else float("inf")
    progress = None if quiet else asyncio.ensure_future(_progress(results))
    admin_ports = getattr(args, "admin_ports", ())
    scraper = asyncio.ensure_future(scrape_metrics(admin_ports, args.admin_scrape, results)) if admin_ports else None
    await asyncio.gather(*(w.run() for w in workers))
    results.finished = time.monotonic()
    results.server_cpu = [_cpu_seconds_or_zero(pid) - b for pid, b in zip(server_pids, cpu_before)]
    if scraper is not None:
        scraper.cancel()
    if progress is not None:
        progress.cancel()
        sys.stderr.write("\n")
    after = await asyncio.gather(*(read_status(a) for a in cluster.addresses))
    for address, b, a in zip(cluster.addresses, before, after):
        node: dict[str, object] = {"address": f"{address[0]}:{address[1]}", "role": a.get("role", "?")}
        for name in ("fsyncs", "term"):
            if name in a and name in b:
                node[f"{name}_during_run"] = int(a[name]) - int(b[name])
        results.nodes.append(node)
    return results


def read_addresses(cluster: TargetNodes, read_from: str) -> list[tuple[str, int]]:
    """
    The nodes reading connections go to: C{all} nodes in turn, only the
    C{leader} (found before the load starts), or only the C{followers}.
    Leader and follower reads take different paths (a follower asks the
    leader for a read index), so their latencies are reported apart.
    """
    if read_from == "leader" and cluster.leader is not None:
        return [cluster.leader]
    if read_from == "followers":
        followers = [a for a in cluster.addresses if a != cluster.leader]
        if followers:
            return followers
    return list(cluster.addresses)


async def _progress(results: Results) -> None:
    last_ok, last_t = 0, time.monotonic()
    while True:
        await asyncio.sleep(1.0)
        now = time.monotonic()
        rate = (results.ok - last_ok) / (now - last_t)
        last_ok, last_t = results.ok, now
        errors = sum(results.errors.values())
        sys.stderr.write(f"\r{now - results.started:6.1f} s  {rate:10.0f} req/s  {results.ok} ok  {errors} errors   ")
        sys.stderr.flush()


# ----------------------------------------------------------------------
# Servers the tool starts itself


class BenchNodes:
    """Node processes the tool starts in a temporary directory."""

    def __init__(
        self, size: int, fsync: bool, extra: Sequence[str] = (), traced: bool = False, admin: bool = False
    ) -> None:
        self.size = size
        self.directory = tempfile.mkdtemp(prefix="kvstore-bench-")
        self.trace_directory: str | None = None
        if traced:
            # The nodes inherit this environment (kvstore.tools.spawn.spawn).
            self.trace_directory = os.path.join(self.directory, "trace")
            os.mkdir(self.trace_directory)
            os.environ[trace.ENVIRONMENT_VARIABLE] = self.trace_directory
        # With admin, node i's admin endpoint is on base + size + i.
        self.base = allocate_port_range(size, low=21000, also=tuple(size + i for i in range(size)) if admin else ())
        self.addresses = [("127.0.0.1", self.base + i) for i in range(size)]
        self.admin_ports = [self.base + size + i for i in range(size)] if admin else []
        self.processes: list[subprocess.Popen[bytes]] = []
        for i in range(size):
            peers = ",".join(str(self.base + j) for j in range(size) if j != i)
            argv = twistd_command() + [
                "-n",
                "--pidfile=",
                f"--logfile={self.directory}/node-{i}.log",
                "kvstore",
                f"--node-id={i}",
                f"--port={self.base + i}",
                f"--data-dir={self.directory}/node-{i}",
                *([f"--peers={peers}"] if peers else []),
                *([] if fsync else ["--unsafe-no-fsync"]),
                *([f"--admin-listen=tcp:{self.admin_ports[i]}:interface=127.0.0.1"] if admin else []),
                *extra,
            ]
            # Like kvstore-cluster's nodes: their own session, and (on Linux)
            # terminated by the kernel if this tool dies without cleaning up.
            self.processes.append(spawn(argv, stdout=None, stderr=None))
        os.environ.pop(trace.ENVIRONMENT_VARIABLE, None)

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def traces(self) -> dict[str, list[TraceEvent]]:
        """Each node's trace events by C{host:port}, once the nodes have
        stopped (they write them at exit)."""
        found: dict[str, list[TraceEvent]] = {}
        if self.trace_directory is None:
            return found
        for process, (host, port) in zip(self.processes, self.addresses):
            path = os.path.join(self.trace_directory, f"trace-{process.pid}.jsonl")
            if os.path.exists(path):
                found[f"{host}:{port}"] = read_trace_file(path)
        return found

    def stop(self, before_removal: Callable[[], None] = lambda: None) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in self.processes:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        try:
            before_removal()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


class TrivialServer:
    """A subprocess answering every line at once: the tool's ceiling."""

    def __init__(self) -> None:
        self.port = allocate_port_range(1, low=21000)
        self.addresses = [("127.0.0.1", self.port)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kvstore.tools.bench", "--serve-trivial", str(self.port)], stdin=subprocess.DEVNULL
        )

    def pids(self) -> list[int]:
        return [self.process.pid]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def trivial_replies(lines: Sequence[bytes]) -> bytes:
    """
    What the do-nothing server answers to C{lines}: the success reply each
    request expects (so that the client library accepts it), without
    storing anything; C{STATUS} claims leadership.
    """
    out = []
    for line in lines:
        word, _, rest = line.partition(b" ")
        key = rest.partition(b" ")[0]
        if word == b"PUT":
            out.append(key + b" added successfully.\n")
        elif word == b"GET":
            out.append(b"value of " + key + b": v\n")
        elif word == b"DELETE":
            out.append(key + b" deleted successfully.\n")
        elif word == b"STATUS":
            out.append(b"node=0 role=leader term=1 leader=0\n")
        else:
            out.append(b"PONG\n")
    return b"".join(out)


async def serve_trivial(port: int) -> None:
    """Answer each line at once with L{trivial_replies}."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = b""
        while True:
            data = await reader.read(262144)
            if not data:
                break
            *lines, buffer = (buffer + data).split(b"\n")
            writer.write(trivial_replies(lines))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def measure_fsync_rate(directory: str, seconds: float) -> float:
    """
    Append a 100-byte record and fsync it, in a loop, for C{seconds}.

    @return: fsyncs per second.
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "fsync-rate.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    try:
        count = 0
        start = time.monotonic()
        deadline = start + seconds
        now = start
        while now < deadline:
            os.write(fd, b"r" * 100)
            os.fsync(fd)
            count += 1
            now = time.monotonic()
        return count / (now - start)
    finally:
        os.close(fd)
        os.unlink(path)


def _cpu_seconds_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except (OSError, ValueError, IndexError):
        return 0.0


def _rss_kib_or_none(pid: int) -> int | None:
    try:
        return rss_kib(pid)
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="kvstore-bench",
        description=(
            "Load-test a kvstore cluster and report throughput and latency. Without --nodes it "
            "starts its own cluster on 127.0.0.1, on a free block of ports from 21000 "
            "(below 30000), with data in a temporary directory, and stops it at the end."
        ),
    )
    p.add_argument("--nodes", help="existing nodes, e.g. 127.0.0.1:5000,127.0.0.1:5001 (default: start a "
                   "cluster on free ports from 21000)")
    p.add_argument("--cluster-size", type=int, default=3, help="nodes in the cluster the tool starts (default 3)")
    p.add_argument(
        "--target",
        choices=("kvstore", "trivial"),
        default="kvstore",
        help="'trivial' measures the tool's own ceiling against a do-nothing server (started on a free "
        "port from 21000)",
    )
    p.add_argument("--connections", "-c", type=int, default=50, help="client connections (default 50)")
    p.add_argument("--pipeline", "-P", type=int, default=10, help="requests in flight per connection (default 10)")
    p.add_argument("--writes", type=float, default=1.0, help="fraction of connections that write (0..1, default 1)")
    p.add_argument("--keys", type=int, default=10000, help="key space size (default 10000)")
    p.add_argument("--value-size", type=int, default=100, help="value size in bytes (default 100)")
    p.add_argument("--duration", "-d", type=float, default=10.0, help="seconds to run (default 10)")
    p.add_argument("--requests", "-n", type=int, default=0, help="stop after this many requests instead")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured load first (default 1)")
    p.add_argument("--consistency", choices=("linearizable", "stale"), default="linearizable")
    p.add_argument(
        "--read-from",
        choices=("all", "leader", "followers"),
        default="all",
        help="which nodes reading connections use (default: all nodes in turn)",
    )
    p.add_argument(
        "--client",
        choices=("pipelined", "library"),
        default="pipelined",
        help="how the load is sent: 'pipelined' (default) keeps --pipeline requests in flight per connection and "
        "sends the next as each reply arrives, on the client library's codec; 'library' makes every request a "
        "call of the asyncio client library (kvstore.client.asyncio), which costs the tool more CPU per request",
    )
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds one request may take, retries and failovers included (default 10)")
    p.add_argument(
        "--preload",
        action="store_true",
        help="write every key once before measuring (implied when --writes is below 1, so reads find values)",
    )
    p.add_argument(
        "--no-fsync",
        action="store_true",
        help="start the cluster with --unsafe-no-fsync (for comparison only; labelled in the report)",
    )
    p.add_argument("--node-option", action="append", default=[], help="extra option for started nodes (repeatable)")
    p.add_argument(
        "--fsync-probe",
        type=float,
        default=1.0,
        help="seconds spent measuring the raw fsync rate in the started cluster's directory first (0: skip)",
    )
    p.add_argument(
        "--trace",
        action="store_true",
        help="started nodes record per-stage timestamps of each write; report the median time to each stage "
        "(meaningful with -c 1 -P 1)",
    )
    p.add_argument(
        "--admin-scrape",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="start the nodes with their admin endpoint (--admin-listen) and scrape every node's /metrics every "
        "SECONDS during the measured run, as Prometheus would: the cost of metrics, against a run without "
        "(default 0: no admin endpoint)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--serve-trivial", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not 0 <= args.writes <= 1:
        p.error("--writes must be between 0 and 1")
    if args.connections < 1 or args.pipeline < 1:
        p.error("--connections and --pipeline must be at least 1")
    if args.writes < 1 and args.target == "kvstore":
        args.preload = True
    if args.trace and (args.nodes or args.target != "kvstore"):
        p.error("--trace needs the cluster the tool starts itself")
    if args.admin_scrape < 0:
        p.error("--admin-scrape must be positive (or 0: off)")
    if args.admin_scrape and (args.nodes or args.target != "kvstore"):
        p.error("--admin-scrape needs the cluster the tool starts itself")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_trivial:
        asyncio.run(serve_trivial(args.serve_trivial))
        return 0
    # SIGTERM (a timeout, a CI runner) unwinds through the finally below,
    # which stops the servers this tool started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started: BenchNodes | TrivialServer | None = None
    raw_fsync_rate: float | None = None
    if args.target == "trivial":
        started = TrivialServer()
        addresses = started.addresses
        target = "trivial do-nothing server"
        fsync = "n/a"
    elif args.nodes:
        addresses = []
        for item in args.nodes.split(","):
            host, _, port = item.strip().rpartition(":")
            addresses.append((host or "127.0.0.1", int(port)))
        target = f"existing nodes {args.nodes}"
        fsync = "as configured on the nodes"
    else:
        started = BenchNodes(
            args.cluster_size, fsync=not args.no_fsync, extra=args.node_option, traced=args.trace,
            admin=args.admin_scrape > 0,
        )
        addresses = started.addresses
        args.admin_ports = started.admin_ports
        args.server_pids = started.pids()
        target = f"local {args.cluster_size}-node cluster started by the tool"
        fsync = "OFF (--unsafe-no-fsync, comparison only)" if args.no_fsync else "on"
    settings = {
        "target": target,
        "fsync": fsync,
        "connections": args.connections,
        "pipeline": args.pipeline,
        "writes": args.writes,
        "keys": args.keys,
        "value_size": args.value_size,
        "duration_s": args.duration,
        "requests": args.requests,
        "consistency": args.consistency,
        "read_from": args.read_from,
        "admin_scrape": args.admin_scrape,
    }
    cluster = TargetNodes(addresses)
    report: dict[str, Any] = {}

    def add_trace() -> None:
        leaders = [node["address"] for node in report.get("nodes", ()) if node["role"] == "leader"]
        if isinstance(started, BenchNodes) and args.trace and leaders:
            report["trace"] = stage_breakdown(results.write_times, started.traces(), leaders[0])

    try:
        if isinstance(started, BenchNodes) and args.fsync_probe > 0:
            raw_fsync_rate = measure_fsync_rate(started.directory, args.fsync_probe)
        results = asyncio.run(run_load(cluster, args, quiet=args.json))
        report.update(summarize(results, settings))
        if started is not None:
            report["server_rss_kib"] = [_rss_kib_or_none(pid) for pid in started.pids()]
        if raw_fsync_rate is not None:
            report["raw_fsyncs_per_s"] = round(raw_fsync_rate, 1)
    finally:
        if isinstance(started, BenchNodes):
            started.stop(before_removal=add_trace)
        elif started is not None:
            started.stop()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report))
        if "raw_fsyncs_per_s" in report:
            print(f"disk         {report['raw_fsyncs_per_s']:.0f} raw fsyncs/s (100-byte write + fsync, same directory)")
        if "server_rss_kib" in report:
            print("server RSS   " + ", ".join(f"{(r or 0) / 1024:.1f} MiB" for r in report["server_rss_kib"]))
        if "trace" in report:
            print(format_breakdown(report["trace"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
