# -*- test-case-name: tests.test_snapshotting -*-
"""
Taking a snapshot of the state machine into the snapshot store while the
reactor keeps serving: the recommended technique of docs/performance.md
("Snapshots"), wired once so that the node, the simulator and the tests
all use the same flow.

  1. L{KeyValueStateMachine.begin_snapshot} freezes the map (O(1)); writes
     from now on go to its overlay.
  2. A L{Cooperator} encodes one slice of keys per step, never spending more
     than about a millisecond of a reactor turn (L{turn_limit}), with a
     pause between turns (L{TAKE_PAUSE}).
  3. Every ~1 MiB of encoded content is handed to the storage thread
     (L{LocalSnapshotWriter.write} runs there, writing and hashing); at most
     one chunk is in flight, so memory stays bounded and a slow disk slows
     the snapshot, not the node.
  4. L{LocalSnapshotWriter.finish} (trailer, fsync, rename, directory fsync)
     runs in the storage thread; only then does the returned Deferred fire,
     so the caller may drop the log prefix only once the snapshot is
     durable (issue 12's ordering rule).
  5. The overlay is merged back, a slice per step.

On any failure the temporary file is removed, the overlay is still merged
(the state machine must not be left half-frozen), and the Deferred fails.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Generator, Optional

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Cooperator
from twisted.logger import Logger
from twisted.python.failure import Failure

from kvstore.statemachine import DEFAULT_SLICE_ENTRIES, KeyValueStateMachine
from kvstore.storage.snapshots import CHUNK_SIZE, LocalSnapshotWriter, SnapshotInfo, SnapshotMeta, SnapshotStore
from kvstore.storage.wal import ThreadRunner

__all__ = ["take_snapshot", "turn_limit", "snapshot_cooperator", "DEFAULT_TURN", "TAKE_PAUSE"]

log = Logger()

#: Reactor time one cooperator turn may spend on a snapshot.  With Twisted's
#: default of 10 ms, stalls crossed 20 ms in two of four runs at a load of
#: 5-8 (docs/performance.md, "Snapshots").  4 ms kept the stalls of one
#: process below 20 ms, but in a cluster each reactor pass of every write
#: waited behind a turn on each node (figure 6: write p99 6-7x higher
#: during a snapshot); 1 ms turns with pauses between them (L{TAKE_PAUSE})
#: bring it near 2x (docs/performance.md, "Log compaction", figure 6).
DEFAULT_TURN = 0.001
#: The idle time between two turns of taking a snapshot (not of installing
#: one, which a follower needs done fast): the snapshot uses at most about a
#: fifth of the reactor, and of a CPU, so that the node's own writes and the
#: other nodes on the machine (which snapshot at the same index at the same
#: time) keep theirs.  A snapshot of 1,000,000 keys takes about 0.25 s of
#: the reactor's CPU, so it lasts a few seconds.
TAKE_PAUSE = 0.004


def turn_limit(clock: IReactorTime, seconds: float, max_steps: int | None) -> Callable[[], Callable[[], bool]]:
    """
    A Cooperator C{terminationPredicateFactory}: a turn ends after
    C{seconds} of C{clock} time or C{max_steps} steps, whichever comes
    first.  Under a simulated clock time does not move within a turn, so
    C{max_steps} is what bounds it there.
    """

    def factory() -> Callable[[], bool]:
        deadline = clock.seconds() + seconds
        steps = [0]

        def ended() -> bool:
            steps[0] += 1
            return clock.seconds() >= deadline or (max_steps is not None and steps[0] >= max_steps)

        return ended

    return factory


def snapshot_cooperator(
    clock: IReactorTime, turn: float = DEFAULT_TURN, max_steps: int | None = None, pause: float = 0.0
) -> Cooperator:
    """
    A Cooperator whose turns are at most C{turn} seconds (and C{max_steps}
    steps), scheduled on C{clock}, each at least C{pause} seconds after the
    previous one ended (a pause lets the process sleep between turns, which
    keeps the OS scheduler from treating it as a CPU hog on a busy machine).
    """
    return Cooperator(
        terminationPredicateFactory=turn_limit(clock, turn, max_steps),
        scheduler=lambda work: clock.callLater(pause, work),
    )


def take_snapshot(
    machine: KeyValueStateMachine,
    store: SnapshotStore,
    make_meta: Callable[[int], SnapshotMeta],
    run_in_thread: ThreadRunner,
    cooperator: Cooperator,
    *,
    chunk_bytes: int = CHUNK_SIZE,
    slice_entries: int = DEFAULT_SLICE_ENTRIES,
) -> "Deferred[SnapshotInfo]":
    """
    Snapshot C{machine} as of its applied index into C{store}.

    @param make_meta: gives the metadata for the frozen index (the caller
        knows that entry's term and the membership then); called once, on
        the reactor, right after the freeze.
    @return: fires with the installed snapshot once it is durable, after
        the overlay has been merged back; fails (with the temporary file
        removed and the overlay merged) if anything went wrong, including
        L{kvstore.statemachine.SnapshotInProgress} if one is running.
    """
    try:
        snapshot = machine.begin_snapshot()
    except Exception:
        return fail()
    outcome: list[SnapshotInfo] = []
    failures: list[Failure] = []

    def record(failure: Failure) -> None:
        failures.append(failure)

    # The metadata in the turn of the freeze, not in the first step a turn
    # later: by then the caller may no longer know the frozen index's term
    # (a snapshot installed from the leader empties the Raft core's log).
    meta: SnapshotMeta | None = None
    try:
        made = make_meta(snapshot.index)
        if made.index != snapshot.index:
            raise ValueError(f"metadata index {made.index} is not the frozen index {snapshot.index}")
        meta = made
    except Exception:
        failures.append(Failure())

    def steps() -> Generator[Optional["Deferred[object]"], None, None]:
        writer: LocalSnapshotWriter | None = None
        try:
            if meta is None:
                return
            opened: list[LocalSnapshotWriter] = []
            yield run_in_thread(partial(store.begin, meta)).addCallbacks(opened.append, record)
            if failures:
                return
            writer = opened[0]
            pending: list[bytes] = []
            size = 0
            while True:
                chunk = snapshot.next_chunk(slice_entries)
                if chunk is not None:
                    pending.append(chunk)
                    size += len(chunk)
                if size >= chunk_bytes or (chunk is None and pending):
                    data = b"".join(pending)
                    pending, size = [], 0
                    yield run_in_thread(partial(writer.write, data)).addErrback(record)
                    if failures:
                        return
                elif chunk is not None:
                    yield None
                if chunk is None:
                    break
            yield run_in_thread(writer.finish).addCallbacks(outcome.append, record)
        except Exception:
            failures.append(Failure())
        finally:
            snapshot.close()
            if failures and writer is not None:
                # Best effort: the store also removes leftovers when opened.
                run_in_thread(writer.abort).addErrback(
                    lambda f: log.failure("Removing an abandoned snapshot file failed", f)
                )

    def merge() -> Generator[None, None, None]:
        while not machine.merge_overlay(slice_entries):
            yield None

    def done(_: object) -> "Deferred[Any]":
        return cooperator.cooperate(merge()).whenDone()

    def result(_: object) -> SnapshotInfo:
        if failures:
            failures[0].raiseException()
        return outcome[0]

    d: Deferred[Any] = cooperator.cooperate(steps()).whenDone()
    d.addCallback(done)
    return d.addCallback(result)
