# -*- test-case-name: tests.test_clock_monotonic -*-
"""
Make the reactor's clock monotonic, so that Raft's timers ignore steps of
the wall clock.

Twisted's reactors measure time with C{time.time()}: C{callLater} stores the
wall-clock time a call is due and the reactor loop compares it with the
wall clock now.  When NTP (or an operator) steps the wall clock back by a
minute, every pending call waits a minute longer: a leader's heartbeats
stop and the followers elect a new leader.  A step forward fires every
pending call at once: election timeouts expire early, commit and read
deadlines pass, check-quorum deposes a healthy leader.

The Raft core, the node and the peer links take all their time from the
reactor they are given (C{IReactorTime}: C{seconds()} and C{callLater}), and
the reactor's own scheduling calls C{self.seconds()} everywhere (when a call
is made, when the loop decides how long to sleep, when it runs what is due).
So replacing the reactor's C{seconds} with C{time.monotonic} makes every
timer of the process monotonic at once: heartbeats, election timeouts,
check-quorum, the node's commit and read timeouts, reconnection back-off.
This must happen before anything is scheduled, since a call scheduled
earlier holds a wall-clock due time that a monotonic clock would read as
decades away (or long past); L{install_monotonic_clock} refuses otherwise.

Nothing in kvstore reads the reactor's clock as a date: log timestamps come
from C{twisted.logger}, which uses C{time.time()} itself.
"""

from __future__ import annotations

import time
from typing import Any, Callable

__all__ = ["install_monotonic_clock"]


def install_monotonic_clock(reactor: Any, monotonic: Callable[[], float] = time.monotonic) -> None:
    """
    Make C{reactor} measure time with C{monotonic} (by default
    C{time.monotonic}) for everything it schedules from now on.

    @param reactor: a Twisted reactor (a C{ReactorBase}: its C{callLater},
        C{timeout} and C{runUntilCurrent} read the time through
        C{self.seconds}).
    @raises RuntimeError: if the reactor already has calls scheduled; their
        due times are on the wall clock and would fire at the wrong time.
    """
    if getattr(reactor, "seconds", None) is monotonic:
        return
    pending = reactor.getDelayedCalls()
    if pending:
        raise RuntimeError(
            f"the monotonic clock must be installed before anything is scheduled; "
            f"{len(pending)} call(s) already pending: {pending!r}"
        )
    reactor.seconds = monotonic
