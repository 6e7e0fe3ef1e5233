# -*- test-case-name: tests.integration.test_exactly_once_process -*-
"""
The exactly-once verification of issue 14, with real processes: several
clients, each with its own L{kvstore.client.Client}, increment one counter
a fixed number of times while the leader is killed with SIGKILL and
restarted, twice.  Every client insists: a call that fails is made again
until one returns, as a program that must count each event once would do.
With exactly-once sessions the counter ends exactly at clients x increments
and the values the calls returned are exactly 1..N; without them, a call
that raised C{OutcomeUnknown} after being applied is counted again.

Used by C{tests/integration/test_exactly_once_process.py} (sessions on) and
C{benchmarks/exactly_once.py} (both, side by side).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from kvstore.client import Client
from kvstore.client.errors import ClientError, OutcomeUnknown
from kvstore.testing.processes import ProcessCluster, wait_until

__all__ = ["CounterRun", "run_counter"]

KEY = "counter"


@dataclass
class CounterRun:
    """
    What one run did.

    @ivar final: the counter's value at the end (a linearizable GET).
    @ivar returned: every value an C{incr} call returned.
    @ivar unknown: how many calls raised C{OutcomeUnknown} (each was made
        again).
    @ivar not_applied: how many calls raised another error (made again).
    @ivar kills: the node killed each time, and when (seconds from the start).
    """

    clients: int
    increments: int
    exactly_once: bool
    final: int = 0
    returned: list[int] = field(default_factory=list)
    unknown: int = 0
    not_applied: int = 0
    kills: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def expected(self) -> int:
        return self.clients * self.increments

    @property
    def repeated_values(self) -> int:
        """Returned values seen more than once (a value two calls share
        means one increment was counted for two calls or the reverse)."""
        return sum(n - 1 for n in Counter(self.returned).values() if n > 1)

    def describe(self) -> str:
        mode = "exactly-once sessions" if self.exactly_once else "without sessions"
        return (
            f"{self.clients} clients x {self.increments} incr, {mode}: final {self.final} "
            f"(expected {self.expected}, {self.final - self.expected:+d}), "
            f"{len(self.returned)} calls returned, {self.repeated_values} repeated values, "
            f"{self.unknown} OutcomeUnknown and {self.not_applied} other errors made again, "
            f"kills {', '.join(f'node {n} at {t:.1f}s' for n, t in self.kills)}, {self.seconds:.1f}s"
        )


def run_counter(
    cluster: ProcessCluster,
    *,
    clients: int = 8,
    increments: int = 1250,
    exactly_once: bool = True,
    kill_at: tuple[float, ...] = (0.2, 0.55),
    timeout: float = 30.0,
    deadline: float = 600.0,
) -> CounterRun:
    """
    Run the workload on C{cluster} (started, with a leader): at each
    fraction of C{kill_at} of the calls done, SIGKILL the leader, wait for
    a new one, and start the killed node again.
    """
    run = CounterRun(clients, increments, exactly_once)
    addresses = [node.address for node in cluster.nodes]
    done = [0]
    lock = threading.Lock()

    def work(number: int) -> None:
        mine: list[int] = []
        with Client(addresses, timeout=timeout, exactly_once=exactly_once) as kv:
            for _ in range(increments):
                while True:
                    try:
                        mine.append(kv.incr(KEY))
                        break
                    except OutcomeUnknown:
                        with lock:
                            run.unknown += 1
                    except ClientError as e:
                        with lock:
                            run.not_applied += 1
                            if len(run.errors) < 20:
                                run.errors.append(f"client {number}: {type(e).__name__}: {e}")
                with lock:
                    done[0] += 1
        with lock:
            run.returned.extend(mine)

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    total = clients * increments
    for fraction in kill_at:
        wait_until(lambda: done[0] >= fraction * total or not any(t.is_alive() for t in threads), deadline,
                   message=lambda: f"{fraction:.0%} of the calls")
        leader = cluster.wait_for_leader(timeout=60)
        leader.kill()
        run.kills.append((leader.node_id, time.monotonic() - started))
        cluster.wait_for_leader(timeout=60)
        leader.start()
        leader.wait_ready()
    for thread in threads:
        thread.join(max(0.0, deadline - (time.monotonic() - started)))
    if any(thread.is_alive() for thread in threads):
        raise AssertionError(f"clients still running after {deadline}s: {done[0]} of {total} calls done")
    run.seconds = time.monotonic() - started
    cluster.wait_for_leader(timeout=60)
    with Client(addresses, timeout=timeout) as kv:
        run.final = int(kv.get(KEY))
    return run
