# -*- test-case-name: tests.test_sim_inline_flush -*-
"""
Inline flushes in a simulated run (issue 16).

In production a log with fsync on flushes small batches on the reactor
thread while the disk is fast (L{InlineFlushPolicy}): at the end of the
reactor turn, or at once when the node has sent a batch's messages first
(C{sync(at_once=True)}), backing off to the storage thread for a while
after a slow flush and probing the disk again afterwards.  The simulator
runs that production policy on about two incarnations of a node in three
(L{InlineFlushes.for_incarnation}, drawn from the seed):

  - the end-of-turn flushes are C{callLater(0)} on the simulated clock,
    through L{_EndOfTurn}, which drops a call still pending when the
    incarnation crashes (the process is gone: nothing it scheduled runs);
  - the policy's timer is simulated time plus the time its inline flushes
    took, each flush's duration drawn from the incarnation's seeded
    generator by its I{disk} (L{DISKS}): a fast disk never trips the
    policy, a spiky one sometimes takes longer than
    L{INLINE_FLUSH_SLOW_SECONDS}, a busy one averages more than
    L{INLINE_FLUSH_AVERAGE_SECONDS}; so the inline path, the at-once path,
    the back-off to the thread and the probes after it all run, and a
    seed replays them exactly (no wall time anywhere);
  - the snapshot runner shares the disk with the log as in production
    (L{kvstore.daemon.service.snapshot_runner_for}): while a snapshot job
    is on the simulated disk, every flush goes to the thread.

An inline flush runs its writes and fsyncs against the node's
L{SimulatedFileSystem} outside any L{SimulatedDisk} job, so its fsyncs take
effect at once: the flush is complete when it returns, as the real one is
(the reactor is blocked until its C{fdatasync} returns).  Simulated time
does not move during it, and the reactor's stall is not modelled (only the
policy's timer sees the duration).  A crash can still land inside one: in
some incarnations (L{POWER_CUT_RATES}) the power fails during an inline
flush now and then, after its writes and before its fsyncs take effect
(L{SimulatedInlineFlushes.power_cut}).  Without that, what a node sends
just before an inline flush (the at-once path: after the batch's messages)
could never be followed by the loss of that flush, and a bug that sends an
acknowledgement before an inline fsync would go unseen: a flush on the
storage thread tears the same bytes, but through other code (the log's
Deferred path, not L{InlineFlushPolicy.run_timed}).
"""

from __future__ import annotations

import random
from collections import Counter
from functools import partial
from typing import Any, Callable, TypeVar

from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from kvstore.storage.wal import (
    INLINE_FLUSH_AVERAGE_SECONDS,
    INLINE_FLUSH_BACKOFF_SECONDS,
    INLINE_FLUSH_MAX_BACKOFF_SECONDS,
    INLINE_FLUSH_SLOW_SECONDS,
    InlineFlushPolicy,
    ThreadRunner,
)
from kvstore.testing.sim.fs import SimulatedDisk

__all__ = ["COVERAGE", "DISKS", "POWER_CUT_RATES", "InlineFlushes", "SimulatedInlineFlushes"]

T = TypeVar("T")

#: The soak's coverage counters this module maintains: flushes run on the
#: reactor (all of them, and those run at once rather than at the end of
#: the turn), slow ones that sent the following flushes to the thread, the
#: first inline flush after each such back-off (the probe), and flushes the
#: policy sent to the thread because a snapshot job was on the disk.
COVERAGE = ("inline_flushes", "at_once_flushes", "inline_backoffs", "inline_probes", "inline_snapshot_yields",
            "inline_power_cuts")

#: The chance per inline flush that the power fails during it, one of
#: these per incarnation: none, rare, or often enough that a short
#: incarnation of a few dozen flushes likely sees one.  Not higher: each
#: cut is one more crash, and at 5 % and 20 % the runs changed enough that
#: read-without-leadership-check left its test's seed range.
POWER_CUT_RATES = (0.0, 0.01, 0.05)


def _fast(rng: random.Random) -> float:
    # A quiet fast disk: a pwrite and fdatasync over preallocated space.
    return rng.uniform(0.0001, 0.0004)


