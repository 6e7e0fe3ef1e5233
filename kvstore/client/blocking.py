# -*- test-case-name: tests.test_client_blocking -*-
"""
The blocking client: L{Client}, safe to share between threads.

All threads share one connection to one node (the leader once a write has
been redirected there; any node for reads until then).  Requests from
several threads are pipelined on it: each thread writes its line under a
send lock and queues a waiter; one waiting thread at a time reads reply
lines and hands each to the oldest waiter at once, waking its thread
(replies come back in request order, C{docs/protocol.md}).  There is no
background thread, so a client that is not being called costs nothing.
"""

from __future__ import annotations

import random
import select
import socket
import threading
import time
from collections import deque
from typing import Iterable

from kvstore.client import _policy, _protocol as p, _sessions, errors
from kvstore.client._raw import Raw
from kvstore.client.members import Member, parse_members
from kvstore.client.errors import ClientError, ProtocolError

__all__ = ["Client", "parse_address"]


def parse_address(address: str) -> tuple[str, int]:
    """C{"host:port"} → C{(host, port)}."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"not a host:port address: {address!r}")
    return host.strip("[]"), int(port)


class _ReplyTimeout(Exception):
    """No reply before the deadline (the connection stays usable)."""


class _Lost(Exception):
    """The connection is gone; C{sent} says whether this request may have reached the server."""

    def __init__(self, reason: str, sent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent


class _Waiter:
    __slots__ = ("line", "error", "done", "abandoned")

    def __init__(self) -> None:
        self.line: str | None = None
        self.error: _Lost | None = None
        self.done = False
        self.abandoned = False


class _Connection:
    """
    One pipelined connection to one node.

    Requests are written under C{_send_lock}, each with a L{_Waiter}
    queued in C{_pending}.  Replies are read by one waiting thread at a time
    (the reader, C{_reading}); it hands every line to the oldest waiter as
    soon as it arrives and wakes the waiting threads (C{_cond}), then gives
    up the reader's role once its own reply is in.
    """

    def __init__(self, address: str, sock: socket.socket) -> None:
        self.address = address
        self._sock = sock
        self._send_lock = threading.Lock()
        self._cond = threading.Condition(threading.RLock())
        self._reading = False
        self._pending: deque[_Waiter] = deque()
        self._reader = p.ReplyReader()
        self.broken: str | None = None

    @classmethod
    def open(cls, address: str, connect_timeout: float, send_timeout: float) -> "_Connection":
        sock = socket.create_connection(parse_address(address), timeout=max(connect_timeout, 0.001))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # A send blocked by the server's flow control gives up after this
        # long (the connection is then lost); receives wait in select().
        sock.settimeout(send_timeout)
        return cls(address, sock)

    def close(self) -> None:
        self._fail(_Lost("closed by the client", sent=True))

    def close_if_idle(self) -> None:
        """Close unless requests are in flight (their threads then close it
        on their way out, see L{Client._forget}); a thread about to send on
        it gets C{_Lost(sent=False)} and retries elsewhere."""
        with self._send_lock:
            if not self._pending:
                self._fail(_Lost("replaced by another connection", sent=False))

    def _fail(self, error: _Lost) -> None:
        with self._cond:
            if self.broken is None:
                self.broken = error.reason
                try:
                    self._sock.close()
                except OSError:
                    pass
            while self._pending:
                waiter = self._pending.popleft()
                waiter.error, waiter.done = error, True
            self._cond.notify_all()

    def _closed_by_peer(self) -> bool:
        """
        Whether the server closed this idle connection (node restarted, idle
        timeout): checked before writing, so that such a request counts as
        not sent and can be retried safely.  Only meaningful with nothing
        in flight; any unsolicited data is a protocol error.
        """
        readable, _, _ = select.select([self._sock], [], [], 0)
        if not readable:
            return False
        try:
            data = self._sock.recv(1, socket.MSG_PEEK)
        except OSError:
            return True
        if data:
            raise ProtocolError(f"{self.address} sent data nobody asked for")
        return True

    def roundtrip(self, data: bytes, deadline: float) -> str:
        """
        Send one request and return its reply line.

        @raise _Lost: the connection is gone (C{sent} says whether the request may have gone).
        @raise _ReplyTimeout: the deadline passed; the reply, if it comes, is discarded.
        """
        waiter = _Waiter()
        with self._send_lock:
            if self.broken is not None:
                raise _Lost(self.broken, sent=False)
            if not self._pending and self._reader.buffered == 0:
                try:
                    idle_closed = self._closed_by_peer()
                except ProtocolError as e:
                    self._fail(_Lost(str(e), sent=False))
                    raise
                if idle_closed:
                    self._fail(_Lost("closed by the server while idle", sent=False))
                    raise _Lost("closed by the server while idle", sent=False)
            self._pending.append(waiter)
            try:
                self._sock.sendall(data)
            except OSError as e:
                self._fail(_Lost(f"send failed: {e}", sent=True))
        self._await(waiter, deadline)
        if waiter.error is not None:
            raise waiter.error
        assert waiter.line is not None
        return waiter.line

    def _await(self, waiter: _Waiter, deadline: float) -> None:
        with self._cond:
            while not waiter.done:
                if not self._reading:
                    self._reading = True
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    waiter.abandoned = True
                    raise _ReplyTimeout()
                self._cond.wait(remaining)
            else:
                return
        # This thread reads until its own reply is in.
        try:
            while not waiter.done:
                lines = self._read_lines(deadline)
                with self._cond:
                    for line in lines:
                        self._deliver(line)
                    self._cond.notify_all()
        except _ReplyTimeout:
            waiter.abandoned = True
            raise
        except (OSError, ValueError, ProtocolError) as e:
            self._fail(_Lost(str(e) or type(e).__name__, sent=True))
        finally:
            with self._cond:
                self._reading = False
                self._cond.notify_all()

    def _deliver(self, line: str) -> None:
        if not self._pending:
            self._fail(_Lost(f"{self.address} sent a reply nobody asked for", sent=True))
            return
        oldest = self._pending.popleft()
        oldest.line, oldest.done = line, True

    def _read_lines(self, deadline: float) -> list[str]:
        while True:
            if self.broken is not None:
                raise OSError(self.broken)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _ReplyTimeout()
            readable, _, _ = select.select([self._sock], [], [], remaining)
            if not readable:
                raise _ReplyTimeout()
            chunk = self._sock.recv(262144)
            if not chunk:
                raise ConnectionResetError(f"{self.address} closed the connection")
            lines = self._reader.feed(chunk)
            if lines:
                return lines


class Client:
    """
    A blocking client of a kvstore cluster.

        >>> with Client(["127.0.0.1:5000", "127.0.0.1:5001"], timeout=5) as kv:
        ...     kv.put("greeting", "hello")
        ...     kv.get("greeting")
        'hello'

    Every call either returns within about C{timeout} seconds or raises a
    L{kvstore.client.errors.ClientError}; C{Not leader} replies, nodes that
    are down and elections are handled inside that time.

    @param nodes: C{host:port} addresses of some or all nodes; any one that
        is up is enough to find the leader.
    @param timeout: seconds one call may take, retries included.
    @param backoff: initial and maximum pause between rounds of retries.
    @param exactly_once: tag writes with an exactly-once session (opened
        on the first write) and retry them after C{Outcome unknown} or a
        lost connection, so that a write that returns was applied exactly
        once (the default); C{False} sends plain writes and never retries
        one whose outcome is unknown.
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
        self._lock = threading.Lock()
        self._connection: _Connection | None = None
        self._next_node = 0
        self._closed = False
        self._random = random.Random()
        self.exactly_once = exactly_once
        self._sessions = _sessions.SessionPool()

    # -- public surface --------------------------------------------------

    def put(self, key: str, value: str) -> None:
        """Store C{value} under C{key} once a majority has it."""
        self._write(p.Put(key, value))

    def get(self, key: str, stale: bool = False) -> str:
        """
        The value of C{key}: linearizable, from whichever node the client is
        talking to; or, with C{stale=True}, that node's local copy, which
        may lag.

        @raise KeyNotFound: if C{key} has no value.
        """
        return self._call(p.Get(key, stale))  # type: ignore[return-value]  # _call returns the reply the command's type implies: a str for Get

    def delete(self, key: str) -> None:
        """
        Remove C{key}.

        @raise KeyNotFound: if C{key} had no value.
        """
        self._write(p.Delete(key))

    def incr(self, key: str, delta: int = 1) -> int:
        """
        Add C{delta} (a signed 64-bit integer) to the integer stored in
        C{key}, a missing key counting as 0, and return the new value.

        @raise BadRequest: if the value is not an integer, or the sum would
            leave the signed 64-bit range (nothing changed).
        """
        return self._write(p.Incr(key, delta))  # type: ignore[return-value]  # an INCR returns its new value, an int

    def cas(self, key: str, expected: str, new: str, *, raise_on_mismatch: bool = False) -> bool:
        """
        Set C{key} to C{new} if its value is C{expected} (a non-empty str
        without whitespace): True if it did, False if the value was
        something else (nothing changed).

        @param raise_on_mismatch: raise L{CasFailed}, which carries the
            value found, instead of returning False.
        @raise KeyNotFound: if C{key} has no value.
        """
        try:
            return self._write(p.Cas(key, expected, new))  # type: ignore[return-value]  # a CAS returns True when it set the value
        except errors.CasFailed:
            if raise_on_mismatch:
                raise
            return False

    def status(self) -> dict[str, str]:
        """The C{STATUS} fields of the node the client is talking to."""
        return self._call(p.Status())  # type: ignore[return-value]  # _call returns the reply the command's type implies: a dict for Status

    def ping(self) -> None:
        """Round trip to the node the client is talking to."""
        self._call(p.Ping())

    def members(self) -> "list[Member]":
        """
        The cluster's members (the leader's C{MEMBERS} reply, the leader
        found as for any request), in id order.

        @raise ProtocolError: if the reply is not a list of members.
        """
        return parse_members(self.raw_command("MEMBERS"))

    def raw_command(self, line: str) -> str:
        """
        Send C{line} as typed (C{"INCR hits 2"}) and return the reply line,
        for commands without a method here; C{Error:} replies raise as for
        any call.  Unless its first word is a read (L{kvstore.client._raw.READ_WORDS}) it is
        treated as a write: never retried once it may have been sent.
        """
        return self._call(Raw.of(line))  # type: ignore[return-value]  # a Raw request's reply is its line

    @property
    def node(self) -> str | None:
        """The address of the node the client is talking to, if connected."""
        connection = self._connection
        return None if connection is None or connection.broken else connection.address

    def close(self) -> None:
        """Close the connection; later calls raise L{ClientError}."""
        with self._lock:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- exactly-once writes -----------------------------------------------

    def _write(self, request: p.Write) -> object:
        """Send a write, in a session unless C{exactly_once} is off (see
        L{kvstore.client._sessions})."""
        if not self.exactly_once:
            return self._call(request)
        p.check_request(request)  # a bad request opens no session
        deadline = time.monotonic() + self.timeout

        async def open_new() -> _sessions.Session:
            return await _sessions.open_session(call)

        async def call(request: p.Request) -> object:
            return self._call(request, deadline)

        async def send(tagged: p.Tagged, attempts: _sessions.Attempts) -> object:
            return self._call(tagged, deadline, attempts)

        return _sessions.run_without_suspending(_sessions.write_once(self._sessions, request, open_new, send))

    # -- the retry loop --------------------------------------------------

    def _call(self, request: p.Request, deadline: float | None = None,
              attempts: _sessions.Attempts | None = None) -> object:
        data = p.encode_request(request)
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        attempts = attempts if attempts is not None else _sessions.Attempts()
        target: str | None = None  # set by a redirect
        last_error: ClientError | None = None
        backoffs = redirects = 0
        while True:
            if time.monotonic() >= deadline:
                raise attempts.final_error(_policy.after_timeout(request, None, False, self.timeout, last_error))
            try:
                connection, round_complete = self._connect(target, deadline)
            except _ConnectFailed as failure:
                target = None
                action: _policy.Action = _policy.after_connect_failure(
                    failure.address, failure.reason, failure.round_complete)
            else:
                target = None
                try:
                    line = connection.roundtrip(data, deadline)
                except _ReplyTimeout:
                    raise attempts.final_error(_policy.after_timeout(request, connection.address, True, self.timeout,
                                                                     last_error)) from None
                except _Lost as lost:
                    self._forget(connection)
                    action = _policy.after_lost_connection(request, connection.address, lost.sent, lost.reason)
                except ProtocolError:
                    self._forget(connection)
                    raise
                else:
                    if self._connection is not connection:
                        connection.close_if_idle()
                    try:
                        reply = p.interpret_reply(request, line)
                    except ProtocolError:
                        self._forget(connection)
                        connection.close()
                        raise
                    action = _policy.after_reply(request, reply, connection.address)
                    if isinstance(action, _policy.Retry):
                        self._forget(connection, move_on=True)
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
                    time.sleep(max(0.0, min(self._backoff[0], deadline - time.monotonic())))
                continue
            if isinstance(action.error, errors.OutcomeUnknown):
                attempts.maybe_applied = True
            last_error = action.error
            if action.backoff:
                delay = _policy.backoff_delay(backoffs, *self._backoff, self._random.random())
                backoffs += 1
                time.sleep(max(0.0, min(delay, deadline - time.monotonic())))

    def _forget(self, connection: _Connection, move_on: bool = False) -> None:
        """Stop using C{connection} for new requests (requests in flight on
        it still get their replies); with C{move_on}, the next connection
        goes to the next listed node."""
        with self._lock:
            if self._connection is connection:
                self._connection = None
                connection.close_if_idle()
                if move_on and connection.address in self.nodes:
                    self._next_node = (self.nodes.index(connection.address) + 1) % len(self.nodes)

    def _connect(self, target: str | None, deadline: float) -> tuple[_Connection, bool]:
        # Another thread may be connecting (under the lock): wait at most until the deadline.
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise _ConnectFailed(target or "?", "another thread's connection attempt took too long", True)
        try:
            return self._connect_locked(target, deadline)
        finally:
            self._lock.release()

    def _connect_locked(self, target: str | None, deadline: float) -> tuple[_Connection, bool]:
        if self._closed:
            raise ClientError("the client is closed")
        current = self._connection
        if current is not None and current.broken is None and target in (None, current.address):
            return current, False
        if target is None:
            address = self.nodes[self._next_node]
            self._next_node = (self._next_node + 1) % len(self.nodes)
            round_complete = self._next_node == 0
        else:
            address, round_complete = target, False
        try:
            connection = _Connection.open(address, deadline - time.monotonic(), self.timeout)
        except OSError as e:
            raise _ConnectFailed(address, str(e) or type(e).__name__, round_complete) from None
        if current is not None:
            current.close_if_idle()
        self._connection = connection
        return connection, round_complete


class _ConnectFailed(Exception):
    def __init__(self, address: str, reason: str, round_complete: bool) -> None:
        super().__init__(address, reason)
        self.address, self.reason, self.round_complete = address, reason, round_complete
