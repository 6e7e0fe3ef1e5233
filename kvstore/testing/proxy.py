# -*- test-case-name: tests.fault.test_faults -*-
"""
A fault-injecting TCP proxy between peers (L{PeerProxy}), and a
L{ProcessCluster} whose peer traffic goes through it (L{ProxiedCluster}):
the fault suite drops, stalls or resets any directed link between real node
processes.

Test support only: blocking sockets and a thread.
"""

from __future__ import annotations

import selectors
import signal
import socket
import threading
from pathlib import Path
from typing import Callable, Iterable, Sequence

from kvstore.testing.processes import FAST_ELECTIONS, NodeProcess, ProcessCluster, allocate_port_range

__all__ = ["PeerProxy", "ProxiedCluster"]


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

    def _call(self, command: Callable[[], object]) -> None:
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
        self._call(lambda: [self._cut_link(link, mode) for link in links])  # type: ignore[func-returns-value]  # the list display only runs each cut on the proxy thread

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
                        self._io(key.fileobj, data, mask)  # type: ignore[arg-type]  # the selector's fileobj is always one of our sockets
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
                    node.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]  # a running node has a process
                except ProcessLookupError:
                    pass
        self.stop()
        self.proxy.close()
