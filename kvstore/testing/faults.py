# -*- test-case-name: tests.fault -*-
"""
Fault injection for tests against real node processes: process metrics, a
fault-injecting TCP proxy between peers, and a concurrent client workload
that records a history of every operation.

This is test support only: blocking sockets and threads, polling with
deadlines.
"""

from __future__ import annotations

import random
import selectors
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from kvstore.testing.processes import (
    FAST_ELECTIONS,
    NodeProcess,
    ProcessCluster,
    allocate_port_range,
    wait_until,
)

__all__ = [
    "PeerProxy",
    "ProxiedCluster",
    "History",
    "Record",
    "Workload",
    "TermMonitor",
    "check_no_lost_writes",
    "summarize",
]

#: Stop reading from one side of a proxied connection while this much of
#: its data waits to be written to the other side (a stopped peer).
_MAX_PENDING = 4 * 1024 * 1024


class _Pipe:
    """One proxied connection: C{a} accepted from the sending node, C{b}
    connected to the receiving node; bytes flow both ways."""

    __slots__ = ("link", "a", "b", "pending")

    def __init__(self, link: tuple[int, int], a: socket.socket, b: socket.socket) -> None:
        self.link = link
        self.a = a
        self.b = b
        self.pending = {a: bytearray(), b: bytearray()}  # data waiting to be written to that socket

    def other(self, s: socket.socket) -> socket.socket:
        return self.b if s is self.a else self.a


