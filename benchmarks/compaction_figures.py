"""
Issue 12's figures ("Figures to reach and report"), measured on real node
processes: 3 nodes on 127.0.0.1, fsync on, the product's default options
unless a figure says otherwise, 100-byte values.

    python benchmarks/compaction_figures.py                  # every figure, full size
    python benchmarks/compaction_figures.py --quick          # every figure, small sizes (~2 min)
    python benchmarks/compaction_figures.py --figures 3,5    # some figures

Figures (the issue's targets in brackets):

  1  RSS of each node after --growth-small (200,000) and after
     --growth-large (2,000,000) writes over --growth-keys (10,000) keys,
     and the ratio [<= 1.2x].
  2  Each node's data directory after those writes against the bound
     2 snapshots + catch-up tail + one segment (computed from that node's
     own snapshot files and the options; the parts are printed).
  3  Restart to serving with --big-keys (1,000,000) keys: from just before
     the process is started to the first successful linearizable GET on it
     [<= 3 s]: a follower killed (SIGKILL) and restarted while the others
     serve (--restarts times), and the whole cluster killed and restarted
     (that one includes an election).  The node's own report line
     ("recovered N keys ... in T s") is shown too.
  4  A follower stopped (SIGSTOP) while --stop-writes (1,000,000) writes
     create the --big-keys keys, then resumed (SIGCONT) under the same
     load: time until its applied index reaches the leader's at SIGCONT
     and until it is within one poll of the leader's live applied index,
     whether it came back through InstallSnapshot (its log says so), and the
     leader's write rate during the catch-up against the steady rate before
     it [>= 50 %].
  5  The newest snapshot's size with the --big-keys keys against the raw
     key + value bytes [<= 1.3x].
  6  The nodes run under benchmarks/lag_probe_node.py (a 1 ms reactor-lag
     probe inside each node process, and the start and end of each of its
     snapshots); with --big-keys keys and --stall-snapshot-entries between
     snapshots, a steady write load runs for --stall-seconds: the longest
     stall inside a snapshot window of a node holding >= 90 % of the keys
     [<= 20 ms], the longest outside (this machine's noise), and write p99
     for writes that overlapped some node's snapshot against writes that
     overlapped none [<= 2x].

Figures 3, 4 and 5 share one cluster (4, then 5, then 3); 1 and 2 share
another; 6 has its own.  The load is this script's own asyncio client on the
library's codec (the loop of C{kvstore-bench --client pipelined},
L{kvstore.tools.bench_pipelined.PipelinedConnection}): --connections connections
with --pipeline PUTs in flight each, to the leader.

The machine is usually shared: the 1-minute load average is printed with
every figure (before -> after), and figures that depend on CPU time (3, 4's
rates, 6) move with it.  Run it with C{nice} if others are working.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from array import array
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from kvstore.client import _protocol as p  # noqa: E402
from kvstore.client.blocking import parse_address  # noqa: E402
from kvstore.client.errors import ProtocolError  # noqa: E402
from kvstore.storage.fs import FileSystem  # noqa: E402
from kvstore.storage.snapshots import SnapshotStore  # noqa: E402
from kvstore.testing.processes import NodeProcess, ProcessCluster  # noqa: E402
from kvstore.tools.bench import TargetNodes, percentile, read_status  # noqa: E402
from kvstore.tools.bench_pipelined import PipelinedConnection  # noqa: E402
from kvstore.tools.procinfo import rss_kib  # noqa: E402
from kvstore.tools.spawn import twistd_command  # noqa: E402

PROBE_SCRIPT = HERE / "lag_probe_node.py"
MEMORY_PROBE_SCRIPT = HERE / "memory_probe_node.py"
THREAD_CPU_SCRIPT = HERE / "thread_cpu.py"
#: The product's defaults (kvstore/daemon/options.py), for the bound of figure 2.
DEFAULT_SNAPSHOT_ENTRIES = 10_000
DEFAULT_CATCHUP_ENTRIES = 5_000
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
#: A WAL record's header (kvstore/storage/records.py: >IIQQQ).
WAL_RECORD_HEADER = 32


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def key_name(i: int) -> str:
    return f"key{i}"


def log(text: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')} load {loadavg():.1f}] {text}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------
# Clusters


class ProbedNode(NodeProcess):
    """A node run under benchmarks/lag_probe_node.py."""

    probe_path: Path

    def argv(self) -> list[str]:
        args = super().argv()
        prefix = twistd_command()
        assert args[: len(prefix)] == prefix
        return [sys.executable, str(PROBE_SCRIPT), str(self.probe_path), *args[len(prefix) :]]


class MemoryProbedNode(NodeProcess):
    """A node run under benchmarks/memory_probe_node.py."""

    probe_path: Path

    def argv(self) -> list[str]:
        args = super().argv()
        prefix = twistd_command()
        assert args[: len(prefix)] == prefix
        return [sys.executable, str(MEMORY_PROBE_SCRIPT), str(self.probe_path), *args[len(prefix) :]]


def make_cluster(root: Path, extra: Sequence[str], probe: bool = False, memory_probe: bool = False) -> ProcessCluster:
    """Three nodes with the product's defaults plus C{extra} (no fast
    elections: the figures are for the default configuration)."""
    cluster = ProcessCluster(root, 3, extra_args=tuple(extra))
    if probe or memory_probe:
        for node in cluster.nodes:
            node.__class__ = ProbedNode if probe else MemoryProbedNode
            node.probe_path = root / f"probe-{node.node_id}.jsonl"  # type: ignore[attr-defined]
    return cluster


def smaps_rollup(pid: int | None) -> dict[str, int]:
    """The kernel's memory summary of a process (kB): Rss, Anonymous, ..."""
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    fields[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        pass
    return fields


async def memory_sample(node: NodeProcess) -> dict[str, Any] | None:
    """Ask a node under the memory probe for a sample now (SIGUSR2) and
    return it."""
    path: Path | None = getattr(node, "probe_path", None)
    if path is None or node.process is None:
        return None
    before = path.stat().st_size if path.exists() else 0
    node.process.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        with open(path) as f:
            f.seek(before)
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("why") == "signal":
                    return record
    return None


def addresses(cluster: ProcessCluster) -> list[tuple[str, int]]:
    return [(n.host, n.port) for n in cluster.nodes]


async def wait_leader(cluster: ProcessCluster, timeout: float = 60.0) -> NodeProcess:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = await asyncio.gather(*(read_status((n.host, n.port), 1.0) for n in cluster.running))
        leaders = [s for s in statuses if s.get("role") == "leader"]
        if len(leaders) == 1 and all(s.get("leader") == leaders[0]["node"] for s in statuses if s):
            if all(statuses):
                return cluster.nodes[int(leaders[0]["node"])]
        await asyncio.sleep(0.1)
    raise RuntimeError("no stable leader in time:\n" + "\n".join(n.describe() for n in cluster.nodes))


async def settle(cluster: ProcessCluster, nodes: Sequence[NodeProcess] | None = None, timeout: float = 120.0) -> int:
    """Wait until every node in C{nodes} (default: all running) has applied
    the same index as the leader's commit index; return it."""
    nodes = list(nodes if nodes is not None else cluster.running)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = await asyncio.gather(*(read_status((n.host, n.port), 2.0) for n in nodes))
        if all(statuses):
            applied = {int(s["applied"]) for s in statuses}
            commits = {int(s["commit"]) for s in statuses if s.get("role") == "leader"}
            if len(applied) == 1 and commits and applied == commits:
                return applied.pop()
        await asyncio.sleep(0.2)
    raise RuntimeError("nodes did not settle in time")


def dir_bytes(path: Path) -> dict[str, int]:
    """Apparent bytes in a data directory, by part."""
    parts = {"snapshots": 0, "wal": 0, "other": 0}
    for root, _, files in os.walk(path):
        part = "snapshots" if "snapshots" in Path(root).parts else "wal" if "wal" in Path(root).parts else "other"
        for name in files:
            try:
                parts[part] += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    parts["total"] = sum(parts.values())
    return parts


def snapshot_files(data_dir: Path) -> list[tuple[str, int]]:
    directory = data_dir / "snapshots"
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".snap"))
    except FileNotFoundError:
        return []
    return [(n, (directory / n).stat().st_size) for n in names]


