# -*- test-case-name: tests.test_admin_metrics_instruments -*-
"""
The instruments that time what the node does, each a thin wrapper put in
place by L{kvstore.admin.wiring} only when the admin endpoint is on:

  - L{TimedFileSystem}: times every fsync of the write-ahead log (on the
    WAL's thread);
  - L{RoundTrips} with L{MeteredPeers} and L{metered_receive}: the leader's
    round trip to each peer, from an AppendEntries leaving to its answer
    arriving;
  - L{ReactorLagProbe}: a periodic timer that measures how late it fires,
    which is how long the reactor was busy or blocked; C{/livez} reads it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, cast

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from kvstore.node.node import PeerSender
from kvstore.raft.messages import AppendEntries, AppendEntriesResponse, Message
from kvstore.storage.fs import FileSystem

__all__ = ["MeteredPeers", "ReactorLagProbe", "RoundTrips", "TimedFileSystem", "metered_receive", "timed_file_system"]


class TimedFileSystem:
    """
    A file system that passes every call to C{inner} and reports the
    duration of each C{fsync} and C{fsync_dir} that succeeds to C{observe},
    on the calling (the WAL's) thread: C{observe} must be thread-safe.
    Everything else is C{inner}'s own, including methods added to
    L{FileSystem} later.
    """

    def __init__(self, inner: FileSystem, observe: Callable[[float], None]) -> None:
        self._inner = inner
        self._observe = observe

    def fsync(self, fd: int) -> None:
        start = time.perf_counter()
        self._inner.fsync(fd)
        self._observe(time.perf_counter() - start)

    def fsync_dir(self, path: str) -> None:
        start = time.perf_counter()
        self._inner.fsync_dir(path)
        self._observe(time.perf_counter() - start)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def timed_file_system(inner: FileSystem, observe: Callable[[float], None]) -> FileSystem:
    """C{inner} with its fsyncs timed (L{TimedFileSystem}), as a L{FileSystem}."""
    return cast(FileSystem, TimedFileSystem(inner, observe))


@dataclass
class _Link:
    """The round-trip bookkeeping toward one peer, in one term."""

    term: int
    sent: int = 0  # AppendEntries sent in this term
    answered: int = 0  # answers received in this term
    probe: int = 0  # the number (in sent) of the message being timed; 0: none
    probe_sent_at: float = 0.0


class RoundTrips:
    """
    The leader's round-trip time to each peer, from the messages themselves
    (no extra traffic): time one AppendEntries at a time per peer, from its
    sending to the arrival of its answer.

    A follower answers every AppendEntries of a term once, in order, over
    one connection, so the n-th answer received in a term is the answer to
    the n-th message sent: when the count of answers reaches the timed
    message's number, its round trip is over.  A message or answer lost
    with a dropped connection would stall the count; a probe unanswered
    for C{give_up_after} seconds is abandoned and counting starts again
    (the next sample may then be short by what was in flight).
    """

    def __init__(
        self, clock: IReactorTime, observe: Callable[[int, float], None], give_up_after: float = 10.0
    ) -> None:
        self._clock = clock
        self._observe = observe
        self._give_up_after = give_up_after
        self._links: dict[int, _Link] = {}

    def sent(self, message: Message) -> None:
        """C{message} is being sent."""
        body = message.body
        if type(body) is not AppendEntries:
            return
        link = self._links.get(message.receiver)
        if link is None or link.term != body.term:
            link = self._links[message.receiver] = _Link(body.term)
        link.sent += 1
        now = self._clock.seconds()
        if link.probe == 0:
            link.probe, link.probe_sent_at = link.sent, now
        elif now - link.probe_sent_at > self._give_up_after:
            link.answered = link.sent - 1
            link.probe, link.probe_sent_at = link.sent, now

    def received(self, message: Message) -> None:
        """C{message} arrived from a peer."""
        body = message.body
        if type(body) is not AppendEntriesResponse:
            return
        link = self._links.get(message.sender)
        if link is None or link.term != body.term:
            return
        link.answered += 1
        if link.probe and link.answered >= link.probe:
            link.probe = 0
            self._observe(message.sender, self._clock.seconds() - link.probe_sent_at)


class MeteredPeers:
    """
    The node's L{PeerSender}: tells C{round_trips} of each message, then
    passes it to C{peers}.  Any other attribute is C{peers}' own.
    """

    def __init__(self, peers: PeerSender, round_trips: RoundTrips) -> None:
        self._peers = peers
        self._round_trips = round_trips

    def send(self, message: Message) -> None:
        self._round_trips.sent(message)
        self._peers.send(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._peers, name)


def metered_receive(receive: Callable[[Message], None], round_trips: RoundTrips) -> Callable[[Message], None]:
    """The node's C{receive}, telling C{round_trips} of each message first."""

    def metered(message: Message) -> None:
        round_trips.received(message)
        receive(message)

    return metered


class ReactorLagProbe:
    """
    A timer every C{interval} seconds that reports to C{observe} how late it
    fired: a reactor busy with other work, or blocked, runs it late.

    @ivar last_lag: the lateness of the last firing, in seconds.
    """

    def __init__(self, clock: IReactorTime, observe: Callable[[float], None], interval: float = 0.5) -> None:
        self._clock = clock
        self._observe = observe
        self.interval = interval
        self.last_lag = 0.0
        self._due: float | None = None
        self._call: IDelayedCall | None = None

    def start(self) -> None:
        """Start probing."""
        if self._call is None:
            self._schedule()

    def stop(self) -> None:
        """Stop probing."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._due = None

    def overdue(self) -> float:
        """How long the next firing is overdue now (0 if not yet due, or
        not probing); read on the reactor thread, this is how long the
        reactor was blocked just before."""
        if self._due is None:
            return 0.0
        return max(0.0, self._clock.seconds() - self._due)

    def _schedule(self) -> None:
        self._due = self._clock.seconds() + self.interval
        self._call = self._clock.callLater(self.interval, self._fire)

    def _fire(self) -> None:
        lag = self.overdue()
        self.last_lag = lag
        self._observe(lag)
        self._schedule()
