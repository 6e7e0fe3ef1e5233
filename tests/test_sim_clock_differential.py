# -*- test-case-name: tests.test_sim_clock_differential -*-
"""
Differential tests of the simulator's heap clock (kvstore.testing.sim.clock)
against C{twisted.internet.task.Clock}: the same program of C{callLater},
C{cancel}, C{reset}, C{delay} and C{advance} calls (callbacks scheduling
more calls, at the current time too) must run the same callbacks in the
same order, leave the same calls active and list the same delayed calls.
The simulator replaced C{Clock} with the heap clock; any difference would
make it run a different program from the one the tests ran before.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.sim.clock import HeapClock

# Few distinct delays, so that many calls fall due at the same time.
_DELAYS = st.sampled_from((0.0, 0.5, 1.0, 1.5, 2.0))
_SCHEDULE = st.tuples(st.just("schedule"), _DELAYS, st.one_of(st.none(), _DELAYS))
_CANCEL = st.tuples(st.just("cancel"), st.integers(0, 30))
_ADVANCE = st.tuples(st.just("advance"), st.sampled_from((0.0, 0.5, 1.0, 2.5)))
_RESET = st.tuples(st.just("reset"), st.integers(0, 30), _DELAYS)
_DELAY = st.tuples(st.just("delay"), st.integers(0, 30), st.sampled_from((-1.0, -0.5, 0.5, 1.0)))


def _run(clock: Any, program: list[tuple[Any, ...]]) -> tuple[list[str], list[bool], list[str], float]:
    """Run C{program} on C{clock}; return what ran (in order), which calls
    are still active, the labels of getDelayedCalls() and the time."""
    ran: list[str] = []
    calls: list[Any] = []  # the program's own calls, which its steps name by index
    children: dict[str, Any] = {}  # calls made by callbacks, by label
    labels: dict[int, str] = {}

    def fire(label: str, then: float | None) -> None:
        ran.append(label)
        if then is not None:
            child = clock.callLater(then, fire, label + "+", None)
            labels[id(child)] = label + "+"
            children[label + "+"] = child

    for step in program:
        kind = step[0]
        if kind == "schedule":
            label = f"c{len(calls)}"
            call = clock.callLater(step[1], fire, label, step[2])
            labels[id(call)] = label
            calls.append(call)
        elif kind == "advance":
            clock.advance(step[1])
        elif calls:
            call = calls[step[1] % len(calls)]
            if not call.active():
                continue
            if kind == "cancel":
                call.cancel()
            elif kind == "reset":
                call.reset(step[2])
            elif kind == "delay":
                call.delay(step[2])
    clock.advance(100)
    clock.advance(100)  # anything the first advance scheduled
    active = [c.active() for c in calls] + [children[k].active() for k in sorted(children)]
    return ran, active, [labels[id(c)] for c in clock.getDelayedCalls()], clock.seconds()


def _pending(clock: Any, program: list[tuple[Any, ...]]) -> list[str]:
    """The labels getDelayedCalls() lists after C{program} (no final advance)."""
    labels: dict[int, str] = {}
    calls: list[Any] = []
    for step in program:
        if step[0] == "schedule":
            call = clock.callLater(step[1], lambda: None)
            labels[id(call)] = f"c{len(calls)}"
            calls.append(call)
        elif step[0] == "advance":
            clock.advance(step[1])
        elif calls:
            call = calls[step[1] % len(calls)]
            if not call.active():
                continue
            if step[0] == "cancel":
                call.cancel()
            elif step[0] == "reset":
                call.reset(step[2])
            elif step[0] == "delay":
                call.delay(step[2])
    return sorted(labels[id(c)] for c in clock.getDelayedCalls())


class HeapClockMatchesTaskClockTests(SynchronousTestCase):
    @settings(max_examples=400, deadline=None)
    @given(st.lists(st.one_of(_SCHEDULE, _CANCEL, _ADVANCE), max_size=40))
    def test_schedule_cancel_advance(self, program: list[tuple[Any, ...]]) -> None:
        """With callLater, cancel and advance (all kvstore uses), the heap
        clock runs the same callbacks in the same order as Clock."""
        self.assertEqual(_run(HeapClock(), program), _run(Clock(), program))

    @settings(max_examples=400, deadline=None)
    @given(st.lists(st.one_of(_SCHEDULE, _CANCEL, _ADVANCE, _RESET, _DELAY), max_size=40))
    def test_pending_calls_with_reset_and_delay(self, program: list[tuple[Any, ...]]) -> None:
        """After resets and delays, getDelayedCalls lists each pending call
        once, the same calls as Clock."""
        self.assertEqual(_pending(HeapClock(), program), _pending(Clock(), program))

    def test_reset_earlier_listed_once(self) -> None:
        """A call reset to an earlier time appears once in getDelayedCalls."""
        clock = HeapClock()
        call = clock.callLater(2, lambda: None)
        call.reset(1)
        self.assertEqual(clock.getDelayedCalls(), [call])

    @settings(max_examples=400, deadline=None)
    @given(st.lists(st.one_of(_SCHEDULE, _CANCEL, _ADVANCE, _RESET, _DELAY), max_size=40))
    def test_runs_with_reset_and_delay(self, program: list[tuple[Any, ...]]) -> None:
        """With resets and delays too, the heap clock runs the same callbacks
        as Clock and leaves the same calls pending (the order of calls due
        at the same time may differ after a reset or delay to a later time:
        the heap clock pushes the call again, as the real reactor does)."""
        heap_ran, *heap_rest = _run(HeapClock(), program)
        clock_ran, *clock_rest = _run(Clock(), program)
        self.assertEqual((sorted(heap_ran), heap_rest), (sorted(clock_ran), clock_rest))

    def test_reset_later_tie_order(self) -> None:
        """A call reset to a later time runs after the calls already due
        then (Clock's stable sort would run it first): a known difference,
        and nothing in kvstore resets or delays a call."""
        clock = HeapClock()
        ran: list[str] = []
        moved = clock.callLater(0, ran.append, "moved")
        clock.callLater(0.5, ran.append, "waiting")
        moved.reset(0.5)
        clock.advance(1)
        self.assertEqual(ran, ["waiting", "moved"])
