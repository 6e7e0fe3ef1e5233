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

Each recorded stall also carries what tells its causes apart (all cheap
reads, every tick): C{runq_ms}, the time the reactor thread was runnable
but waiting on a run queue for a CPU (C{/proc/self/task/<tid>/schedstat});
C{proc_cpu_ms}, the CPU of all the process's threads; C{psi_ms}, the
machine's CPU pressure (C{/proc/pressure/cpu}).  What is neither C{cpu_ms}
nor C{runq_ms} the thread slept: for the GIL, in a blocking system call, or
in the poll's own 1 ms timeout.

Diagnostics, in the environment:

  - C{KVSTORE_PROBE_SPANS=1}: every reactor callback over 2 ms (I/O
    dispatch by protocol, timed calls, C{Node._process}, the cooperators'
    turns, compaction steps, the WAL's inline flushes, log and probe file
    writes, and the poll itself)
    as a C{"span"} record with its CPU, run-queue wait, page faults and
    preemptions (L{SpanRecorder}).
  - C{KVSTORE_PROBE_WATCHDOG=1}: samples of the reactor thread's scheduler
    state, kernel stack and Python stack during stalls (L{Watchdog}).

Experiments, in the environment:

  - C{KVSTORE_PROBE_SNAPSHOT_TURN_MS} and C{KVSTORE_PROBE_SNAPSHOT_PAUSE_MS}
    replace the snapshot cooperator's turn length and the pause between
    turns (L{kvstore.node.snapshotting.snapshot_cooperator}).
  - C{KVSTORE_PROBE_SNAPSHOT_CHUNK_BYTES}: encoded bytes per job of the
    snapshot thread (L{kvstore.node.snapshotting.take_snapshot}'s
    C{chunk_bytes}).
  - C{KVSTORE_PROBE_COMPACTION_STEP}: entries per log compaction step
    (L{kvstore.node.log_compaction.StepwiseCompaction}).
  - C{KVSTORE_PROBE_SLICE_US}: the reactor thread's EEVDF time slice
    (L{set_thread_slice}).
  - C{KVSTORE_PROBE_SWITCH_INTERVAL_MS}: C{sys.setswitchinterval}.
  - C{KVSTORE_PROBE_ARRAY_OFFSETS=1}: the write-ahead log's per-segment
    record offsets in an C{array('q')} (see the code).

Everything else goes to PROBE_FILE as JSON lines, appended once a second (a few
hundred bytes, on the reactor) and when the process exits, so a SIGKILL
loses at most the last second.  The probe itself costs the node a wake-up
per tick (about 2-3 % of a core at 1 ms on the reference machine); run it
only for the figure that needs it.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import struct
import sys
import threading
import time
from typing import Any, Callable

#: The probe's period (seconds).
TICK = 0.001
#: Stalls above this (ms) are recorded one by one; all are counted.
RECORD_ABOVE = 2.0
#: Histogram bucket upper bounds (ms of stall).
BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, float("inf"))
#: C{RUSAGE_THREAD} (Linux): the calling thread's resource usage.
RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", 1)
#: With C{KVSTORE_PROBE_SPANS=1}: reactor callbacks longer than this (ms of
#: wall time) are recorded one by one (L{SpanRecorder}).
SPAN_RECORD_ABOVE = 2.0


class ThreadSchedStat:
    """
    The calling thread's scheduler statistics from
    C{/proc/self/task/<tid>/schedstat}: nanoseconds on a CPU, nanoseconds
    runnable but waiting on a run queue (for a CPU), timeslices.  The
    second is what tells waiting for a CPU apart from sleeping (a thread
    waiting for the GIL or for I/O sleeps: it is not on a run queue).
    Reads return C{(0, 0)} where the file does not exist.
    """

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open(f"/proc/self/task/{threading.get_native_id()}/schedstat", os.O_RDONLY)
        except OSError:
            self._fd = None

    def read(self) -> tuple[int, int]:
        if self._fd is None:
            return (0, 0)
        fields = os.pread(self._fd, 100, 0).split()
        return (int(fields[0]), int(fields[1]))


