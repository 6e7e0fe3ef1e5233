# -*- test-case-name: tests.fault.test_faults -*-
"""
Load for the fault suite: a concurrent client L{Workload} that records every
operation in a L{History}, and a L{TermMonitor} that counts elections.

Test support only: threads and blocking sockets, waiting with deadlines.
"""

from __future__ import annotations

import random
import socket
import threading
import time

from kvstore.testing.history import OK_STATUS, History, Record, classify
from kvstore.testing.processes import NodeProcess, ProcessCluster, wait_until

__all__ = ["TermMonitor", "Workload"]


class Workload:
    """
    C{clients} threads, each with its own connection, sending pipelined
    batches of PUT, GET and DELETE on a shared key space and recording every
    operation in a L{History}.  Writes go to the node believed to lead
    (redirects update the belief); reads go to a random running node half
    of the time, so that follower reads are exercised.  A request without a
    reply within C{timeout} seconds (a stopped or partitioned node) is
    recorded as unknown and the connection is dropped.
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
        self.leader_guess = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started = 0.0
        self.stopped = 0.0

    def start(self) -> "Workload":
        self.started = time.monotonic()
        for c in range(self.clients):
            t = threading.Thread(target=self._client, args=(c,), name=f"client-{c}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)
        self.stopped = time.monotonic()

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

    def _pick_node(self, rng: random.Random, write: bool) -> NodeProcess | None:
        running = self.cluster.running
        if not running:
            return None
        if write or rng.random() < 0.5:
            guess = self.cluster.nodes[self.leader_guess % len(self.cluster.nodes)]
            if guess.running:
                return guess
        return rng.choice(running)

    def _client(self, c: int) -> None:
        rng = random.Random(self.seed * 1000 + c)
        seq = 0
        pause = threading.Event()
        while not self._stop.is_set():
            node = self._pick_node(rng, rng.random() < 0.6)
            if node is None:
                pause.wait(0.05)
                continue
            try:
                sock = socket.create_connection((node.host, node.port), timeout=self.timeout)
            except OSError:
                pause.wait(0.05)
                continue
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._session(sock, node, c, rng, seq_start=seq)
            finally:
                seq += 100000
                sock.close()

    def _session(self, sock: socket.socket, node: NodeProcess, c: int, rng: random.Random, seq_start: int) -> None:
        """Send batches on one connection until an error or a redirect."""
        buffer = b""
        seq = seq_start
        for _ in range(50):  # then reconnect, to spread load across nodes
            if self._stop.is_set():
                return
            batch: list[Record] = []
            lines = []
            for _ in range(self.pipeline):
                kind = rng.choices(("put", "get", "delete"), (45, 45, 10))[0]
                key = rng.choice(self.keys)
                seq += 1
                value = f"c{c}-{seq}" if kind == "put" else None
                lines.append({"put": f"PUT {key} {value}", "get": f"GET {key}", "delete": f"DELETE {key}"}[kind])
                batch.append(Record(c, kind, key, value, 0.0, node.node_id))
            invoke = time.monotonic()
            for r in batch:
                r.invoke = invoke
                self.history.add(r)
            try:
                sock.sendall("".join(line + "\n" for line in lines).encode())
                for r in batch:
                    while b"\n" not in buffer:
                        chunk = sock.recv(65536)
                        if not chunk:
                            raise ConnectionResetError("closed")
                        buffer += chunk
                    line, _, buffer = buffer.partition(b"\n")
                    classify(r, line.decode("utf-8", "replace"), time.monotonic())
            except OSError:
                return  # the rest of the batch stays unknown
            redirected = False
            for r in batch:
                if r.reply and r.reply.startswith("Error: Not leader. Current leader is Node "):
                    try:
                        self.leader_guess = int(r.reply.split("Node ", 1)[1].split()[0])
                    except ValueError:
                        pass
                    redirected = True
                elif r.reply and r.reply.startswith("Error: Not leader."):
                    # No leader yet: try another node, after a short pause
                    # rather than a busy loop of refusals.
                    self.leader_guess = rng.randrange(len(self.cluster.nodes))
                    redirected = True
                    self._stop.wait(0.02)
            if redirected:
                return


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