def log_text(node: NodeProcess, offset: int = 0) -> str:
    try:
        with open(node.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def log_size(node: NodeProcess) -> int:
    try:
        return node.log_path.stat().st_size
    except FileNotFoundError:
        return 0


# ---------------------------------------------------------------------------
# Load


class Load:
    """
    A closed write load: C{connections} connections to the leader, each with
    C{pipeline} PUTs in flight, sending the next as each reply arrives.
    Keys come from C{next_key}; a failed write of a key from a
    C{retry=True} source is sent again.  Records each successful write's
    send and receive times (CLOCK_MONOTONIC ns).
    """

    def __init__(self, cluster: ProcessCluster, connections: int, pipeline: int, value_size: int) -> None:
        self.target = TargetNodes(addresses(cluster))
        self.connections = connections
        self.pipeline = pipeline
        self.value = "v" * value_size
        self.sent = array("q")
        self.received = array("q")
        self.errors: dict[str, int] = {}
        self.ok = 0

    @property
    def oks(self) -> int:
        return self.ok

    async def run(
        self,
        next_key: Callable[[], str | None],
        done: Callable[[], bool],
        retry: deque[str] | None = None,
        limit: int | None = None,
    ) -> None:
        """
        Write until C{done()} (checked before each send) or, with C{limit},
        until C{limit} writes succeeded in this call.  C{next_key} returning
        None means no key is ready now.
        """
        start_ok = self.ok
        outstanding = [0]

        def stop() -> bool:
            if done():
                return True
            return limit is not None and self.ok - start_ok + outstanding[0] >= limit

        def next_request() -> p.Request | None:
            if stop():
                return None
            key = next_key()
            if key is None:
                return None
            outstanding[0] += 1
            return p.Put(key, self.value)

        def on_reply(request: p.Request, reply: p.Reply, sent: int, received: int) -> None:
            outstanding[0] -= 1
            if isinstance(reply, p.Done):
                self.ok += 1
                self.sent.append(sent)
                self.received.append(received)
                return
            kind = type(reply).__name__
            self.errors[kind] = self.errors.get(kind, 0) + 1
            if retry is not None and isinstance(request, p.Put):
                retry.append(request.key)

        async def worker() -> None:
            loop = asyncio.get_running_loop()
            while not stop():
                target = self.target.leader
                if target is None:
                    target = await self.target.find_leader(time.monotonic() + 60)
                connection: PipelinedConnection | None = None
                try:
                    transport, connection = await loop.create_connection(
                        lambda: PipelinedConnection(self.pipeline, next_request, on_reply), *target)
                    try:
                        redirect = await connection.finished
                    finally:
                        transport.close()
                except (OSError, ConnectionError, ProtocolError):
                    self.errors["connection lost"] = self.errors.get("connection lost", 0) + 1
                    if connection is not None:  # requests whose replies never came
                        for request, _ in connection.in_flight:
                            outstanding[0] -= 1
                            if retry is not None and isinstance(request, p.Put):
                                retry.append(request.key)
                    self.target.leader = None
                    await asyncio.sleep(0.1)
                    continue
                if redirect is not None:
                    self.target.leader = parse_address(redirect) if redirect else None
                    await asyncio.sleep(0.05)
                elif not stop():
                    await asyncio.sleep(0.01)  # nothing to send just now

        await self.target.find_leader(time.monotonic() + 60)
        await asyncio.gather(*(worker() for _ in range(self.connections)))

    def rate(self, start_ns: int, end_ns: int) -> float:
        """Successful writes per second acknowledged in [start, end) (the
        receive times are in order: one event loop appends them)."""
        n = bisect.bisect_left(self.received, end_ns) - bisect.bisect_left(self.received, start_ns)
        return n / max(1e-9, (end_ns - start_ns) / 1e9)


def sequential_keys(count: int, key_space: int) -> tuple[Callable[[], str | None], Callable[[], bool], deque[str]]:
    """Keys 0..count-1 (modulo C{key_space}), each written once (failed ones
    again): C{next_key}, C{done}, and the retry queue."""
    retry: deque[str] = deque()
    position = [0]

    def next_key() -> str | None:
        if retry:
            return retry.popleft()
        if position[0] < count:
            position[0] += 1
            return key_name((position[0] - 1) % key_space)
        return None

    def done() -> bool:
        return position[0] >= count and not retry

    return next_key, done, retry


def random_keys(key_space: int, seed: int) -> Callable[[], str]:
    rng = random.Random(seed)
    return lambda: key_name(rng.randrange(key_space))


async def write_all(load: Load, count: int, key_space: int) -> None:
    """Write keys 0..count-1 once each, until every one succeeded."""
    next_key, done, retry = sequential_keys(count, key_space)
    # Every worker has all its replies when run returns; a failed write
    # put its key back in retry, for the next pass.
    while True:
        await load.run(next_key, done, retry)
        if done():
            break


# ---------------------------------------------------------------------------
# Figures 1 and 2


async def figures_1_2(args: argparse.Namespace, root: Path, results: dict[str, Any]) -> None:
    load_before = loadavg()
    cluster = make_cluster(root / "growth", [], memory_probe=args.memory_probe)
    cluster.start()
    try:
        await wait_leader(cluster)
        load = Load(cluster, args.connections, args.pipeline, args.value_size)
        keys = random_keys(args.growth_keys, 1)
        rss: dict[str, list[int]] = {}
        anonymous: dict[str, list[int]] = {}
        probes: dict[str, list[Any]] = {}
        started = time.monotonic()
        for label, total in (("small", args.growth_small), ("large", args.growth_large)):
            log(f"figure 1: writing until {total:,} writes over {args.growth_keys:,} keys")
            await load.run(keys, lambda: False, limit=total - load.ok)
            applied = await settle(cluster)
            await asyncio.sleep(1.0)
            rss[label] = [rss_kib(n.pid) for n in cluster.nodes]
            anonymous[label] = [smaps_rollup(n.pid).get("Anonymous", 0) for n in cluster.nodes]
            log(f"  after {load.ok:,} writes (applied {applied:,}): RSS KiB {rss[label]}, anonymous {anonymous[label]}")
            if args.memory_probe:
                probes[label] = [await memory_sample(n) for n in cluster.nodes]
        elapsed = time.monotonic() - started
        ratios = [round(b / a, 3) for a, b in zip(rss["small"], rss["large"])]
        results["1"] = {
            "writes": [args.growth_small, args.growth_large],
            "keys": args.growth_keys,
            "rss_mib_small": [round(k / 1024, 1) for k in rss["small"]],
            "rss_mib_large": [round(k / 1024, 1) for k in rss["large"]],
            "rss_kib": rss,
            "anonymous_kib": anonymous,
            "memory_probe": probes,
            "malloc_env": {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "GLIBC_TUNABLES", "KVSTORE_MALLOC"))},
            "ratio": ratios,
            "target": "<= 1.2x",
            "met": max(ratios) <= 1.2,
            "write_rate_per_s": round(load.ok / elapsed),
            "errors": load.errors,
            "load": [load_before, loadavg()],
        }
        # Figure 2: the data directories now.
        record = WAL_RECORD_HEADER + 1 + len(key_name(args.growth_keys - 1)) + 1 + args.value_size
        nodes = []
        for node in cluster.nodes:
            parts = dir_bytes(node.data_dir)
            snaps = snapshot_files(node.data_dir)
            newest = max((s for _, s in snaps), default=0)
            bound = 2 * newest + (DEFAULT_CATCHUP_ENTRIES + DEFAULT_SNAPSHOT_ENTRIES) * record + DEFAULT_SEGMENT_BYTES
            nodes.append({
                "node": node.node_id,
                "bytes": parts,
                "snapshots": snaps,
                "bound": bound,
                "met": parts["total"] <= bound,
            })
        results["2"] = {
            "after_writes": load.ok,
            "bound_formula": (
                f"2 x newest snapshot + (catch-up {DEFAULT_CATCHUP_ENTRIES} + snapshot interval "
                f"{DEFAULT_SNAPSHOT_ENTRIES}) x {record} B per WAL record + one {DEFAULT_SEGMENT_BYTES} B segment"
            ),
            "nodes": nodes,
            "met": all(n["met"] for n in nodes),
            "load": [load_before, loadavg()],
        }
    finally:
        cluster.stop()