class MachineCpuPressure:
    """The machine's C{/proc/pressure/cpu} "some" total (microseconds during
    which at least one task waited for a CPU), or 0 without PSI."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/proc/pressure/cpu", os.O_RDONLY)
        except OSError:
            self._fd = None

    def read(self) -> int:
        if self._fd is None:
            return 0
        first = os.pread(self._fd, 200, 0).split(b"\n", 1)[0]
        return int(first.rsplit(b"total=", 1)[1])


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
        # Created on the reactor thread (in start()): the reactor thread's.
        self.sched: ThreadSchedStat | None = None
        self.pressure = MachineCpuPressure()
        self.last_runq = 0
        self.last_proc_cpu = 0.0
        self.last_psi = 0
        self.known_threads: dict[str, list[Any]] = {}

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
        proc_cpu = time.process_time()
        runq = self.sched.read()[1] if self.sched is not None else 0
        psi = self.pressure.read()
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
                    # the reactor thread's time runnable but not running
                    # (waiting for a CPU); the rest of the gap that is
                    # neither this nor cpu_ms it slept (the GIL, I/O, or
                    # the poll's own 1 ms timeout)
                    "runq_ms": round((runq - self.last_runq) / 1e6, 3),
                    # CPU of every thread of the process in the gap
                    "proc_cpu_ms": round((proc_cpu - self.last_proc_cpu) * 1000.0, 3),
                    # the machine: time some task waited for a CPU (PSI)
                    "psi_ms": round((psi - self.last_psi) / 1e3, 3),
                    "end_ns": time.monotonic_ns(),
                })
        self._gc_ms = 0.0
        self.ticks += 1
        self.last = now
        self.last_cpu = cpu
        self.last_runq = runq
        self.last_proc_cpu = proc_cpu
        self.last_psi = psi

    def event(self, **fields: Any) -> None:
        fields["ns"] = time.monotonic_ns()
        self.pending.append(fields)

    def threads(self) -> None:
        """Record the process's threads (native id -> Python name, nice,
        scheduling policy) when they change, so that C{thread_cpu.py}'s
        samples can be told apart by role (the reactor is the main thread)."""
        found = {}
        for t in threading.enumerate():
            if t.native_id is None:
                continue
            try:
                nice: int | None = os.getpriority(os.PRIO_PROCESS, t.native_id)
                policy: int | None = os.sched_getscheduler(t.native_id)
            except (AttributeError, OSError):
                nice = policy = None
            found[str(t.native_id)] = [t.name, nice, policy]
        if found != self.known_threads:
            self.known_threads = found
            self.event(kind="threads", threads=found)

    def flush(self) -> None:
        self.threads()
        records = self.pending
        self.pending = []
        records.append({"histogram": self.histogram, "ticks": self.ticks, "ns": time.monotonic_ns()})
        with open(self.path, "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))


class SpanRecorder:
    """
    Times chosen reactor callbacks (C{KVSTORE_PROBE_SPANS=1}): each one
    longer than L{SPAN_RECORD_ABOVE} ms becomes a C{"span"} record with its
    name, start and end (C{CLOCK_MONOTONIC} ns), the reactor thread's CPU
    and run-queue wait in it, and the process's CPU (all threads) in it, so
    that a stall can be matched with what ran in it.  Costs a few
    microseconds per wrapped call.
    """

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.sched: ThreadSchedStat | None = None

    def wrap(self, owner: Any, attribute: str, name: Callable[..., str] | str) -> None:
        original = getattr(owner, attribute)
        recorder = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            sched = recorder.sched
            if sched is None or threading.get_native_id() != recorder.tid:
                return original(*args, **kwargs)
            start = time.monotonic_ns()
            cpu = time.thread_time_ns()
            proc = time.process_time_ns()
            runq = sched.read()[1]
            usage = resource.getrusage(RUSAGE_THREAD)
            try:
                return original(*args, **kwargs)
            finally:
                end = time.monotonic_ns()
                if (end - start) / 1e6 > SPAN_RECORD_ABOVE:
                    after = resource.getrusage(RUSAGE_THREAD)
                    recorder.probe.pending.append({
                        # the reactor thread's page faults and involuntary
                        # context switches (preemptions) in the span
                        "minflt": after.ru_minflt - usage.ru_minflt,
                        "majflt": after.ru_majflt - usage.ru_majflt,
                        "nivcsw": after.ru_nivcsw - usage.ru_nivcsw,
                        "kind": "span",
                        "name": name if isinstance(name, str) else name(*args, **kwargs),
                        "start_ns": start, "ns": end,
                        "ms": round((end - start) / 1e6, 3),
                        "cpu_ms": round((time.thread_time_ns() - cpu) / 1e6, 3),
                        "runq_ms": round((sched.read()[1] - runq) / 1e6, 3),
                        "proc_cpu_ms": round((time.process_time_ns() - proc) / 1e6, 3),
                    })

        setattr(owner, attribute, timed)

    def start(self) -> None:
        """On the reactor thread: the spans measured are that thread's."""
        self.tid = threading.get_native_id()
        self.sched = ThreadSchedStat()


