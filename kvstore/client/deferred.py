# -*- test-case-name: tests.test_client_deferred -*-
"""
The Twisted client: L{DeferredClient}, the methods of
L{kvstore.client.Client} returning Deferreds.

One connection at a time, to one node; calls made before earlier ones have
their replies are pipelined on it naturally (replies are matched to requests
in order).  The retry rules are L{kvstore.client._policy}'s, the same as the
blocking client's.  The reactor is a parameter, so tests drive it with
L{twisted.internet.testing.MemoryReactorClock}.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any, Iterable

from twisted.internet.defer import CancelledError, Deferred, TimeoutError as DeferredTimeout
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from kvstore.client import _policy, _protocol as p, _sessions, errors
from kvstore.client._raw import Raw
from kvstore.client.members import Member, parse_members
from kvstore.client.blocking import parse_address
from kvstore.client.errors import ClientError, ProtocolError

__all__ = ["DeferredClient"]


class _Lost(Exception):
    def __init__(self, reason: str, sent: bool) -> None:
        super().__init__(reason)
        self.reason, self.sent = reason, sent


class _ReplyTimeout(Exception):
    pass


class _LineClientProtocol(Protocol):
    """
    Sends request lines and fires one Deferred per reply line, in order.

    A call whose Deferred is cancelled (its timeout) leaves it in the
    queue, fired, so that its reply, if it comes, is consumed and dropped
    and later replies still find their own requests.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self._reader = p.ReplyReader()
        self._pending: deque[Deferred[str]] = deque()
        self.broken: str | None = None
        self.retired = False

    def request(self, data: bytes) -> Deferred[str]:
        if self.broken is not None:
            raise _Lost(self.broken, sent=False)
        d: Deferred[str] = Deferred(self._cancelled)
        self._pending.append(d)
        self.transport.write(data)  # type: ignore[union-attr]  # connected: set by makeConnection
        return d

    def dataReceived(self, data: bytes) -> None:
        try:
            lines = self._reader.feed(data)
        except ProtocolError as e:
            self._abort(str(e))
            return
        for line in lines:
            if not self._pending:
                self._abort(f"{self.address} sent a reply nobody asked for")
                return
            d = self._pending.popleft()
            if not d.called:  # else cancelled by its timeout: drop the late reply
                d.callback(line)
        if self.retired:
            self._close_if_done()

    def _cancelled(self, d: Deferred[str]) -> None:
        """A call gave up (its timeout): its Deferred fails now, and a
        retired connection may have nobody left waiting on it."""
        d.errback(CancelledError())
        if self.retired:
            self._close_if_done()

    def _abort(self, reason: str) -> None:
        self.broken = reason
        self.transport.abortConnection()  # type: ignore[union-attr]  # connected, and a TCP transport

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]  # Twisted's default argument
        text = self.broken or (reason.getErrorMessage() if reason is not None else "connection lost")
        self.broken = text
        pending, self._pending = self._pending, deque()
        for d in pending:
            if not d.called:  # else cancelled by its timeout
                d.errback(_Lost(text, sent=True))

    @property
    def idle(self) -> bool:
        return not self._pending

    def retire(self) -> None:
        """Take no new requests; close once every call waiting on this
        connection has its reply or has given up.  A connection left for
        another node (a redirect, a retry elsewhere) while calls still wait
        on it used to stay open for good (the asyncio client's fix of
        981118c, ported)."""
        self.retired = True
        self._close_if_done()

    def _close_if_done(self) -> None:
        if self.retired and self.broken is None and all(d.called for d in self._pending):
            self.close()

    def close(self) -> None:
        if self.broken is None:
            self.broken = "closed by the client"
        if self.transport is not None:
            self.transport.loseConnection()


