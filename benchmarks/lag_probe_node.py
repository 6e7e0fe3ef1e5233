"""
Run a kvstore node (C{twistd kvstore ...}) with a reactor-lag probe inside
it, for C{benchmarks/compaction_figures.py} (figure 6).

    python benchmarks/lag_probe_node.py PROBE_FILE [twistd arguments...]

What it adds to the node process, without changing kvstore:

  - a C{LoopingCall} every L{TICK} seconds on the node's own reactor; a
    I{stall} is the gap between two ticks minus the tick period, measured
    with C{time.monotonic}.  Every stall above L{RECORD_ABOVE} is recorded
    with the C{CLOCK_MONOTONIC} time it ended (one clock for every process
    on the machine, so the figures script can line it up with its writes)
    and the CPU time the reactor thread used during it (C{time.thread_time}:
    a long stall with little CPU was spent waiting, for a CPU or the GIL);
    smaller ones are only counted into a histogram.
  - the start and end of every snapshot the node takes
    (L{kvstore.node.snapshots.NodeSnapshots.take}, wrapped), of the node's
    work once it is durable (L{kvstore.node.node.Node._snapshot_done}: telling
    the core, compacting the log, pruning), and of every snapshot it
    restores (InstallSnapshot), with their index.

With C{KVSTORE_PROBE_TRACEMALLOC=1} in its environment it also runs
C{tracemalloc} (which slows the node several times: a diagnostic for
memory growth, not for timing) and, on each SIGUSR1, dumps a tracemalloc
snapshot to C{PROBE_FILE.tm<N>} and the counts of gc-tracked objects by type
to C{PROBE_FILE.types<N>}.

C{KVSTORE_PROBE_SNAPSHOT_TURN_MS} and C{KVSTORE_PROBE_SNAPSHOT_PAUSE_MS}
replace the snapshot cooperator's turn length and the pause between turns
(L{kvstore.node.snapshotting.snapshot_cooperator}), for experiments.

Everything else goes to PROBE_FILE as JSON lines, appended once a second (a few
hundred bytes, on the reactor) and when the process exits, so a SIGKILL
loses at most the last second.  The probe itself costs the node a wake-up
per tick (about 2-3 % of a core at 1 ms on the reference machine); run it
only for the figure that needs it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

#: The probe's period (seconds).
TICK = 0.001
#: Stalls above this (ms) are recorded one by one; all are counted.
RECORD_ABOVE = 2.0
#: Histogram bucket upper bounds (ms of stall).
BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, float("inf"))


class Probe:
    def __init__(self, path: str) -> None:
        self.path = path
        self.pending: list[dict[str, Any]] = []
        self.histogram = [0] * len(BUCKETS)
        self.ticks = 0
        self.last: float | None = None
        self.last_cpu = 0.0
        self._gc_started: float | None = None
        self._gc_ms = 0.0  # collection time since the last tick

    def gc_callback(self, phase: str, info: dict[str, Any]) -> None:
        """Record every garbage collection longer than L{RECORD_ABOVE} ms
        (C{gc.callbacks}): a generation-2 collection runs inside whatever
        allocation triggered it, so it shows as part of a stall."""
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started is not None:
            ms = (time.perf_counter() - self._gc_started) * 1000.0
            self._gc_started = None
            self._gc_ms += ms
            if ms > RECORD_ABOVE:
                self.pending.append({"kind": "gc", "generation": info.get("generation"), "gc_ms": round(ms, 3),
                                     "collected": info.get("collected"), "ns": time.monotonic_ns()})

    def tick(self) -> None:
        now = time.monotonic()
        cpu = time.thread_time()
        if self.last is not None:
            stall_ms = max(0.0, (now - self.last - TICK) * 1000.0)
            for i, bound in enumerate(BUCKETS):
                if stall_ms <= bound:
                    self.histogram[i] += 1
                    break
            if stall_ms > RECORD_ABOVE:
                # cpu_ms: what the reactor thread itself ran in the gap; the
                # rest of the gap it waited (for a CPU, the GIL, or I/O).
                self.pending.append({
                    "stall_ms": round(stall_ms, 3),
                    "cpu_ms": round((cpu - self.last_cpu) * 1000.0, 3),
                    # wall time of garbage collections inside the gap
                    "gc_ms": round(self._gc_ms, 3),
                    "end_ns": time.monotonic_ns(),
                })
        self._gc_ms = 0.0
        self.ticks += 1
        self.last = now
        self.last_cpu = cpu

    def event(self, **fields: Any) -> None:
        fields["ns"] = time.monotonic_ns()
        self.pending.append(fields)

    def flush(self) -> None:
        records = self.pending
        self.pending = []
        records.append({"histogram": self.histogram, "ticks": self.ticks, "ns": time.monotonic_ns()})
        with open(self.path, "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))


def install(path: str) -> Probe:
    from twisted.internet import reactor, task

    from kvstore.node import snapshots as node_snapshots

    probe = Probe(path)
    original_take = node_snapshots.NodeSnapshots.take
    original_restore = node_snapshots.NodeSnapshots.restore

    def take(self: Any, machine: Any, make_meta: Any) -> Any:
        index = machine.applied_index
        probe.event(kind="snapshot_start", index=index, keys=len(machine))

        def done(result: object) -> object:
            probe.event(kind="snapshot_end", index=index, ok=not hasattr(result, "getErrorMessage"))
            return result

        return original_take(self, machine, make_meta).addBoth(done)

    def restore(self: Any, machine: Any, index: int, term: int) -> Any:
        probe.event(kind="restore_start", index=index)

        def done(result: object) -> object:
            probe.event(kind="restore_end", index=index, ok=not hasattr(result, "getErrorMessage"))
            return result

        return original_restore(self, machine, index, term).addBoth(done)

    from kvstore.node import node as node_module

    original_done = node_module.Node._snapshot_done

    def snapshot_done(self: Any, info: Any, *args: Any) -> None:
        # After the file is durable: the core is told, the log compacted,
        # old snapshots pruned -- on the reactor, so it belongs to the window.
        # (*args: the node's signature has changed before, and a TypeError
        # here is swallowed by the node's errback: no compaction at all.)
        probe.event(kind="snapshot_done_start", index=info.index)
        try:
            original_done(self, info, *args)
        finally:
            compaction = getattr(self, "compaction", None)
            if compaction is not None and compaction.running:
                # The log is dropped in steps over the next reactor turns
                # (kvstore.node.log_compaction): the window ends with the last.
                self._probe_compacting = info.index
            else:
                probe.event(kind="snapshot_done_end", index=info.index)

    node_module.Node._snapshot_done = snapshot_done  # type: ignore[method-assign]
    original_finished = getattr(node_module.Node, "_compaction_finished", None)
    if original_finished is not None:

        def compaction_finished(self: Any, through: int) -> None:
            original_finished(self, through)
            index = getattr(self, "_probe_compacting", None)
            if index is not None:
                self._probe_compacting = None
                probe.event(kind="snapshot_done_end", index=index, compacted_through=through)

        node_module.Node._compaction_finished = compaction_finished  # type: ignore[method-assign]

    # Experiments: the snapshot cooperator's turn and pause between turns.
    turn_ms = os.environ.get("KVSTORE_PROBE_SNAPSHOT_TURN_MS")
    pause_ms = os.environ.get("KVSTORE_PROBE_SNAPSHOT_PAUSE_MS")
    if turn_ms or pause_ms:
        from kvstore.node import snapshotting

        original_cooperator = snapshotting.snapshot_cooperator

        def cooperator(clock: Any, turn: float = snapshotting.DEFAULT_TURN, max_steps: Any = None,
                       pause: float = 0.0) -> Any:
            # Replaces both the taking (paused) and the installing one.
            return original_cooperator(
                clock,
                float(turn_ms) / 1000 if turn_ms else turn,
                max_steps,
                float(pause_ms) / 1000 if pause_ms else pause,
            )

        snapshotting.snapshot_cooperator = cooperator  # type: ignore[assignment]
        probe.event(kind="cooperator", turn_ms=turn_ms, pause_ms=pause_ms)
    node_snapshots.NodeSnapshots.take = take  # type: ignore[method-assign]
    node_snapshots.NodeSnapshots.restore = restore  # type: ignore[method-assign]

    def start() -> None:
        import gc

        gc.callbacks.append(probe.gc_callback)
        probe.event(kind="probe_start", pid=os.getpid())
        task.LoopingCall(probe.tick).start(TICK, now=False)
        task.LoopingCall(probe.flush).start(1.0, now=False)

    if os.environ.get("KVSTORE_PROBE_TRACEMALLOC"):
        install_memory_dumps(path, reactor)
    reactor.callWhenRunning(start)  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger("after", "shutdown", probe.flush)  # type: ignore[attr-defined]
    return probe


def install_memory_dumps(path: str, reactor: Any) -> None:
    import collections
    import gc
    import signal
    import tracemalloc

    tracemalloc.start(8)
    dumps = [0]

    def dump() -> None:
        dumps[0] += 1
        tracemalloc.take_snapshot().dump(f"{path}.tm{dumps[0]}")
        counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
        with open(f"{path}.types{dumps[0]}", "w") as f:
            json.dump(counts.most_common(60), f)

    signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(dump))


def main() -> None:
    path = sys.argv[1]
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    install(path)
    from kvstore.tools.spawn import run_twistd_child

    run_twistd_child()


if __name__ == "__main__":
    main()