# ---------------------------------------------------------------------------
# Figures 3, 4 and 5


def parse_snapshot(path: Path) -> dict[str, Any]:
    """Verify a snapshot file (without opening the store, which would tidy a
    live node's directory) and read its key count."""
    store = SnapshotStore(str(path.parent), FileSystem())
    info = [i for i in store.list() if i.name == path.name][0]
    verified = store.verify(info)
    assert verified.content_offset is not None
    with open(path, "rb") as f:
        f.seek(verified.content_offset)
        head = f.read(16)
    assert head[:5] in (b"KVSM\x01", b"KVSM\x02"), head  # kv/1 or kv/2: the key count follows
    count = shift = 0
    for byte in head[5:]:
        count |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            break
    return {"name": path.name, "size": verified.size, "index": verified.index, "keys": count}


async def poll_status(node: NodeProcess, timeout: float = 1.0) -> dict[str, str]:
    return await read_status((node.host, node.port), timeout)


async def figure_4(args: argparse.Namespace, cluster: ProcessCluster, results: dict[str, Any]) -> None:
    load_before = loadavg()
    leader = await wait_leader(cluster)
    follower = [n for n in cluster.nodes if n is not leader][0]
    load = Load(cluster, args.connections, args.pipeline, args.value_size)
    steady = random_keys(args.big_keys, 2)
    stop_flag = [False]

    log(f"figure 4: steady load for {args.steady_seconds} s with all nodes up")
    t0 = time.monotonic_ns()
    end = time.monotonic() + args.steady_seconds
    await load.run(steady, lambda: time.monotonic() >= end)
    rate_all_up = load.rate(t0, time.monotonic_ns())

    rss = {"before_stop": [rss_kib(n.pid) for n in cluster.nodes]}
    log(f"figure 4: SIGSTOP node {follower.node_id}; writing {args.stop_writes:,} writes (keys 0..{args.big_keys - 1:,})")
    assert follower.process is not None
    follower.process.send_signal(signal.SIGSTOP)
    try:
        t_stop = time.monotonic_ns()
        await write_all(load, args.stop_writes, args.big_keys)
        stopped_writes_s = (time.monotonic_ns() - t_stop) / 1e9
        rate_stopped_preload = args.stop_writes / stopped_writes_s

        # The steady rate right before SIGCONT, then the catch-up, under one
        # continuous load.
        log(f"figure 4: steady load {args.steady_seconds} s, then SIGCONT, until caught up")
        task = asyncio.ensure_future(load.run(steady, lambda: stop_flag[0]))
        t_steady = time.monotonic_ns()
        await asyncio.sleep(args.steady_seconds)
        leader_status = await poll_status(leader)
        target_index = int(leader_status["applied"])
        offset = log_size(follower)
        rss["at_sigcont"] = [rss_kib(n.pid) for n in cluster.nodes]
        t_cont = time.monotonic_ns()
        follower.process.send_signal(signal.SIGCONT)
    except BaseException:
        follower.process.send_signal(signal.SIGCONT)
        raise
    reached = live = None
    samples = []
    previous_leader_applied = target_index
    deadline = time.monotonic() + args.catchup_timeout
    while time.monotonic() < deadline:
        # A busy follower may answer late or not at all: a short timeout
        # keeps the samples about half a second apart.
        f_status, l_status = await asyncio.gather(poll_status(follower, 0.4), poll_status(leader, 0.4))
        now = time.monotonic_ns()
        if f_status and l_status:
            f_applied, l_applied = int(f_status["applied"]), int(l_status["applied"])
            samples.append(((now - t_cont) / 1e9, f_applied, l_applied, f_status.get("snapshot")))
            if reached is None and f_applied >= target_index:
                reached = round((now - t_cont) / 1e9, 3)
            if f_applied >= previous_leader_applied and reached is not None:
                live = round((now - t_cont) / 1e9, 3)
                break
            previous_leader_applied = l_applied
        await asyncio.sleep(0.1)
    t_caught = time.monotonic_ns()
    rss["caught_up"] = [rss_kib(n.pid) for n in cluster.nodes]
    await asyncio.sleep(2.0)
    stop_flag[0] = True
    await task
    rate_before = load.rate(t_steady, t_cont)
    rate_during = load.rate(t_cont, t_caught)
    # The worst whole second of the catch-up.
    seconds = max(1, int((t_caught - t_cont) / 1e9))
    per_second = [load.rate(t_cont + i * 10**9, t_cont + (i + 1) * 10**9) for i in range(seconds)]
    follower_log = log_text(follower, offset)
    received = re.findall(r"received and verified snapshot (\S+) \((\d+) bytes", follower_log)
    installed = re.findall(r"installed the leader's snapshot at index (\d+): (\d+) keys", follower_log)
    results["4"] = {
        "follower": follower.node_id,
        "leader": leader.node_id,
        "node_options": args.big_node_options,
        "rss_mib": {k: [round(x / 1024) for x in v] for k, v in rss.items()},
        "installs": len(installed),
        "stopped_for_writes": args.stop_writes,
        "rate_all_up": round(rate_all_up),
        "rate_while_stopped_sequential": round(rate_stopped_preload),
        "rate_before_sigcont": round(rate_before),
        "leader_applied_at_sigcont": target_index,
        "reached_that_index_s": reached,
        "caught_up_live_s": live,
        "rate_during_catchup": round(rate_during),
        "rate_ratio": round(rate_during / rate_before, 3) if rate_before else None,
        "worst_second_ratio": round(min(per_second) / rate_before, 3) if rate_before and per_second else None,
        "via_install_snapshot": bool(received and installed),
        "snapshots_received": received,
        "snapshots_installed": installed,
        "target": "caught up <= 15 s (issue) with leader >= 50% of its steady rate",
        "met": live is not None and live <= 15 and rate_before > 0 and rate_during / rate_before >= 0.5,
        "errors": load.errors,
        "samples": samples[:: max(1, len(samples) // 40)],
        "load": [load_before, loadavg()],
    }
    log(f"  caught up: reached {reached} s, live {live} s; rate {rate_before:.0f} -> {rate_during:.0f}/s")


async def figure_5(args: argparse.Namespace, cluster: ProcessCluster, results: dict[str, Any]) -> None:
    load_before = loadavg()
    leader = await wait_leader(cluster)
    snaps = snapshot_files(leader.data_dir)
    newest = max(snaps, key=lambda s: s[0])[0]
    info = parse_snapshot(leader.data_dir / "snapshots" / newest)
    raw = sum(len(key_name(i)) for i in range(args.big_keys)) + args.big_keys * args.value_size
    results["5"] = {
        "snapshot": info,
        "raw_key_value_bytes": raw,
        "ratio": round(info["size"] / raw, 4),
        "complete": info["keys"] == args.big_keys,
        "target": "<= 1.3x",
        "met": info["keys"] == args.big_keys and info["size"] / raw <= 1.3,
        "load": [load_before, loadavg()],
    }


async def first_get(nodes: Sequence[NodeProcess], key: str, deadline: float) -> tuple[float, NodeProcess]:
    """Poll a linearizable GET of C{key} on every node in C{nodes} until one
    answers with a value; return when (monotonic) and which."""
    request = f"GET {key}\n".encode()

    async def attempt(node: NodeProcess) -> bool:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(node.host, node.port), 1.0)
        except (OSError, asyncio.TimeoutError):
            return False
        try:
            writer.write(request)
            line = await asyncio.wait_for(reader.readline(), 5.0)
            return line.startswith(b"value of ")
        except (OSError, asyncio.TimeoutError):
            return False
        finally:
            writer.close()

    while time.monotonic() < deadline:
        for node, ok in zip(nodes, await asyncio.gather(*(attempt(n) for n in nodes))):
            if ok:
                return time.monotonic(), node
        await asyncio.sleep(0.01)
    raise RuntimeError("no node served a GET in time")


async def listening(node: NodeProcess, deadline: float) -> float | None:
    """When C{node} first accepts a connection (monotonic)."""
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(node.host, node.port), 1.0)
        except (OSError, asyncio.TimeoutError):
            await asyncio.sleep(0.005)
            continue
        writer.close()
        return time.monotonic()
    return None


