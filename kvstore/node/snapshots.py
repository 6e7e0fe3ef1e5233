# -*- test-case-name: tests.test_node_snapshots -*-
"""
A node's snapshots: when to take one, taking it, pruning old ones (but not
one being sent to a follower), and replacing the state machine with a
snapshot received from the leader -- each without stalling the reactor.

The node (L{kvstore.node.node.Node}) owns the order of the steps, because it
also talks to the Raft core and the log; this module owns the disk side:

  - L{SnapshotPolicy}: a snapshot is due once C{entries} entries, or
    C{bytes} bytes of log, have been applied since the last one (whichever
    first), and after it the log is kept from C{catchup_entries} entries
    before the snapshot's index, so that a follower lagging by fewer
    catches up from the log, not from the whole snapshot. The members of
    a cluster apply the same entries, so with one trigger they would all
    snapshot at the same index, at the same time, and every node's slowdown
    would land on the write path at once (the leader's commit waits for a
    follower); L{stagger_fraction} gives each node its own phase instead:
    the first interval after a start (or an installed snapshot) is shorter
    by that fraction, in entries and in bytes, and after it each node counts
    from its own last snapshot, so the members stay apart. A node therefore
    never has more than C{entries} entries or C{bytes} of log since its last
    snapshot (the documented bound), only sometimes fewer.
  - L{NodeSnapshots.take}: L{kvstore.node.snapshotting.take_snapshot} (an O(1)
    freeze, then slices of about a millisecond per reactor turn, paced by
    C{take_cooperator}, the file work on a storage thread); its Deferred
    fires once the file is durable,
    and only then may the node report it to the core and drop the log.
  - L{NodeSnapshots.prune}: keep the newest C{keep} snapshots, and every
    snapshot that something L{protect}ed (the InstallSnapshot sender reads
    it in chunks for as long as a transfer runs).
  - L{NodeSnapshots.restore}: verify an installed snapshot file and decode
    it into the state machine, reading chunks on the storage thread and
    decoding a quarter chunk per cooperator step (about 7 ms per 256 KiB at
    worst on the reference machine), then swap the whole map at once and
    free the replaced one a slice per step (L{release_in_slices}).

All file work goes through the C{run_in_thread} given (the production node
gives a thread of its own, apart from the log's: a 100 MB snapshot's fsync
must not hold up the log's group commits).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Generator, Optional

from twisted.internet.defer import Deferred
from twisted.internet.task import Cooperator
from twisted.logger import Logger
from twisted.python.failure import Failure

from kvstore.node.snapshotting import take_snapshot
from kvstore.statemachine import ContentDecoder, KeyValueStateMachine
from kvstore.storage.snapshots import KEEP, SnapshotInfo, SnapshotMeta, SnapshotStore, snapshot_name
from kvstore.storage.wal import ThreadRunner

__all__ = ["SnapshotPolicy", "NodeSnapshots", "stagger_fraction", "RESTORE_CHUNK", "RESTORE_STEP", "release_in_slices"]

#: Bytes of snapshot content read from the file at a time while installing.
RESTORE_CHUNK = 256 * 1024
#: Bytes of snapshot content decoded per cooperator step while installing
#: (a quarter of a chunk: 256 KiB took about 7 ms at worst on the reference
#: machine, so a step takes under 2 ms).
RESTORE_STEP = 64 * 1024
#: Keys of a replaced state machine freed per cooperator step after an
#: install (see L{release_in_slices}).
RELEASE_SLICE = 4096
#: What each applied entry counts towards C{SnapshotPolicy.bytes} besides
#: its payload: the write-ahead log's record header.
_ENTRY_OVERHEAD = 32


def stagger_fraction(node_id: int, cluster_size: int) -> float:
    """
    The fraction of a snapshot interval by which the node C{node_id} of a
    cluster of C{cluster_size} members snapshots earlier than a node with
    fraction 0: C{(node_id mod cluster_size) / cluster_size / 2}, so the
    members of a cluster numbered 1..n spread over the first half of the
    interval (1/6, 1/3 and 0 for nodes 1, 2 and 3 of three), deterministic
    and the same after any restart.
    """
    if cluster_size < 2:
        return 0.0
    return (node_id % cluster_size) / cluster_size / 2


def release_in_slices(garbage: dict[str, str], slice_keys: int = RELEASE_SLICE) -> Generator[None, None, None]:
    """
    Empty C{garbage}, a map nothing else refers to, C{slice_keys} keys per
    step (a cooperator task): freeing a map of a million keys in one go
    (dropping its last reference) stalls the reactor for tens of
    milliseconds; a slice of 4,096 keys takes well under one.
    """
    while garbage:
        for _ in range(min(slice_keys, len(garbage))):
            garbage.popitem()
        yield None


@dataclass(frozen=True)
class SnapshotPolicy:
    """
    When a node snapshots and how much log it keeps (the C{--snapshot-*}
    options).

    @ivar entries: snapshot once this many entries were applied since the
        last snapshot.
    @ivar bytes: ... or once this many bytes of log (payloads plus record
        headers) were.
    @ivar catchup_entries: after a snapshot at index I, drop the log only
        through I minus this.
    @ivar keep: snapshots kept on disk (besides protected ones).
    """

    entries: int = 10_000
    bytes: int = 64 * 1024 * 1024
    catchup_entries: int = 5_000
    keep: int = KEEP

    def __post_init__(self) -> None:
        if self.entries < 1 or self.bytes < 1 or self.catchup_entries < 0 or self.keep < 1:
            raise ValueError(f"invalid snapshot policy {self!r}")


class NodeSnapshots:
    """
    The disk side of one node's snapshots (see the module docstring).

    @ivar store: the snapshot directory.
    @ivar policy: when to snapshot and what to keep.
    @ivar run_in_thread: where the blocking file work runs.
    @param cooperator: runs the slices of installing a snapshot (and of
        taking one, unless C{take_cooperator} is given).
    @param take_cooperator: runs the slices of taking a snapshot.
    @ivar index: the index of the newest snapshot this node has (taken,
        installed or recovered); what the trigger counts from.
    @param stagger: this node's L{stagger_fraction}: the first interval
        after a start or an installed snapshot is shorter by this fraction
        (of C{policy.entries} and of C{policy.bytes}).
    """

    log = Logger()

    def __init__(
        self,
        store: SnapshotStore,
        policy: SnapshotPolicy,
        run_in_thread: ThreadRunner,
        cooperator: Cooperator,
        *,
        index: int = 0,
        take_cooperator: Cooperator | None = None,
        stagger: float = 0.0,
    ) -> None:
        if not 0.0 <= stagger < 1.0:
            raise ValueError(f"invalid snapshot stagger {stagger!r}")
        self.store = store
        self.policy = policy
        self.run_in_thread = self._run = run_in_thread
        self._cooperator = cooperator
        # Taking a snapshot is paced (short turns with pauses between them:
        # kvstore.node.snapshotting.TAKE_PAUSE); installing one is not, since a
        # follower waits for it.
        self._take_cooperator = take_cooperator if take_cooperator is not None else cooperator
        self.index = index
        self._bytes = 0
        self._entries = 0
        self._first_entries = policy.entries - int(policy.entries * stagger)
        self._first_bytes = policy.bytes - int(policy.bytes * stagger)
        #: The limits of the current interval (shorter for the first).
        self._entries_limit = self._first_entries
        self._bytes_limit = self._first_bytes
        #: Log bytes per applied entry over the last snapshot interval.
        self._bytes_per_entry: float | None = None
        self._protected: Counter[str] = Counter()
        #: The size of the file the last L{restore} read (for monitoring).
        self.restored_bytes = 0
        #: Fires when the running snapshot (taken or restored) is over.
        self.busy: Deferred[None] | None = None

    # -- the trigger -------------------------------------------------------

    def note_applied(self, payload_bytes: int, entries: int) -> None:
        """Count C{entries} applied entries with C{payload_bytes} of payload."""
        self._bytes += payload_bytes + entries * _ENTRY_OVERHEAD
        self._entries += entries

    def due(self, applied_index: int) -> bool:
        """Whether a snapshot should start now, as of C{applied_index}."""
        if self.busy is not None:
            return False
        return applied_index - self.index >= self._entries_limit or (
            applied_index > self.index and self._bytes >= self._bytes_limit
        )

    def compact_through(self, snapshot_index: int) -> int:
        """The last index the log may drop after a snapshot at C{snapshot_index}."""
        return snapshot_index - self.policy.catchup_entries

    def max_held_for_followers(self) -> int:
        """
        The most entries a leader keeps beyond L{compact_through}'s point
        for a follower being sent a snapshot or catching up from one
        (L{kvstore.raft.core.RaftCore.compaction_point}): four snapshots'
        worth of entries, the catch-up window, or as many entries as
        C{bytes} (C{--snapshot-bytes}) of log holds at the last interval's
        bytes per entry, whichever is largest.  A snapshot's transfer and
        install take seconds during which writes go on (figure 4: 10 s, 70k
        writes); a follower that needs more than this is dead or hopeless
        and gets a newer snapshot instead of an ever-growing log: the
        leader keeps at most about one more C{--snapshot-bytes} of log.
        """
        held = max(4 * self.policy.entries, self.policy.catchup_entries)
        if self._bytes_per_entry:
            held = max(held, int(self.policy.bytes / self._bytes_per_entry))
        return held

    # -- taking ------------------------------------------------------------

    def take(
        self, machine: KeyValueStateMachine, make_meta: Callable[[int], SnapshotMeta]
    ) -> "Deferred[SnapshotInfo]":
        """
        Snapshot C{machine} as of its applied index (see
        L{kvstore.node.snapshotting.take_snapshot}); fires with the durable
        snapshot.  L{busy} is set until it is over, and the trigger counts
        from the snapshot's index from now on.
        """
        if self._entries:
            self._bytes_per_entry = self._bytes / self._entries
        self._bytes = self._entries = 0
        self._entries_limit, self._bytes_limit = self.policy.entries, self.policy.bytes
        busy: Deferred[None] = Deferred()
        self.busy = busy

        def over(result: object) -> object:
            self.busy = None
            if isinstance(result, SnapshotInfo):
                self.index = max(self.index, result.index)
            busy.callback(None)
            return result

        taken = take_snapshot(machine, self.store, make_meta, self._run, self._take_cooperator)
        return taken.addBoth(over)

    # -- pruning -----------------------------------------------------------

    def protect(self, name: str) -> None:
        """Keep the snapshot file C{name} (a base name) from being pruned
        until as many L{release} calls (a transfer reading it)."""
        self._protected[name] += 1

    def release(self, name: str) -> None:
        """Undo one L{protect} of C{name}."""
        if self._protected[name] <= 1:
            del self._protected[name]
        else:
            self._protected[name] -= 1

    @property
    def protected(self) -> frozenset[str]:
        """The names L{prune} does not delete now."""
        return frozenset(self._protected)

    def prune(self) -> "Deferred[list[str]]":
        """Delete all but the newest C{keep} snapshots and the protected
        ones, durably, on the storage thread; fires with the names deleted."""
        keep, protect = self.policy.keep, self.protected
        d: Deferred[list[str]] = self._run(partial(self.store.prune, keep, protect))

        def deleted(names: list[str]) -> list[str]:
            if names:
                self.log.info("deleted old snapshots {names}", names=", ".join(names))
            return names

        return d.addCallback(deleted)

    # -- installing ----------------------------------------------------------

    def path(self, index: int, term: int) -> str:
        """The file of the snapshot at C{index}/C{term}."""
        return os.path.join(self.store.directory, snapshot_name(index, term))

    def restore(self, machine: KeyValueStateMachine, index: int, term: int) -> "Deferred[int]":
        """
        Replace C{machine}'s whole state with the installed snapshot at
        C{index}/C{term}: verified (whole-file digest) and read on the
        storage thread, decoded one L{RESTORE_CHUNK} per reactor turn,
        swapped in at once.  Fires with the number of keys; fails with the
        storage or content error (nothing changed) if the file cannot be
        used.  Call it only while no snapshot is being taken (L{busy}).
        """
        if self.busy is not None:
            raise RuntimeError("a snapshot is in progress")
        busy: Deferred[None] = Deferred()
        self.busy = busy
        failures: list[Failure] = []
        info = SnapshotInfo(self.path(index, term), index, term)

        def record(failure: Failure) -> None:
            failures.append(failure)

        verified: list[SnapshotInfo] = []

        def steps() -> Generator[Optional["Deferred[object]"], None, None]:
            yield self._run(partial(self.store.verify, info)).addCallbacks(verified.append, record)
            if failures:
                return
            chunks: Generator[bytes, None, None] = self.store.read_content(verified[0], RESTORE_CHUNK)  # type: ignore[assignment]  # read_content is a generator function
            decoder = ContentDecoder()
            try:
                while True:
                    got: list[bytes | None] = []
                    yield self._run(partial(next, chunks, None)).addCallbacks(got.append, record)
                    if failures:
                        return
                    chunk = got[0]
                    if chunk is None:
                        break
                    for start in range(0, len(chunk), RESTORE_STEP):
                        decoder.feed(chunk[start : start + RESTORE_STEP])
                        yield None
                replaced = machine.restore_decoded(index, decoder)
                # Not part of the install (whose Deferred fires now): the
                # old map is freed a slice per step afterwards.
                self._cooperator.cooperate(release_in_slices(replaced))
            except Exception:
                failures.append(Failure())
            finally:
                try:
                    chunks.close()
                except OSError:
                    pass  # the file is closed already (the process is going down)

        def over(result: object) -> object:
            self.busy = None
            busy.callback(None)
            if isinstance(result, Failure):
                return result
            if failures:
                return failures[0]
            self.index = max(self.index, index)
            self._bytes = self._entries = 0
            self._entries_limit, self._bytes_limit = self._first_entries, self._first_bytes
            self.restored_bytes = (verified[0].size or 0) if verified else 0
            return len(machine)

        d: Deferred[Any] = self._cooperator.cooperate(steps()).whenDone()
        return d.addBoth(over)