class Watchdog:
    """
    C{KVSTORE_PROBE_WATCHDOG=1}: a thread that wakes every L{PERIOD} seconds
    and, while the reactor's current stall is longer than L{AFTER_MS}, takes
    a sample of the reactor thread every few milliseconds: its scheduler
    state (C{R} running or waiting for a CPU, C{S} sleeping, C{D} in
    uninterruptible I/O), its kernel wait channel and kernel stack (the
    stack needs root), and its innermost Python frames.  So a stall spent
    neither running nor on a run queue can be told apart: a GIL wait
    (C{S}, Python stack in the interpreter's wait) from a blocking file
    operation (C{D}, an ext4/jbd2 kernel stack).  Costs a GIL hand-off per
    sample, only during stalls.
    """

    PERIOD = 0.002
    AFTER_MS = 8.0
    EVERY_MS = 4.0

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def start(self) -> None:
        """On the reactor thread."""
        self.tid = threading.get_native_id()
        self.ident = threading.get_ident()
        threading.Thread(target=self.run, name="lag-probe-watchdog", daemon=True).start()

    def read(self, name: str) -> str:
        try:
            with open(f"/proc/self/task/{self.tid}/{name}") as f:
                return f.read()
        except OSError as e:
            return f"({e.strerror})"

    def run(self) -> None:
        import traceback

        last_sample = 0.0
        while True:
            time.sleep(self.PERIOD)
            last = self.probe.last
            if last is None:
                continue
            now = time.monotonic()
            stalled_ms = (now - last) * 1000.0
            if stalled_ms < self.AFTER_MS or (now - last_sample) * 1000.0 < self.EVERY_MS:
                continue
            last_sample = now
            state = self.read("stat").rsplit(")", 1)[-1].split()[0]
            frame = sys._current_frames().get(self.ident)
            stack = [f"{fs.filename.rsplit('/', 2)[-1]}:{fs.lineno}:{fs.name}"
                     for fs in traceback.extract_stack(frame)[-6:]] if frame is not None else []
            self.probe.pending.append({
                "kind": "watch", "ns": time.monotonic_ns(), "stalled_ms": round(stalled_ms, 1), "state": state,
                "wchan": self.read("wchan"),
                "kstack": [line.split(" ", 1)[-1] for line in self.read("stack").splitlines()[:12]],
                "pystack": stack,
            })


def install_spans(probe: Probe, reactor: Any) -> SpanRecorder:
    from twisted.internet.task import Cooperator

    from kvstore.node import log_compaction
    from kvstore.node import node as node_module

    spans = SpanRecorder(probe)

    def io_name(selectable: Any, fd: int, event: int) -> str:
        protocol = getattr(selectable, "protocol", selectable)
        return f"io:{type(protocol).__name__}"

    if hasattr(reactor, "_doReadOrWrite"):
        spans.wrap(reactor, "_doReadOrWrite", io_name)
    spans.wrap(reactor, "runUntilCurrent", "runUntilCurrent")
    poller = getattr(reactor, "_poller", None)
    if poller is not None:
        # epoll_wait plus taking the GIL back: a poll far longer than its
        # timeout waited for the GIL (or a CPU: see runq_ms).
        class TimedPoller:
            def __init__(self, inner: Any) -> None:
                self._inner = inner

            def __getattr__(self, name: str) -> Any:
                return getattr(self._inner, name)

        timed_poller = TimedPoller(poller)
        spans.wrap(timed_poller, "poll", lambda timeout=-1, *a: f"poll(timeout={timeout})")
        reactor._poller = timed_poller
    spans.wrap(node_module.Node, "_process", "Node._process")
    spans.wrap(Cooperator, "_tick", "Cooperator._tick")
    spans.wrap(log_compaction.StepwiseCompaction, "_step", "StepwiseCompaction._step")
    # The write-ahead log's flushes run on the reactor while the disk is
    # fast (issue 16): a long one with no CPU and no run-queue wait is the
    # reactor blocked in fdatasync (behind another process's snapshot fsync).
    from kvstore.storage import wal as wal_module

    if hasattr(wal_module, "InlineFlushPolicy"):
        spans.wrap(wal_module.InlineFlushPolicy, "run_timed", "inline WAL flush")
    # File writes on the reactor thread: the node's log, and the probe's own
    # records (once a second).
    from twisted.python import logfile

    spans.wrap(logfile.LogFile, "write", "LogFile.write")
    spans.wrap(probe, "flush", "Probe.flush")
    return spans


