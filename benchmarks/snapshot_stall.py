"""
How long does taking a snapshot of a big state machine stall the reactor?

Compares the candidate techniques of issue 12 on this machine, each in its
own process (so one's memory and threads cannot disturb another's):

  baseline   no snapshot: the probe's own noise on this (loaded) machine
  fork       os.fork() a copy-on-write child that serialises and writes the
             file (Redis BGSAVE); the parent keeps serving
  fork-freeze  the same after gc.freeze() (keeps the parent's collector off
             the frozen objects, so it does not dirty the shared pages)
  pmap       a pyrsistent PMap as the map: O(1) snapshot, serialised in a
             thread while the reactor keeps applying writes
  overlay    kvstore's own (kvstore.node.snapshotting.take_snapshot): freeze the
             dict, send writes to an overlay, and serialise slices on the
             reactor (a task.Cooperator allowed --slice-ms per reactor turn),
             handing ~1 MiB chunks to the storage thread, then merge the
             overlay in slices

For each: the longest reactor stall seen by a lag probe (a LoopingCall every
1 ms; a stall is the gap between two calls minus 1 ms), the p99 gap, the
total time, the file size, and the apply cost per PUT of that technique's
map.  While a snapshot runs, a write load applies 10 PUTs every 1 ms.

    nice python benchmarks/snapshot_stall.py --keys 1000000 --rss-mb 700
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
import hashlib

TECHNIQUES = ("baseline", "fork", "fork-freeze", "pmap", "overlay")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def key_of(i: int) -> str:
    return f"key{i:07d}"


def value_of(i: int) -> str:
    return (f"{i:010d}" * 10)[:100]


def build(keys: int) -> dict[str, str]:
    return {key_of(i): value_of(i) for i in range(keys)}


def apply_cost_ns(apply, count: int = 100_000) -> float:
    """Nanoseconds per PUT through C{apply(index, command)} overwriting keys."""
    from kvstore.statemachine import encode_put

    commands = [encode_put(key_of(i * 7 % 1000), value_of(i)) for i in range(count)]
    best = float("inf")
    for _ in range(5):  # best of five: the machine is shared and loaded
        start = time.process_time()
        for n, command in enumerate(commands):
            apply(n, command)
        best = min(best, time.process_time() - start)
    return round(best / count * 1e9)


def run_one(technique: str, keys: int, target_rss: int, directory: str) -> dict:
    from twisted.internet import reactor, task, threads

    from kvstore.statemachine import KeyValueStateMachine, encode_entries, encode_put
    from kvstore.storage.snapshots import SnapshotMeta, SnapshotStore

    sm = KeyValueStateMachine()
    data = build(keys)
    raw_bytes = sum(len(k.encode()) + len(v.encode()) for k, v in data.items())
    ballast = []
    while rss_mb() < target_rss:
        ballast.append(bytearray(16 << 20))  # touched: counts in RSS
        for b in ballast[-1:]:
            b[:: 4096] = b"\x01" * len(b[:: 4096])
    result: dict = {"technique": technique, "keys": keys, "raw_bytes": raw_bytes}

    pmap_state = {}
    if technique == "pmap":
        import pyrsistent

        pmap_state["m"] = pyrsistent.pmap(data)
        del data
        applied = [0]

        def pmap_apply(index: int, command: bytes) -> None:
            # Same parsing as KeyValueStateMachine.apply, then a persistent set.
            text = command[1:].decode("utf-8")
            key, _, value = text.partition(" ")
            pmap_state["m"] = pmap_state["m"].set(key, value)
            applied[0] = index

        apply = pmap_apply
        result["apply_ns_per_put"] = apply_cost_ns(pmap_apply)
    else:
        sm._data = data
        sm.applied_index = 1
        result["apply_ns_per_put"] = apply_cost_ns(lambda i, c: _apply_plain(sm, c))
        apply = lambda i, c: _apply_plain(sm, c)  # noqa: E731
        if technique == "overlay":
            snap = sm.begin_snapshot()
            result["apply_ns_per_put_during_snapshot"] = apply_cost_ns(lambda i, c: _apply_plain(sm, c))
            snap.close()
            while not sm.merge_overlay(1 << 30):
                pass
    gc.collect()
    result["rss_mb"] = round(rss_mb())
    if technique == "baseline":
        start = time.perf_counter()
        copy = sm._data.copy()
        result["dict_copy_ms"] = round((time.perf_counter() - start) * 1000, 1)
        del copy
        blob = os.urandom(64 << 20)
        for name, fn in (("sha256", lambda b: hashlib.sha256(b).digest()),
                         ("blake2b", lambda b: hashlib.blake2b(b).digest()),
                         ("crc32", zlib.crc32)):
            start = time.perf_counter()
            fn(blob)
            result[f"{name}_MBps"] = round(64 / (time.perf_counter() - start))
        del blob

    store = SnapshotStore.open(directory)
    meta = SnapshotMeta(index=1, term=1, cluster_id="bench", membership={"voters": [[1, "127.0.0.1:7001"]]})

    gaps: list[float] = []
    last = [time.perf_counter()]

    def probe() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    counter = [0]

    def load() -> None:
        for _ in range(10):
            counter[0] += 1
            n = counter[0]
            apply(n, encode_put(key_of(n * 7919 % keys), value_of(n)))

    probe_loop = task.LoopingCall(probe)
    load_loop = task.LoopingCall(load)

    def stop(_: object = None) -> None:
        probe_loop.stop()
        load_loop.stop()
        reactor.stop()

    def report_gaps() -> None:
        stalls = sorted(g - 0.001 for g in gaps[1:])
        result["probe_samples"] = len(stalls)
        result["max_stall_ms"] = round(stalls[-1] * 1000, 1) if stalls else None
        result["p99_stall_ms"] = round(stalls[int(len(stalls) * 0.99)] * 1000, 1) if stalls else None
        result["stalls_over_20ms"] = sum(1 for s in stalls if s > 0.020)

    def write_in_child(items_source) -> None:
        writer = store.begin(meta)
        batch = []
        for item in items_source:
            batch.append(item)
            if len(batch) == 8192:
                writer.write(encode_entries(batch))
                batch = []
        writer.write(encode_entries(batch))
        writer.finish()

    def start_snapshot() -> None:
        started = time.perf_counter()
        if technique == "baseline":
            reactor.callLater(3.0, stop)
            return
        if technique in ("fork", "fork-freeze"):
            if technique == "fork-freeze":
                gc.freeze()
            read_end, write_end = os.pipe()
            before = time.perf_counter()
            before_cpu = time.thread_time()
            pid = os.fork()
            if pid == 0:  # child: no reactor, no logging, just the file
                os.close(read_end)
                t0 = time.perf_counter()
                from kvstore.statemachine import _CONTENT_MAGIC, _varint

                writer = store.begin(meta)
                writer.write(_CONTENT_MAGIC + _varint(len(sm._data)))
                batch = []
                for item in sm._data.items():
                    batch.append(item)
                    if len(batch) == 8192:
                        writer.write(encode_entries(batch))
                        batch = []
                writer.write(encode_entries(batch))
                info = writer.finish()
                os.write(write_end, json.dumps({"child_s": time.perf_counter() - t0, "size": info.size}).encode())
                os._exit(0)
            result["fork_call_ms"] = round((time.perf_counter() - before) * 1000, 1)
            result["fork_call_cpu_ms"] = round((time.thread_time() - before_cpu) * 1000, 1)
            os.close(write_end)

            def reap() -> None:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    child = json.loads(os.read(read_end, 4096))
                    os.close(read_end)
                    result["child_s"] = round(child["child_s"], 2)
                    result["file_bytes"] = child["size"]
                    result["total_s"] = round(time.perf_counter() - started, 2)
                    reap_loop.stop()
                    reactor.callLater(0.5, stop)

            reap_loop = task.LoopingCall(reap)
            reap_loop.start(0.005)
            return
        if technique == "pmap":
            frozen = pmap_state["m"]  # O(1): the map is immutable

            def in_thread() -> int:
                from kvstore.statemachine import _CONTENT_MAGIC, _varint

                writer = store.begin(meta)
                writer.write(_CONTENT_MAGIC + _varint(len(frozen)))
                batch = []
                for item in frozen.items():
                    batch.append(item)
                    if len(batch) == 8192:
                        writer.write(encode_entries(batch))
                        batch = []
                writer.write(encode_entries(batch))
                return writer.finish().size

            def done(size: int) -> None:
                result["file_bytes"] = size
                result["total_s"] = round(time.perf_counter() - started, 2)
                reactor.callLater(0.5, stop)

            threads.deferToThread(in_thread).addCallback(done).addErrback(lambda f: (f.printTraceback(), stop()))
            return
        # overlay: the shipped driver, kvstore.node.snapshotting.take_snapshot
        from kvstore.node.snapshotting import snapshot_cooperator, take_snapshot

        slice_wall: list[float] = []
        slice_cpu: list[float] = []

        def timed(step):
            wall, cpu = time.perf_counter(), time.thread_time()
            out = step()
            slice_wall.append(time.perf_counter() - wall)
            slice_cpu.append(time.thread_time() - cpu)
            return out

        begin, merge = sm.begin_snapshot, sm.merge_overlay

        def timed_begin():
            snapshot = begin()
            next_chunk = snapshot.next_chunk
            snapshot.next_chunk = lambda n: timed(lambda: next_chunk(n))
            return snapshot

        def timed_merge(n):
            if sm._overlay is not None and "serialised_s" not in result:
                result["serialised_s"] = round(time.perf_counter() - started, 2)
                result["overlay_entries"] = len(sm._overlay)
            return timed(lambda: merge(n))

        sm.begin_snapshot, sm.merge_overlay = timed_begin, timed_merge

        def finished(info):
            result["file_bytes"] = info.size
            result["total_s"] = round(time.perf_counter() - started, 2)
            result["slices"] = len(slice_wall)
            result["max_slice_wall_ms"] = round(max(slice_wall) * 1000, 1)
            result["max_slice_cpu_ms"] = round(max(slice_cpu) * 1000, 1)
            result["mean_slice_cpu_ms"] = round(sum(slice_cpu) / len(slice_cpu) * 1000, 2)
            result["serialise_cpu_s"] = round(sum(slice_cpu), 2)
            reactor.callLater(0.5, stop)

        take_snapshot(
            sm, store, lambda index: SnapshotMeta(index=index, term=1, cluster_id="bench",
                                                  membership=meta.membership),
            threads.deferToThread, snapshot_cooperator(reactor, turn=COOPERATOR_SLICE, pause=COOPERATOR_PAUSE),
        ).addCallback(finished).addErrback(lambda f: (f.printTraceback(), stop()))

    reactor.suggestThreadPoolSize(2)
    probe_loop.start(0.001)
    load_loop.start(0.001)
    reactor.callLater(1.0, start_snapshot)
    reactor.run()
    report_gaps()
    result["puts_applied"] = counter[0]
    if technique == "overlay":
        # Restart side: verify the file, then restore 1M keys from it in chunks.
        info = store.list()[0]
        start = time.perf_counter()
        verified = store.verify(info)
        result["verify_s"] = round(time.perf_counter() - start, 2)
        restored = KeyValueStateMachine()
        start = time.perf_counter()
        restored.restore(verified.index, store.read_content(verified))
        result["restore_s"] = round(time.perf_counter() - start, 2)
        result["restored_keys"] = len(restored)
    if "file_bytes" in result:
        result["size_ratio"] = round(result["file_bytes"] / raw_bytes, 3)
    return result


#: How long one reactor turn may spend producing slices (set by --slice-ms).
#: Twisted's default Cooperator allows 10 ms per turn.
COOPERATOR_SLICE = 0.004
#: Idle time between two turns (set by --pause-ms).
COOPERATOR_PAUSE = 0.0


def _apply_plain(sm, command: bytes) -> None:
    sm.apply(sm.applied_index + 1, command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--rss-mb", type=int, default=700, help="grow the process to this RSS first (ballast)")
    parser.add_argument("--technique", choices=TECHNIQUES, action="append")
    from kvstore.node.snapshotting import DEFAULT_TURN, TAKE_PAUSE

    parser.add_argument("--slice-ms", type=float, default=DEFAULT_TURN * 1000,
                        help="overlay: reactor time per cooperator turn (the node's default; Twisted's is 10)")
    parser.add_argument("--pause-ms", type=float, default=TAKE_PAUSE * 1000,
                        help="overlay: idle time between two cooperator turns (the node's default)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    techniques = args.technique or list(TECHNIQUES)
    global COOPERATOR_SLICE, COOPERATOR_PAUSE
    COOPERATOR_SLICE = args.slice_ms / 1000
    COOPERATOR_PAUSE = args.pause_ms / 1000
    if args.one:
        with tempfile.TemporaryDirectory() as directory:
            print(json.dumps(run_one(techniques[0], args.keys, args.rss_mb, directory)))
        return
    print(json.dumps({"loadavg": os.getloadavg(), "cpus": os.cpu_count(), "python": sys.version.split()[0]}))
    for technique in techniques:
        out = subprocess.run(
            [sys.executable, __file__, "--one", "--technique", technique, "--keys", str(args.keys),
             "--rss-mb", str(args.rss_mb), "--slice-ms", str(args.slice_ms), "--pause-ms", str(args.pause_ms)],
            capture_output=True, text=True,
        )
        line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else json.dumps({"technique": technique, "error": out.stderr[-2000:]})
        print(line, flush=True)
    print(json.dumps({"loadavg_after": os.getloadavg()}))


if __name__ == "__main__":
    main()
