# -*- test-case-name: tests.test_recovery -*-
"""
Restart: the newest usable snapshot plus the log after it.

A node's data directory holds up to two snapshots (L{kvstore.storage.snapshots})
and a write-ahead log whose prefix was dropped once a snapshot covered it.
L{recover} runs once at start-up, after the log, the metadata file and the
snapshot store are open and before the Raft core exists.  It chooses the
snapshot to start from, reconciles the log with it, and restores the state
machine from it; L{kvstore.node.build.build_node} then starts the core at the
snapshot with the recovered commit index, and the core hands the node the
committed entries after the snapshot to apply before it has heard from
anyone (so a restarted node that cannot reach a leader still serves stale
reads of what it holds).

Choosing the snapshot, newest first (by index, then term):

  - A snapshot is I{usable} if it verifies (structure, SHA-256), belongs to
    this cluster, and the log continues it: the log's first index is at
    most the snapshot's index plus one.  The newest usable one is chosen;
    with none, the node starts from an empty state at index 0 and the log
    must start at index 1.
  - A newer snapshot that is damaged is skipped, with a warning naming the
    file, only if what is chosen still covers everything that snapshot
    held: the chosen snapshot (or index 0) is continued by the log and the
    log reaches the damaged snapshot's index.  Otherwise start-up is
    refused with L{RecoveryError} naming the damaged file: its content
    may be the only copy of committed entries.
  - A log that starts after the chosen snapshot's index plus one has a gap
    nothing fills: refused, naming the log's first segment (and, if any,
    the damaged snapshot that would have filled it).

Reconciling the log with the chosen snapshot at C{(index, term)}: a log
that ends before C{index}, or holds C{index} with another term, is not a
continuation of the snapshot (a crash during InstallSnapshot, after the
received snapshot was durable and before the log was reset): it is reset
to continue at C{index + 1} (L{kvstore.storage.wal.WriteAheadLog.reset_after}).
The snapshot holds only committed entries and the log's conflicting ones
were never committed, so nothing committed is lost; the reset is queued in
the log ahead of every later write, so nothing the node acknowledges can
become durable without it.  Entries at or below C{index} that the log still
holds stay: they are the catch-up tail a leader sends lagging followers
from.

The commit index to start from is the larger of the one in the metadata
file (a lower bound saved without an extra fsync on the write path; see
L{kvstore.storage.metadata}) and the snapshot's index, never beyond the
log's end.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from twisted.logger import Logger

from kvstore.allocator import large_buffers_from_the_heap
from kvstore.statemachine import CONTENT_FORMATS, ContentDecoder, InvalidSnapshotContent, KeyValueStateMachine
from kvstore.storage.errors import StorageError
from kvstore.storage.records import LogEntry
from kvstore.storage.snapshots import CorruptSnapshotError, SnapshotInfo, SnapshotStore
from kvstore.storage.wal import segment_name

__all__ = ["RecoveryError", "Recovered", "RecoverableLog", "recover", "report_line"]

log = Logger()


class RecoveryError(StorageError):
    """
    Start-up is refused: the snapshots and the log on disk do not fit
    together, or the snapshot to start from cannot be used.

    @ivar path: the file an operator must look at.
    @ivar reason: what is wrong with it.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class RecoverableLog(Protocol):
    """What recovery needs of the opened log (L{kvstore.storage.WriteAheadLog}
    or its in-memory twin)."""

    @property
    def first_index(self) -> int: ...

    @property
    def last_index(self) -> int: ...

    def entry(self, index: int) -> LogEntry: ...

    def reset_after(self, index: int, term: int) -> None: ...


@dataclass(frozen=True)
class Recovered:
    """
    What start-up recovered.

    @ivar snapshot: the verified snapshot the state machine was restored
        from, or L{None} (an empty state at index 0).
    @ivar index: the snapshot's index (0 without one).
    @ivar term: the snapshot's term (0 without one).
    @ivar commit_index: the commit index to start the core with: entries
        up to it are committed, and the core hands out C{(index,
        commit_index]} to apply before hearing from a leader.
    @ivar snapshot_keys: the keys the snapshot held.
    @ivar log_reset: whether the log did not continue the snapshot and was
        reset to start after it.
    @ivar skipped: damaged newer snapshots that were skipped.
    @ivar started: the timer's value when start-up began (for the report
        line, L{report_line}).
    """

    snapshot: SnapshotInfo | None
    index: int
    term: int
    commit_index: int
    snapshot_keys: int
    log_reset: bool
    skipped: tuple[CorruptSnapshotError, ...] = field(default=())
    started: float = 0.0


def _log_path(entries: RecoverableLog) -> str:
    """The log's first segment file, for error messages (a memory log has none)."""
    directory = getattr(entries, "directory", None)
    if not isinstance(directory, str):
        return "<write-ahead log>"
    return os.path.join(directory, segment_name(entries.first_index))


