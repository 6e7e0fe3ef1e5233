# -*- test-case-name: tests.test_sim_clock,tests.test_sim_clock_differential -*-
"""
A simulated clock with the behaviour of C{twisted.internet.task.Clock} and
a heap instead of a list re-sorted at every call.

C{Clock} sorts all pending calls at every C{callLater} and after every call
it runs, and removes a cancelled call from the list; with the hundreds of
messages in flight of a 6- or 7-node simulation that was most of the
simulator's time.  Here pending calls live in a heap ordered by (time,
order of scheduling), so calls due at the same time run in the order they
were scheduled, as with C{Clock}; a cancelled call is skipped when it comes
up; a call reset to an earlier time is pushed again and its older entry
skipped, one reset to a later time is pushed again when its old time comes.

One difference from C{Clock} remains (tests.test_sim_clock_differential):
a call reset or delayed to a later time runs after the calls already due
at that time, where C{Clock}'s stable re-sort keeps its old place; the
real reactor also pushes such a call again, and nothing in kvstore resets
or delays a call.
"""

from __future__ import annotations

import heapq
from typing import Any, Callable

from twisted.internet.base import DelayedCall
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer


@implementer(IReactorTime)
class HeapClock:
    """A deterministic C{IReactorTime}: time moves only in L{advance}."""

    def __init__(self) -> None:
        self.rightNow = 0.0
        self._heap: list[tuple[float, int, DelayedCall]] = []
        self._order = 0

    def seconds(self) -> float:
        return self.rightNow

    def callLater(self, delay: float, callable: Callable[..., object], *args: object, **kw: object) -> DelayedCall:
        call = DelayedCall(self.rightNow + delay, callable, args, kw, _ignore, self._push, self.seconds)
        self._push(call)
        return call

    def _push(self, call: DelayedCall) -> None:
        self._order += 1
        heapq.heappush(self._heap, (call.getTime(), self._order, call))

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap:
            when, _, call = heap[0]
            if call.cancelled or call.called:
                heapq.heappop(heap)
            elif call.delayed_time:
                # Reset to a later time (DelayedCall only notes the delay).
                heapq.heappop(heap)
                call.activate_delay()
                self._push(call)
            elif when != call.getTime():
                heapq.heappop(heap)  # reset to an earlier time: pushed again then
            else:
                return

    def next_time(self) -> float | None:
        """When the earliest pending call is due (None: nothing pending)."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def getDelayedCalls(self) -> list[DelayedCall]:
        # A call reset to an earlier time has two entries until the stale
        # one comes up; list each pending call once, as Clock does.
        pending = {id(c): c for _, _, c in sorted(self._heap, key=lambda e: e[:2]) if c.active()}
        return sorted(pending.values(), key=lambda c: c.getTime())

    def advance(self, amount: float) -> None:
        """Move time forward by C{amount} and run every call due by then,
        including calls they schedule for no later than the new time."""
        self.rightNow += amount
        heap = self._heap
        while True:
            self._drop_stale()
            if not heap or heap[0][0] > self.rightNow:
                return
            _, _, call = heapq.heappop(heap)
            call.called = 1
            call.func(*call.args, **call.kw)


def _ignore(call: Any) -> None:
    """A cancelled call stays in the heap and is skipped when it comes up."""
