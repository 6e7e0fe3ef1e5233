# -*- test-case-name: tests.test_storage_memory -*-
"""
In-memory twins of L{WriteAheadLog} and L{MetadataStore}.

Like hashicorp/raft's C{InmemStore}, these let the Raft node and the cluster
simulator run without touching the disk.  They keep the same interface and
the same observable rules (contiguous appends, non-decreasing terms,
C{durable_index} advancing only at L{MemoryLog.sync}, fail-stop after
L{MemoryLog.fail}), so code tested against them behaves the same on the real
log.  Their Deferreds fire synchronously.
"""

from __future__ import annotations

from typing import Callable, Sequence

from twisted.internet.defer import Deferred, fail, succeed

from kvstore.storage.errors import StorageFailedError
from kvstore.storage.metadata import MetadataRecord
from kvstore.storage.records import LogEntry

__all__ = ["MemoryLog", "MemoryMetadata"]


class MemoryLog:
    """A L{WriteAheadLog} look-alike that keeps everything in a list."""

    def __init__(self, entries: Sequence[LogEntry] = (), first_index: int = 1) -> None:
        """
        @param entries: initial content, treated as already durable.
        @param first_index: index of the first entry (or of the next, if empty).
        """
        self._first_index = first_index
        self._base_term = 0
        self._entries: list[LogEntry] = []
        self._failure: BaseException | None = None
        self._closed = False
        self._dirty = False
        self.fsync_count = 0
        #: As L{WriteAheadLog.on_flush}: (entries made durable, fsyncs).
        self.on_flush: Callable[[int, int], None] | None = None
        self._reset_floor = 0
        self.append(entries)
        self._durable_index = self.last_index
        self._dirty = False

    def entry_tuples(self) -> list[tuple[int, int, bytes]]:
        """Same contract as L{WriteAheadLog.entry_tuples} (here a copy)."""
        return [(e.index, e.term, e.payload) for e in self._entries]

    @property
    def entries(self) -> list[LogEntry]:
        """All entries in index order; the log's own list, do not mutate."""
        return self._entries

    @property
    def first_index(self) -> int:
        return self._first_index

    @property
    def last_index(self) -> int:
        return self._first_index + len(self._entries) - 1

    @property
    def last_term(self) -> int:
        return self._entries[-1][1] if self._entries else self._base_term

    @property
    def durable_index(self) -> int:
        return self._durable_index

    def entry(self, index: int) -> LogEntry:
        """The entry at C{index}; L{IndexError} if outside the log."""
        if index < self._first_index or index > self.last_index:
            raise IndexError(f"index {index} not in log [{self._first_index}, {self.last_index}]")
        return self._entries[index - self._first_index]

    def _check_writable(self) -> None:
        if self._failure is not None:
            raise StorageFailedError("memory log failed earlier") from self._failure
        if self._closed:
            raise StorageFailedError("memory log is closed")

    def append(self, entries: Sequence[LogEntry]) -> None:
        """Same contract as L{WriteAheadLog.append}."""
        self._check_writable()
        expected, term = self.last_index + 1, self.last_term
        entries = [LogEntry._make(e) for e in entries]
        for entry in entries:
            if entry.index != expected:
                raise ValueError(
                    f"non-contiguous append: got index {entry.index}, expected {expected}"
                )
            if entry.term < term:
                raise ValueError(
                    f"entry {entry.index} has term {entry.term}, lower than previous term {term}"
                )
            if not isinstance(entry.payload, bytes):
                raise TypeError("payload must be bytes")
            expected, term = expected + 1, entry.term
        if entries:
            self._entries.extend(entries)
            self._dirty = True

    def truncate_suffix(self, from_index: int) -> None:
        """Same contract as L{WriteAheadLog.truncate_suffix}."""
        self._check_writable()
        if from_index > self.last_index:
            return
        if from_index < self._first_index:
            raise ValueError(
                f"cannot truncate from {from_index}: the log starts at {self._first_index}"
            )
        del self._entries[from_index - self._first_index :]
        self._durable_index = min(self._durable_index, from_index - 1)
        self._dirty = True

    def drop_prefix(self, upto_index: int) -> None:
        """
        Drop entries C{<= upto_index}, always keeping at least the last one's
        successor position (the real log drops whole segments only, so it may
        keep more; callers must not depend on the exact amount).
        """
        self._check_writable()
        upto = min(upto_index, self.last_index)
        if upto >= self._first_index:
            del self._entries[: upto - self._first_index + 1]
            self._first_index = upto + 1

    def reset_after(self, index: int, term: int) -> None:
        """Same contract as L{WriteAheadLog.reset_after}: empty, continuing at C{index + 1}."""
        self._check_writable()
        if index < 0 or term < 0:
            raise ValueError(f"cannot reset the log after index {index} term {term}")
        self._entries = []
        self._first_index = index + 1
        self._base_term = term
        self._durable_index = min(self._durable_index, index)
        self._reset_floor = index  # entries through index were not written (on_flush)
        self._dirty = True

    def sync(self, at_once: bool = False) -> "Deferred[int]":
        """Make everything durable at once; fires synchronously (C{at_once}
        changes nothing here)."""
        if self._failure is not None or self._closed:
            return fail(StorageFailedError("memory log failed earlier or is closed"))
        durable_before = self._durable_index
        flushed = self._dirty
        if self._dirty:
            self.fsync_count += 1
            self._dirty = False
        self._durable_index = self.last_index
        if flushed and self.on_flush is not None:
            self.on_flush(max(0, self._durable_index - max(durable_before, self._reset_floor)), 1)
        return succeed(self._durable_index)

    def fail(self, error: BaseException | None = None) -> None:
        """Simulate a failed fsync: refuse all further writes and syncs."""
        self._failure = error if error is not None else OSError("simulated fsync failure")

    def close(self) -> "Deferred[None]":
        d = self.sync() if not self._closed and self._failure is None else succeed(0)
        self._closed = True
        return d.addCallback(lambda _: None)


class MemoryMetadata:
    """A L{MetadataStore} look-alike; saves complete synchronously."""

    def __init__(self, state: MetadataRecord | None = None) -> None:
        self._state = state if state is not None else MetadataRecord()
        self._durable_state = self._state
        self.save_count = 0
        self._failure: BaseException | None = None
        self.path = "<memory>"

    @property
    def state(self) -> MetadataRecord:
        return self._state

    @property
    def durable_state(self) -> MetadataRecord:
        return self._durable_state

    def save(self, state: MetadataRecord) -> "Deferred[None]":
        if not isinstance(state, MetadataRecord):
            raise TypeError(f"expected MetadataRecord, not {type(state).__name__}")
        if self._failure is not None:
            return fail(StorageFailedError("memory metadata failed earlier"))
        self._state = self._durable_state = state
        self.save_count += 1
        return succeed(None)

    def fail(self, error: BaseException | None = None) -> None:
        """Simulate a failed save: refuse all further saves."""
        self._failure = error if error is not None else OSError("simulated fsync failure")
