# -*- test-case-name: tests.test_sim_clock -*-
"""
The simulator's heap-based clock (kvstore.testing.sim.clock) runs calls as
C{task.Clock} does: by time, calls due at the same time in the order they
were scheduled, cancelled calls never, reset calls at their new time.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.sim.clock import HeapClock


class HeapClockTests(SynchronousTestCase):
    def test_order_cancel_and_reset(self) -> None:
        """Calls run in time order, ties in scheduling order; a cancelled
        call never runs; a reset call runs at its new time; calls scheduled
        by a running call for no later than now run in the same advance."""
        clock = HeapClock()
        ran: list[str] = []
        clock.callLater(2, ran.append, "b")
        clock.callLater(1, ran.append, "a1")
        clock.callLater(1, ran.append, "a2")
        cancelled = clock.callLater(1.5, ran.append, "cancelled")
        moved = clock.callLater(0.5, ran.append, "moved")
        cancelled.cancel()
        moved.reset(2.5)
        clock.callLater(1, lambda: clock.callLater(0, ran.append, "nested"))
        self.assertEqual(clock.next_time(), 1)
        clock.advance(1)
        self.assertEqual(ran, ["a1", "a2", "nested"])
        self.assertEqual(clock.next_time(), 2)
        clock.advance(2)
        self.assertEqual(ran, ["a1", "a2", "nested", "b", "moved"])
        self.assertIsNone(clock.next_time())
        self.assertEqual(clock.seconds(), 3)

    def test_delayed_calls_lists_active_calls(self) -> None:
        """getDelayedCalls lists the pending calls, not cancelled ones."""
        clock = HeapClock()
        keep = clock.callLater(1, lambda: None)
        clock.callLater(2, lambda: None).cancel()
        self.assertEqual(clock.getDelayedCalls(), [keep])
