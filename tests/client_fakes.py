# -*- test-case-name: tests.test_client_blocking -*-
"""
A scripted fake kvstore node for client tests: a line server on 127.0.0.1
in a thread, whose replies a test chooses line by line.

Not a test module (no C{test_} prefix): the blocking client tests use it.
"""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
import time
from typing import Any, Awaitable, Callable, Union

from twisted.trial.unittest import SynchronousTestCase

from kvstore.client import blocking
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


class DeadlineSkipper:
    """
    The clock of a client whose call must end at its deadline after some
    replies (retries exhausted, no leader elected in time): real monotonic
    time, plus an hour from the client's C{pauses}-th backoff pause on.

    With a short real deadline instead, such a test depends on the fake
    node answering in time: on a loaded machine the deadline once passed
    before even the first reply, and the call failed for want of any reply
    (C{Unavailable: no reply}) rather than as the test meant.  Here the
    client gets a deadline of many seconds (the margin for every reply),
    and the deadline passes at a chosen point of the exchange, at once: a
    backoff pause, when no reply is awaited.  The skip comes from the
    client's side, so no reply can race it.
    """

    def __init__(self, test: SynchronousTestCase, pauses: int) -> None:
        self._test = test
        self.offset = 0.0
        self.paused = 0
        self.pauses = pauses

    def skip_after(self, pauses: int) -> None:
        """Skip past the deadline again, at the C{pauses}-th pause from now."""
        self.pauses = self.paused + pauses

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def _pause(self) -> None:
        self.paused += 1
        if self.paused == self.pauses:
            self.offset += 3600.0

    def sleep(self, seconds: float) -> None:
        """The blocking client's backoff pause."""
        self._pause()
        time.sleep(seconds)  # not a wait in the test: the client's own backoff pause (10-50 ms), passed through

    def install_blocking(self) -> None:
        """Be the clock of L{kvstore.client.blocking} (its C{time.monotonic} and C{time.sleep}) for the test."""
        self._test.patch(blocking, "time", self)

    def run(self, body: Callable[[], Awaitable[Any]]) -> Any:
        """Run C{body()} on a fresh event loop whose clock is this one, and whose C{asyncio.sleep} (the
        asyncio client's backoff pause) counts the pauses."""
        real_sleep = asyncio.sleep

        async def sleep(delay: float, result: Any = None) -> Any:
            self._pause()
            return await real_sleep(delay, result)

        def new_loop() -> asyncio.AbstractEventLoop:
            loop = asyncio.new_event_loop()
            loop.time = self.monotonic  # type: ignore[method-assign]  # what BaseEventLoop.time is, plus the offset
            return loop

        asyncio.sleep = sleep  # type: ignore[assignment]
        try:
            with asyncio.Runner(loop_factory=new_loop) as runner:
                return runner.run(body())  # type: ignore[arg-type]
        finally:
            asyncio.sleep = real_sleep  # type: ignore[assignment]