def _choose(
    store: SnapshotStore | None, entries: RecoverableLog, cluster_id: str | None
) -> tuple[
    SnapshotInfo | None, ContentDecoder | None, list[tuple[SnapshotInfo, CorruptSnapshotError]]
]:
    """
    The newest usable snapshot (verified), a decoder that holds its
    content, and the damaged snapshots newer than it; raise
    L{RecoveryError} when the rules of the module docstring refuse
    start-up.

    Each candidate is read once: its content is decoded as it is hashed
    (L{SnapshotStore.verify}'s sink), and the decoded state is used only if
    the digest then matches.  Content that does not decode is read a second
    time, hashing only, to tell a damaged file (skipped) from an intact one
    holding invalid content (refused).
    """
    first = entries.first_index
    damaged: list[tuple[SnapshotInfo, CorruptSnapshotError]] = []
    chosen: SnapshotInfo | None = None
    decoder: ContentDecoder | None = None
    for info in store.list() if store is not None else []:
        assert store is not None
        decoder = ContentDecoder()
        invalid: InvalidSnapshotContent | None = None
        try:
            try:
                verified = store.verify(info, content_sink=decoder.feed)
            except InvalidSnapshotContent as e:
                invalid = e
                verified = store.verify(info)
        except CorruptSnapshotError as e:
            damaged.append((info, e))
            decoder = None
            continue
        meta = verified.meta
        assert meta is not None
        if cluster_id is not None and meta.cluster_id is not None and meta.cluster_id != cluster_id:
            raise RecoveryError(
                verified.path, f"snapshot of cluster {meta.cluster_id!r}, not {cluster_id!r}; refusing to mix clusters"
            )
        if meta.content_format not in CONTENT_FORMATS:
            raise RecoveryError(
                verified.path,
                f"snapshot content format {meta.content_format!r} is not one this build reads ({', '.join(CONTENT_FORMATS)})",
            )
        if invalid is not None:
            raise RecoveryError(verified.path, f"the checksum is right but the content is not valid: {invalid}")
        chosen = verified
        break
    base = chosen.index if chosen is not None else 0
    if first > base + 1:
        what = f"the snapshot at index {base}" if chosen is not None else "no intact snapshot"
        if damaged:
            info, error = damaged[-1]
            raise RecoveryError(
                info.path,
                f"damaged ({error.reason}), and {what} leaves a gap before the log, which starts at index "
                f"{first} ({_log_path(entries)}); restore this node's data from a backup or another member",
            )
        raise RecoveryError(
            _log_path(entries),
            f"the log starts at index {first}, but {what} covers indexes up to {first - 1}: "
            f"entries {base + 1}..{first - 1} are missing",
        )
    for info, error in damaged:
        if entries.last_index < info.index:
            raise RecoveryError(
                info.path,
                f"damaged ({error.reason}); it covers up to index {info.index}, beyond the end of the log "
                f"(index {entries.last_index}), so the older state cannot stand in for it; restore this node's "
                f"data from a backup or another member",
            )
    return chosen, decoder, damaged


def recover(
    entries: RecoverableLog,
    snapshots: SnapshotStore | None,
    state_machine: KeyValueStateMachine,
    *,
    commit_index: int = 0,
    cluster_id: str | None = None,
    started: float | None = None,
    timer: Callable[[], float] = time.monotonic,
) -> Recovered:
    """
    Choose the snapshot, reconcile the log with it and restore the state
    machine, as the module docstring says.  Blocking (it reads the
    snapshot once, hashing and decoding it in the same pass): call it at
    start-up, before the reactor runs.

    @param entries: the opened log; it may be reset (queued, made durable
        by the log's next flush).
    @param snapshots: the opened snapshot store, or L{None} for a node
        without one.
    @param state_machine: a fresh state machine, restored from the snapshot.
    @param commit_index: the lower bound stored in the metadata file.
    @param cluster_id: this node's cluster; a snapshot of another is refused.
    @param started: when start-up began (by C{timer}); now by default.
    @raise RecoveryError: naming the file, if start-up must be refused.
    """
    began = timer() if started is None else started
    # The snapshot is read in 1 MiB chunks: from the heap, not one mmap each
    # (see kvstore.allocator).
    with large_buffers_from_the_heap():
        chosen, decoder, damaged = _choose(snapshots, entries, cluster_id)
    index = term = keys = 0
    if chosen is not None:
        assert decoder is not None
        index, term = chosen.index, chosen.term
        try:
            state_machine.restore_decoded(index, decoder)
        except InvalidSnapshotContent as e:
            raise RecoveryError(chosen.path, f"the checksum is right but the content is not valid: {e}") from None
        keys = len(state_machine)
    for info, error in damaged:
        log.warn(
            "snapshot {path} is damaged ({reason}): skipped; {base} and the log (indexes {first}..{last}) "
            "still cover everything it held",
            path=info.path,
            reason=error.reason,
            base=f"the snapshot at index {index}" if chosen is not None else "an empty state",
            first=entries.first_index,
            last=entries.last_index,
        )
    log_reset = False
    if chosen is not None and (
        entries.last_index < index or (entries.first_index <= index and entries.entry(index).term != term)
    ):
        log.info(
            "the log (indexes {first}..{last}) does not continue the snapshot at index {index} term {term} "
            "(a crash while installing it): the log is reset to continue at index {next}",
            first=entries.first_index,
            last=entries.last_index,
            index=index,
            term=term,
            next=index + 1,
        )
        entries.reset_after(index, term)
        log_reset = True
    commit = min(max(commit_index, index), max(index, entries.last_index))
    return Recovered(chosen, index, term, commit, keys, log_reset, tuple(e for _, e in damaged), began)


def report_line(recovered: Recovered, keys: int, now: float) -> str:
    """
    The restart report, once the state machine has applied everything known
    committed: C{"recovered N keys from snapshot at index I and M log
    entries in T s"}, where N is the keys the state machine holds then and
    M the entries applied from the log after the snapshot.
    """
    applied = recovered.commit_index - recovered.index
    return (
        f"recovered {keys} keys from snapshot at index {recovered.index} and {applied} log entries "
        f"in {max(0.0, now - recovered.started):.3f} s"
    )
