# -*- test-case-name: tests.test_client_blocking -*-
"""
A scripted fake kvstore node for client tests: a line server on 127.0.0.1
in a thread, whose replies a test chooses line by line.

Not a test module (no C{test_} prefix): the blocking client tests use it.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from typing import Callable, Union

from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.processes import allocate_port

#: Script results besides a reply line: close the connection without
#: replying, or send nothing and keep reading.
CLOSE = object()
SILENT = object()

Script = Callable[[str], Union[str, object]]


class FakeNode:
    """
    A node that answers each request line with C{script(line)}.

    @ivar received: every request line, in arrival order, with the number
        of the connection it came on.
    @ivar batch: if set, a connection's requests are answered only once
        this many have arrived on it (proves that they were pipelined).
    """

    def __init__(self, test: SynchronousTestCase, script: Script, batch: int | None = None) -> None:
        self.port = allocate_port()
        self.address = f"127.0.0.1:{self.port}"
        self.script = script
        self.batch = batch
        self.received: list[tuple[int, str]] = []
        self.connections = 0
        self.closed_connections = threading.Semaphore(0)
        self._lock = threading.Lock()
        node = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                node._serve(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler, bind_and_activate=False)
        self._server.allow_reuse_address = True
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._server.server_bind()
        self._server.server_activate()
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        test.addCleanup(self.stop)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def lines(self) -> list[str]:
        with self._lock:
            return [line for _, line in self.received]

    def _serve(self, sock: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            number = self.connections
        buffer, held = b"", []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for raw in complete:
                    line = raw.decode("utf-8")
                    with self._lock:
                        self.received.append((number, line))
                    held.append(line)
                if self.batch is not None and len(held) < self.batch:
                    continue
                for line in held:
                    reply = self.script(line)
                    if reply is CLOSE:
                        return
                    if reply is not SILENT:
                        sock.sendall(reply.encode("utf-8") + b"\n")  # type: ignore[union-attr]
                held = []
        except OSError:
            return
        finally:
            sock.close()
            self.closed_connections.release()


def store_script(data: dict[str, str] | None = None) -> Script:
    """A node that leads and stores: PUT/GET/DELETE/PING/STATUS like the real server."""
    data = {} if data is None else data

    def script(line: str) -> str:
        word, _, rest = line.partition(" ")
        if word == "PUT":
            key, _, value = rest.partition(" ")
            data[key] = value
            return f"{key} added successfully."
        if word == "GET":
            key = rest.split(" ")[0]
            return f"value of {key}: {data[key]}" if key in data else f"Error: Key {key} not found"
        if word == "DELETE":
            if rest in data:
                del data[rest]
                return f"{rest} deleted successfully."
            return f"Error: Key {rest} not found"
        if word == "PING":
            return "PONG"
        if word == "STATUS":
            return "node=1 role=leader term=2 leader=1"
        return f"Error: Unknown command '{word}'"

    return script


def unused_address() -> str:
    """An address nothing listens on (connections are refused)."""
    return f"127.0.0.1:{allocate_port()}"