def set_thread_slice(ns: int) -> tuple[int, int]:
    """
    Experiment (C{KVSTORE_PROBE_SLICE_US}): ask the kernel's EEVDF scheduler
    (Linux >= 6.12) for a custom time slice for the calling thread, through
    C{sched_setattr}'s C{sched_runtime} for a C{SCHED_OTHER} thread.  A
    shorter slice gives an earlier virtual deadline, so a thread that wakes
    after a short sleep is picked (and may preempt) sooner; its share of the
    CPU is unchanged (that is its nice value's).  x86-64 only; returns the
    (old, new) slice in ns.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    sys_setattr, sys_getattr = 314, 315
    layout = "IIQiIQQQII"
    buf = ctypes.create_string_buffer(struct.calcsize(layout))
    if libc.syscall(sys_getattr, 0, buf, len(buf), 0) != 0:
        raise OSError(ctypes.get_errno(), "sched_getattr")
    size, policy, flags, nice, priority, old, *_ = struct.unpack(layout, buf.raw)
    new = struct.pack(layout, len(buf), policy, 0, nice, priority, ns, 0, 0, 0, 0)
    if libc.syscall(sys_setattr, 0, ctypes.c_char_p(new), 0) != 0:
        raise OSError(ctypes.get_errno(), "sched_setattr")
    libc.syscall(sys_getattr, 0, buf, len(buf), 0)
    return old, struct.unpack(layout, buf.raw)[5]


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
    chunk_bytes = os.environ.get("KVSTORE_PROBE_SNAPSHOT_CHUNK_BYTES")
    if chunk_bytes:
        # Experiment: bytes of encoded content per job of the snapshot
        # thread (writing and hashing; the default is about 1 MiB).  Fewer,
        # larger jobs mean fewer GIL hand-offs between it and the reactor.
        from kvstore.node import snapshotting as snapshotting_module

        defaults = snapshotting_module.take_snapshot.__kwdefaults__
        if defaults is not None:
            defaults["chunk_bytes"] = int(chunk_bytes)
        probe.event(kind="snapshot_chunk_bytes", bytes=int(chunk_bytes))
    node_snapshots.NodeSnapshots.take = take  # type: ignore[method-assign]
    node_snapshots.NodeSnapshots.restore = restore  # type: ignore[method-assign]

    spans = install_spans(probe, reactor) if os.environ.get("KVSTORE_PROBE_SPANS") else None
    switch_ms = os.environ.get("KVSTORE_PROBE_SWITCH_INTERVAL_MS")
    if switch_ms:
        # Experiment: how long a thread holding the GIL keeps it once
        # another thread asks (Python's default: 5 ms).
        sys.setswitchinterval(float(switch_ms) / 1000)
        probe.event(kind="switch_interval", ms=float(switch_ms))

    step_entries = os.environ.get("KVSTORE_PROBE_COMPACTION_STEP")
    if step_entries:
        # Experiment: entries dropped per compaction step.
        from kvstore.node import log_compaction

        original_init = log_compaction.StepwiseCompaction.__init__

        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            kwargs["step_entries"] = int(step_entries)
            original_init(self, *args, **kwargs)

        log_compaction.StepwiseCompaction.__init__ = init  # type: ignore[method-assign]
        probe.event(kind="compaction_step", entries=int(step_entries))
    if os.environ.get("KVSTORE_PROBE_ARRAY_OFFSETS"):
        # Experiment: each WAL segment's record offsets in an array('q')
        # instead of a list of ints, so that dropping a whole segment after
        # a snapshot frees one buffer, not one int object per record (about
        # 500,000 of them for a full segment: 5-12 ms of the reactor's CPU).
        from array import array

        from kvstore.storage import wal as wal_module

        original_segment_init = wal_module._Segment.__init__

        def segment_init(self: Any, *args: Any, **kwargs: Any) -> None:
            original_segment_init(self, *args, **kwargs)
            self.offsets = array("q", self.offsets)

        wal_module._Segment.__init__ = segment_init  # type: ignore[method-assign]
        probe.event(kind="array_offsets")
    slice_us = os.environ.get("KVSTORE_PROBE_SLICE_US")
    watchdog = Watchdog(probe) if os.environ.get("KVSTORE_PROBE_WATCHDOG") else None

    def start() -> None:
        import gc

        if slice_us:
            old, new = set_thread_slice(int(float(slice_us) * 1000))
            probe.event(kind="slice", old_ns=old, new_ns=new)
        probe.sched = ThreadSchedStat()
        if spans is not None:
            spans.start()
        if watchdog is not None:
            watchdog.start()
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