async def leader_link(leader: NodeProcess, node: NodeProcess, deadline: float) -> float | None:
    """When C{leader}'s STATUS first lists C{node} as connected (its own
    outbound peer link, the one its messages to C{node} take)."""
    while time.monotonic() < deadline:
        status = await read_status((leader.host, leader.port), 1.0)
        if str(node.node_id) in str(status.get("connected", "")).split(","):
            return time.monotonic()
        await asyncio.sleep(0.01)
    return None


def recovery_line(node: NodeProcess, offset: int) -> str | None:
    found = re.findall(r"recovered \d+ keys from snapshot at index \d+ and \d+ log entries in [\d.]+ s", log_text(node, offset))
    return found[0] if found else None


async def figure_3(args: argparse.Namespace, cluster: ProcessCluster, results: dict[str, Any]) -> None:
    load_before = loadavg()
    rows = []
    probe_key = key_name(args.big_keys - 1)
    for attempt in range(args.restarts):
        leader = await wait_leader(cluster)
        await settle(cluster)
        node = [n for n in cluster.nodes if n is not leader][attempt % 2]
        log(f"figure 3: SIGKILL and restart follower {node.node_id}")
        node.kill(signal.SIGKILL)
        offset = log_size(node)
        load_at = loadavg()
        started = time.monotonic()
        node.start()
        # Where the time goes: the node listening (imports and recovery
        # done), then the leader's own link to it (its peer links retry
        # with back-off and jitter), then the first GET answered.
        timeline = asyncio.gather(listening(node, started + 120), leader_link(leader, node, started + 120))
        served, _ = await first_get([node], probe_key, started + 120)
        listening_at, linked_at = await timeline
        await asyncio.sleep(0.5)
        rows.append({
            "what": f"follower {node.node_id} restarted",
            "to_serving_s": round(served - started, 3),
            "listening_s": round(listening_at - started, 3) if listening_at else None,
            "leader_linked_s": round(linked_at - started, 3) if linked_at else None,
            "node_report": recovery_line(node, offset),
            "load": load_at,
        })
        log(f"  served after {served - started:.3f} s (listening {rows[-1]['listening_s']} s, the leader's link "
            f"{rows[-1]['leader_linked_s']} s); {rows[-1]['node_report']}")
    # The whole cluster.
    await wait_leader(cluster)
    await settle(cluster)
    log("figure 3: SIGKILL all three nodes and restart them")
    cluster.kill_all()
    offsets = [log_size(n) for n in cluster.nodes]
    load_at = loadavg()
    started = time.monotonic()
    cluster.start()
    served, node = await first_get(cluster.nodes, probe_key, started + 120)
    await asyncio.sleep(0.5)
    rows.append({
        "what": f"whole cluster restarted (first GET served by node {node.node_id}, election included)",
        "to_serving_s": round(served - started, 3),
        "node_report": "; ".join(str(recovery_line(n, o)) for n, o in zip(cluster.nodes, offsets)),
        "load": load_at,
    })
    log(f"  served after {served - started:.3f} s")
    followers = [r["to_serving_s"] for r in rows[:-1]]
    results["3"] = {
        "keys": args.big_keys,
        "rows": rows,
        "target": "<= 3 s",
        "met": bool(followers) and max(followers) <= 3.0,
        "load": [load_before, loadavg()],
    }


async def figures_3_4_5(args: argparse.Namespace, root: Path, results: dict[str, Any], which: set[str]) -> None:
    cluster = make_cluster(root / "big", args.big_node_options.split())
    cluster.start()
    try:
        await wait_leader(cluster)
        if "4" in which:
            await figure_4(args, cluster, results)
        else:
            log(f"writing {args.big_keys:,} keys")
            load = Load(cluster, args.connections, args.pipeline, args.value_size)
            await write_all(load, args.big_keys, args.big_keys)
            # Past one more snapshot interval, so the newest snapshot holds every key.
            await load.run(random_keys(args.big_keys, 3), lambda: False, limit=DEFAULT_SNAPSHOT_ENTRIES * 2)
        await settle(cluster)
        await asyncio.sleep(2.0)  # let the last snapshot finish
        if "5" in which:
            await figure_5(args, cluster, results)
        if "3" in which:
            await figure_3(args, cluster, results)
        snapshots_written = [len(re.findall(r"snapshot at index \d+ term \d+ written", log_text(n))) for n in cluster.nodes]
        results.setdefault("notes", {})["big_cluster_snapshots_written"] = snapshots_written
    finally:
        for node in cluster.nodes:
            if node.running and node.process is not None:
                node.process.send_signal(signal.SIGCONT)
        cluster.stop()


# ---------------------------------------------------------------------------
# Figure 6


def read_probe(path: Path) -> list[dict[str, Any]]:
    records = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    pass  # a line cut by a kill
    except FileNotFoundError:
        pass
    return records


