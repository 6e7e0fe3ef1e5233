# -*- test-case-name: tests.test_client_asyncio -*-
"""
The asyncio client: L{AsyncClient}, the methods of L{kvstore.client.Client}
as coroutines.

Same shape as the Twisted client (L{kvstore.client.deferred}): one
connection at a time, to one node; calls made while earlier ones wait for
their replies are pipelined on it (replies come back in request order and
are matched to requests in order).  The retry rules are
L{kvstore.client._policy}'s and the reading of replies is
L{kvstore.client._protocol}'s, the same as the other clients'.

It is written for load: C{kvstore-bench} runs thousands of calls a second
through it.  So a call that finds its connection up costs one future and no
timer: one watchdog per connection fails the calls whose deadline has
passed (see L{_LineProtocol}), instead of a C{wait_for} per call.

Writes are exactly-once by default, as with the other clients: the session
logic is L{kvstore.client._sessions.write_once}, shared with them.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from typing import Any, Iterable

from kvstore.client import _policy, _protocol as p, _sessions, errors
from kvstore.client._raw import Raw
from kvstore.client.blocking import parse_address
from kvstore.client.errors import ClientError, ProtocolError
from kvstore.client.members import Member, parse_members

__all__ = ["AsyncClient"]


class _Lost(Exception):
    """The connection is gone; C{sent} says whether the request may have reached the node."""

    def __init__(self, reason: str, sent: bool) -> None:
        super().__init__(reason)
        self.reason, self.sent = reason, sent


class _ReplyTimeout(Exception):
    """No reply before the call's deadline (the connection stays usable)."""


class _LineProtocol(asyncio.Protocol):
    """
    Sends request lines and resolves one future per reply line, in order.

    A call whose deadline passes gets L{_ReplyTimeout}; its future stays in
    the queue, done, so that its reply, if it comes, is consumed and
    dropped and later replies still find their own requests.  The deadlines
    are watched by one timer per connection, armed for the earliest
    deadline of the calls waiting.
    """

    def __init__(self, address: str, loop: asyncio.AbstractEventLoop) -> None:
        self.address = address
        self.loop = loop
        self._reader = p.ReplyReader()
        self._pending: deque[tuple[asyncio.Future[str], float]] = deque()
        self._transport: asyncio.Transport | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._watch_at = float("inf")
        # Requests waiting for the end of this turn of the loop (see request).
        self._corked: list[bytes] | None = None
        self.broken: str | None = None
        self.retired = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a TCP connection's transport
        # asyncio sets TCP_NODELAY on TCP sockets itself.

    def request(self, data: bytes, deadline: float) -> asyncio.Future[str]:
        """Send C{data} (one request line); the future gets its reply line."""
        if self.broken is not None or self._transport is None:
            raise _Lost(self.broken or "not connected", sent=False)
        future: asyncio.Future[str] = self.loop.create_future()
        self._pending.append((future, deadline))
        corked = self._corked
        if corked is None:
            # The first request of this turn of the loop goes at once; the
            # others made in the same turn follow in one write at its end.
            self._transport.write(data)
            self._corked = []
            self.loop.call_soon(self._uncork)
        else:
            corked.append(data)
        if deadline < self._watch_at:
            self._arm(deadline)
        return future

    def _uncork(self) -> None:
        corked, self._corked = self._corked, None
        if corked and self._transport is not None and self.broken is None:
            self._transport.write(b"".join(corked))

    def data_received(self, data: bytes) -> None:
        try:
            lines = self._reader.feed(data)
        except ProtocolError as e:
            self.abort(str(e))
            return
        pending = self._pending
        for line in lines:
            if not pending:
                self.abort(f"{self.address} sent a reply nobody asked for")
                return
            future = pending.popleft()[0]
            if not future.done():  # else timed out or cancelled: drop its reply
                future.set_result(line)
        if self.retired:
            self._close_if_done()

    def eof_received(self) -> bool:
        return False  # close; connection_lost fails what is pending

    def connection_lost(self, exc: Exception | None) -> None:
        if self.broken is None:
            self.broken = str(exc) if exc is not None else f"{self.address} closed the connection"
        self._disarm()
        pending, self._pending = self._pending, deque()
        for future, _ in pending:
            if not future.done():
                future.set_exception(_Lost(self.broken, sent=True))

    # -- deadlines -------------------------------------------------------

    def _arm(self, at: float) -> None:
        self._disarm()
        self._watch_at = at
        self._watchdog = self.loop.call_at(at, self._expire)

    def _disarm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._watch_at = float("inf")

    def _expire(self) -> None:
        self._watchdog, self._watch_at = None, float("inf")
        now = self.loop.time()
        earliest = float("inf")
        for future, deadline in self._pending:
            if future.done():
                continue
            if deadline <= now:
                future.set_exception(_ReplyTimeout())
            else:
                earliest = min(earliest, deadline)
        if earliest != float("inf"):
            self._arm(earliest)
        if self.retired:
            self._close_if_done()

    # -- closing ---------------------------------------------------------

    @property
    def idle(self) -> bool:
        return not self._pending

    def retire(self) -> None:
        """Take no new requests; close once every call waiting on this
        connection has its reply or has given up (a paused node's late
        replies are not worth keeping a connection for)."""
        self.retired = True
        self._close_if_done()

    def _close_if_done(self) -> None:
        if self.retired and self.broken is None and all(future.done() for future, _ in self._pending):
            self.close()

    def abort(self, reason: str) -> None:
        """Drop the connection at once: it is out of step or unwanted."""
        if self.broken is None:
            self.broken = reason
        if self._transport is not None and not self.loop.is_closed():
            self._transport.abort()

    def close(self) -> None:
        """Close once written data is sent; replies still due are failed.
        After the loop has closed (C{asyncio.run} returned) there is
        nothing left to close."""
        if self.broken is None:
            self.broken = "closed by the client"
        if self._transport is not None and not self.loop.is_closed():
            self._transport.close()


