"""
kvstore, PySyncObj and etcd side by side, on the same machine, in one run.

Every system runs as a 3-node cluster of separate processes on localhost and
is driven with the same workload shapes: replicated key-value writes of
100-byte values to 10,000 keys, sent to the leader, from N connections with P
requests in flight on each.  A write counts once the system acknowledged it
as committed.  Systems run one after another (never two at once), each shape
for the same C{--duration} after one second of unmeasured warm-up, each on a
fresh cluster in a temporary directory.

  - kvstore: C{python -m kvstore.tools.bench --json} (it starts its own cluster),
    with fsync (the default) and once more with C{--no-fsync} for a
    like-for-like comparison with PySyncObj's default.
  - PySyncObj (from PyPI, installed with pip if missing; skipped with a
    message if it cannot be): three C{benchmarks/pysyncobj_node.py}
    processes, each a C{SyncObj} with a C{ReplDict}, driven by the same
    client (C{kvstore.tools.bench --nodes}) through a small text-protocol front
    end.  Variants: its default configuration, C{appendEntriesUseBatch}
    off, the file journal, and the file journal with an msync this harness
    adds (not a PySyncObj option).
  - etcd (Debian's C{etcd-server}, if C{etcd} is on PATH; skipped with the
    reason otherwise): three members, driven over its native gRPC API
    (C{etcdserverpb.KV/Put}, hand-encoded protobuf, needs C{grpcio}) with
    N channels x P concurrent calls.

Usage::

    python benchmarks/compare.py                  # everything, 10 s per shape
    python benchmarks/compare.py --duration 5 --shapes seq,c50xP10 --json

Every process it starts is stopped by PID and every temporary directory
removed, also on Ctrl-C and errors.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import glob
import importlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)
if CHECKOUT not in sys.path:
    sys.path.insert(0, CHECKOUT)

from kvstore.tools.ports import allocate_port_range  # noqa: E402

SHAPES = {
    # name: (connections, pipelined requests per connection)
    "seq": (1, 1),
    "c50xP10": (50, 10),
    "c64": (64, 1),
    "c256": (256, 1),
}

PYSYNCOBJ_VARIANTS = {
    # name: (journal mode, appendEntriesUseBatch)
    "default": ("memory", "on"),
    "nobatch": ("memory", "off"),
    "file": ("file", "on"),
    "file-nobatch": ("file", "off"),
    "file+msync": ("file-fsync", "on"),
    "file+msync-nobatch": ("file-fsync", "off"),
}

GUARANTEES = {
    "kvstore fsync": (
        "Acknowledges a PUT after it is fsynced in the log of a majority (leader included, group commit) "
        "and applied. Reads (not measured here) are linearizable by default (ReadIndex), or STALE on request."
    ),
    "kvstore no-fsync": (
        "Same protocol with --unsafe-no-fsync: the log is written but never fsynced, so an acknowledged write "
        "survives a process crash but not a power loss or kernel crash of a majority. For comparison only."
    ),
    "pysyncobj default": (
        "PySyncObj's default SyncObjConf: MemoryJournal (the log lives in RAM only; a restarted node "
        "has lost it), appendEntriesUseBatch=True (AppendEntries go out on the appendEntriesPeriod "
        "timer, 0.1 s). Commit = replicated to a majority's memory. No fsync anywhere. Reads through "
        "ReplDict.get are local (not linearizable)."
    ),
    "pysyncobj nobatch": (
        "As default but appendEntriesUseBatch=False (an AppendEntries per new command: lower latency, "
        "PySyncObj's documented trade-off). No fsync."
    ),
    "pysyncobj file": (
        "journalFile + fullDumpFile, the most durable configuration PySyncObj offers (otherwise default). "
        "FileJournal.add writes each entry into an mmap'ed file (ResizableFile.write); PySyncObj never "
        "fsyncs or msyncs it while running (FileJournal.flush is only reached from _destroy); "
        "MetaStorer.storeMeta (term, vote, commit index) and the full dump (Serializer.serialize) are "
        "written and renamed without fsync. Survives a process crash, not a power loss or kernel crash."
    ),
    "pysyncobj file-nobatch": "file with appendEntriesUseBatch=False. No fsync.",
    "pysyncobj file+msync": (
        "file plus an msync (FileJournal.flush) that this harness patches in: once per batch of new "
        "commands on the leader and before each follower acknowledgement (group commit). Not a PySyncObj "
        "feature; term/vote metadata still not fsynced. The closest PySyncObj gets to kvstore/etcd durability."
    ),
    "pysyncobj file+msync-nobatch": "file+msync with appendEntriesUseBatch=False.",
    "etcd fsync": (
        "etcd 3.4 defaults: a Put is acknowledged after the entry is fsynced in the WAL of a majority and "
        "applied (batched). Reads are linearizable by default (serializable on request)."
    ),
}

# ----------------------------------------------------------------------
# Process and directory bookkeeping: everything started is stopped by PID.

_PROCESSES: list[subprocess.Popen] = []
_DIRECTORIES: list[str] = []


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    stack = [pid]
    while stack:
        current = stack.pop()
        for path in glob.glob(f"/proc/{current}/task/*/children"):
            try:
                with open(path) as f:
                    children = [int(c) for c in f.read().split()]
            except (OSError, ValueError):
                continue
            found.extend(children)
            stack.extend(children)
    return found


def _stop(process: subprocess.Popen, first: int = signal.SIGINT, grace: float = 15.0) -> None:
    """Stop C{process} (and, failing that, its descendants) by PID."""
    if process.poll() is None:
        descendants = _descendants(process.pid)
        try:
            process.send_signal(first)
        except ProcessLookupError:
            pass
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for pid in descendants:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    if process in _PROCESSES:
        _PROCESSES.remove(process)


def _cleanup() -> None:
    for process in list(_PROCESSES):
        _stop(process, signal.SIGINT, 10.0)
    for directory in list(_DIRECTORIES):
        shutil.rmtree(directory, ignore_errors=True)
        _DIRECTORIES.remove(directory)


def _mkdtemp(prefix: str) -> str:
    directory = tempfile.mkdtemp(prefix=prefix)
    _DIRECTORIES.append(directory)
    return directory


def _rmdir(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    if directory in _DIRECTORIES:
        _DIRECTORIES.remove(directory)


def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored, and children inherit
    # that: restore it so that SIGINT stops them (and runs their clean-up).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _popen(argv: list[str], **kwargs: Any) -> subprocess.Popen:
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=_default_sigint, **kwargs)
    _PROCESSES.append(process)
    return process


def _log(message: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# ----------------------------------------------------------------------
# Results


def _row(system: str, variant: str, shape: str, **fields: Any) -> dict[str, Any]:
    connections, pipeline = SHAPES[shape]
    row = {
        "system": system,
        "variant": variant,
        "label": f"{system} {variant}",
        "shape": shape,
        "connections": connections,
        "pipeline": pipeline,
        "writes_per_s": None,
        "p50_ms": None,
        "p99_ms": None,
        "errors": {},
        "note": "",
    }
    row.update(fields)
    return row


def _from_bench_report(row: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    row["writes_per_s"] = round(report["writes_ok"] / max(1e-9, report["elapsed_s"]), 1)
    row["p50_ms"] = report["latency_ms"]["p50"]
    row["p99_ms"] = report["latency_ms"]["p99"]
    row["errors"] = report.get("errors", {})
    terms = [n.get("term_during_run") for n in report.get("nodes", []) if n.get("term_during_run")]
    if terms:
        row["note"] = (row["note"] + f" term changed during run ({max(terms)})").strip()
    return row


def _run_bench(extra: list[str], shape: str, args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    """Run C{kvstore.tools.bench --json} with C{extra} and return its report."""
    connections, pipeline = SHAPES[shape]
    env = dict(os.environ)
    env["PYTHONPATH"] = CHECKOUT + os.pathsep + env.get("PYTHONPATH", "")
    argv = [
        sys.executable, "-m", "kvstore.tools.bench", "--json",
        "-c", str(connections), "-P", str(pipeline),
        "--duration", str(args.duration), "--warmup", "1",
        "--value-size", "100", "--keys", "10000",
        *extra,
    ]  # fmt: skip
    out_dir = _mkdtemp("compare-bench-")
    # The bench's own cluster directory goes inside ours, so it is removed
    # with ours even if the bench is stopped before it cleans up.
    env["TMPDIR"] = out_dir
    out_path = os.path.join(out_dir, "out.json")
    err_path = os.path.join(out_dir, "err.txt")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        process = _popen(argv, stdout=out, stderr=err, env=env, cwd=CHECKOUT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            _stop(process, signal.SIGINT, 20.0)
    try:
        with open(out_path) as f:
            text = f.read()
        with open(err_path) as f:
            err_text = f.read()
    finally:
        _rmdir(out_dir)
    try:
        return json.loads(text)
    except ValueError:
        raise RuntimeError(f"kvstore.tools.bench gave no report (exit {process.returncode}): {err_text[-500:]}") from None


# ----------------------------------------------------------------------
# kvstore


def run_kvstore(shape: str, fsync: bool, args: argparse.Namespace) -> dict[str, Any]:
    variant = "fsync" if fsync else "no-fsync"
    row = _row("kvstore", variant, shape)
    try:
        report = _run_bench([] if fsync else ["--no-fsync"], shape, args, timeout=args.duration + 90)
    except Exception as e:  # noqa: BLE001 - report and go on with the other runs
        row["note"] = f"failed: {e}"
        return row
    _from_bench_report(row, report)
    if report.get("raw_fsyncs_per_s"):
        row["raw_fsyncs_per_s"] = report["raw_fsyncs_per_s"]
    fsyncs = [n.get("fsyncs_during_run") for n in report.get("nodes", [])]
    if fsync and all(isinstance(f, int) for f in fsyncs) and fsyncs:
        row["fsyncs_per_node"] = fsyncs
    return row


# ----------------------------------------------------------------------
# PySyncObj


def ensure_pysyncobj(install: bool) -> str | None:
    """None if PySyncObj can be imported, else the reason it cannot."""
    try:
        importlib.import_module("pysyncobj")
        return None
    except ImportError:
        pass
    if not install:
        return "pysyncobj is not installed (and --no-install was given)"
    _log("pysyncobj not installed: pip install pysyncobj")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "pysyncobj"], capture_output=True, text=True
    )
    importlib.invalidate_caches()
    try:
        importlib.import_module("pysyncobj")
        return None
    except ImportError:
        return f"pip install pysyncobj failed: {(result.stderr or result.stdout).strip()[-300:]}"


def _status_line(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"STATUS\n")
            return s.makefile().readline()
    except OSError:
        return ""


def _command_line(port: int, command: bytes) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
            s.sendall(command + b"\n")
            return s.makefile().readline().strip()
    except OSError:
        return ""


def _pysyncobj_replicas_agree(client_ports: list[int]) -> bool | None:
    """After the load: once every node applied the same index, do their
    ReplDicts hold the same items?  None if they never caught up (5 s)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        replies = [dict(t.partition("=")[::2] for t in _command_line(p, b"DIGEST").split()) for p in client_ports]
        applied = {r.get("applied") for r in replies}
        if len(applied) == 1 and None not in applied:
            return len({r.get("digest") for r in replies}) == 1
        time.sleep(0.2)
    return None


