# -*- test-case-name: tests.test_client_sessions -*-
"""
Exactly-once sessions on the client side (issue 14), shared by the blocking
and the Twisted client.

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

from kvstore.client import errors

__all__ = ["Session", "SessionPool", "Attempts", "renewal_refused", "session_not_opened"]


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
