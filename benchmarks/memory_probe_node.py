"""
Run a kvstore node (C{twistd kvstore ...}) with a cheap memory probe inside
it, for C{benchmarks/compaction_figures.py --memory-probe} (figure 1: where
a node's RSS goes as writes accumulate).

    python benchmarks/memory_probe_node.py PROBE_FILE [twistd arguments...]

Every L{PERIOD} seconds (and on SIGUSR2, and at exit) it appends one JSON
line to PROBE_FILE with:

  - C{smaps}: the kernel's view, C{/proc/self/smaps_rollup} (kB): Rss,
    Anonymous, Private_Dirty, ...;
  - C{malloc}: glibc's C{mallinfo2()} (bytes): C{arena} (the main and
    thread heaps, obtained with brk/mmap and not returned), C{hblkhd}
    (blocks mmapped one by one), C{uordblks} (in use in the heaps),
    C{fordblks} (free in the heaps: fragmentation or reusable space),
    C{keepcost} (trimmable top);
  - C{py_blocks}: C{sys.getallocatedblocks()} (Python objects and buffers
    allocated through Python's allocators);
  - C{node}: the sizes of the node's growing parts: entries in the core's
    log and the WAL's memory, keys and sessions in the state machine,
    pending requests, bytes buffered toward each peer;
  - C{mmap_threshold}: what L{kvstore.allocator} set, if it ran.

With C{KVSTORE_PROBE_TYPES=1}, each sample also counts the gc-tracked
objects by type (the 25 most common): slower (a walk over every object),
so only for a diagnosis.  Nothing here changes kvstore.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
from typing import Any

#: Seconds between samples.
PERIOD = 2.0


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
    )]


def mallinfo2() -> dict[str, int] | None:
    try:
        libc = ctypes.CDLL(None)
        function = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    function.restype = _MallInfo2
    info = function()
    return {name: int(getattr(info, name)) for name, _ in _MallInfo2._fields_}


def smaps_rollup() -> dict[str, int]:
    fields: dict[str, int] = {}
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    fields[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        pass
    return fields


def node_sizes(node: Any) -> dict[str, Any]:
    sizes: dict[str, Any] = {}
    if node is None:
        return sizes

    def attempt(name: str, get: Any) -> None:
        try:
            sizes[name] = get()
        except Exception as e:  # a diagnostic: report, never break the node
            sizes[name] = f"error: {e!r}"

    attempt("core_log", lambda: len(node.core._log))
    attempt("wal_entries", lambda: len(node._wal._entries))
    attempt("keys", lambda: len(node.state_machine))
    attempt("sessions", lambda: len(node.state_machine._sessions))
    attempt("applied", lambda: node.state_machine.applied_index)
    for name in ("_pending_writes", "_pending_reads", "_reads_waiting_apply"):
        value = getattr(node, name, None)
        if value is not None and hasattr(value, "__len__"):
            sizes[name.lstrip("_")] = len(value)
    return sizes


def peer_buffers(links: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if links is None:
        return out
    for peer, link in sorted(getattr(links, "links", {}).items()):
        protocol = getattr(link, "protocol", None)
        transport = getattr(protocol, "transport", None)
        buffered = 0
        if transport is not None:
            buffered = len(getattr(transport, "dataBuffer", b"")) + sum(
                len(b) for b in getattr(transport, "_tempDataBuffer", []))
        out[str(peer)] = {"transport": buffered, "paused": getattr(protocol, "buffered_while_paused", None)}
    return out


class MemoryProbe:
    def __init__(self, path: str) -> None:
        self.path = path
        self.node: Any = None
        self.links: Any = None
        self.types = bool(os.environ.get("KVSTORE_PROBE_TYPES"))

    def sample(self, why: str = "period") -> None:
        record: dict[str, Any] = {
            "ns": time.monotonic_ns(),
            "why": why,
            "smaps": smaps_rollup(),
            "malloc": mallinfo2(),
            "py_blocks": sys.getallocatedblocks(),
            "node": node_sizes(self.node),
            "peers": peer_buffers(self.links),
        }
        try:
            from kvstore import allocator  # type: ignore[attr-defined]

            record["allocator"] = allocator.current_settings()
        except Exception:
            pass
        if self.types:
            import collections
            import gc

            counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
            record["types"] = counts.most_common(25)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def install(path: str) -> MemoryProbe:
    from twisted.internet import reactor, task

    import kvstore.daemon.service as service_module

    probe = MemoryProbe(path)
    original_build_node = service_module.build_node
    original_links = service_module.PeerLinks

    def build_node(*args: Any, **kwargs: Any) -> Any:
        probe.node = original_build_node(*args, **kwargs)
        return probe.node

    def peer_links(*args: Any, **kwargs: Any) -> Any:
        probe.links = original_links(*args, **kwargs)
        return probe.links

    service_module.build_node = build_node  # type: ignore[assignment]
    service_module.PeerLinks = peer_links  # type: ignore[assignment,misc]

    def start() -> None:
        probe.sample("start")
        task.LoopingCall(probe.sample).start(PERIOD, now=False)

    signal.signal(signal.SIGUSR2, lambda *_: reactor.callFromThread(probe.sample, "signal"))
    reactor.callWhenRunning(start)  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger("before", "shutdown", lambda: probe.sample("exit"))  # type: ignore[attr-defined]
    return probe


def main() -> None:
    path = sys.argv[1]
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    install(path)
    from kvstore.tools.spawn import run_twistd_child

    run_twistd_child()


if __name__ == "__main__":
    main()