def snapshot_windows(records: list[dict[str, Any]], min_keys: int) -> list[tuple[int, int, int, int]]:
    """(start_ns, end_ns, keys, durable_ns) of each snapshot the node took
    with at least C{min_keys} keys: from the freeze to the end of the node's
    work once the file is durable (compaction, pruning); C{durable_ns} is
    when the file was durable and the overlay merged."""
    windows, open_, ended = [], {}, {}
    for r in records:
        kind = r.get("kind")
        if kind == "snapshot_start":
            open_[r["index"]] = (r["ns"], r["keys"])
        elif kind == "snapshot_end" and r["index"] in open_:
            ended[r["index"]] = open_.pop(r["index"]) + (r["ns"],)
            if not r.get("ok", True):  # no compaction follows a failure
                start, keys, end = ended.pop(r["index"])
                if keys >= min_keys:
                    windows.append((start, end, keys, end))
        elif kind == "snapshot_done_end" and r["index"] in ended:
            start, keys, durable = ended.pop(r["index"])
            if keys >= min_keys:
                windows.append((start, r["ns"], keys, durable))
    return windows


def compaction_ms(records: list[dict[str, Any]]) -> list[float]:
    """How long each L{kvstore.node.node.Node._snapshot_done} ran on the reactor (ms)."""
    started, spans = {}, []
    for r in records:
        if r.get("kind") == "snapshot_done_start":
            started[r["index"]] = r["ns"]
        elif r.get("kind") == "snapshot_done_end" and r["index"] in started:
            spans.append(round((r["ns"] - started.pop(r["index"])) / 1e6, 1))
    return spans


def stall_details(stalls: list[dict[str, Any]], spans: list[dict[str, Any]], n: int = 5,
                  by: str = "stall_ms") -> list[dict[str, Any]]:
    """The C{n} longest stalls (or those with the most C{by}), each with what
    the probe knows of it and the spans (reactor callbacks over 2 ms) that
    overlapped it."""
    out = []
    for r in sorted(stalls, key=lambda r: -(r.get(by) or 0.0))[:n]:
        end = r["end_ns"]
        begin = end - int((r["stall_ms"] + 1.0) * 1e6)
        d = {k: r.get(k) for k in ("stall_ms", "cpu_ms", "runq_ms", "proc_cpu_ms", "psi_ms", "gc_ms")}
        d["spans"] = [{k: sp.get(k) for k in ("name", "ms", "cpu_ms", "runq_ms", "proc_cpu_ms", "minflt", "majflt", "nivcsw")}
                      for sp in spans if sp["start_ns"] < end and sp["ns"] > begin]
        out.append(d)
    return out


#: One line of C{perf sched timehist}: time, [cpu], task[tid/pid], wait,
#: scheduling delay and run time (ms).  The task is switched out at "time"
#: after running for "run time".
_TIMEHIST_LINE = re.compile(r"^\s*(\d+\.\d+)\s+\[(\d+)\]\s+(.*?)\s+(\d+\.\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)\s*$")
_TASK_IDS = re.compile(r"\[(\d+)(?:/(\d+))?\]$")


def parse_timehist(text: str) -> list[tuple[float, float, str]]:
    """The runs in a C{perf sched timehist} listing: (start s, end s, task),
    sorted by start.  perf's clock is the kernel's C{sched_clock}, which on
    the reference machine reads as C{CLOCK_MONOTONIC} (the probe's)."""
    runs = []
    for line in text.splitlines():
        m = _TIMEHIST_LINE.match(line)
        if m:
            end, run_ms = float(m.group(1)), float(m.group(6))
            runs.append((end - run_ms / 1000.0, end, m.group(3)))
    runs.sort()
    return runs


def task_category(task: str, node_pids: Sequence[int], stalled: int, load_pid: int) -> str:
    """Who a run in C{perf sched timehist} belongs to, seen from the node
    whose reactor stalled (index C{stalled} in C{node_pids})."""
    m = _TASK_IDS.search(task)
    if m is None:
        return "idle" if "idle" in task else "other"
    tid, pid = int(m.group(1)), int(m.group(2) or m.group(1))
    if pid in node_pids:
        who = "the stalled node" if node_pids.index(pid) == stalled else "the other nodes"
        return f"{who}: {'reactor thread' if tid == pid else 'other threads'}"
    if pid == load_pid:
        return "this script (the load)"
    return "other processes"


def cpu_during_stalls(runs: list[tuple[float, float, str]], stalls: Sequence[tuple[int, float, float]],
                      node_pids: Sequence[int], load_pid: int, cpus: int) -> dict[str, Any]:
    """
    What the machine's CPUs ran during the reactor stalls C{stalls} ((node
    index, start s, end s)), from C{perf sched timehist}: ms per category
    (L{task_category}) and its share of the CPUs' time in those stalls.  A
    stall whose reactor was waiting for a CPU shows the CPUs busy with
    someone else.
    """
    starts = [r[0] for r in runs]
    totals: dict[str, float] = {}
    counted = 0
    stalled_ms = 0.0
    if runs:
        first, last = runs[0][1], runs[-1][1]
        for node, a, b in stalls:
            if a < first or b > last:
                continue  # outside what perf recorded
            counted += 1
            stalled_ms += (b - a) * 1000.0
            busy = 0.0
            for s, e, task in runs[max(0, bisect.bisect_left(starts, a - 1.0)):]:
                if s > b:
                    break
                if e > a:
                    ms = (min(e, b) - max(s, a)) * 1000.0
                    busy += ms
                    c = task_category(task, node_pids, node, load_pid)
                    totals[c] = totals.get(c, 0.0) + ms
            # what perf saw no task run on (an idle CPU it recorded no switch for)
            totals["idle"] = totals.get("idle", 0.0) + max(0.0, cpus * (b - a) * 1000.0 - busy)
    capacity = cpus * stalled_ms
    return {
        "stalls": counted,
        "stalled_ms": round(stalled_ms, 1),
        "cpu_ms": {k: round(v, 1) for k, v in sorted(totals.items(), key=lambda x: -x[1])},
        "share": {k: round(v / capacity, 3) for k, v in sorted(totals.items(), key=lambda x: -x[1])} if capacity else {},
    }


def thread_roles(cluster: ProcessCluster) -> dict[int, tuple[int, str]]:
    """tid -> (node index, role) of every node thread its probe named: the
    reactor (the main thread), the Python thread's name otherwise."""
    roles: dict[int, tuple[int, str]] = {}
    for i, node in enumerate(cluster.nodes):
        for r in read_probe(node.probe_path):  # type: ignore[attr-defined]
            if r.get("kind") == "threads":
                for tid, (name, *_rest) in r["threads"].items():
                    roles[int(tid)] = (i, "reactor" if name == "MainThread" else name)
    return roles


