# -*- test-case-name: tests.test_client_sessions -*-
"""
Exactly-once sessions on the client side (issue 14), shared by the
blocking, the Twisted and the asyncio client: L{write_once} is the whole
of a session write, written once as a coroutine over the client's own way
of sending (see L{write_once} for how each client runs it).

The cluster keeps, per session, only the last write's reply, so a session
may have at most one write in flight: a second one would overtake the first,
whose retry would then find its reply gone (C{Stale sequence number}).  A
client therefore keeps a pool of idle sessions; each write borrows one (or
opens a new one when all are busy, which is how concurrent writes from
several threads, or several Deferreds, each get their own), tags itself
with the session's next sequence number, and gives the session back when
it is done, whatever the outcome.  A client that is used sequentially uses
one session for its whole life.

A sequence number is used once: after a write that raised, even
C{OutcomeUnknown}, the next write takes the next number.  If the raised
write's entry is applied later, it is behind the new one in the log and the
cluster refuses it as stale, so it is still applied at most once.
"""

from __future__ import annotations

import threading
from typing import Any, Awaitable, Callable, Coroutine, TypeVar

from kvstore.client import _protocol as p, errors

__all__ = ["Session", "SessionPool", "Attempts", "SessionGone", "renewal_refused", "session_not_opened",
           "write_once", "open_session", "run_without_suspending"]

T = TypeVar("T")


class Session:
    """
    One session the client opened: its id and the sequence number its next
    write uses.  C{gone} once the cluster said it expired.
    """

    __slots__ = ("id", "next_seq", "gone")

    def __init__(self, session_id: int) -> None:
        self.id = session_id
        self.next_seq = 1
        self.gone = False


class SessionPool:
    """The idle sessions of one client (thread-safe)."""

    def __init__(self) -> None:
        self._idle: list[Session] = []
        self._lock = threading.Lock()

    def take(self) -> Session | None:
        """An idle session, most recently used first (so that a client used
        sequentially keeps using one), or L{None} if every one is busy."""
        with self._lock:
            return self._idle.pop() if self._idle else None

    def give_back(self, session: Session) -> None:
        """A write is done with C{session}: its number is used up, and the
        session is idle again unless it is gone."""
        session.next_seq += 1
        if not session.gone:
            with self._lock:
                self._idle.append(session)

    def __len__(self) -> int:
        with self._lock:
            return len(self._idle)


class Attempts:
    """
    What the attempts of one write have shown so far: C{maybe_applied}
    once any attempt's outcome was unknown (the reply said so, the
    connection was lost after sending).  From then on, nothing short of the
    cluster's answer to the tag can say the write was not applied.
    """

    __slots__ = ("maybe_applied",)

    def __init__(self) -> None:
        self.maybe_applied = False

    def final_error(self, error: errors.ClientError) -> errors.ClientError:
        """The error to raise when the attempts stop with C{error}: if an
        earlier attempt may have been applied, a 'not applied' error from a
        later one (no leader, unavailable, no connection) would lie, so it
        becomes L{errors.OutcomeUnknown}."""
        if self.maybe_applied and isinstance(error, errors.NotApplied):
            return errors.OutcomeUnknown(f"retries exhausted after an unknown outcome; last: {error}")
        return error


def renewal_refused(message: str) -> errors.OutcomeUnknown:
    """The session expired while a write whose earlier attempt may have
    been applied was being retried: nobody can know any more."""
    return errors.OutcomeUnknown(f"{message}, and an earlier attempt's outcome was unknown")


def session_not_opened(error: errors.ClientError) -> errors.ClientError:
    """The error for a write whose session could not be opened: the write
    itself was never sent, so it certainly was not applied."""
    if not isinstance(error, errors.OutcomeUnknown):
        return error
    reason = str(error).removesuffix(" (the write may or may not have been applied)")
    return errors.Unavailable(f"could not open an exactly-once session: {reason}")


class SessionGone(Exception):
    """The cluster no longer knows the write's session (this attempt was
    not applied): what a client's send raises on L{_policy.RenewSession}."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


async def open_session(call: Callable[[p.OpenSession], Awaitable[object]]) -> Session:
    """A new session, opened by C{call} (the client's retry loop, within
    the write's deadline)."""
    try:
        session_id = await call(p.OpenSession())
    except errors.ClientError as e:
        raise session_not_opened(e) from None
    assert isinstance(session_id, int), session_id  # SESSION's reply is its id
    return Session(session_id)


async def write_once(pool: SessionPool, request: p.Write,
                     open_new: Callable[[], Awaitable[Session]],
                     send: Callable[[p.Tagged, Attempts], Awaitable[object]]) -> object:
    """
    One write in a session: borrow an idle session from C{pool} (or open
    one with C{open_new}), C{send} the write tagged with the session's next
    sequence number (the client's retry loop, which retries the same tag
    after unknown outcomes and records them in the L{Attempts}), renew the
    session if the cluster forgot it before anything may have been applied,
    and give the session back whatever happens.

    Written once for the three clients: the Twisted and asyncio clients'
    C{open_new} and C{send} are coroutines awaiting Deferreds or futures;
    the blocking client's never suspend, and it runs this with
    L{run_without_suspending}.
    """
    session = pool.take() or await open_new()
    attempts = Attempts()
    try:
        while True:
            try:
                return await send(p.Tagged(session.id, session.next_seq, request), attempts)
            except SessionGone as gone:
                session.gone = True
                if attempts.maybe_applied:
                    raise renewal_refused(gone.message) from None
                session = await open_new()
    finally:
        pool.give_back(session)


def run_without_suspending(coroutine: Coroutine[Any, Any, T]) -> T:
    """
    The result of C{coroutine}, which must finish without ever suspending
    (every awaitable it awaits is a coroutine that blocks instead): how
    the blocking client runs L{write_once}.
    """
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]  # the coroutine's return value, a T
    coroutine.close()
    raise RuntimeError("a blocking client's coroutine suspended")