def run_pysyncobj(shape: str, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    journal, batch = PYSYNCOBJ_VARIANTS[variant]
    row = _row("pysyncobj", variant, shape)
    directory = _mkdtemp("compare-pysyncobj-")
    base = allocate_port_range(3, low=22100, also=(10, 11, 12))
    raft_ports = ",".join(str(base + i) for i in range(3))
    client_ports = [base + 10 + i for i in range(3)]
    nodes = []
    logs = []
    try:
        for i in range(3):
            log_path = os.path.join(directory, f"node-{i}.err")
            logs.append(log_path)
            with open(log_path, "wb") as err:
                nodes.append(
                    _popen(
                        [
                            sys.executable, os.path.join(HERE, "pysyncobj_node.py"),
                            "--index", str(i), "--raft-ports", raft_ports,
                            "--client-port", str(client_ports[i]),
                            "--journal", journal, "--batch", batch,
                            "--dir", os.path.join(directory, f"node-{i}"),
                        ],  # fmt: skip
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                    )
                )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any("role=leader" in _status_line(p) for p in client_ports):
                break
            if any(n.poll() is not None for n in nodes):
                raise RuntimeError("a PySyncObj node exited at start")
            time.sleep(0.1)
        else:
            raise RuntimeError("no PySyncObj leader within 30 s")
        nodes_arg = ",".join(f"127.0.0.1:{p}" for p in client_ports)
        report = _run_bench(["--nodes", nodes_arg], shape, args, timeout=args.duration + 90)
        _from_bench_report(row, report)
        row["replicas_agree"] = _pysyncobj_replicas_agree(client_ports)
    except Exception as e:  # noqa: BLE001
        row["note"] = f"failed: {e}"
    finally:
        for node in nodes:
            _stop(node, signal.SIGINT, 10.0)
        diverge = 0
        for path in logs:
            try:
                with open(path, errors="replace") as f:
                    diverge += sum(1 for line in f if "truncating already-applied" in line)
            except OSError:
                pass
        row["diverge_warnings"] = diverge
        _rmdir(directory)
    return row


# ----------------------------------------------------------------------
# etcd


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def put_request(key: bytes, value: bytes) -> bytes:
    """etcdserverpb.PutRequest{key=1, value=2}, protobuf-encoded by hand."""
    return b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(len(value)) + value


def etcd_unavailable() -> str | None:
    if shutil.which("etcd") is None:
        return "etcd is not installed (Debian: apt-get install etcd-server)"
    try:
        importlib.import_module("grpc")
    except ImportError:
        return "the Python package grpcio is not installed (pip install grpcio): needed to speak etcd's gRPC API"
    return None


def _etcd_json(port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=2) as response:
        return json.loads(response.read())


def _etcd_leader(client_ports: list[int]) -> int | None:
    for port in client_ports:
        try:
            status = _etcd_json(port, "/v3/maintenance/status", {})
        except (OSError, ValueError):
            continue
        if status.get("leader") and status.get("leader") == status.get("header", {}).get("member_id"):
            return port
    return None


async def _etcd_load(port: int, connections: int, pipeline: int, duration: float, seed: int = 1) -> dict[str, Any]:
    import grpc

    rng = random.Random(seed)
    value = b"v" * 100
    latencies: list[float] = []
    errors: dict[str, int] = {}
    state = {"measuring": False, "ok": 0, "stop": 0.0}
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(connections)
    ]
    calls = [
        ch.unary_unary("/etcdserverpb.KV/Put", request_serializer=None, response_deserializer=None) for ch in channels
    ]

    async def worker(call: Any, wrng: random.Random) -> None:
        while time.monotonic() < state["stop"]:
            request = put_request(f"key{wrng.randrange(10000)}".encode(), value)
            sent = time.perf_counter()
            try:
                await call(request, timeout=10)
            except grpc.aio.AioRpcError as e:
                kind = str(e.code())
                errors[kind] = errors.get(kind, 0) + 1
                continue
            if state["measuring"]:
                latencies.append(time.perf_counter() - sent)
                state["ok"] += 1

    try:
        await asyncio.gather(*(ch.channel_ready() for ch in channels))
        state["stop"] = time.monotonic() + 1.0  # warm-up
        workers = [worker(c, random.Random(rng.random())) for c in calls for _ in range(pipeline)]
        await asyncio.gather(*workers)
        errors.clear()
        state["measuring"] = True
        started = time.monotonic()
        state["stop"] = started + duration
        workers = [worker(c, random.Random(rng.random())) for c in calls for _ in range(pipeline)]
        await asyncio.gather(*workers)
        elapsed = time.monotonic() - started
    finally:
        await asyncio.gather(*(ch.close() for ch in channels))
    latencies.sort()

    def pct(fraction: float) -> float | None:
        if not latencies:
            return None
        rank = min(len(latencies) - 1, max(0, int(round(fraction * len(latencies) + 0.5)) - 1))
        return round(latencies[rank] * 1000, 3)

    return {
        "writes_per_s": round(state["ok"] / elapsed, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": errors,
    }


def run_etcd(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    row = _row("etcd", "fsync", shape)
    directory = _mkdtemp("compare-etcd-")
    base = allocate_port_range(3, low=22300, also=(79, 89, 99))
    peer_ports = [base + i for i in range(3)]
    client_ports = [base + 79 + 10 * i for i in range(3)]
    cluster = ",".join(f"e{i}=http://127.0.0.1:{peer_ports[i]}" for i in range(3))
    members = []
    try:
        for i in range(3):
            with open(os.path.join(directory, f"e{i}.log"), "wb") as log:
                members.append(
                    _popen(
                        [
                            "etcd", "--name", f"e{i}", "--data-dir", os.path.join(directory, f"e{i}"),
                            "--listen-client-urls", f"http://127.0.0.1:{client_ports[i]}",
                            "--advertise-client-urls", f"http://127.0.0.1:{client_ports[i]}",
                            "--listen-peer-urls", f"http://127.0.0.1:{peer_ports[i]}",
                            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_ports[i]}",
                            "--initial-cluster", cluster, "--initial-cluster-state", "new",
                            "--initial-cluster-token", f"compare-{os.getpid()}",
                            "--log-level", "warn",
                        ],  # fmt: skip
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + 30
        leader = None
        while time.monotonic() < deadline and leader is None:
            if any(m.poll() is not None for m in members):
                raise RuntimeError("an etcd member exited at start")
            leader = _etcd_leader(client_ports)
            if leader is None:
                time.sleep(0.1)
        if leader is None:
            raise RuntimeError("no etcd leader within 30 s")
        connections, pipeline = SHAPES[shape]
        result = asyncio.run(_etcd_load(leader, connections, pipeline, args.duration))
        row.update(result)
    except Exception as e:  # noqa: BLE001
        row["note"] = f"failed: {e}"
    finally:
        for member in members:
            _stop(member, signal.SIGTERM, 10.0)
        _rmdir(directory)
    return row


# ----------------------------------------------------------------------
# Report


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """kvstore (fsync and no-fsync) against every other system, per shape."""
    by = {(r["label"], r["shape"]): r for r in rows}
    out = []
    for r in rows:
        if r["system"] == "kvstore" or not r["writes_per_s"]:
            continue
        for kv in ("kvstore fsync", "kvstore no-fsync"):
            k = by.get((kv, r["shape"]))
            if not k or not k["writes_per_s"]:
                continue
            entry = {
                "shape": r["shape"],
                "kvstore": kv,
                "other": r["label"],
                "kvstore_over_other": round(k["writes_per_s"] / r["writes_per_s"], 2),
                "other_over_kvstore": round(r["writes_per_s"] / k["writes_per_s"], 2),
            }
            if k["p50_ms"] and r["p50_ms"]:
                entry["p50_other_over_kvstore"] = round(r["p50_ms"] / k["p50_ms"], 2)
            out.append(entry)
    return out


def format_report(result: dict[str, Any]) -> str:
    lines = [
        f"date      {result['date']}",
        f"machine   {result['machine']['description']}",
        f"command   {result['command']}",
        f"workload  3 nodes on localhost, replicated PUTs of 100-byte values to 10,000 keys, sent to the leader; "
        f"{result['duration_s']:g} s per shape after 1 s warm-up, a fresh cluster per run",
        "",
        f"{'system':<36}{'shape':<10}{'writes/s':>10}{'p50 ms':>10}{'p99 ms':>10}  notes",
    ]
    for r in result["results"]:
        notes = []
        if r.get("errors"):
            notes.append("errors " + ", ".join(f"{k}: {v}" for k, v in r["errors"].items()))
        if r.get("diverge_warnings"):
            notes.append(f"{r['diverge_warnings']} 'may have diverged' warnings")
        if r.get("replicas_agree") is False:
            notes.append("REPLICAS DIFFER after the run")
        elif r.get("replicas_agree") is None and r["system"] == "pysyncobj" and r["writes_per_s"]:
            notes.append("replicas did not catch up within 5 s")
        if r.get("note"):
            notes.append(r["note"])
        lines.append(
            f"{r['label']:<36}{r['shape']:<10}{_fmt(r['writes_per_s']):>10}"
            f"{_fmt(r['p50_ms'], 2):>10}{_fmt(r['p99_ms'], 2):>10}  {'; '.join(notes)}"
        )
    if result["ratios"]:
        lines += ["", "Throughput ratios (same shape):", f"{'shape':<10}{'kvstore':<18}{'other':<36}{'kv/other':>9}{'other/kv':>9}"]
        for q in result["ratios"]:
            lines.append(
                f"{q['shape']:<10}{q['kvstore']:<18}{q['other']:<36}"
                f"{q['kvstore_over_other']:>9.2f}{q['other_over_kvstore']:>9.2f}"
            )
    if result["skipped"]:
        lines += ["", "Skipped:"] + [f"  {k}: {v}" for k, v in result["skipped"].items()]
    lines += ["", "What each acknowledges (writes) and guarantees:"]
    labels = {r["label"] for r in result["results"]}
    for label, text in GUARANTEES.items():
        if label in labels:
            lines.append(f"  {label}: {text}")
    lines += [
        "",
        "Caveats: the client (one Python process) shares the 2 cores with all three server processes of each "
        "system; kvstore and PySyncObj are driven by the same client (kvstore.tools.bench), etcd by a gRPC client "
        "in this script; the machine is shared and noisy. PySyncObj's 'may have diverged' warnings are its own "
        "CRITICAL log lines (follower truncating applied entries); 'replicas differ' is checked by comparing the "
        "three ReplDicts after the run.",
    ]
    return "\n".join(lines)


def describe_machine() -> dict[str, Any]:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {"python": platform.python_version()}
    try:
        versions["pysyncobj"] = importlib.import_module("pysyncobj.version").VERSION
    except ImportError:
        pass
    if shutil.which("etcd"):
        try:
            versions["etcd"] = subprocess.run(["etcd", "--version"], capture_output=True, text=True, timeout=10).stdout.split()[2]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            pass
    cpus = os.cpu_count()
    return {
        "cpus": cpus,
        "cpu_model": model,
        "kernel": platform.release(),
        "versions": versions,
        "description": f"{cpus} x {model}, Linux {platform.release()}, "
        + ", ".join(f"{k} {v}" for k, v in versions.items()),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="kvstore vs PySyncObj vs etcd, same machine, same run.")
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per shape and system (default 10)")
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, from {','.join(SHAPES)}")
    p.add_argument("--systems", default="kvstore,pysyncobj,etcd", help="comma-separated subset of kvstore,pysyncobj,etcd")
    p.add_argument(
        "--pysyncobj-variants",
        default=",".join(PYSYNCOBJ_VARIANTS),
        help=f"comma-separated, from {','.join(PYSYNCOBJ_VARIANTS)}",
    )
    p.add_argument("--no-kvstore-nofsync", action="store_true", help="skip kvstore's --no-fsync runs")
    p.add_argument("--no-install", action="store_true", help="do not pip install pysyncobj if it is missing")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--json-out", help="also write the JSON result to this file")
    args = p.parse_args(argv)
    args.shape_list = [s for s in args.shapes.split(",") if s]
    for s in args.shape_list:
        if s not in SHAPES:
            p.error(f"unknown shape {s}")
    args.variant_list = [v for v in args.pysyncobj_variants.split(",") if v]
    for v in args.variant_list:
        if v not in PYSYNCOBJ_VARIANTS:
            p.error(f"unknown PySyncObj variant {v}")
    args.system_list = [s for s in args.systems.split(",") if s]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        plan: list[tuple[str, Any]] = []
        if "kvstore" in args.system_list:
            plan += [(f"kvstore fsync {s}", lambda s=s: run_kvstore(s, True, args)) for s in args.shape_list]
            if not args.no_kvstore_nofsync:
                plan += [(f"kvstore no-fsync {s}", lambda s=s: run_kvstore(s, False, args)) for s in args.shape_list]
        if "pysyncobj" in args.system_list:
            reason = ensure_pysyncobj(not args.no_install)
            if reason:
                skipped["pysyncobj"] = reason
                _log(f"skipping PySyncObj: {reason}")
            else:
                for v in args.variant_list:
                    plan += [
                        (f"pysyncobj {v} {s}", lambda s=s, v=v: run_pysyncobj(s, v, args)) for s in args.shape_list
                    ]
        if "etcd" in args.system_list:
            reason = etcd_unavailable()
            if reason:
                skipped["etcd"] = reason
                _log(f"skipping etcd: {reason}")
            else:
                plan += [(f"etcd {s}", lambda s=s: run_etcd(s, args)) for s in args.shape_list]
        for i, (name, run) in enumerate(plan, 1):
            _log(f"({i}/{len(plan)}) {name} ...")
            row = run()
            rows.append(row)
            _log(
                f"    {_fmt(row['writes_per_s'])} writes/s, p50 {_fmt(row['p50_ms'], 2)} ms, "
                f"p99 {_fmt(row['p99_ms'], 2)} ms {row.get('note', '')}"
            )
    except KeyboardInterrupt:
        _log("interrupted: stopping everything started")
        _cleanup()
        return 130
    finally:
        _cleanup()
    raw = [r["raw_fsyncs_per_s"] for r in rows if r.get("raw_fsyncs_per_s")]
    machine = describe_machine()
    if raw:
        machine["raw_fsyncs_per_s_median"] = sorted(raw)[len(raw) // 2]
    result = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python " + " ".join([os.path.relpath(os.path.abspath(sys.argv[0]), CHECKOUT)] + (argv or sys.argv[1:])),
        "machine": machine,
        "duration_s": args.duration,
        "results": rows,
        "ratios": ratios(rows),
        "skipped": skipped,
        "guarantees": {k: v for k, v in GUARANTEES.items() if k in {r["label"] for r in rows}},
    }
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
