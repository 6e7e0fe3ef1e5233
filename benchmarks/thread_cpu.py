"""
Sample the CPU time of every thread of some processes, and of the kernel's
threads, for C{benchmarks/compaction_figures.py} (figure 6, C{--thread-cpu}).

    python benchmarks/thread_cpu.py OUT SECONDS INTERVAL PID...

Every C{INTERVAL} seconds for C{SECONDS}, one JSON line to C{OUT}:
C{{"ns": CLOCK_MONOTONIC ns, "t": {tid: [cpu_ns, runq_ns]}, "stat": [user,
nice, system, idle, iowait, irq, softirq] jiffies}} with every thread of the
C{PID}s (from C{/proc/PID/task/TID/schedstat}: nanoseconds on a CPU and
runnable but waiting for one) and the kernel threads that do I/O work on
the nodes' behalf (L{KERNEL_THREADS}: the writeback C{kworker}s, C{jbd2},
C{ksoftirqd}, ...), whose CPU the nodes' threads do not see.  A line C{{"tasks": {tid: [pid, comm]}}} names
each thread the first time it is seen.  The figure script sets the
thread's roles from the nodes' probes (C{threads} records: the Python
thread names, the reactor being the main thread).

A sample costs about half a millisecond of CPU (2-3 % of a core at the
figure's 50 ms); run it niced.  Without the
processes it exits when they have all gone.
"""

from __future__ import annotations

import json
import os
import sys
import time


#: The kernel threads sampled (by name prefix): writeback and block I/O,
#: the ext4 journal, soft interrupts, memory monitoring and reclaim, RCU.
KERNEL_THREADS = ("kworker", "jbd2", "ksoftirqd", "kdamond", "kswapd", "rcu")


def kernel_threads() -> list[int]:
    """The pids of kthreadd's children (kernel threads) named in L{KERNEL_THREADS}."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                head, tail = f.read().rsplit(")", 1)
        except OSError:
            continue
        if tail.split()[1] == "2" and head.split("(", 1)[1].startswith(KERNEL_THREADS):  # ppid: kthreadd
            found.append(int(name))
    return found


def read_schedstat(path: str) -> list[int] | None:
    try:
        with open(path) as f:
            cpu, runq, _ = f.read().split()
        return [int(cpu), int(runq)]
    except (OSError, ValueError):
        return None


def comm(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "?"


def main() -> None:
    out, seconds, interval = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    pids = [int(p) for p in sys.argv[4:]]
    named: set[int] = set()
    kthreads = kernel_threads()
    last_scan = time.monotonic()
    end = time.monotonic() + seconds
    with open(out, "w") as f:
        while time.monotonic() < end:
            if time.monotonic() - last_scan > 1.0:
                kthreads = kernel_threads()
                last_scan = time.monotonic()
            sample: dict[str, list[int]] = {}
            new: dict[str, list[object]] = {}
            alive = False
            for pid in pids:
                try:
                    tids = os.listdir(f"/proc/{pid}/task")
                except OSError:
                    continue
                alive = True
                for tid in tids:
                    stat = read_schedstat(f"/proc/{pid}/task/{tid}/schedstat")
                    if stat is not None:
                        sample[tid] = stat
                        if int(tid) not in named:
                            named.add(int(tid))
                            new[tid] = [pid, comm(f"/proc/{pid}/task/{tid}/comm")]
            for pid in kthreads:
                stat = read_schedstat(f"/proc/{pid}/schedstat")
                if stat is not None:
                    sample[str(pid)] = stat
                    if pid not in named:
                        named.add(pid)
                        new[str(pid)] = [2, comm(f"/proc/{pid}/comm")]
            with open("/proc/stat") as s:
                cpu_line = s.readline().split()[1:8]
            if new:
                f.write(json.dumps({"tasks": new}) + "\n")
            f.write(json.dumps({"ns": time.monotonic_ns(), "t": sample, "stat": [int(x) for x in cpu_line]}) + "\n")
            if pids and not alive:
                break
            time.sleep(interval)


if __name__ == "__main__":
    main()