class PeerProxy:
    """
    A TCP proxy for every ordered pair of nodes: node C{i} is told that peer
    C{j} lives at C{port_for[(i, j)]}, which forwards to C{j}'s real port.
    Peer links are one-way (C{i} sends its messages to C{j} on the
    connection C{i} opened), so cutting C{(i, j)} and C{(j, i)} partitions
    the two nodes completely, and cutting one of them is an asymmetric
    partition.

    Two ways to cut a link:
      - C{"drop"}: close its connections and close every new one at once,
        as a host that answers with resets;
      - C{"stall"}: stop reading and accepting, as a network that silently
        loses packets; the sender sees a connected, stuck link.  Healing
        resumes the stalled connections where they stopped.

    One selector thread does all the forwarding, with non-blocking sockets,
    so a stopped node never blocks the traffic of the others.
    """

    def __init__(self, node_ports: dict[int, int], host: str = "127.0.0.1") -> None:
        self.host = host
        self.node_ports = dict(node_ports)
        ids = sorted(node_ports)
        links = [(i, j) for i in ids for j in ids if i != j]
        base = allocate_port_range(len(links))
        self.port_for = {link: base + n for n, link in enumerate(links)}
        self._cut: dict[tuple[int, int], str] = {}
        self._pipes: set[_Pipe] = set()
        self._lock = threading.Lock()
        self._commands: list[Callable[[], None]] = []
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._listeners: dict[tuple[int, int], socket.socket] = {}
        for link, port in self.port_for.items():
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(64)
            listener.setblocking(False)
            self._listeners[link] = listener
            self._selector.register(listener, selectors.EVENT_READ, ("accept", link))
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="peer-proxy", daemon=True)
        self._thread.start()

    # -- control (any thread) -------------------------------------------

    def _call(self, command: Callable[[], None]) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                command()
            finally:
                done.set()

        with self._lock:
            self._commands.append(run)
        self._wake_w.send(b"x")
        if not done.wait(10):
            raise RuntimeError("the proxy thread did not answer")

    def cut(self, links: Iterable[tuple[int, int]], mode: str = "drop") -> None:
        """Cut the given ordered links (C{(sender, receiver)})."""
        assert mode in ("drop", "stall")
        links = list(links)
        self._call(lambda: [self._cut_link(link, mode) for link in links])

    def isolate(self, node: int, mode: str = "drop") -> None:
        """Cut every link to and from C{node}."""
        self.cut([l for l in self.port_for if node in l], mode)

    def split(self, groups: Sequence[Iterable[int]], mode: str = "drop") -> None:
        """Cut every link between different groups."""
        where = {n: g for g, members in enumerate(groups) for n in members}
        self.cut([l for l in self.port_for if where.get(l[0]) != where.get(l[1])], mode)

    def heal(self) -> None:
        """Restore every link."""
        self._call(self._heal)

    @property
    def cut_links(self) -> dict[tuple[int, int], str]:
        return dict(self._cut)

    def close(self) -> None:
        if self._stopping:
            return
        self._call(self._close_all)
        self._thread.join(10)

    # -- the proxy thread ----------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            for key, mask in self._selector.select(0.5):
                kind, data = key.data
                try:
                    if kind == "wake":
                        self._wake_r.recv(4096)
                        with self._lock:
                            commands, self._commands = self._commands, []
                        for command in commands:
                            command()
                    elif kind == "accept":
                        self._accept(data)
                    else:
                        self._io(key.fileobj, data, mask)  # type: ignore[arg-type]
                except Exception:  # pragma: no cover - keep forwarding the rest
                    import traceback

                    traceback.print_exc()

    def _accept(self, link: tuple[int, int]) -> None:
        listener = self._listeners[link]
        try:
            a, _ = listener.accept()
        except BlockingIOError:
            return
        if self._cut.get(link) == "drop":
            _reset(a)
            return
        try:
            b = socket.create_connection((self.host, self.node_ports[link[1]]), timeout=2)
        except OSError:
            _reset(a)
            return
        for s in (a, b):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pipe = _Pipe(link, a, b)
        self._pipes.add(pipe)
        self._update(pipe)

    def _events(self, pipe: _Pipe, s: socket.socket) -> int:
        if link_cut := self._cut.get(pipe.link):
            assert link_cut == "stall"
            return 0
        events = 0
        if len(pipe.pending[pipe.other(s)]) < _MAX_PENDING:
            events |= selectors.EVENT_READ
        if pipe.pending[s]:
            events |= selectors.EVENT_WRITE
        return events

    def _update(self, pipe: _Pipe) -> None:
        for s in (pipe.a, pipe.b):
            events = self._events(pipe, s)
            try:
                current = self._selector.get_key(s).events
            except KeyError:
                current = 0
            if events == current:
                continue
            if current and events:
                self._selector.modify(s, events, ("pipe", pipe))
            elif events:
                self._selector.register(s, events, ("pipe", pipe))
            else:
                self._selector.unregister(s)

    def _io(self, s: socket.socket, pipe: _Pipe, mask: int) -> None:
        if pipe not in self._pipes:
            return
        if mask & selectors.EVENT_READ:
            try:
                data = s.recv(65536)
            except BlockingIOError:
                data = None
            except OSError:
                data = b""
            if data == b"":
                self._close_pipe(pipe)
                return
            if data:
                pipe.pending[pipe.other(s)] += data
        for target in (pipe.a, pipe.b):
            buf = pipe.pending[target]
            if buf:
                try:
                    sent = target.send(buf)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self._close_pipe(pipe)
                    return
                del buf[:sent]
        self._update(pipe)

    def _close_pipe(self, pipe: _Pipe, reset: bool = False) -> None:
        self._pipes.discard(pipe)
        for s in (pipe.a, pipe.b):
            try:
                self._selector.unregister(s)
            except (KeyError, ValueError):
                pass
            if reset:
                _reset(s)
            else:
                s.close()

    def _cut_link(self, link: tuple[int, int], mode: str) -> None:
        self._cut[link] = mode
        listener = self._listeners[link]
        if mode == "stall":
            try:
                self._selector.unregister(listener)
            except KeyError:
                pass
        for pipe in [p for p in self._pipes if p.link == link]:
            if mode == "drop":
                self._close_pipe(pipe, reset=True)
            else:
                self._update(pipe)

    def _heal(self) -> None:
        for link, mode in list(self._cut.items()):
            del self._cut[link]
            if mode == "stall":
                self._selector.register(self._listeners[link], selectors.EVENT_READ, ("accept", link))
        for pipe in list(self._pipes):
            self._update(pipe)

    def _close_all(self) -> None:
        self._stopping = True
        for pipe in list(self._pipes):
            self._close_pipe(pipe)
        for listener in self._listeners.values():
            self._selector.unregister(listener)
            listener.close()