def _spiky(rng: random.Random) -> float:
    # Fast, with now and then a flush slower than INLINE_FLUSH_SLOW_SECONDS.
    return rng.uniform(1.05, 10) * INLINE_FLUSH_SLOW_SECONDS if rng.random() < 0.03 else _fast(rng)


def _busy(rng: random.Random) -> float:
    # A disk shared with other work: the moving average drifts above
    # INLINE_FLUSH_AVERAGE_SECONDS while no single flush is slow.
    return rng.uniform(0.4, 2.4) * INLINE_FLUSH_AVERAGE_SECONDS


#: How long an inline flush takes on each kind of simulated disk (seconds,
#: from the incarnation's generator).
DISKS: dict[str, Callable[[random.Random], float]] = {"fast": _fast, "spiky": _spiky, "busy": _busy}


class _EndOfTurn:
    """
    The clock of one incarnation's end-of-turn flushes: C{callLater} on the
    simulated clock, except that a call still pending when the incarnation
    crashed never runs (the real process died with its reactor).  While a
    call runs, C{policy.at_end_of_turn} is set.
    """

    def __init__(self, clock: IReactorTime, policy: "SimulatedInlineFlushes") -> None:
        self._clock = clock
        self._policy = policy

    def seconds(self) -> float:
        return self._clock.seconds()

    def callLater(self, delay: float, f: Callable[..., object], *args: object, **kw: object) -> DelayedCall:
        return self._clock.callLater(delay, self._run, f, args, kw)  # type: ignore[return-value]  # IReactorTime's callLater returns an IDelayedCall; the simulator's is a DelayedCall

    def _run(self, f: Callable[..., object], args: tuple[object, ...], kw: dict[str, Any]) -> None:
        policy = self._policy
        if not policy.alive():
            return
        policy.at_end_of_turn = True
        try:
            f(*args, **kw)
        finally:
            policy.at_end_of_turn = False


class SimulatedInlineFlushes(InlineFlushPolicy):
    """
    The production L{InlineFlushPolicy} for one incarnation of a simulated
    node (module docstring): end-of-turn flushes on the simulated clock,
    a timer that adds each inline flush's drawn duration to simulated time,
    nothing inline once the incarnation's disk is killed, and the coverage
    counted into C{stats}.
    """

    def __init__(
        self,
        clock: IReactorTime,
        disk: SimulatedDisk,
        duration: Callable[[], float],
        stats: "Counter[str]",
        backoff_seconds: float = INLINE_FLUSH_BACKOFF_SECONDS,
        power_cut: Callable[[], bool] | None = None,
    ) -> None:
        """
        @param duration: how long the next inline flush takes (seconds).
        @param stats: the run's counters (L{COVERAGE}).
        @param backoff_seconds: the policy's first back-off; the longest is
            as many times longer as in production.
        @param power_cut: called during each inline flush once its writes
            are done and before its fsyncs take effect; it returns whether
            it crashed the incarnation there (then they never do).
        """
        self.power_cut = power_cut
        self._sim_clock = clock
        self._disk = disk
        self._duration = duration
        self._stats = stats
        # Seconds the reactor spent in inline flushes: the timer runs ahead
        # of simulated time by that much, which stands still meanwhile.
        self._stalled = 0.0
        self._probe_next = False
        self._snapshot_jobs = 0  # jobs of the runner sharing_the_disk wrapped, in flight
        #: Set while an end-of-turn flush runs (by L{_EndOfTurn}).
        self.at_end_of_turn = False
        scale = INLINE_FLUSH_MAX_BACKOFF_SECONDS / INLINE_FLUSH_BACKOFF_SECONDS
        super().__init__(_EndOfTurn(clock, self), timer=self._now, backoff_seconds=backoff_seconds,
                         max_backoff_seconds=scale * backoff_seconds)

    def _now(self) -> float:
        return self._sim_clock.seconds() + self._stalled

    def alive(self) -> bool:
        """Whether the incarnation still runs (its disk is not killed)."""
        return self._disk.alive

    def allows(self) -> bool:
        # A dead incarnation's log is never flushed inline: its fsyncs
        # would take effect at once, as a killed disk's never do.
        allowed = self.alive() and super().allows()
        if not allowed and self._snapshot_jobs:
            self._stats["inline_snapshot_yields"] += 1
        return allowed

    def sharing_the_disk(self, runner: ThreadRunner) -> ThreadRunner:
        # Counts the wrapped runner's jobs in flight, for the coverage of
        # flushes that yield to them (the policy itself counts them too).
        return super().sharing_the_disk(partial(self._run_snapshot_job, runner))

    def _run_snapshot_job(self, runner: ThreadRunner, f: Callable[[], T]) -> "Deferred[T]":
        self._snapshot_jobs += 1
        try:
            d = runner(f)
        except BaseException:
            self._snapshot_jobs -= 1
            raise

        def finished(result: object) -> object:
            self._snapshot_jobs -= 1
            return result

        return d.addBoth(finished)

    def run_timed(self, work: Callable[[], T]) -> T:
        at_once = not self.at_end_of_turn
        if self._probe_next:
            self._probe_next = False
            self._stats["inline_probes"] += 1
        slow_before = self.slow_flushes

        def timed() -> T:
            try:
                return self._cut_or_complete(work)
            finally:
                self._stalled += self._duration()

        try:
            return super().run_timed(timed)
        finally:
            self._stats["inline_flushes"] += 1
            if at_once:
                self._stats["at_once_flushes"] += 1
            if self.slow_flushes > slow_before:
                self._stats["inline_backoffs"] += 1
                self._probe_next = True


    def _cut_or_complete(self, work: Callable[[], T]) -> T:
        # The flush's fsyncs are held back until power_cut has had its say:
        # if the power failed, the writes are page cache the crash tears
        # or drops; if not, the fsyncs take effect before the flush returns.
        if self.power_cut is None or not self.alive():
            return work()
        fs = self._disk.filesystem
        effects: list[Callable[[], None]] = []
        fs.durability_sink = effects.append
        try:
            result = work()
        finally:
            fs.durability_sink = None
        if self.power_cut():
            self._stats["inline_power_cuts"] += 1
            return result
        for effect in effects:
            effect()
        return result


