# -*- test-case-name: tests.test_bench_library -*-
"""
C{kvstore-bench --client pipelined}: the load loop without the client
library's per-call machinery, on the library's codec.

Why it exists: the bench measures the server.  Through
L{kvstore.client.asyncio.AsyncClient} every request is a call (a
coroutine, a future, a wake-up of the caller's task), which costs the tool
more CPU per request than a loop that handles replies where they arrive;
on a small machine that CPU is taken from the servers being measured.
This loop keeps C{--pipeline} requests in flight on one connection and
sends the next one from C{data_received} as each reply arrives, as the tool
always did, but every byte goes through the library: requests are made by
L{kvstore.client._protocol.encode_request}, the stream is split by its
L{ReplyReader} and each reply read by L{interpret_reply}, so there is still
one reading of the protocol in the tree.  It follows C{Not leader} replies
to the leader they name, as the library does, but retries nothing else: a
failed request is counted, by kind, and the next one sent.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, Callable

from kvstore.client import _protocol as p
from kvstore.client.blocking import parse_address
from kvstore.client.errors import ProtocolError

__all__ = ["PipelinedConnection", "address_text", "pipelined_worker", "reply_kind", "run_pipelined"]


def reply_kind(reply: p.Reply) -> str | None:
    """The report's error kind of C{reply}; None for a success."""
    if isinstance(reply, (p.Done, p.Value, p.StatusFields)):
        return None
    if isinstance(reply, p.NotFound):
        return "Key not found"
    if isinstance(reply, p.NotLeader):
        return "Not leader"
    if isinstance(reply, p.OutcomeUnknown):
        return "Outcome unknown"
    if isinstance(reply, p.Unavailable):
        return "Unavailable"
    if isinstance(reply, p.InternalError):
        return "Internal error"
    assert isinstance(reply, p.RequestError)
    return reply.message.split(".")[0].split(":")[0][:60]


class PipelinedConnection(asyncio.Protocol):
    """
    One connection with up to C{pipeline} requests in flight.

    @param next_request: makes the next request, or returns None when the
        run is over (time is up, or the request budget is spent).
    @param on_reply: called with (request, reply, sent_ns, received_ns) for
        each reply.
    """

    def __init__(self, pipeline: int, next_request: Callable[[], p.Request | None],
                 on_reply: Callable[[p.Request, p.Reply, int, int], None]) -> None:
        self.pipeline = pipeline
        self.next_request = next_request
        self.on_reply = on_reply
        self.reader = p.ReplyReader()
        self.in_flight: deque[tuple[p.Request, int]] = deque()
        self.redirect: str | None = None
        self.finished: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._sending = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP transport
        batch = []
        for _ in range(self.pipeline):
            request = self.next_request()
            if request is None:
                self._sending = False
                break
            batch.append(p.encode_request(request))
            self.in_flight.append((request, time.monotonic_ns()))
        transport.write(b"".join(batch))  # type: ignore[attr-defined]  # a TCP transport
        self._finish_if_done()

    def data_received(self, data: bytes) -> None:
        try:
            lines = self.reader.feed(data)
        except ProtocolError as e:
            self._fail(e)
            return
        write = self.transport.write  # type: ignore[union-attr]  # connected
        for line in lines:
            now = time.monotonic_ns()
            if not self.in_flight:
                self._fail(ProtocolError("a reply nobody asked for"))
                return
            request, sent = self.in_flight.popleft()
            try:
                reply = p.interpret_reply(request, line)
            except ProtocolError as e:
                self._fail(e)
                return
            if isinstance(reply, p.NotLeader) and self.redirect is None:
                self.redirect = reply.address or ""
                self._sending = False
            self.on_reply(request, reply, sent, now)
            if self._sending:
                following = self.next_request()
                if following is None:
                    self._sending = False
                else:
                    self.in_flight.append((following, time.monotonic_ns()))
                    write(p.encode_request(following))
        self._finish_if_done()

    def _finish_if_done(self) -> None:
        if not self._sending and not self.in_flight and not self.finished.done():
            self.finished.set_result(self.redirect)
            self.transport.close()  # type: ignore[union-attr]  # connected

    def _fail(self, error: Exception) -> None:
        if not self.finished.done():
            self.finished.set_exception(error)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            self.finished.set_exception(ConnectionError(str(exc) if exc else "the node closed the connection"))


async def run_pipelined(address: str, pipeline: int, next_request: Callable[[], p.Request | None],
                        on_reply: Callable[[p.Request, p.Reply, int, int], None]) -> str | None:
    """
    Keep C{pipeline} requests in flight on one connection to C{address}
    until C{next_request} says the run is over, or a C{Not leader} reply
    names another node.

    @return: the address a C{Not leader} reply named (C{""}: none), or
        None when the run is over.
    @raise OSError, ConnectionError, ProtocolError: the connection failed.
    """
    loop = asyncio.get_running_loop()
    host, port = parse_address(address)
    transport, connection = await loop.create_connection(
        lambda: PipelinedConnection(pipeline, next_request, on_reply), host, port)
    try:
        return await connection.finished
    finally:
        transport.close()


def address_text(host_port: tuple[str, int]) -> str:
    """C{(host, port)} as C{host:port} (C{[host]:port} for IPv6)."""
    host, port = host_port
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def pipelined_worker(worker: Any) -> None:
    """The pipelined flavour of L{kvstore.tools.bench.Worker.run}: the same
    request stream, counted into the same results."""
    results = worker.results
    keys, rng = worker.args.keys, worker.rng
    value, stale, write = worker.value, worker.stale, worker.writes
    keep_times = worker.args.trace
    randrange = rng.randrange

    def next_request() -> p.Request | None:
        if not worker._may_send():
            return None
        key = f"key{randrange(keys)}"
        return p.Put(key, value) if write else p.Get(key, stale)

    def on_reply(request: p.Request, reply: p.Reply, sent: int, received: int) -> None:
        kind = reply_kind(reply)
        if kind is not None:
            results.errors[kind] = results.errors.get(kind, 0) + 1
            return
        results.ok += 1
        results.latencies.append((received - sent) / 1e9)
        if write:
            results.writes += 1
            if keep_times:
                results.write_times.append((sent, received))
        else:
            results.reads += 1

    cluster = worker.cluster
    while time.monotonic() < worker.stop_at[0] and worker.budget[0] > 0:
        target = worker.target or cluster.leader
        if target is None:
            target = await cluster.find_leader(time.monotonic() + 10)
        try:
            redirect = await run_pipelined(address_text(target), worker.args.pipeline, next_request, on_reply)
        except (OSError, ConnectionError, ProtocolError):
            results.errors["Connection lost"] = results.errors.get("Connection lost", 0) + 1
            if worker.target is None:
                cluster.leader = None
            await asyncio.sleep(0.1)
            continue
        if redirect is not None and worker.target is None:
            if redirect:
                cluster.leader = parse_address(redirect)
            else:  # no leader known yet: ask again after a pause
                cluster.leader = None
                await asyncio.sleep(0.05)