def _reset(s: socket.socket) -> None:
    """Close with a RST rather than a FIN."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    s.close()


class ProxiedCluster(ProcessCluster):
    """
    A L{ProcessCluster} whose nodes reach each other only through a
    L{PeerProxy} (clients still connect to the real ports), so that tests
    can partition it.  The cluster id is explicit, since each node is given
    different peer addresses.
    """

    def __init__(self, root: Path, size: int = 3, extra_args: Sequence[str] = FAST_ELECTIONS) -> None:
        self.root = Path(root)
        base = allocate_port_range(size)
        ports = {i: base + i for i in range(size)}
        self.proxy = PeerProxy(ports)
        cluster_id = f"faults-{base}"
        self.nodes = []
        for i in range(size):
            peers = ",".join(f"{j}@127.0.0.1:{self.proxy.port_for[(i, j)]}" for j in range(size) if j != i)
            args = (*extra_args, "--peers", peers, "--cluster-id", cluster_id)
            self.nodes.append(NodeProcess(i, ports[i], self.root / f"node-{i}", self.root / "logs", (), args))

    def close(self) -> None:
        """Stop every node (SIGCONT first, in case one is stopped), then
        the proxy."""
        for node in self.nodes:
            if node.running:
                try:
                    node.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
                except ProcessLookupError:
                    pass
        self.stop()
        self.proxy.close()


# ---------------------------------------------------------------------------
# Histories

OK_STATUS = "ok"  # the outcome is known (a value, OK, or not-found)
FAILED = "failed"  # definitely had no effect (Not leader, a read refused)
UNKNOWN = "unknown"  # may or may not have taken effect


@dataclass
class Record:
    """
    One client operation, in the shape of
    L{kvstore.testing.sim.linearizability.Operation} plus its C{status}.
    C{kind} is C{"put"}, C{"get"} or C{"delete"}; C{result} is the value
    read (None: missing) for a get, C{"ok"} for a put, C{"ok"} or
    C{"not-found"} for a delete.  Times are C{time.monotonic()}.
    """

    client: object
    kind: str
    key: str
    value: str | None
    invoke: float
    node: int
    status: str = UNKNOWN
    result: str | None = None
    complete: float | None = None
    reply: str | None = None


class History:
    """A thread-safe list of L{Record}s."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: list[Record] = []

    def add(self, record: Record) -> Record:
        with self._lock:
            self.records.append(record)
        return record

    def snapshot(self) -> list[Record]:
        with self._lock:
            return list(self.records)

    def operations(self) -> list:
        """
        The history for C{kvstore.testing.sim.linearizability.check_history}:
        known outcomes with their completion, unknown ones with
        C{complete=None}; operations that certainly had no effect are left
        out.
        """
        from kvstore.testing.sim.linearizability import Operation

        ops = []
        for r in self.snapshot():
            if r.status == FAILED:
                continue
            known = r.status == OK_STATUS
            ops.append(Operation(r.client, r.kind, r.key, r.value, r.result if known else None, r.invoke,
                                 r.complete if known else None))
        return ops