class InlineFlushes:
    """
    A run's choice, per node incarnation, of whether its log flushes inline
    and on which kind of disk (L{DISKS}), all from one seeded generator.
    """

    #: The share of incarnations whose log flushes inline.
    SHARE = 2 / 3

    def __init__(self, rng: random.Random, stats: "Counter[str]") -> None:
        self._rng = rng
        self._stats = stats

    def for_incarnation(
        self, clock: IReactorTime, disk: SimulatedDisk, power_cut: Callable[[], bool] | None = None,
    ) -> tuple[str, SimulatedInlineFlushes | None]:
        """The policy for a new incarnation whose thread runner is
        C{disk} (None: every flush on the thread), and its disk's name.

        @param power_cut: crashes the incarnation during an inline flush
            (L{SimulatedInlineFlushes}), returning whether it did; asked
            for a share of the flushes (L{POWER_CUT_RATES}).
        """
        rng = self._rng
        flush_seed = rng.getrandbits(64)
        flush_rng = random.Random(flush_seed)
        # Its own generator, from the same draw: the choices below and the
        # flush durations are those of a run without power cuts.
        cut_rng = random.Random(f"{flush_seed}/power-cuts")
        if rng.random() >= self.SHARE:
            return "off", None
        kind = rng.choice(("fast", "spiky", "spiky", "busy"))
        duration = DISKS[kind]
        # The production back-off, or shorter ones in proportion to a run
        # (3 s of faults, incarnations of a fraction of a second), so that
        # the probe after a back-off runs too.
        backoff = rng.choice((INLINE_FLUSH_BACKOFF_SECONDS, 0.2, 0.05))
        cuts: Callable[[], bool] | None = None
        rate = cut_rng.choice(POWER_CUT_RATES)
        if power_cut is not None and rate:
            cut = power_cut

            def cuts() -> bool:
                return cut_rng.random() < rate and cut()

        policy = SimulatedInlineFlushes(clock, disk, lambda: duration(flush_rng), self._stats, backoff, cuts)
        return f"{kind}/{backoff}" + (f"/cuts {rate}" if cuts is not None else ""), policy