def thread_cpu_summary(path: Path, cluster: ProcessCluster, load_pid: int,
                       windows: list[list[tuple[int, int, int, int]]]) -> dict[str, Any]:
    """
    Where the CPUs went, from C{thread_cpu.py}'s samples: for each node, in
    the phases of its own snapshots ("taking": freeze to durable and merged;
    "after": the compaction after it) and while no node snapshots ("quiet"),
    the CPU (ms per second of wall time) of each thread role, seen from that
    node ("own"/"others'"), of the load generator, of the kernel's threads
    by name, and the machine's busy time; also the reactor's run-queue wait.
    """
    roles = thread_roles(cluster)
    pids = [n.pid for n in cluster.nodes]
    names: dict[int, tuple[int, str]] = {}
    samples = []
    for r in read_probe(path):
        if "tasks" in r:
            for tid, (pid, comm) in r["tasks"].items():
                names[int(tid)] = (pid, comm)
        elif "ns" in r:
            samples.append(r)
    hz = os.sysconf("SC_CLK_TCK")

    def category(tid: int, node: int) -> str:
        if tid in roles:
            i, role = roles[tid]
            return f"{'own' if i == node else 'others'} {role}"
        pid, comm = names.get(tid, (0, "?"))
        if pid in pids:
            return f"{'own' if pids.index(pid) == node else 'others'} unnamed thread"
        if pid == load_pid:
            return "load generator"
        return "kernel " + re.sub(r"[/:].*", "", comm)

    def phase(t: int, node: int) -> str:
        for s, e, _, durable in windows[node]:
            if s <= t <= durable:
                return "taking"
            if durable < t <= e:
                return "after"
        if any(s <= t <= e for ws in windows for s, e, _, _ in ws):
            return "others snapshot"
        return "quiet"

    out: dict[str, Any] = {"nodes": [], "lines": []}
    # CPU seconds of each thread over the whole measurement, by node and role.
    if len(samples) >= 2:
        first, last = samples[0], samples[-1]
        totals: dict[str, float] = {}
        for tid, (c, _) in last["t"].items():
            if tid in first["t"]:
                if int(tid) in roles:
                    key = "node {} {}".format(cluster.nodes[roles[int(tid)][0]].node_id, roles[int(tid)][1])
                else:
                    key = category(int(tid), -1).replace("others ", "node ")
                totals[key] = totals.get(key, 0.0) + (c - first["t"][tid][0]) / 1e9
        out["cpu_seconds"] = {k: round(v, 3) for k, v in sorted(totals.items(), key=lambda x: -x[1]) if v >= 0.01}
        out["seconds"] = round((last["ns"] - first["ns"]) / 1e9, 1)
        out["lines"].append(f"CPU seconds in {out['seconds']} s: "
                            + ", ".join(f"{k} {v}" for k, v in out["cpu_seconds"].items()))
    for node in range(len(pids)):
        cpu: dict[str, dict[str, float]] = {}
        seconds: dict[str, float] = {}
        for a, b in zip(samples, samples[1:]):
            ph = phase((a["ns"] + b["ns"]) // 2, node)
            dt = (b["ns"] - a["ns"]) / 1e9
            seconds[ph] = seconds.get(ph, 0.0) + dt
            into = cpu.setdefault(ph, {})
            for tid, (c, q) in b["t"].items():
                before = a["t"].get(tid)
                if before is None:
                    continue
                cat = category(int(tid), node)
                into[cat] = into.get(cat, 0.0) + (c - before[0]) / 1e6
                if cat == "own reactor":
                    into["own reactor run-queue wait"] = into.get("own reactor run-queue wait", 0.0) + (q - before[1]) / 1e6
            busy = sum(b["stat"][i] - a["stat"][i] for i in (0, 1, 2, 5, 6))
            into["machine busy"] = into.get("machine busy", 0.0) + busy * 1000.0 / hz
        per_second = {ph: {k: round(v / seconds[ph], 1) for k, v in sorted(c.items(), key=lambda x: -x[1]) if v / seconds[ph] >= 0.5}
                      for ph, c in cpu.items()}
        out["nodes"].append({"node": cluster.nodes[node].node_id, "seconds": {k: round(v, 1) for k, v in seconds.items()},
                             "cpu_ms_per_s": per_second})
        for ph in ("taking", "after", "quiet", "others snapshot"):
            if ph in per_second:
                out["lines"].append(f"node {cluster.nodes[node].node_id} {ph} ({seconds[ph]:.1f} s), CPU ms/s: "
                                    + ", ".join(f"{k} {v}" for k, v in per_second[ph].items()))
    return out


def inside(t: int, windows: Sequence[tuple[int, int, int, int]]) -> bool:
    return any(s <= t <= e for s, e, _, _ in windows)


async def figure_6(args: argparse.Namespace, root: Path, results: dict[str, Any]) -> None:
    load_before = loadavg()
    extra = ["--snapshot-entries", str(args.stall_snapshot_entries)]
    cluster = make_cluster(root / "stall", extra, probe=True)
    cluster.start()
    try:
        leader = await wait_leader(cluster)
        log(f"figure 6: writing {args.big_keys:,} keys (nodes under the lag probe)")
        load = Load(cluster, args.connections, args.pipeline, args.value_size)
        await write_all(load, args.big_keys, args.big_keys)
        await settle(cluster)
        log(f"figure 6: {args.stall_seconds} s of writes, {args.stall_connections} x {args.stall_pipeline} in flight")
        measured = Load(cluster, args.stall_connections, args.stall_pipeline, args.value_size)
        t_start = time.monotonic_ns()
        end = time.monotonic() + args.stall_seconds
        profiler = None
        if args.py_spy:
            leader = await wait_leader(cluster)
            profiler = await asyncio.create_subprocess_exec(
                args.py_spy, "record", "-p", str(leader.pid), "-d", str(int(args.stall_seconds)), "-r", "200",
                "-f", "raw", "-o", str(root / f"py-spy-leader-{leader.node_id}.txt"),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        perf = None
        if args.perf_sched:
            # Every scheduler switch on the machine, to see who had the CPUs
            # during the long stalls (about 10 MB/s of data).
            perf = await asyncio.create_subprocess_exec(
                args.perf_sched, "sched", "record", "-o", str(root / "perf-sched.data"), "--",
                "sleep", str(int(args.stall_seconds)),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        sampler = None
        if args.thread_cpu:
            # Every thread's CPU of the nodes (and of the kernel's threads)
            # every 50 ms: where the CPUs go during snapshots.
            sampler = await asyncio.create_subprocess_exec(
                sys.executable, str(THREAD_CPU_SCRIPT), str(root / "thread-cpu.jsonl"), str(args.stall_seconds),
                "0.05", *[str(n.pid) for n in cluster.nodes], str(os.getpid()),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await measured.run(random_keys(args.big_keys, 4), lambda: time.monotonic() >= end)
        if sampler is not None:
            await sampler.wait()
        if profiler is not None:
            await profiler.wait()
        if perf is not None:
            await perf.wait()
        t_end = time.monotonic_ns()
        await asyncio.sleep(1.5)  # the probes' next flush
        leader = await wait_leader(cluster)
        nodes = []
        all_windows: list[tuple[int, int, int, int]] = []
        for node in cluster.nodes:
            records = read_probe(node.probe_path)  # type: ignore[attr-defined]
            windows = [w for w in snapshot_windows(records, int(args.big_keys * 0.9)) if w[1] >= t_start and w[0] <= t_end]
            all_windows += windows
            stalls = [(r["end_ns"], r["stall_ms"], r.get("cpu_ms")) for r in records
                      if "stall_ms" in r and t_start <= r["end_ns"] <= t_end]
            # A stall ending up to its own length after a window may have begun inside it.
            in_stalls = [(ms, cpu) for t, ms, cpu in stalls if inside(t - int(ms * 1e6), windows) or inside(t, windows)]
            out_stalls = [(ms, cpu) for t, ms, cpu in stalls if not (inside(t - int(ms * 1e6), windows) or inside(t, windows))]
            in_w = [ms for ms, _ in in_stalls]
            out_w = [ms for ms, _ in out_stalls]
            window_s = sum((min(e, t_end) - max(s, t_start)) / 1e9 for s, e, _, _ in windows)
            nodes.append({
                "node": node.node_id,
                "role": "leader" if node is leader else "follower",
                "snapshots": len(windows),
                "snapshot_seconds": [round((e - s) / 1e9, 2) for s, e, _, _ in windows],
                "after_durable_ms": compaction_ms([r for r in records if t_start <= r.get("ns", 0) <= t_end]),
                "keys": sorted({k for _, _, k, _ in windows}),
                "max_stall_in_snapshot_ms": max(in_w, default=0.0),
                # The most CPU the reactor thread itself spent in one stall:
                # the node's own work, apart from waiting for a CPU or the GIL.
                "max_cpu_in_snapshot_ms": max((cpu or 0.0 for _, cpu in in_stalls), default=0.0),
                "max_cpu_outside_ms": max((cpu or 0.0 for _, cpu in out_stalls), default=0.0),
                # The five longest, with the reactor thread's own CPU time in each.
                "longest_in_snapshot_ms_cpu": sorted(in_stalls, key=lambda x: -x[0])[:5],
                "longest_outside_ms_cpu": sorted(out_stalls, key=lambda x: -x[0])[:5],
                "stalls_over_20ms_in_snapshot": sum(1 for ms in in_w if ms > 20),
                "max_stall_outside_ms": max(out_w, default=0.0),
                "stalls_over_20ms_outside": sum(1 for ms in out_w if ms > 20),
                # Garbage collections over 2 ms (the probe's gc.callbacks): (generation, ms, inside a window).
                "gc_over_2ms": [(r["generation"], r["gc_ms"], inside(r["ns"], windows)) for r in records
                                if r.get("kind") == "gc" and t_start <= r["ns"] <= t_end],
                # The five longest stalls in snapshots with their gc time (ms of stall, ms of gc).
                "longest_in_snapshot_ms_gc": sorted(
                    ((r["stall_ms"], r.get("gc_ms")) for r in records
                     if "stall_ms" in r and t_start <= r["end_ns"] <= t_end
                     and (inside(r["end_ns"] - int(r["stall_ms"] * 1e6), windows) or inside(r["end_ns"], windows))),
                    key=lambda x: -x[0])[:5],
                # The five longest stalls in snapshots in detail: the reactor
                # thread's CPU and run-queue wait (waiting for a CPU), the
                # process's CPU (all threads), the machine's CPU pressure, and
                # (with KVSTORE_PROBE_SPANS=1) the reactor callbacks over 2 ms
                # that overlapped it.
                "longest_in_snapshot_detail": stall_details(
                    [r for r in records if "stall_ms" in r and t_start <= r["end_ns"] <= t_end
                     and (inside(r["end_ns"] - int(r["stall_ms"] * 1e6), windows) or inside(r["end_ns"], windows))],
                    [r for r in records if r.get("kind") == "span"]),
                # The three stalls in snapshots with the most CPU of the
                # reactor thread itself: the node's own longest work.
                "most_cpu_in_snapshot_detail": stall_details(
                    [r for r in records if "stall_ms" in r and t_start <= r["end_ns"] <= t_end
                     and (inside(r["end_ns"] - int(r["stall_ms"] * 1e6), windows) or inside(r["end_ns"], windows))],
                    [r for r in records if r.get("kind") == "span"], n=3, by="cpu_ms"),
                "longest_outside_detail": stall_details(
                    [r for r in records if "stall_ms" in r and t_start <= r["end_ns"] <= t_end
                     and not (inside(r["end_ns"] - int(r["stall_ms"] * 1e6), windows) or inside(r["end_ns"], windows))],
                    [r for r in records if r.get("kind") == "span"]),
                "outside_seconds": round((t_end - t_start) / 1e9 - window_s, 1),
                "inside_seconds": round(window_s, 1),
            })
        during, without, taking, after = [], [], [], []
        for s, r in zip(measured.sent, measured.received):
            overlaps = any(s <= e and r >= b for b, e, _, _ in all_windows)
            latency = (r - s) / 1e6
            (during if overlaps else without).append(latency)
            if any(s <= d and r >= b for b, _, _, d in all_windows):
                taking.append(latency)  # overlapped some node's encoding, writing and merging
            elif overlaps:
                after.append(latency)  # overlapped only some node's compaction
        during.sort()
        without.sort()
        taking.sort()
        after.sort()
        p99_during = percentile(during, 0.99)
        p99_without = percentile(without, 0.99)
        worst = max((n["max_stall_in_snapshot_ms"] for n in nodes), default=0.0)
        attribution = None
        if args.perf_sched:
            timehist = await asyncio.create_subprocess_exec(
                args.perf_sched, "sched", "timehist", "-i", str(root / "perf-sched.data"),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
            listing, _ = await timehist.communicate()
            runs = parse_timehist(listing.decode("utf-8", "replace"))
            pids = [int(n.pid or 0) for n in cluster.nodes]
            long_stalls = []
            for i, node in enumerate(cluster.nodes):
                for r in read_probe(node.probe_path):  # type: ignore[attr-defined]
                    if r.get("stall_ms", 0) > 20 and t_start <= r["end_ns"] <= t_end:
                        b = r["end_ns"] / 1e9
                        long_stalls.append((i, b - (r["stall_ms"] + 1.0) / 1000.0, b))
            attribution = cpu_during_stalls(runs, long_stalls, pids, os.getpid(), os.cpu_count() or 1)
            log(f"  during {attribution['stalls']} stalls > 20 ms the CPUs ran: "
                + ", ".join(f"{k} {v:.0%}" for k, v in attribution["share"].items()))
            if not args.keep:
                (root / "perf-sched.data").unlink(missing_ok=True)
        thread_cpu = None
        if args.thread_cpu:
            thread_cpu = thread_cpu_summary(
                root / "thread-cpu.jsonl", cluster, os.getpid(),
                [[w for w in snapshot_windows(read_probe(n.probe_path), int(args.big_keys * 0.9))  # type: ignore[attr-defined]
                  if w[1] >= t_start and w[0] <= t_end] for n in cluster.nodes])
            for line in thread_cpu["lines"]:
                log("  " + line)
        results["6"] = {
            # With --thread-cpu: CPU per thread role during the nodes' snapshots.
            "thread_cpu": thread_cpu,
            # With --perf-sched: what the CPUs ran during every stall over
            # 20 ms (in snapshots or not), by whose it was.
            "cpu_during_stalls_over_20ms": attribution,
            "keys": args.big_keys,
            "snapshot_entries": args.stall_snapshot_entries,
            "nodes": nodes,
            "writes": measured.ok,
            "write_rate_per_s": round(measured.ok / ((t_end - t_start) / 1e9)),
            "writes_during_snapshot": len(during),
            "writes_without": len(without),
            "p50_during_ms": round(percentile(during, 0.5), 2),
            "p50_without_ms": round(percentile(without, 0.5), 2),
            "p99_during_ms": round(p99_during, 2),
            "p99_without_ms": round(p99_without, 2),
            "p99_ratio": round(p99_during / p99_without, 2) if without and during else None,
            "p99_while_taking_ms": round(percentile(taking, 0.99), 2),
            "p99_only_compaction_ms": round(percentile(after, 0.99), 2),
            "writes_while_taking": len(taking),
            "writes_only_compaction": len(after),
            "cooperator_env": {k: v for k, v in os.environ.items() if k.startswith("KVSTORE_PROBE_SNAPSHOT")},
            # every probe experiment set in the environment
            "probe_env": {k: v for k, v in os.environ.items() if k.startswith("KVSTORE_PROBE_")},
            "max_stall_in_snapshot_ms": worst,
            "target": "stall <= 20 ms; p99 during <= 2x without",
            "met": bool(during) and worst <= 20 and p99_during <= 2 * p99_without,
            "errors": measured.errors,
            "load": [load_before, loadavg()],
        }
        log(f"  max stall in snapshots {worst} ms; p99 {p99_during:.1f} vs {p99_without:.1f} ms")
    finally:
        cluster.stop()


# ---------------------------------------------------------------------------
# Report


def fmt_load(pair: Sequence[float]) -> str:
    return f"{pair[0]:.1f} -> {pair[1]:.1f}"


def report(results: dict[str, Any]) -> str:
    rows = [("figure", "measured", "target", "met", "load avg")]
    if "1" in results:
        r = results["1"]
        rows.append((
            f"1 RSS after {r['writes'][1]:,} vs {r['writes'][0]:,} writes ({r['keys']:,} keys)",
            "MiB " + ", ".join(f"{a}->{b} ({x}x)" for a, b, x in zip(r["rss_mib_small"], r["rss_mib_large"], r["ratio"])),
            r["target"], "yes" if r["met"] else "NO", fmt_load(r["load"]),
        ))
    if "2" in results:
        r = results["2"]
        rows.append((
            f"2 data dir after {r['after_writes']:,} writes",
            ", ".join(f"{n['bytes']['total'] / 2**20:.1f} MiB (snap {n['bytes']['snapshots'] / 2**20:.1f}, "
                      f"wal {n['bytes']['wal'] / 2**20:.1f}) <= {n['bound'] / 2**20:.1f}" for n in r["nodes"]),
            "2 snap + tail + 1 segment", "yes" if r["met"] else "NO", fmt_load(r["load"]),
        ))
    if "3" in results:
        r = results["3"]
        for row in r["rows"]:
            rows.append((f"3 restart to serving, {r['keys']:,} keys: {row['what']}", f"{row['to_serving_s']:.3f} s",
                         r["target"], "", f"{row['load']:.1f}"))
        rows.append(("3 (all follower restarts)", "", r["target"], "yes" if r["met"] else "NO", fmt_load(r["load"])))
    if "4" in results:
        r = results["4"]
        rows.append((
            f"4 follower stopped for {r['stopped_for_writes']:,} writes" + (f" ({r['node_options']})" if r["node_options"] else ""),
            f"leader's index reached {r['reached_that_index_s']} s, live {r['caught_up_live_s']} s; "
            f"InstallSnapshot {'yes' if r['via_install_snapshot'] else 'NO'} ({r['installs']} installed); "
            f"rate {r['rate_before_sigcont']:,}/s -> {r['rate_during_catchup']:,}/s ({r['rate_ratio']}x, worst second "
            f"{r['worst_second_ratio']}x)",
            "<= 15 s, >= 0.5x", "yes" if r["met"] else "NO", fmt_load(r["load"]),
        ))
    if "5" in results:
        r = results["5"]
        rows.append((
            f"5 snapshot size, {r['snapshot']['keys']:,} keys",
            f"{r['snapshot']['size']:,} B / {r['raw_key_value_bytes']:,} raw = {r['ratio']}x",
            r["target"], "yes" if r["met"] else "NO", fmt_load(r["load"]),
        ))
    if "6" in results:
        r = results["6"]
        rows.append((
            f"6 longest reactor stall while snapshotting {r['keys']:,} keys",
            "; ".join(f"node {n['node']} ({n['role']}): {n['max_stall_in_snapshot_ms']} ms in {n['snapshots']} snapshots "
                      f"({n['stalls_over_20ms_in_snapshot']} > 20 ms; its own CPU in one stall at most "
                      f"{n['max_cpu_in_snapshot_ms']} ms, compaction {n['after_durable_ms']} ms), "
                      f"{n['max_stall_outside_ms']} ms outside (own CPU at most {n['max_cpu_outside_ms']} ms)"
                      for n in r["nodes"]),
            "<= 20 ms", "yes" if r["max_stall_in_snapshot_ms"] <= 20 else "NO", fmt_load(r["load"]),
        ))
        rows.append((
            "6 write p99 during a snapshot vs without",
            f"{r['p99_during_ms']} vs {r['p99_without_ms']} ms ({r['p99_ratio']}x; {r['writes_during_snapshot']:,} vs "
            f"{r['writes_without']:,} writes, {r['write_rate_per_s']:,}/s)",
            "<= 2x", "yes" if r["p99_ratio"] is not None and r["p99_ratio"] <= 2 else "NO", fmt_load(r["load"]),
        ))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    widths[1] = min(widths[1], 100)
    lines = []
    for row in rows:
        lines.append(" | ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--figures", default="1,2,3,4,5,6", help="comma-separated figures to measure")
    parser.add_argument("--quick", action="store_true", help="small sizes: a minute or two for every figure")
    parser.add_argument("--growth-keys", type=int, default=10_000)
    parser.add_argument("--growth-small", type=int, default=200_000)
    parser.add_argument("--growth-large", type=int, default=2_000_000)
    parser.add_argument("--big-keys", type=int, default=1_000_000)
    parser.add_argument("--stop-writes", type=int, default=1_000_000)
    parser.add_argument("--steady-seconds", type=float, default=10.0)
    parser.add_argument("--catchup-timeout", type=float, default=300.0)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--big-node-options", default="",
                        help="extra node options for the cluster of figures 3-5, e.g. '--snapshot-catchup-entries 100000'")
    parser.add_argument("--stall-seconds", type=float, default=60.0)
    parser.add_argument("--stall-snapshot-entries", type=int, default=100_000,
                        help="--snapshot-entries of figure 6's nodes, so snapshots alternate with quiet spells")
    parser.add_argument("--perf-sched", metavar="PATH",
                        help="figure 6: record every scheduler switch on the machine with this perf "
                             "('perf sched record', root) during the measurement and report what the CPUs ran "
                             "during the stalls over 20 ms (the stall figures then include perf's own cost)")
    parser.add_argument("--py-spy", metavar="PATH",
                        help="figure 6: record the leader with this py-spy during the measurement (raw stacks in the "
                             "work directory; use --keep)")
    parser.add_argument("--memory-probe", action="store_true",
                        help="figure 1: run the nodes under benchmarks/memory_probe_node.py and keep its samples "
                             "(glibc malloc statistics, the node's log and buffers) at both points")
    parser.add_argument("--thread-cpu", action="store_true",
                        help="figure 6: sample every node thread's CPU (benchmarks/thread_cpu.py) and report it "
                             "by thread role, in and out of snapshots")
    parser.add_argument("--stall-connections", type=int, default=16)
    parser.add_argument("--stall-pipeline", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--pipeline", type=int, default=8)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--workdir", help="where the clusters' data go (default: a new temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the data and logs afterwards")
    parser.add_argument("--json-out", help="also write every measurement to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in (("growth_small", 20_000), ("growth_large", 200_000), ("big_keys", 100_000),
                            ("stop_writes", 100_000), ("steady_seconds", 3.0), ("restarts", 1),
                            ("stall_seconds", 10.0), ("stall_snapshot_entries", 20_000)):
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    return args


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    which = {f.strip() for f in args.figures.split(",") if f.strip()}
    results: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items()}, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if which & {"1", "2"}:
        await figures_1_2(args, root, results)
    if which & {"3", "4", "5"}:
        await figures_3_4_5(args, root, results, which)
    if "6" in which:
        await figure_6(args, root, results)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="kvstore-figures-"))
    root.mkdir(parents=True, exist_ok=True)
    log(f"data and logs in {root}")
    try:
        results = asyncio.run(run(args, root))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(report(results))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