def classify(record: Record, reply: str, complete: float) -> None:
    """Set C{record}'s outcome from the node's reply line."""
    record.reply = reply
    key = record.key
    if record.kind == "get":
        prefix = f"value of {key}: "
        if reply.startswith(prefix):
            record.status, record.result = OK_STATUS, reply[len(prefix):]
        elif reply == f"Error: Key {key} not found":
            record.status, record.result = OK_STATUS, None
        else:
            record.status = FAILED  # a refused read changes nothing
    elif record.kind == "put":
        if reply == f"{key} added successfully.":
            record.status, record.result = OK_STATUS, "ok"
        elif reply.startswith("Error: Not leader."):
            record.status = FAILED
        else:
            record.status = UNKNOWN
    else:
        if reply == f"{key} deleted successfully.":
            record.status, record.result = OK_STATUS, "ok"
        elif reply == f"Error: Key {key} not found":
            record.status, record.result = OK_STATUS, "not-found"
        elif reply.startswith("Error: Not leader."):
            record.status = FAILED
        else:
            record.status = UNKNOWN
    if record.status == OK_STATUS:
        record.complete = complete


# ---------------------------------------------------------------------------
# The workload


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


# ---------------------------------------------------------------------------
# Checks and figures


def check_no_lost_writes(records: Sequence[Record], final: dict[str, str | None]) -> list[str]:
    """
    Check each key's final value (read linearizably after the faults)
    against the history, independently of the linearizability checker:
    it must have been written by some put, and no acknowledged write may
    have been certainly ordered after the write that produced it (that
    write would be lost).  Return the violations.
    """
    problems = []
    by_key: dict[str, list[Record]] = {}
    for r in records:
        if r.kind != "get" and r.status != FAILED:
            by_key.setdefault(r.key, []).append(r)
    for key, value in final.items():
        writes = by_key.get(key, [])
        acked = [w for w in writes if w.status == OK_STATUS and not (w.kind == "delete" and w.result == "not-found")]
        if value is None:
            deletes = [w for w in writes if w.kind == "delete"]
            for a in acked:
                if a.kind == "put" and not any((d.complete or float("inf")) > a.invoke for d in deletes):
                    problems.append(f"{key}: acknowledged {a.kind} of {a.value!r} (reply at {a.complete:.3f}) "
                                    f"lost: the key is missing and no delete could follow it")
            continue
        producers = [w for w in writes if w.kind == "put" and w.value == value]
        if not producers:
            problems.append(f"{key}: final value {value!r} was never written")
            continue
        p = producers[0]
        if p.complete is None:
            continue  # an unknown write may take effect at any time
        for a in acked:
            if a is not p and a.invoke > p.complete:
                problems.append(f"{key}: acknowledged {a.kind} {a.value!r} (invoked {a.invoke:.3f}) lost: the final "
                                f"value {value!r} was written by an operation complete at {p.complete:.3f}")
    return problems


def longest_write_gap(records: Sequence[Record], start: float, end: float) -> float:
    """The longest interval in C{[start, end]} with no write acknowledged."""
    times = sorted(r.complete for r in records
                   if r.kind != "get" and r.status == OK_STATUS and r.complete is not None and start <= r.complete <= end)
    points = [start, *times, end]
    return max(b - a for a, b in zip(points, points[1:]))


def summarize(name: str, records: Sequence[Record], monitor: TermMonitor, start: float, end: float) -> dict:
    counts = {OK_STATUS: 0, FAILED: 0, UNKNOWN: 0}
    writes = {OK_STATUS: 0, FAILED: 0, UNKNOWN: 0}
    for r in records:
        counts[r.status] += 1
        if r.kind != "get":
            writes[r.status] += 1
    figures = {
        "scenario": name,
        "ops": len(records),
        "ok": counts[OK_STATUS],
        "failed": counts[FAILED],
        "unknown": counts[UNKNOWN],
        "writes_ok": writes[OK_STATUS],
        "writes_unknown": writes[UNKNOWN],
        "elections": monitor.elections,
        "longest_no_write_s": round(longest_write_gap(records, start, end), 2),
        "seconds": round(end - start, 1),
    }
    return figures
