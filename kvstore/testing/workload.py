# -*- test-case-name: tests.fault.test_faults -*-
"""
Load for the fault suite: a concurrent L{Workload} of client-library calls
that records every operation in a L{History}, and a L{TermMonitor} that
counts elections.

Test support only: the workload runs its own asyncio loop in a thread (the
library's L{AsyncClient}); the rest waits with deadlines.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time

from kvstore.client.asyncio import AsyncClient
from kvstore.client.errors import ClientError
from kvstore.testing.history import FAILED, OK_STATUS, History, Record, settle
from kvstore.testing.processes import ProcessCluster, wait_until

__all__ = ["TermMonitor", "Workload"]


class Workload:
    """
    C{clients} clients of the library (L{AsyncClient}, one event loop in a
    thread of its own), each with C{pipeline} calls in flight, sending PUT,
    GET and DELETE on a shared key space and recording every call in a
    L{History}.  Writes go through each client's leader-following
    connection; reads go there half of the time and otherwise to a random
    running node (a client listing that node alone), so that follower reads
    are exercised.

    Each call is recorded before it is made (C{invoke}, before anything is
    sent) and settled when it returns (C{complete}, after the reply): the
    window the linearizability checker needs.  What the library raises
    decides the outcome (L{settle}); a write whose outcome is unknown (the
    library's C{OutcomeUnknown}, or no reply within C{timeout} seconds)
    stays unknown.
    """

    def __init__(
        self,
        cluster: ProcessCluster,
        history: History,
        clients: int = 24,
        pipeline: int = 4,
        keys: int = 64,
        timeout: float = 3.0,
        seed: int = 0,
    ) -> None:
        self.cluster = cluster
        self.history = history
        self.clients = clients
        self.pipeline = pipeline
        self.keys = [f"k{i}" for i in range(keys)]
        self.timeout = timeout
        self.seed = seed
        #: The node believed to lead when the workload starts: listed first
        #: by every client, so that the first writes need no redirect.
        self.leader_guess = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._errors: list[BaseException] = []
        self.started = 0.0
        self.stopped = 0.0

    def start(self) -> "Workload":
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run_loop, name="workload", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop making calls; wait (about C{timeout} at most) for those in flight."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 10)
        self.stopped = time.monotonic()
        if self._errors:
            raise AssertionError(f"the workload failed: {self._errors[0]!r}") from self._errors[0]

    def successful_writes_since(self, since: float) -> int:
        return sum(1 for r in self.history.snapshot()
                   if r.kind != "get" and r.status == OK_STATUS and r.complete is not None and r.complete > since)

    def wait_progress(self, since: float, writes: int = 20, timeout: float = 20.0) -> float:
        """Wait until C{writes} writes invoked after C{since} succeeded;
        return how long that took from C{since}."""
        def enough() -> bool:
            return sum(1 for r in self.history.snapshot()
                       if r.kind != "get" and r.status == OK_STATUS and r.invoke > since) >= writes
        wait_until(enough, timeout, message=lambda: f"{writes} successful writes\n"
                   + "\n".join(n.describe() for n in self.cluster.nodes))
        return time.monotonic() - since

    # -- the load, on the workload's own event loop -----------------------

    def _run_loop(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported by stop()
            self._errors.append(e)

    async def _main(self) -> None:
        nodes = self.cluster.nodes
        first = self.leader_guess % len(nodes)
        everyone = [n.address for n in nodes[first:] + nodes[:first]]
        clients = []
        try:
            lanes = []
            for c in range(self.clients):
                leader_client = AsyncClient(everyone, timeout=self.timeout, backoff=(0.01, 0.1), exactly_once=False)
                node_clients = {n.node_id: AsyncClient([n.address], timeout=self.timeout, backoff=(0.01, 0.1),
                                                          exactly_once=False)
                                for n in nodes}
                clients += [leader_client, *node_clients.values()]
                for lane in range(self.pipeline):
                    rng = random.Random((self.seed * 1000 + c) * 100 + lane)
                    lanes.append(self._lane(c, lane, rng, leader_client, node_clients))
            await asyncio.gather(*lanes)
        finally:
            for client in clients:
                client.close()

    async def _lane(self, c: int, lane: int, rng: random.Random, leader_client: AsyncClient,
                    node_clients: dict[int, AsyncClient]) -> None:
        seq = 0
        by_address = {n.address: n.node_id for n in self.cluster.nodes}
        while not self._stop.is_set():
            kind = rng.choices(("put", "get", "delete"), (45, 45, 10))[0]
            key = rng.choice(self.keys)
            seq += 1
            value = f"c{c}.{lane}-{seq}" if kind == "put" else None
            client = leader_client
            if kind == "get" and rng.random() < 0.5:
                running = self.cluster.running
                if running:
                    client = node_clients[rng.choice(running).node_id]
            record = self.history.add(Record(c, kind, key, value, time.monotonic(), -1))
            result: str | None = None
            error: ClientError | None = None
            try:
                if kind == "put":
                    await client.put(key, value)  # type: ignore[arg-type]  # a put always has a value
                elif kind == "get":
                    result = await client.get(key)
                else:
                    await client.delete(key)
            except ClientError as e:
                error = e
            settle(record, time.monotonic(), result, error)
            record.node = by_address.get(client.node or "", -1)
            if record.status == FAILED:
                await asyncio.sleep(0.02)  # nothing to talk to: do not spin


class TermMonitor:
    """
    Polls every running node's STATUS in the background and records the
    highest term seen, to count elections (term changes) during a scenario.
    """

    def __init__(self, cluster: ProcessCluster, interval: float = 0.1) -> None:
        self.cluster = cluster
        self.interval = interval
        self.max_term = 0
        self.first_term: int | None = None
        self.leaders: list[tuple[float, int, int]] = []  # (time, term, leader)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="term-monitor", daemon=True)

    def start(self) -> "TermMonitor":
        self.poll()
        self.first_term = self.max_term
        self._thread.start()
        return self

    def poll(self) -> None:
        for node in self.cluster.running:
            try:
                status = node.status(timeout=0.5)
            except (OSError, ValueError):
                continue
            term = int(status["term"])
            self.max_term = max(self.max_term, term)
            if status["role"] == "leader" and (not self.leaders or self.leaders[-1][1:] != (term, node.node_id)):
                self.leaders.append((time.monotonic(), term, node.node_id))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.poll()

    @property
    def elections(self) -> int:
        return self.max_term - (self.first_term or 0)