class AsyncClient:
    """
    An asyncio client of a kvstore cluster; see L{kvstore.client.Client}
    for the behaviour of each method.  Each method is a coroutine that
    returns the result or raises a L{kvstore.client.errors.ClientError}
    within about C{timeout} seconds.

        async with AsyncClient(["127.0.0.1:5000", "127.0.0.1:5001"], timeout=5) as kv:
            await kv.put("greeting", "hello")
            print(await kv.get("greeting"))

    A client belongs to the event loop of its first call.

    @param exactly_once: as for L{kvstore.client.Client}: tag writes with
        an exactly-once session (opened on the first write; concurrent
        writes each borrow their own) and retry them after C{Outcome
        unknown} or a lost connection (the default); C{False} sends plain
        writes and never retries one whose outcome is unknown.
    """

    def __init__(self, nodes: Iterable[str] | str, timeout: float = 10.0,
                 backoff: tuple[float, float] = (0.02, 0.5), *, exactly_once: bool = True) -> None:
        self.nodes = [nodes] if isinstance(nodes, str) else list(nodes)
        if not self.nodes:
            raise ValueError("at least one node address is needed")
        for address in self.nodes:
            parse_address(address)
        self.timeout = timeout
        self._backoff = backoff
        self._protocol: _LineProtocol | None = None
        self._connecting: asyncio.Task[_LineProtocol] | None = None
        self._connecting_to: str | None = None
        self._next_node = 0
        self._closed = False
        self._random = random.Random()
        self.exactly_once = exactly_once
        self._sessions = _sessions.SessionPool()

    # -- public surface --------------------------------------------------

    async def put(self, key: str, value: str) -> None:
        """Store C{value} under C{key} once a majority has it."""
        await self._write(p.Put(key, value))

    async def get(self, key: str, stale: bool = False) -> str:
        """The value of C{key} (C{stale=True}: the node's local copy); raises L{KeyNotFound}."""
        return await self._call(p.Get(key, stale))  # type: ignore[no-any-return]  # a Get's reply is a str

    async def delete(self, key: str) -> None:
        """Remove C{key}; raises L{KeyNotFound} if it had no value."""
        await self._write(p.Delete(key))

    async def incr(self, key: str, delta: int = 1) -> int:
        """Add C{delta} to the integer in C{key} (missing: 0) and return the
        new value; see L{kvstore.client.Client.incr}."""
        return await self._write(p.Incr(key, delta))  # type: ignore[no-any-return]  # an INCR returns its new value

    async def cas(self, key: str, expected: str, new: str, *, raise_on_mismatch: bool = False) -> bool:
        """Set C{key} to C{new} if its value is C{expected}: True if it did,
        False if not (or L{CasFailed} with C{raise_on_mismatch}); see
        L{kvstore.client.Client.cas}."""
        try:
            return await self._write(p.Cas(key, expected, new))  # type: ignore[no-any-return]  # True when set
        except errors.CasFailed:
            if raise_on_mismatch:
                raise
            return False

    async def status(self) -> dict[str, str]:
        """The C{STATUS} fields of the node the client is talking to."""
        return await self._call(p.Status())  # type: ignore[no-any-return]  # a Status reply is a dict

    async def ping(self) -> None:
        """Round trip to the node the client is talking to."""
        await self._call(p.Ping())

    async def members(self) -> list[Member]:
        """The cluster's members in id order, from the leader's C{MEMBERS}
        reply (see L{kvstore.client.Client.members})."""
        return parse_members(await self.raw_command("MEMBERS"))

    async def raw_command(self, line: str) -> str:
        """Send C{line} as typed and return the reply line (see L{kvstore.client.Client.raw_command})."""
        return await self._call(Raw.of(line))  # type: ignore[no-any-return]  # a Raw request's reply is its line

    @property
    def node(self) -> str | None:
        """The address of the node the client is talking to, if connected."""
        proto = self._protocol
        return None if proto is None or proto.broken else proto.address

    def close(self) -> None:
        """Close the connection; later calls raise L{ClientError}."""
        self._closed = True
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None
        if self._connecting is not None and not self._connecting.get_loop().is_closed():
            self._connecting.cancel()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # -- exactly-once writes -----------------------------------------------

    async def _write(self, request: p.Write) -> Any:
        """A write, in a session unless C{exactly_once} is off (see
        L{kvstore.client._sessions})."""
        if not self.exactly_once:
            return await self._call(request)
        p.check_request(request)  # a bad request opens no session
        deadline = asyncio.get_running_loop().time() + self.timeout

        async def open_new() -> _sessions.Session:
            return await _sessions.open_session(call)

        async def call(request: p.Request) -> object:
            return await self._call(request, deadline)

        async def send(tagged: p.Tagged, attempts: _sessions.Attempts) -> object:
            return await self._call(tagged, deadline, attempts)

        return await _sessions.write_once(self._sessions, request, open_new, send)

    # -- the retry loop --------------------------------------------------

    async def _call(self, request: p.Request, deadline: float | None = None,
                    attempts: _sessions.Attempts | None = None) -> Any:
        """
        Send C{request} until the policy says to return or raise, by
        C{deadline} (the loop's clock; default: C{timeout} from now).
        C{attempts} is the session write's record of unknown outcomes
        (None for anything else: created only when needed, this being the
        path every call takes).
        """
        data = p.encode_request(request)
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self.timeout
        target: str | None = None  # set by a redirect
        last_error: ClientError | None = None
        backoffs = redirects = 0
        while True:
            action: _policy.Action
            proto = self._protocol
            if (proto is None or proto.broken is not None or target not in (None, proto.address)
                    or proto.loop is not loop):  # a connection of an earlier asyncio.run is unusable
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise _final(attempts, _policy.after_timeout(request, None, False, self.timeout, last_error))
                try:
                    proto = await self._connect(target, remaining)
                except _ConnectFailed as failure:
                    proto = None
                    action = _policy.after_connect_failure(failure.address, failure.reason,
                                                           failure.round_complete)
            target = None
            if proto is not None:
                try:
                    line = await proto.request(data, deadline)
                except _ReplyTimeout:
                    # A node that does not answer in time may be paused or cut
                    # off while its connection stays up: later calls go elsewhere.
                    self._forget(proto, move_on=True)
                    raise _final(attempts, _policy.after_timeout(request, proto.address, True, self.timeout,
                                                                 last_error)) from None
                except _Lost as lost:
                    self._forget(proto)
                    action = _policy.after_lost_connection(request, proto.address, lost.sent, lost.reason)
                else:
                    try:
                        reply = p.interpret_reply(request, line)
                    except ProtocolError:
                        self._forget(proto)
                        proto.abort("reply out of step")
                        raise
                    action = _policy.after_reply(request, reply, proto.address)
                    if type(action) is _policy.Return:  # the common case first
                        return action.value
                    if isinstance(action, _policy.Retry):
                        self._forget(proto, move_on=True)
            if isinstance(action, _policy.Return):
                return action.value
            if isinstance(action, _policy.Raise):
                raise action.error
            if isinstance(action, _policy.RenewSession):
                raise _sessions.SessionGone(action.message)
            if isinstance(action, _policy.Redirect):
                target = action.address
                redirects += 1
                if redirects % 4 == 0:  # nodes disagree about the leader: let the election settle
                    await asyncio.sleep(max(0.0, min(self._backoff[0], deadline - loop.time())))
                continue
            if isinstance(action.error, errors.OutcomeUnknown) and attempts is not None:
                attempts.maybe_applied = True
            last_error = action.error
            if action.backoff:
                delay = _policy.backoff_delay(backoffs, *self._backoff, self._random.random())
                backoffs += 1
                await asyncio.sleep(max(0.0, min(delay, deadline - loop.time())))
            if loop.time() >= deadline:
                raise _final(attempts, _policy.after_timeout(request, None, False, self.timeout, last_error))

    def _forget(self, proto: _LineProtocol, move_on: bool = False) -> None:
        """Stop using C{proto} for new requests; with C{move_on}, the next
        connection goes to the next listed node."""
        if self._protocol is proto:
            self._protocol = None
            proto.retire()
            if move_on and proto.address in self.nodes:
                self._next_node = (self.nodes.index(proto.address) + 1) % len(self.nodes)

    async def _connect(self, target: str | None, remaining: float) -> _LineProtocol:
        """The connection to C{target} (any node if None), shared with the
        calls already waiting for one to that node."""
        if self._closed:
            raise ClientError("the client is closed")
        attempt = self._connecting
        if attempt is None or target not in (None, self._connecting_to):
            if target is None:
                address = self.nodes[self._next_node]
                self._next_node = (self._next_node + 1) % len(self.nodes)
                round_complete = self._next_node == 0
            else:
                address, round_complete = target, False
            attempt = asyncio.ensure_future(self._open(address, remaining, round_complete))
            # Retrieved here, so that an attempt nobody awaits any more is not reported.
            attempt.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._connecting, self._connecting_to = attempt, address
        try:
            # Shielded: a call that is cancelled leaves the attempt to the others.
            return await asyncio.shield(attempt)
        except asyncio.CancelledError:
            if not attempt.cancelled():
                raise  # this call was cancelled
            raise ClientError("the client is closed") from None  # only close() cancels an attempt

    async def _open(self, address: str, remaining: float, round_complete: bool) -> _LineProtocol:
        """Connect to C{address} and make it the client's connection."""
        loop = asyncio.get_running_loop()
        host, port = parse_address(address)
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: _LineProtocol(address, loop), host, port), max(remaining, 0.001))
        except asyncio.TimeoutError:
            raise _ConnectFailed(address, "connection timed out", round_complete) from None
        except OSError as e:
            raise _ConnectFailed(address, str(e) or type(e).__name__, round_complete) from None
        finally:
            if self._connecting is asyncio.current_task():
                self._connecting = self._connecting_to = None
        if self._closed:
            proto.close()
            raise ClientError("the client is closed")
        old = self._protocol
        if old is not None:
            old.retire()  # closed once the calls still waiting on it have their replies
        self._protocol = proto
        return proto


def _final(attempts: _sessions.Attempts | None, error: ClientError) -> ClientError:
    """The error to raise when a call's attempts stop with C{error} (see
    L{_sessions.Attempts.final_error})."""
    return error if attempts is None else attempts.final_error(error)


class _ConnectFailed(Exception):
    def __init__(self, address: str, reason: str, round_complete: bool) -> None:
        super().__init__(address, reason)
        self.address, self.reason, self.round_complete = address, reason, round_complete
