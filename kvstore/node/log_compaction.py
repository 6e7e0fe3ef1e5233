# -*- test-case-name: tests.test_log_compaction_steps -*-
"""
Dropping the log prefix a snapshot covers in bounded steps, one step per
reactor turn, instead of all at once.

After a snapshot the node drops every log entry up to a point (the
snapshot's index minus the catch-up window): with C{--snapshot-entries}
100,000 that is 100,000 entries, from the Raft core's list and the
write-ahead log's.  Deleting them in one C{del entries[:n]} frees every
entry's tuple and payload synchronously, about 20 ms of the reactor's time
per 100,000 entries on the reference machine (docs/performance.md,
"Log compaction", figure 6): the largest single piece of reactor work in a
snapshot.  L{StepwiseCompaction} drops at most L{DEFAULT_STEP_ENTRIES}
entries per reactor turn, so no turn spends more than about a millisecond
on it whatever the snapshot interval.

Compacting through a lower index than allowed is always safe (a shorter
compaction keeps more log, never less), so the log may stand half-dropped
between two steps, across crashes too: the snapshot is durable before the
first step (the node requests a compaction only then).  Each step re-reads
where the log starts (an installed snapshot may have reset it meanwhile)
and asks its C{compact} callable to go on.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["StepwiseCompaction", "DEFAULT_STEP_ENTRIES"]

#: Entries dropped per reactor turn.  Dropping 4,096 entries (freeing their
#: tuples and 100-byte payloads) took 0.1-0.4 ms on the reference machine.
DEFAULT_STEP_ENTRIES = 4096


class StepwiseCompaction:
    """
    Drives the compaction of one log towards the highest index requested,
    at most C{step_entries} entries per step, one step per turn of
    C{clock} (a C{callLater(0)}: the reactor polls for I/O between two
    steps).

    @param compact: drops the log through the index given (never more than
        C{step_entries} entries past L{first_index}); returns whether the
        compaction may go on (C{False}: the node stopped, failed or is
        installing a snapshot, which resets the log anyway; the rest of the
        request is abandoned).
    @param first_index: the log's first held index now.
    @param finished: called with the target once the steps that dropped
        something are over (the node makes the segment deletions durable
        then); not called when there was nothing to drop.
    """

    def __init__(
        self,
        clock: IReactorTime,
        compact: Callable[[int], bool],
        first_index: Callable[[], int],
        finished: Callable[[int], None],
        *,
        step_entries: int = DEFAULT_STEP_ENTRIES,
    ) -> None:
        if step_entries < 1:
            raise ValueError(f"step_entries must be at least 1, not {step_entries!r}")
        self._clock = clock
        self._compact = compact
        self._first_index = first_index
        self._finished = finished
        self.step_entries = step_entries
        #: The highest index requested so far.
        self.target = 0
        self._call: IDelayedCall | None = None
        self._dropped = False  # whether this run of steps dropped anything yet

    @property
    def running(self) -> bool:
        """Whether steps are still to come."""
        return self._call is not None

    def request(self, through: int) -> None:
        """Drop the log through C{through} (and whatever an earlier request
        asked): the first step runs now, the rest one per reactor turn."""
        self.target = max(self.target, through)
        if self._call is None:
            self._step()

    def cancel(self) -> None:
        """Abandon the rest (the node is stopping)."""
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def _step(self) -> None:
        self._call = None
        target = self.target
        first = self._first_index()
        if target >= first:
            upto = min(target, first + self.step_entries - 1)
            if not self._compact(upto):
                self._dropped = False
                return
            self._dropped = True
            if upto < target:
                self._call = self._clock.callLater(0, self._step)
                return
        if self._dropped:
            self._dropped = False
            self._finished(target)