class DeferredClient:
    """
    A Twisted client of a kvstore cluster; see L{kvstore.client.Client} for
    the behaviour of each method.  Each method returns a Deferred that
    fires with the result or fails with a
    L{kvstore.client.errors.ClientError} within about C{timeout} seconds.

    @param reactor: the reactor to connect and keep time with (an
        C{IReactorTCP} and C{IReactorTime}); passed in, as everywhere in
        kvstore, so that tests can use a L{MemoryReactorClock}.
    """

    def __init__(self, reactor: Any, nodes: Iterable[str] | str, timeout: float = 10.0,
                 backoff: tuple[float, float] = (0.02, 0.5), *, exactly_once: bool = True) -> None:
        self._reactor = reactor
        self.nodes = [nodes] if isinstance(nodes, str) else list(nodes)
        if not self.nodes:
            raise ValueError("at least one node address is needed")
        for address in self.nodes:
            parse_address(address)
        self.timeout = timeout
        self._backoff = backoff
        self._protocol: _LineClientProtocol | None = None
        self._connecting: _Shared | None = None
        self._connecting_to: str | None = None
        self._next_node = 0
        self._closed = False
        self._random = random.Random()
        self.exactly_once = exactly_once
        self._sessions = _sessions.SessionPool()

    def put(self, key: str, value: str) -> Deferred[None]:
        return self._write(p.Put(key, value))

    def get(self, key: str, stale: bool = False) -> Deferred[str]:
        return self._call(p.Get(key, stale))

    def delete(self, key: str) -> Deferred[None]:
        return self._write(p.Delete(key))

    def incr(self, key: str, delta: int = 1) -> Deferred[int]:
        """Fires with the new value; see L{kvstore.client.Client.incr}."""
        return self._write(p.Incr(key, delta))

    def cas(self, key: str, expected: str, new: str, *, raise_on_mismatch: bool = False) -> Deferred[bool]:
        """Fires with True if the value was set; see L{kvstore.client.Client.cas}."""
        d = self._write(p.Cas(key, expected, new))
        if not raise_on_mismatch:
            d.addErrback(_mismatch_is_false)
        return d

    def status(self) -> Deferred[dict[str, str]]:
        return self._call(p.Status())

    def ping(self) -> Deferred[None]:
        return self._call(p.Ping())

    def members(self) -> "Deferred[list[Member]]":
        """As L{kvstore.client.Client.members}: a Deferred firing with the
        cluster's members in id order."""
        return self.raw_command("MEMBERS").addCallback(parse_members)

    def raw_command(self, line: str) -> Deferred[str]:
        try:
            return self._call(Raw.of(line))
        except ClientError as e:
            return _failed(e)

    @property
    def node(self) -> str | None:
        """The address of the node the client is talking to, if connected."""
        proto = self._protocol
        return None if proto is None or proto.broken else proto.address

    def close(self) -> None:
        """Close the connection; later calls fail with L{ClientError}."""
        self._closed = True
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None
        if self._connecting is not None:
            self._connecting.attempt.cancel()

    def _call(self, request: p.Request) -> Deferred[Any]:
        try:
            data = p.encode_request(request)
        except ClientError as e:
            return _failed(e)
        return Deferred.fromCoroutine(self._run(request, data, self._reactor.seconds() + self.timeout))

    def _write(self, request: p.Write) -> Deferred[Any]:
        """A write, in a session unless C{exactly_once} is off (see
        L{kvstore.client._sessions})."""
        if not self.exactly_once:
            return self._call(request)
        try:
            p.check_request(request)  # a bad request opens no session
        except ClientError as e:
            return _failed(e)
        return Deferred.fromCoroutine(self._exactly_once(request))

    async def _exactly_once(self, request: p.Write) -> Any:
        deadline = self._reactor.seconds() + self.timeout

        async def open_new() -> _sessions.Session:
            return await _sessions.open_session(call)

        async def call(request: p.Request) -> object:
            return await self._run(request, p.encode_request(request), deadline)

        async def send(tagged: p.Tagged, attempts: _sessions.Attempts) -> object:
            return await self._run(tagged, p.encode_request(tagged), deadline, attempts)

        return await _sessions.write_once(self._sessions, request, open_new, send)

    async def _run(self, request: p.Request, data: bytes, deadline: float,
                   attempts: _sessions.Attempts | None = None) -> Any:
        clock = self._reactor
        attempts = attempts if attempts is not None else _sessions.Attempts()
        target: str | None = None
        last_error: ClientError | None = None
        backoffs = redirects = 0
        while True:
            remaining = deadline - clock.seconds()
            if remaining <= 0:
                raise attempts.final_error(_policy.after_timeout(request, None, False, self.timeout, last_error))
            action: _policy.Action
            try:
                proto = await self._connect(target, remaining)
            except _ConnectFailed as failure:
                target = None
                action = _policy.after_connect_failure(failure.address, failure.reason, failure.round_complete)
            else:
                target = None
                try:
                    reply_d = proto.request(data)
                except _Lost as lost:
                    self._forget(proto)
                    action = _policy.after_lost_connection(request, proto.address, lost.sent, lost.reason)
                else:
                    try:
                        line = await reply_d.addTimeout(deadline - clock.seconds(), clock)
                    except DeferredTimeout:
                        raise attempts.final_error(_policy.after_timeout(request, proto.address, True, self.timeout,
                                                                         last_error)) from None
                    except _Lost as lost:
                        self._forget(proto)
                        action = _policy.after_lost_connection(request, proto.address, lost.sent, lost.reason)
                    else:
                        try:
                            reply = p.interpret_reply(request, line)
                        except ProtocolError:
                            self._forget(proto)
                            proto.close()
                            raise
                        action = _policy.after_reply(request, reply, proto.address)
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
                if redirects % 4 == 0:
                    await deferLater(clock, max(0.0, min(self._backoff[0], deadline - clock.seconds())))
                continue
            if isinstance(action.error, errors.OutcomeUnknown):
                attempts.maybe_applied = True
            last_error = action.error
            if action.backoff:
                delay = _policy.backoff_delay(backoffs, *self._backoff, self._random.random())
                backoffs += 1
                await deferLater(clock, max(0.0, min(delay, deadline - clock.seconds())))

    def _forget(self, proto: _LineClientProtocol, move_on: bool = False) -> None:
        if self._protocol is proto:
            self._protocol = None
            proto.retire()  # closed once the calls still waiting on it have their replies
            if move_on and proto.address in self.nodes:
                self._next_node = (self.nodes.index(proto.address) + 1) % len(self.nodes)

    async def _connect(self, target: str | None, remaining: float) -> _LineClientProtocol:
        if self._closed:
            raise ClientError("the client is closed")
        current = self._protocol
        if current is not None and current.broken is None and target in (None, current.address):
            return current
        if self._connecting is not None and target in (None, self._connecting_to):
            # Another call is already connecting: share its connection.
            try:
                return await self._connecting.wait()  # type: ignore[no-any-return]  # _Shared is untyped in what it holds
            except Exception:
                pass  # try again below, on the next node
        if target is None:
            address = self.nodes[self._next_node]
            self._next_node = (self._next_node + 1) % len(self.nodes)
            round_complete = self._next_node == 0
        else:
            address, round_complete = target, False
        host, port = parse_address(address)
        endpoint = TCP4ClientEndpoint(self._reactor, host, port, timeout=max(1, int(remaining + 0.999)))
        attempt = connectProtocol(endpoint, _LineClientProtocol(address))
        attempt.addTimeout(remaining, self._reactor)
        shared = _Shared(attempt)
        self._connecting, self._connecting_to = shared, address
        try:
            proto: _LineClientProtocol = await shared.wait()
        except (CancelledError, DeferredTimeout) as e:
            raise _ConnectFailed(address, "connection timed out" if not self._closed else "client closed",
                                 round_complete) from e
        except Exception as e:
            raise _ConnectFailed(address, str(e) or type(e).__name__, round_complete) from e
        finally:
            if self._connecting is shared:
                self._connecting = self._connecting_to = None
        if self._closed:
            proto.close()
            raise ClientError("the client is closed")
        old = self._protocol
        if old is not None and old is not proto:
            old.retire()  # closed once the calls still waiting on it have their replies
        self._protocol = proto
        return proto


class _Shared:
    """One connection attempt awaited by several calls: each L{wait} gets
    its own Deferred with the attempt's result (a failure included)."""

    _PENDING = object()

    def __init__(self, attempt: Deferred[Any]) -> None:
        self.attempt = attempt
        self._result: Any = self._PENDING
        self._waiters: list[Deferred[Any]] = []
        attempt.addBoth(self._fire)

    def _fire(self, result: Any) -> None:
        self._result = result
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            self._deliver(waiter)

    def _deliver(self, waiter: Deferred[Any]) -> None:
        if isinstance(self._result, Failure):
            waiter.errback(self._result)
        else:
            waiter.callback(self._result)

    def wait(self) -> Deferred[Any]:
        waiter: Deferred[Any] = Deferred()
        if self._result is self._PENDING:
            self._waiters.append(waiter)
        else:
            self._deliver(waiter)
        return waiter


def _mismatch_is_false(failure: Failure) -> bool:
    failure.trap(errors.CasFailed)
    return False


def _failed(error: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(error)
    return d


class _ConnectFailed(Exception):
    def __init__(self, address: str, reason: str, round_complete: bool) -> None:
        super().__init__(address, reason)
        self.address, self.reason, self.round_complete = address, reason, round_complete
