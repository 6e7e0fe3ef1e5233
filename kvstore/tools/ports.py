# -*- test-case-name: tests.test_tools_helpers -*-
"""
Free TCP ports on 127.0.0.1 for local node processes: one finder for the
benchmark (L{kvstore.tools.bench}), the comparison scripts in benchmarks/
and the process harness (L{kvstore.testing.processes}).

Ports come from below Linux's usual ephemeral range (32768-60999), so an
outgoing connection (a client reconnecting to a dead node, say) never takes
a port a node is about to listen on, or connects to itself.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time

__all__ = ["allocate_port", "allocate_port_range", "port_is_free"]

#: Ports handed out by this process, never handed out twice.
_allocated: set[int] = set()
_allocation_lock = threading.Lock()
_rng = random.Random(os.getpid() ^ time.monotonic_ns())


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether C{port} on C{host} can be bound now."""
    # Without SO_REUSEADDR: stricter than the node (Twisted sets it), so a
    # port in TIME_WAIT is skipped rather than handed out.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def allocate_port_range(count: int = 1, low: int = 20000, high: int = 29999, also: tuple[int, ...] = ()) -> int:
    """
    Find C{count} consecutive free TCP ports on 127.0.0.1 in C{[low, high]}
    and return the first, C{base}; with C{also}, C{base + a} must be free as
    well for each offset C{a} in it (a second service beside each node).

    Ports are chosen at random (seeded per process, so concurrent runs
    rarely try the same ones) and never handed out twice by one process.
    """
    span = count + max(also, default=0)
    for _ in range(1000):
        base = _rng.randint(low, high - span + 1)
        ports = [*range(base, base + count), *(base + a for a in also)]
        with _allocation_lock:
            if any(p in _allocated for p in ports):
                continue
            if all(port_is_free(p) for p in ports):
                _allocated.update(ports)
                return base
    raise RuntimeError(f"no {count} consecutive free ports in {low}-{high}")


def allocate_port(low: int = 20000, high: int = 29999) -> int:
    """One free TCP port on 127.0.0.1; see L{allocate_port_range}."""
    return allocate_port_range(1, low, high)
