# -*- test-case-name: tests.test_storage_wal -*-
"""
The write-ahead log: the durable copy of the Raft log.

Why it looks like this:

  - B{Segments.}  The log is a directory of files C{wal-<20-digit first
    index>.log}, each a header plus checksummed records (format in
    L{kvstore.storage.records}).  Segments make prefix deletion (after a
    snapshot) a matter of unlinking files, and bound how much one file holds.

  - B{Everything in memory, writes on a thread.}  The Raft core needs the
    whole log, so L{WriteAheadLog.entries} is an in-memory list, updated at
    once by L{WriteAheadLog.append} and L{WriteAheadLog.truncate_suffix}.
    Those calls only encode bytes and queue file operations (O(bytes
    appended), no I/O, no re-reading files); the blocking C{pwrite}/C{fsync}
    work runs through an injected C{run_in_thread}, so the reactor never
    waits for the disk.

  - B{Group commit.}  L{WriteAheadLog.sync} returns a Deferred that fires
    once everything queued before the call is written and fsynced.  At most
    one flush runs at a time; every sync requested while it runs joins the
    I{next} flush, which writes all records queued meanwhile in one write and
    one fsync.  N concurrent writers thus cost about two fsyncs, not N.

  - B{Crash safety.}  Each segment is created as a C{.tmp} file, fsynced,
    renamed into place, and the directory fsynced, so a segment header is
    never torn.  Before a new segment is created the previous one is fsynced,
    so a torn write can only ever be at the end of the I{last} segment.  A
    suffix truncation deletes later segments newest-first (fsyncing the
    directory after each, so the survivors are always a prefix of the log),
    then C{ftruncate}s the containing segment and fsyncs it I{before} any new
    record is written over the same bytes; so after a crash at any point,
    recovery sees the old log, a prefix of it, or the truncated log plus new
    records, never old and new records interleaved.

  - B{Recovery rule.}  Every record carries C{synced}: a lower bound, known
    when it was encoded, on how many leading bytes of its segment a
    I{completed} fsync had made durable before the record was written (the
    end of the last finished flush, lowered by any truncation queued since;
    a new segment's header counts, since it is fsynced at creation).  On
    open, let D be the offset of the first record of the last segment that
    is incomplete or fails its checksum.  If some intact record after D with
    an index at least D's expected one claims C{synced > D}, the bytes at D
    had been fsynced before that record was written: the damage is in
    durable data, and L{CorruptLogError} names the file and D.  Otherwise
    the damage is a torn tail: the log is truncated at D with a warning.
    The search past D has no limit in bytes or indexes
    (L{kvstore.storage.records.find_next_record}).

    Why this is right.  Let E be the end of the bytes covered by the last
    completed fsync of the last segment.  A crash can damage only bytes
    written after that fsync, at offsets >= E (sectors and pages of the
    unfinished flush may each be kept, lost, zero-filled or garbled, in any
    combination; a partly written sector keeps its bytes below E).  So (1)
    the reader passes every record below E intact, D >= E, and truncating
    at D never removes a record covered by a completed fsync; (2) every
    intact record after D was written after that fsync, so it claims
    C{synced <= E <= D}, and recovery never refuses because of bytes
    written after the last fsync; (3) no record past D is kept, so a record
    is never invented out of a damaged region.  A record is never written
    over fsynced bytes without an fsynced truncation first, so a lost sector
    shows zeros (or nothing), never an older record with a higher claim.

    What is still caught: damage anywhere in a segment that is not the last,
    a bad header, a gap or an out-of-sequence record, and damage in the last
    segment followed by any intact record of a I{later} flush.  What cannot
    be caught: damage inside the last flush written before the crash, with
    no later flush after it -- nothing on disk says whether that flush's
    fsync finished, so a bit flip there is indistinguishable from its torn
    write and is truncated like one (etcd truncates a bad last record the
    same way; refusing instead would stop a node for data that was never
    acknowledged, which is the bug this rule fixes).

  - B{Preallocation.}  A segment's file is kept up to
    L{PREALLOCATE_BYTES} ahead of its records by writing zeros (at
    creation, then whenever a write comes within a record header of the
    zeroed end), and the records are written over those zeros.  An fsync
    (C{fdatasync}: L{FileSystem.fsync}) after a write that neither grows
    the file nor fills a hole has no metadata to commit, so it can skip
    the file system's journal.  Zeros rather than C{fallocate}: a
    C{fallocate}d range is "unwritten", and the first write into it is
    again a metadata change.  Recovery reads a record header's worth of
    zeros or more, and nothing else, after a segment's last record as its
    clean end (nothing to truncate, no warning; a log opened without
    preallocation truncates the last segment's zeros with a warning).  A
    segment that is not the last keeps its zeros (trimming them at
    roll-over would cost an fsync); a build older than this one reads
    those zeros as damage, so downgrading needs such segments trimmed to
    their records.  The
    recovery rule below holds as it is: a sector of the unfinished flush
    that is lost shows the zeros it overwrote, the same as a hole past the
    end did, and records are never written over anything but zeros or
    fsynced-truncated space.

  - B{Small flushes on the reactor while the disk is fast.}  With an
    L{InlineFlushPolicy}, a flush that only overwrites preallocated zeros
    with a few records (no segment creation, truncation, unlink or
    zero-filling) runs on the reactor thread, at the end of the current
    reactor turn, instead of on the storage thread: its C{pwrite} and
    C{fdatasync} take about 0.15 ms on a fast disk, less than the two thread
    hand-offs around it (queue, wake-up, GIL, C{callFromThread}).  It is
    still one group commit (every sync requested meanwhile joins the next
    flush), and it is measured: a slow one sends the next flushes back to
    the thread for a while (L{InlineFlushPolicy}).

  - B{Fail-stop.}  If a write or fsync fails, the sync Deferreds errback and
    the log refuses every later write with L{StorageFailedError}: after a
    failed fsync the kernel may have discarded dirty pages, so carrying on
    could acknowledge data that is not on disk.
"""

from __future__ import annotations

import os
import queue
import re
import threading
import time
from array import array
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Protocol, Sequence, TypeVar, Union

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from kvstore import trace
from kvstore.storage.errors import CorruptLogError, StorageFailedError
from kvstore.storage.fs import FileSystem
from kvstore.storage.records import (
    FORMAT_VERSION,
    READABLE_VERSIONS,
    RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    DecodedRecord,
    LogEntry,
    RecordReader,
    StopReason,
    decode_segment_header,
    encode_record,
    encode_segment_header,
    find_next_record,
)

__all__ = [
    "WriteAheadLog",
    "LogEntry",
    "PREALLOCATE_BYTES",
    "CorruptLogError",
    "InlineFlushPolicy",
    "StorageFailedError",
    "StorageThread",
    "ThreadRunner",
    "default_thread_runner",
    "run_inline",
    "segment_name",
]

T = TypeVar("T")



class ThreadRunner(Protocol):
    """
    C{run_in_thread(f)} runs the blocking callable C{f} somewhere other than
    the reactor thread and returns a Deferred of its result, fired on the
    reactor thread.  Production: L{default_thread_runner}; tests: a
    synchronous runner (C{lambda f: succeed(f())}) or a manual one.
    """

    def __call__(self, f: Callable[[], T], /) -> "Deferred[T]": ...

_SEGMENT_RE = re.compile(r"^wal-(\d{20})\.log$")
_NON_ZERO = re.compile(rb"[^\x00]")

#: How far (bytes) a segment's file is kept zero-filled ahead of its last
#: record (module docstring, "Preallocation"); never past C{segment_bytes}.
#: One MiB is about 7,000 small records per extension, and one extension's
#: zeros are a few milliseconds of writing even on a slow disk.
PREALLOCATE_BYTES = 1024 * 1024
_ZEROS = bytes(64 * 1024)
_TMP_SUFFIX = ".tmp"


def segment_name(first_index: int) -> str:
    """The file name of the segment whose first record has C{first_index}."""
    return f"wal-{first_index:020d}.log"


def default_thread_runner(f: Callable[[], T]) -> "Deferred[T]":
    """
    Production runner: the reactor's thread pool.

    The reactor is imported here, not at module level, so that importing the
    storage package never installs a reactor.
    """
    from twisted.internet import reactor
    from twisted.internet.threads import deferToThreadPool

    return deferToThreadPool(reactor, reactor.getThreadPool(), f)  # type: ignore[arg-type,attr-defined]  # the real reactor provides IReactorThreads


# --------------------------------------------------------------------------
# File operations queued on the reactor side and executed by the writer.


@dataclass
class _Write:
    path: str
    offset: int
    chunks: list[bytes]
    end: int  # offset + total length of chunks; lets appends merge in O(1)


@dataclass(frozen=True)
class _Create:
    path: str
    first_index: int


@dataclass(frozen=True)
class _Truncate:
    path: str
    length: int


@dataclass(frozen=True)
class _Unlink:
    path: str


_Op = Union[_Write, _Create, _Truncate, _Unlink]


#: The planted bug (kvstore.testing.sim.plants) that makes recovery trust records
#: without verifying their checksums.
PLANT_SKIP_CHECKSUM = "skip-checksum-on-recovery"


def _witness_of_durable_damage(data: bytes, damage: int, expected_index: int) -> DecodedRecord | None:
    """
    An intact record after offset C{damage} (index at least
    C{expected_index}) claiming that bytes beyond C{damage} were fsynced
    before it was written, or L{None}: the evidence the recovery rule (module
    docstring) needs to call damage corruption rather than a torn tail.
    Claims grow along the file, so every intact run after the damage is
    walked, resynchronising past each further damaged spot.  Each search
    starts from the spot where the previous run stopped, with the index
    that spot should have held: find_next_record bounds a candidate's index
    by the distance from where its search starts, so searching from a later
    spot with the first spot's index would reject every record that is more
    indexes than 32-byte steps past the first spot.
    """
    position = damage + 1
    while True:
        found = find_next_record(data, position, expected_index)
        if found is None:
            return None
        reader = RecordReader(data, found.offset)
        for record in reader:
            if damage < record.synced <= record.offset:
                return record
            expected_index = max(expected_index, record.index + 1)
        if reader.stop_reason is StopReason.CLEAN_END:
            return None
        position = reader.stop_offset + 1


class _Writer:
    """
    Executes queued file operations, in order, on the storage thread.

    Only one C{execute} runs at a time (the log starts a flush only after the
    previous one finished), and the reactor side never touches the file
    descriptors while one runs, so no locking is needed.
    """

    def __init__(
        self, fs: FileSystem, directory: str, *, segment_bytes: int = 0, preallocate_bytes: int = 0
    ) -> None:
        self._fs = fs
        self._directory = directory
        self._fds: dict[str, int] = {}
        self._segment_bytes = segment_bytes
        self._preallocate_bytes = preallocate_bytes
        # The size of each open segment's file (records plus zeros), while
        # preallocating.
        self._allocated: dict[str, int] = {}

    def _fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = self._fs.open_rw(path)
            if self._preallocate_bytes:
                self._allocated[path] = self._fs.file_size(fd)
        return fd

    def _zeroed_end(self, end: int) -> int:
        """
        Where the zeros written after a record ending at C{end} stop: the
        preallocation ahead, not past C{segment_bytes}, but always at least
        a record header's worth (which recovery's clean-end rule needs).
        """
        return end + max(RECORD_HEADER_SIZE, min(self._preallocate_bytes, self._segment_bytes - end))

    def _zero_fill(self, fd: int, start: int, end: int) -> None:
        zeros = memoryview(_ZEROS)
        while start < end:
            piece = zeros[: min(len(zeros), end - start)]
            self._fs.pwrite_all(fd, piece, start)  # type: ignore[arg-type]  # pwrite takes any bytes-like object
            start += len(piece)

    fd = _fd

    def fits_inline(self, ops: Sequence[_Op], max_bytes: int) -> bool:
        """
        Whether C{ops} are only record writes, of at most C{max_bytes} in
        all, into open segments whose zeros they stay within: a flush that
        opens no file, changes no metadata and writes no zeros, so its
        C{fdatasync} is the fast kind (module docstring, "Preallocation").
        Called on the reactor thread while no flush runs.
        """
        total = 0
        for op in ops:
            if type(op) is not _Write:
                return False
            allocated = self._allocated.get(op.path)
            if allocated is None or op.path not in self._fds:
                # Not open yet (an open is a metadata lookup), or not
                # preallocated (every write grows the file).
                return False
            if op.end + RECORD_HEADER_SIZE > allocated:
                return False  # execute() would zero-fill the next extension
            total += op.end - op.offset
            if total > max_bytes:
                return False
        return True

    def close_all_but(self, keep: str | None) -> None:
        """Close every open segment except C{keep}: a log of many segments
        must not hold a file descriptor for each (they reopen on demand)."""
        for path in list(self._fds):
            if path != keep:
                self._close(path)

    def _close(self, path: str) -> None:
        fd = self._fds.pop(path, None)
        self._allocated.pop(path, None)
        if fd is not None:
            self._fs.close(fd)

    def execute(self, ops: Sequence[_Op]) -> int:
        """Perform C{ops}, leaving everything durable; return fsyncs done."""
        fs = self._fs
        dirty: dict[str, None] = {}  # insertion-ordered set
        fsyncs = 0

        def fsync_dirty() -> int:
            for path in dirty:
                fs.fsync(self._fd(path))
            n = len(dirty)
            dirty.clear()
            return n

        for op in ops:
            if isinstance(op, _Write):
                data = op.chunks[0] if len(op.chunks) == 1 else b"".join(op.chunks)
                fd = self._fd(op.path)
                fs.pwrite_all(fd, data, op.offset)
                allocated = self._allocated.get(op.path)
                if allocated is not None and op.end + RECORD_HEADER_SIZE > allocated:
                    # The write grew the file: zeros ahead, so that the next
                    # ones do not (this flush's sync commits the new size).
                    zeroed_end = self._zeroed_end(op.end)
                    self._zero_fill(fd, op.end, zeroed_end)
                    self._allocated[op.path] = zeroed_end
                dirty[op.path] = None
            elif isinstance(op, _Create):
                # The previous segment must be durable before a later one
                # exists, so that a torn tail can only be in the last segment.
                fsyncs += fsync_dirty()
                tmp = op.path + _TMP_SUFFIX
                fd = fs.create_truncate(tmp)
                try:
                    fs.pwrite_all(fd, encode_segment_header(op.first_index), 0)
                    if self._preallocate_bytes:
                        # Zeroed now, while the creation commits metadata anyway.
                        self._zero_fill(fd, SEGMENT_HEADER_SIZE, self._zeroed_end(SEGMENT_HEADER_SIZE))
                    fs.fsync(fd)
                    fsyncs += 1
                finally:
                    fs.close(fd)
                # A descriptor still open on a file of the same name (an
                # older-format segment being replaced) would write to the
                # replaced file.
                self._close(op.path)
                fs.replace(tmp, op.path)
                fs.fsync_dir(self._directory)
                fsyncs += 1
                self.close_all_but(op.path)
            elif isinstance(op, _Truncate):
                # Durable before anything is written over the same bytes.
                fd = self._fd(op.path)
                fs.ftruncate(fd, op.length)
                fs.fsync(fd)
                fsyncs += 1
                if op.path in self._allocated:
                    self._allocated[op.path] = op.length
                dirty.pop(op.path, None)
            else:
                self._close(op.path)
                dirty.pop(op.path, None)
                fs.unlink(op.path)
                # One directory fsync per unlink keeps the surviving segments
                # contiguous after a crash (unlink order is not otherwise
                # guaranteed to reach the disk in order).
                fs.fsync_dir(self._directory)
                fsyncs += 1
        fsyncs += fsync_dirty()
        return fsyncs

    def close_all(self) -> None:
        for path in list(self._fds):
            self._close(path)


@dataclass
class _Segment:
    """Reactor-side model of one segment file, as it will be after all queued ops."""

    first_index: int
    path: str
    # The byte offset of each record: machine integers in one buffer, not a
    # list of int objects, so that dropping a whole segment after a snapshot
    # (about 500,000 records) frees one block instead of one object per
    # record -- 5-12 ms of the reactor's CPU in one compaction step
    # (docs/performance.md, "Log compaction", figure 6).
    offsets: "array[int]" = field(default_factory=lambda: array("q"))
    size: int = SEGMENT_HEADER_SIZE
    # A lower bound on the durable prefix that stays true for every write
    # queued from now on: what a record appended now claims as "synced".
    synced: int = SEGMENT_HEADER_SIZE
    # The lowest size a truncation queued since the running flush started
    # left this segment at (see WriteAheadLog._flush_succeeded).
    low_water: int = SEGMENT_HEADER_SIZE
    # The segment's format version.  Records are written only in
    # FORMAT_VERSION, so an older segment is never appended to: the next
    # append starts a new segment (see WriteAheadLog.append).
    version: int = FORMAT_VERSION

    def takes_appends(self, segment_bytes: int) -> bool:
        """Whether the next record may go into this segment rather than a new one."""
        return self.version == FORMAT_VERSION and not (self.offsets and self.size >= segment_bytes)


class WriteAheadLog:
    """
    A segmented, checksummed, group-committed log of L{LogEntry}s.

    Create it with L{WriteAheadLog.open}.  All methods are called on the
    reactor thread; only the queued file work runs in C{run_in_thread}.

    Invariants: C{entries[i].index == first_index + i}; C{last_index ==
    first_index + len(entries) - 1} (so C{first_index - 1} when empty);
    terms never decrease along the log; C{durable_index <= last_index}, and
    every entry up to C{durable_index} is on disk with exactly the content
    in C{entries}.
    """

    log = Logger()

    def __init__(
        self,
        directory: str,
        segments: list[_Segment],
        entries: list[tuple[int, int, bytes]],
        *,
        segment_bytes: int,
        run_in_thread: ThreadRunner,
        fs: FileSystem,
        writer: _Writer,
        inline_flush: "InlineFlushPolicy | None" = None,
    ) -> None:
        """Use L{WriteAheadLog.open}; this constructor trusts its arguments."""
        self._directory = directory
        self._inline = inline_flush
        self._segments = segments
        self._entries = entries
        self._segment_bytes = segment_bytes
        self._run_in_thread = run_in_thread
        self._fs = fs
        self._writer = writer
        self._base_term = 0  # last_term of an empty log (see reset_after)
        # The index of entries[0]: the first segment's first index, or later
        # once drop_prefix dropped entries that segment still holds on disk.
        self._first = segments[0].first_index
        self._durable_index = self.last_index
        self._fsync_count = 0
        self._pending_ops: list[_Op] = []
        self._next_waiters: list[Deferred[int]] = []
        self._flushing = False
        self._kicking = False
        self._durable_cap = 0  # for the running flush: see truncate_suffix
        self._flush_sizes: list[tuple[_Segment, int]] = []  # for the running flush
        self._failure: BaseException | None = None
        self._closed = False
        #: Monitoring's hook (L{kvstore.admin}): called on the reactor thread
        #: after each flush that did file work, with the number of entries it
        #: made durable (the group commit's size) and its fsyncs.
        self.on_flush: Callable[[int, int], None] | None = None
        self._reset_floor = 0  # the index of the last reset_after (see _flush_succeeded)

    # ------------------------------------------------------------------
    # Opening and recovery

    @classmethod
    def open(
        cls,
        directory: str,
        *,
        segment_bytes: int = 64 * 1024 * 1024,
        preallocate_bytes: int = 0,
        run_in_thread: ThreadRunner | None = None,
        fs: FileSystem | None = None,
        plants: frozenset[str] = frozenset(),
        inline_flush: "InlineFlushPolicy | None" = None,
    ) -> "WriteAheadLog":
        """
        Open (creating if needed) and recover the log in C{directory}.

        Blocking: call it at start-up, before the reactor runs.  Reads every
        segment, validates it, truncates a torn tail of the last segment with
        a warning, and fsyncs every segment and the directory, so that
        everything it recovered is durable (it may have been read from the
        page cache of a process that died before its fsync).

        @param segment_bytes: roll over to a new segment once the current one
            reaches this size (a single larger record gets a segment alone).
        @param preallocate_bytes: keep each segment's file zero-filled this
            far ahead of its records (module docstring).  0 (the
            default) grows files record by record, and reads zeros at the
            end of the last segment as a torn tail (truncated with a
            warning).  The node and its tools pass L{PREALLOCATE_BYTES}.
        @param run_in_thread: how to run blocking file work; defaults to a
            L{StorageThread} of this log's own.  Tests pass a synchronous
            runner.
        @param fs: the file system; tests may pass one that fails.
        @param plants: planted bugs, for the simulator's tests only
            (L{kvstore.testing.sim.plants}); empty in production.
        @param inline_flush: lets small write-only flushes run on the
            reactor thread while the disk is fast (module docstring); by
            default every flush goes through C{run_in_thread}.
        @raise CorruptLogError: on any damage other than a torn tail.
        """
        if segment_bytes < 1:
            raise ValueError("segment_bytes must be positive")
        if preallocate_bytes < 0:
            raise ValueError("preallocate_bytes must not be negative")
        fs = fs if fs is not None else FileSystem()
        runner = run_in_thread if run_in_thread is not None else StorageThread()
        directory = os.path.abspath(directory)
        if fs.makedirs(directory):
            fs.fsync_dir(os.path.dirname(directory))
        writer = _Writer(fs, directory, segment_bytes=segment_bytes, preallocate_bytes=preallocate_bytes)
        segments, entries, ops = cls._recover(
            directory,
            fs,
            verify_checksums=PLANT_SKIP_CHECKSUM not in plants,
            zeros_end_last_segment=preallocate_bytes > 0,
        )
        if ops:
            writer.execute(ops)
        # What recovery read may have come from the page cache of a process
        # that died before its fsync: make it durable before anything counts
        # it as durable (a follower would otherwise acknowledge entries that
        # a power cut could still take away).
        for segment in segments:
            fs.fsync(writer.fd(segment.path))
        fs.fsync_dir(directory)
        writer.close_all_but(segments[-1].path if segments else None)
        return cls(
            directory,
            segments,
            entries,
            segment_bytes=segment_bytes,
            run_in_thread=runner,
            fs=fs,
            writer=writer,
            inline_flush=inline_flush,
        )

    @classmethod
    def _recover(
        cls,
        directory: str,
        fs: FileSystem,
        verify_checksums: bool = True,
        zeros_end_last_segment: bool = False,
    ) -> tuple[list[_Segment], list[tuple[int, int, bytes]], list[_Op]]:
        names = sorted(fs.listdir(directory))
        removed_tmp = False
        numbered: list[tuple[int, str]] = []
        for name in names:
            if name.endswith(_TMP_SUFFIX) and _SEGMENT_RE.match(name[: -len(_TMP_SUFFIX)]):
                # A segment whose creation never completed: never renamed
                # into place, so it never held data.
                cls.log.info("Removing incomplete segment {name}", name=name)
                fs.unlink(os.path.join(directory, name))
                removed_tmp = True
                continue
            match = _SEGMENT_RE.match(name)
            if match:
                numbered.append((int(match.group(1)), name))
        if removed_tmp:
            fs.fsync_dir(directory)
        numbered.sort()

        if not numbered:
            path = os.path.join(directory, segment_name(1))
            return [_Segment(1, path)], [], [_Create(path, 1)]

        segments: list[_Segment] = []
        entries: list[tuple[int, int, bytes]] = []
        ops: list[_Op] = []
        expected: int | None = None
        last_term = 0
        for position, (number, name) in enumerate(numbered):
            path = os.path.join(directory, name)
            is_last = position == len(numbered) - 1
            data = fs.read_file(path)
            header, why = decode_segment_header(data)
            if header is None:
                raise CorruptLogError(path, 0, why)
            if header.version not in READABLE_VERSIONS:
                raise CorruptLogError(
                    path,
                    0,
                    f"unsupported format version {header.version} "
                    f"(this build reads versions {', '.join(map(str, READABLE_VERSIONS))})",
                )
            if header.first_index != number:
                raise CorruptLogError(
                    path, 0, f"header says first index {header.first_index}, file name says {number}"
                )
            if header.first_index < 1:
                raise CorruptLogError(path, 0, "first index must be at least 1")
            if expected is not None and header.first_index != expected:
                raise CorruptLogError(
                    path,
                    0,
                    f"segment starts at index {header.first_index} but the previous "
                    f"segment ends at {expected - 1} (missing or stray segment)",
                )
            segment = _Segment(header.first_index, path, version=header.version)
            next_index = header.first_index
            reader = RecordReader(data, SEGMENT_HEADER_SIZE, verify_checksums, header.version)
            for record in reader:
                if record.index != next_index:
                    raise CorruptLogError(
                        path,
                        record.offset,
                        f"record has index {record.index}, expected {next_index}",
                    )
                if record.term < last_term:
                    raise CorruptLogError(
                        path,
                        record.offset,
                        f"record {record.index} has term {record.term}, "
                        f"lower than the previous term {last_term}",
                    )
                entries.append((record.index, record.term, record.payload))
                segment.offsets.append(record.offset)
                next_index += 1
                last_term = record.term
            stop = reader.stop_offset
            reason = reader.stop_reason
            assert reason is not None
            if reason is StopReason.CLEAN_END:
                segment.size = len(data)
            elif (
                (zeros_end_last_segment or not is_last)
                and len(data) - stop >= RECORD_HEADER_SIZE
                and _NON_ZERO.search(data, stop) is None
            ):
                # Only zeros after the last record, at least a record
                # header's worth: a preallocated segment's clean end (the
                # writer always leaves that many), or in the last segment a
                # torn flush none of whose sectors reached the disk -- the
                # same log either way.  A log opened without preallocation
                # (a tool) truncates the last segment's zeros with the
                # torn-tail warning, as before preallocation existed.  In an earlier segment, records lost
                # to zeros show as a gap before the next segment's first
                # index, which is refused below.  Fewer zeros are the start
                # of a torn record (its length field's high bytes):
                # truncated with a warning, as before.
                segment.size = stop
            else:
                if not is_last:
                    raise CorruptLogError(
                        path, stop, f"{reason.value} in a segment that is not the last"
                    )
                # Version 1 records claim nothing: such damage is a torn tail.
                witness = (
                    _witness_of_durable_damage(data, stop, next_index)
                    if header.version == FORMAT_VERSION
                    else None
                )
                if witness is not None:
                    raise CorruptLogError(
                        path,
                        stop,
                        f"{reason.value}; the intact record {witness.index} at offset "
                        f"{witness.offset} was written after bytes up to offset "
                        f"{witness.synced} had been fsynced, so this is damage in "
                        f"durable data, not a torn tail",
                    )
                cls.log.warn(
                    "Truncating torn tail of write-ahead log segment {path} at byte "
                    "offset {offset} ({reason}; {discarded} bytes discarded, "
                    "last recovered index {last_index})",
                    path=path,
                    offset=stop,
                    reason=reason.value,
                    discarded=len(data) - stop,
                    last_index=next_index - 1,
                )
                ops.append(_Truncate(path, stop))
                segment.size = stop
            # open() fsyncs everything recovered before anything is appended.
            segment.synced = segment.low_water = segment.size
            segments.append(segment)
            expected = next_index
        # An older-format last segment stays last until the next append
        # starts a new segment (WriteAheadLog.append): opening writes nothing
        # but a torn-tail truncation, so kvstore-inspect leaves an old
        # build's data directory openable by that build, and the new segment
        # is created only after open() has fsynced the old one.
        return segments, entries, ops

    # ------------------------------------------------------------------
    # Read-only view

    @property
    def directory(self) -> str:
        """The absolute path of the log directory."""
        return self._directory

    @property
    def entries(self) -> list[LogEntry]:
        """All entries, in index order, as a new list of L{LogEntry}s (O(n))."""
        return [LogEntry._make(t) for t in self._entries]

    def entry_tuples(self) -> list[tuple[int, int, bytes]]:
        """
        All entries as the log's own list of plain C{(index, term, payload)}
        tuples, without copying: do not mutate it.  Plain tuples (unlike
        named tuples) are untracked by Python's cyclic garbage collector, so
        a long log costs collections nothing; the node hands this list to the
        Raft core at start-up so that both share the same tuples.
        """
        return self._entries

    @property
    def first_index(self) -> int:
        """Index of the first entry held (or of the next entry, when empty).
        After L{drop_prefix} the first segment on disk may start earlier."""
        return self._first

    @property
    def last_index(self) -> int:
        """Index of the last entry; C{first_index - 1} (0 when fresh) when empty."""
        return self._first + len(self._entries) - 1

    @property
    def last_term(self) -> int:
        """Term of the last entry; when the log is empty, the term given to
        the last L{reset_after} since open, or 0."""
        return self._entries[-1][1] if self._entries else self._base_term

    @property
    def durable_index(self) -> int:
        """Highest index known written and fsynced (with its current content)."""
        return self._durable_index

    @property
    def inline_flush(self) -> "InlineFlushPolicy | None":
        """The policy letting small flushes run on the reactor, if any."""
        return self._inline

    @property
    def fsync_count(self) -> int:
        """Number of fsync calls (files and directory) made by flushes since open."""
        return self._fsync_count

    def entry(self, index: int) -> LogEntry:
        """
        The entry at C{index}.

        @raise IndexError: if C{index} is outside C{first_index..last_index}.
        """
        position = index - self.first_index
        if position < 0 or index > self.last_index:
            raise IndexError(f"index {index} not in log [{self.first_index}, {self.last_index}]")
        return LogEntry._make(self._entries[position])

    # ------------------------------------------------------------------
    # Mutations (non-blocking: update memory, queue file work)

    def _check_writable(self) -> None:
        if self._failure is not None:
            raise StorageFailedError(
                f"write-ahead log in {self._directory} failed earlier; refusing writes"
            ) from self._failure
        if self._closed:
            raise StorageFailedError(f"write-ahead log in {self._directory} is closed")

    def append(self, entries: Sequence[LogEntry]) -> None:
        """
        Append C{entries} after C{last_index}, updating C{entries} at once.

        Nothing is durable until a later L{sync} fires.  The call either
        accepts every entry or changes nothing.

        @raise ValueError: if the entries do not continue the log contiguously
            (the first must have index C{last_index + 1}) or their terms
            decrease.
        @raise TypeError: if an entry's payload is not C{bytes}.
        @raise StorageFailedError: after a failed flush, or once closed.
        """
        self._check_writable()
        if not entries:
            return
        expected = self.last_index + 1
        term = self.last_term
        encoded: list[bytes] = []
        # Where each record will go (the same roll-over rule as below), so
        # that it is encoded once, with its segment's "synced" claim.
        last = self._segments[-1]
        has_records, size, synced = bool(last.offsets), last.size, last.synced
        new_segment = not last.takes_appends(self._segment_bytes)
        for index, entry_term, payload in entries:
            if index != expected:
                raise ValueError(f"non-contiguous append: got index {index}, expected {expected}")
            if entry_term < term:
                raise ValueError(f"entry {index} has term {entry_term}, lower than previous term {term}")
            if new_segment or (has_records and size >= self._segment_bytes):
                has_records, size, synced = False, SEGMENT_HEADER_SIZE, SEGMENT_HEADER_SIZE
                new_segment = False
            record = encode_record(index, entry_term, payload, synced)
            encoded.append(record)
            has_records, size = True, size + len(record)
            expected += 1
            term = entry_term

        segment = self._segments[-1]
        for entry, record in zip(entries, encoded):
            if not segment.takes_appends(self._segment_bytes):
                first = entry[0]
                if not segment.offsets:
                    # An empty older-format segment (its entries all
                    # truncated): replaced by a new one of the same name,
                    # renamed over it.
                    self._segments.pop()
                segment = _Segment(first, os.path.join(self._directory, segment_name(first)))
                self._segments.append(segment)
                self._pending_ops.append(_Create(segment.path, first))
            self._queue_write(segment, record)
            segment.offsets.append(segment.size)
            segment.size += len(record)
        # Plain (index, term, payload) tuples: untracked by the cyclic GC.
        self._entries.extend(map(tuple, entries))  # type: ignore[arg-type]  # same objects if already plain

    def _queue_write(self, segment: _Segment, record: bytes) -> None:
        last = self._pending_ops[-1] if self._pending_ops else None
        if isinstance(last, _Write) and last.path == segment.path and last.end == segment.size:
            last.chunks.append(record)
            last.end += len(record)
        else:
            self._pending_ops.append(
                _Write(segment.path, segment.size, [record], segment.size + len(record))
            )

    def truncate_suffix(self, from_index: int) -> None:
        """
        Remove every entry with index C{>= from_index} (a Raft log conflict).

        Takes effect in memory at once; on disk it is ordered with appends,
        so entries appended afterwards at C{from_index} are written only after
        the truncation is durable.  A no-op if C{from_index > last_index}.

        @raise ValueError: if C{from_index < first_index} (those entries were
            dropped into a snapshot and cannot be replaced here).
        @raise StorageFailedError: after a failed flush, or once closed.
        """
        self._check_writable()
        if from_index > self.last_index:
            return
        if from_index < self.first_index:
            raise ValueError(
                f"cannot truncate from {from_index}: the log starts at {self.first_index}"
            )
        while self._segments[-1].first_index > from_index:
            doomed = self._segments.pop()
            self._pending_ops.append(_Unlink(doomed.path))
        segment = self._segments[-1]
        position = from_index - segment.first_index
        length = segment.offsets[position] if position < len(segment.offsets) else segment.size
        self._pending_ops.append(_Truncate(segment.path, length))
        del segment.offsets[position:]
        segment.size = length
        # Bytes from `length` on will be rewritten: no later record may
        # claim them durable (see the recovery rule).
        segment.synced = min(segment.synced, length)
        segment.low_water = min(segment.low_water, length)
        del self._entries[from_index - self.first_index :]
        # Entries >= from_index are no longer the ones on disk (or soon won't
        # be), so neither the current durable index nor a flush already
        # running may claim them.
        self._durable_index = min(self._durable_index, from_index - 1)
        self._durable_cap = min(self._durable_cap, from_index - 1)

    def drop_prefix(self, upto_index: int) -> None:
        """
        Forget the entries with index C{<= upto_index}: delete the whole
        segments holding only such entries, and drop them from memory.

        For log compaction after a snapshot covering C{upto_index}.  The last
        segment is never deleted, and a segment holding any entry above
        C{upto_index} is kept whole on disk (so a reopened log may start
        below C{upto_index + 1}); in memory the entries up to C{upto_index}
        go at once, so that a node holds only the entries after its last
        compaction, not a whole segment's worth, whatever C{segment_bytes}
        is.  The last entry always stays (it carries C{last_term}).
        Deletion happens oldest-first at the next flush.

        @raise StorageFailedError: after a failed flush, or once closed.
        """
        self._check_writable()
        while len(self._segments) > 1 and self._segments[1].first_index - 1 <= upto_index:
            doomed = self._segments.pop(0)
            self._pending_ops.append(_Unlink(doomed.path))
        if self._entries:
            first = max(self._first, min(upto_index + 1, self.last_index))
            del self._entries[: first - self._first]
            self._first = first

    def reset_after(self, index: int, term: int) -> None:
        """
        Drop every entry and continue the log at C{index + 1}: after a
        snapshot through C{(index, term)} was installed (InstallSnapshot),
        none of this log may stay, since it may conflict with the snapshot.

        Takes effect in memory at once (the log is empty, C{first_index ==
        index + 1}, C{last_term == term}); on disk it is ordered with the
        other queued work and durable once a later L{sync} fires.  Entries
        appended afterwards (from C{index + 1}) go into the new segment.

        Crash safety.  Call it only once the snapshot is durable.  The
        segments are deleted newest first, the directory fsynced after each
        (as for L{truncate_suffix}), so the survivors are always a prefix
        of the old log; then the new, empty segment C{wal-<index+1>.log} is
        created as every segment is (temporary name, fsync, rename,
        directory fsync).  A crash at any point thus leaves the old log, a
        prefix of it, no segment at all (opened as an empty log), or the
        new log: never old and new segments together.  Recovery
        (L{kvstore.node.recovery}) finds the snapshot and reconciles it with
        whichever of these it sees (a log that ends before the snapshot, or
        holds another term at its index, is reset again).

        @raise ValueError: if C{index} or C{term} is negative.
        @raise StorageFailedError: after a failed flush, or once closed.
        """
        self._check_writable()
        if index < 0 or term < 0:
            raise ValueError(f"cannot reset the log after index {index} term {term}")
        for doomed in reversed(self._segments):
            self._pending_ops.append(_Unlink(doomed.path))
        first = index + 1
        segment = _Segment(first, os.path.join(self._directory, segment_name(first)))
        self._segments = [segment]
        self._pending_ops.append(_Create(segment.path, first))
        del self._entries[:]
        self._first = first
        self._base_term = term
        # No entry is durable with the log's (now empty) content until the
        # reset is: cap what the current and the next flush may claim.
        self._durable_index = min(self._durable_index, index)
        self._durable_cap = min(self._durable_cap, index)
        # The entries through index were never written here: the flush that
        # makes the reset durable writes none of them (on_flush).
        self._reset_floor = index

    # ------------------------------------------------------------------
    # Group commit

    def sync(self, at_once: bool = False) -> "Deferred[int]":
        """
        Make everything appended or truncated so far durable.

        @param at_once: the caller has nothing (more) to send before the
            flush (the node sends a batch's messages first), so a flush that
            runs on the reactor (L{InlineFlushPolicy}) may run now instead
            of at the end of the turn.  Without it, an inline flush waits
            for the end of the turn, so that whatever the caller sends next
            leaves before the fsync.  Flushes on the storage thread start
            now either way.

        @return: a Deferred firing with C{durable_index} once all file work
            queued before this call is written and fsynced.  If a flush is
            running, this request joins the next one, together with every
            other request made meanwhile.  Deferreds fire in the order of the
            calls.  On a write or fsync error the Deferreds errback (with the
            C{OSError} for the flush that failed, L{StorageFailedError} for
            those queued behind it) and the log refuses all later writes.
        """
        if self._failure is not None:
            return fail(
                StorageFailedError(f"write-ahead log in {self._directory} failed earlier")
            )
        if self._closed:
            return fail(StorageFailedError(f"write-ahead log in {self._directory} is closed"))
        return self._sync(at_once)

    def _sync(self, at_once: bool = False) -> "Deferred[int]":
        if not self._pending_ops and not self._flushing and not self._next_waiters:
            return succeed(self._durable_index)
        waiter: Deferred[int] = Deferred()
        self._next_waiters.append(waiter)
        self._kick(at_once)
        return waiter

    def _kick(self, at_once: bool = False) -> None:
        """Start flushes while requests wait and none is running (an inline
        one now only if C{at_once}: see L{sync})."""
        if self._kicking:
            return  # an outer _kick on the stack will loop
        self._kicking = True
        try:
            while not self._flushing and self._next_waiters and self._failure is None:
                waiters, self._next_waiters = self._next_waiters, []
                ops, self._pending_ops = self._pending_ops, []
                self._flushing = True
                self._durable_cap = self.last_index
                self._flush_sizes = self._unsynced_segment_sizes()
                if not ops:
                    self._flush_succeeded(0, waiters)
                    continue
                work = partial(self._writer.execute, ops)
                if trace.ENABLED:
                    work = partial(_traced_flush, work, self._durable_cap)
                inline = self._inline
                # Whatever raises while the flush is chosen and started (the
                # policy, the runner) fails this flush: with _flushing set,
                # an error escaping here would leave the log flushing forever.
                timed: Callable[[Callable[[], int]], int] | None = None
                try:
                    if inline is not None and inline.allows() and self._writer.fits_inline(ops, inline.max_bytes):
                        if at_once:
                            timed = inline.run_timed
                        else:
                            d = inline.run_soon(work)
                    else:
                        d = self._run_in_thread(work)
                except BaseException:
                    timed, d = None, fail()
                if timed is not None:
                    at_once = False  # a later flush of this loop follows this one's callbacks
                    # Straight to the outcome, without a Deferred between:
                    # this is on the path of every sequential write.
                    try:
                        fsyncs = timed(work)
                    except BaseException:
                        self._flush_failed(Failure(), waiters)
                    else:
                        self._flush_succeeded(fsyncs, waiters)
                    continue
                d.addCallbacks(
                    self._flush_succeeded,
                    self._flush_failed,
                    callbackArgs=(waiters,),
                    errbackArgs=(waiters,),
                )
        finally:
            self._kicking = False

    def _unsynced_segment_sizes(self) -> list[tuple[_Segment, int]]:
        """
        The segments whose "synced" claim is below their size, with their
        sizes now (when a flush starts), and their low-water marks reset.
        Only the last segments are looked at, back to the first one already
        fully claimed: the flush that created a segment fsynced the earlier
        ones.  (A segment behind an emptied one keeps a lower claim than it
        could: still true, since a claim is only a lower bound.)
        """
        sizes = []
        for segment in reversed(self._segments):
            if segment.synced >= segment.size:
                break
            segment.low_water = segment.size
            sizes.append((segment, segment.size))
        return sizes

    def _flush_succeeded(self, fsyncs: int, waiters: list["Deferred[int]"]) -> None:
        self._fsync_count += fsyncs
        durable_before = self._durable_index
        self._durable_index = max(self._durable_index, self._durable_cap)
        if self.on_flush is not None and fsyncs:
            try:
                self.on_flush(max(0, self._durable_index - max(durable_before, self._reset_floor)), fsyncs)
            except BaseException:
                # An observer's failure must not strand the waiters: with
                # _flushing left True no later sync() would ever fire.  Not
                # only Exception: this runs as a Deferred's callback, which
                # would swallow a KeyboardInterrupt just the same.
                self.log.failure("Write-ahead log flush observer failed in {directory}", directory=self._directory)
        # The flush made each segment durable up to its size when the flush
        # started; a truncation queued meanwhile will rewrite bytes from its
        # low-water mark on, so later records may claim only the lower one.
        for segment, size in self._flush_sizes:
            segment.synced = max(segment.synced, min(size, segment.low_water))
        self._flush_sizes = []
        if trace.ENABLED:
            trace.record("wal.durable", self._durable_index)
        # _flushing stays True while the waiters run, so a sync() issued from
        # one of their callbacks queues behind them instead of overtaking.
        for waiter in waiters:
            waiter.callback(self._durable_index)
        self._flushing = False
        self._kick()

    def _flush_failed(self, failure: Failure, waiters: list["Deferred[int]"]) -> None:
        self._failure = failure.value
        self.log.failure(
            "Write-ahead log flush failed in {directory}; refusing all further writes",
            failure,
            directory=self._directory,
        )
        behind, self._next_waiters = self._next_waiters, []
        self._pending_ops = []
        self._flushing = False
        for waiter in waiters:
            waiter.errback(failure)
        for waiter in behind:
            waiter.errback(
                StorageFailedError(f"write-ahead log in {self._directory} failed earlier")
            )

    def close(self) -> "Deferred[None]":
        """
        Flush pending work, then close the segment files.

        Later writes raise L{StorageFailedError}.  The Deferred fails if the
        final flush fails.
        """
        if self._closed:
            return succeed(None)
        self._closed = True
        d: Deferred[int] = succeed(0) if self._failure is not None else self._sync()

        def closed(_: int) -> None:
            self._writer.close_all()
            _stop_runner(self._run_in_thread)

        def close_and_fail(failure: Failure) -> Failure:
            self._writer.close_all()
            _stop_runner(self._run_in_thread)
            return failure

        return d.addCallbacks(closed, close_and_fail)


def _traced_flush(work: Callable[[], int], index: int) -> int:
    """Run a flush on the storage thread, tracing its start and end."""
    trace.record("flush.start", index)
    try:
        return work()
    finally:
        trace.record("flush.end", index)


#: The most record bytes a flush may write and still run on the reactor
#: thread.  One sequential client's flushes are one record (~150 bytes), a
#: few concurrent clients' a few.  A large flush means many writes are
#: waiting: the reactor is busy, and a flush that overlaps its work on the
#: storage thread is worth the hand-off.  Measured (issue 16 branch report,
#: shared machine, load 4-6): with 64 KiB, where most group commits of
#: C{-c 50 -P 10} (~150 records, ~20 KiB) ran inline, that benchmark did
#: 16.4-17.3k writes/s against 13.1-22.6k with the thread and 18.1-21.6k
#: with 4 KiB; 4 KiB leaves such flushes on the thread.
INLINE_FLUSH_MAX_BYTES = 4 * 1024

#: An inline flush slower than this (seconds) sends the following flushes
#: to the storage thread at once: the reactor was stopped that long, and
#: other work (heartbeats, reads, other clients) waited.  A fast disk's
#: C{pwrite} plus C{fdatasync} over preallocated space takes 0.1-0.3 ms;
#: on this machine, busy with other benchmarks, 1-5 % of them took over a
#: millisecond and 1 % over 2 ms.  2 ms bounds a stall near a garbage
#: collection's while letting a lone outlier pass; a disk that is slow
#: more often trips L{INLINE_FLUSH_AVERAGE_SECONDS} instead.
INLINE_FLUSH_SLOW_SECONDS = 0.002

#: The limit (seconds) on the moving average of inline flush durations: a
#: disk averaging more than this is busy or slow, and stopping the reactor
#: for each of its syncs costs the other work more than the hand-off
#: (~0.13 ms) saves the write.  Three times a quiet fast disk's 0.15 ms.
INLINE_FLUSH_AVERAGE_SECONDS = 0.0005

#: The weight of the newest duration in that moving average: about the
#: last ten flushes count.
INLINE_FLUSH_AVERAGE_WEIGHT = 0.1

#: How long (seconds) flushes go to the thread after a slow inline one,
#: before one inline flush probes the disk again; doubled after each probe
#: that is slow again, up to L{INLINE_FLUSH_MAX_BACKOFF_SECONDS}, so that a
#: disk that stays slow stops the reactor once a minute at most.
INLINE_FLUSH_BACKOFF_SECONDS = 1.0

#: The longest back-off between probes of a slow disk (seconds).
INLINE_FLUSH_MAX_BACKOFF_SECONDS = 64.0


class InlineFlushPolicy:
    """
    When a small flush may run on the reactor thread, and how it runs there.

    Why: with one sequential client a write's critical path holds two
    flushes (leader and follower), and each hand-off to the storage thread
    and back (a queue, a thread wake-up, the GIL, C{callFromThread} and one
    more reactor pass) cost ~0.13 ms next to a 0.15 ms fsync.  Running the
    flush on the reactor saves that, but stops the reactor for the sync, so
    it is done only while the disk has been fast: every inline flush is
    timed, and one slower than L{INLINE_FLUSH_SLOW_SECONDS} (or a moving
    average above L{INLINE_FLUSH_AVERAGE_SECONDS}) sends flushes to the
    thread for L{INLINE_FLUSH_BACKOFF_SECONDS} (doubling while probes stay
    slow).  The log asks this policy only for flushes that are record
    writes of at most L{max_bytes} over preallocated zeros
    (L{_Writer.fits_inline}).

    An inline flush runs at the end of the current reactor turn
    (C{callLater(0)}), so that it never delays what its caller sends next,
    unless the caller has sent everything first and asks for it at once
    (C{sync(at_once=True)}: the node sends a batch's AppendEntries, then
    appends and syncs, L{kvstore.node.node}).
    """

    def __init__(
        self,
        clock: object = None,
        *,
        timer: Callable[[], float] = time.monotonic,
        max_bytes: int = INLINE_FLUSH_MAX_BYTES,
        slow_seconds: float = INLINE_FLUSH_SLOW_SECONDS,
        average_seconds: float = INLINE_FLUSH_AVERAGE_SECONDS,
        backoff_seconds: float = INLINE_FLUSH_BACKOFF_SECONDS,
        max_backoff_seconds: float = INLINE_FLUSH_MAX_BACKOFF_SECONDS,
    ) -> None:
        """
        @param clock: provides C{callLater} (an C{IReactorTime}); by
            default the global reactor, looked up on the first flush.
        @param timer: seconds from a monotonic clock, to time flushes and
            back-offs (tests pass a fake one).
        """
        self._clock = clock
        self._timer = timer
        self.max_bytes = max_bytes
        self._slow = slow_seconds
        self._average_limit = average_seconds
        self._initial_backoff = backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._backoff = backoff_seconds
        self._thread_until = float("-inf")
        self._average: float | None = None
        #: Inline flushes run, and those found slow (for tests and reports).
        self.inline_flushes = 0
        self.slow_flushes = 0
        # Jobs of runners wrapped by sharing_the_disk that have not finished.
        self._neighbour_jobs = 0

    def allows(self) -> bool:
        """Whether the disk has been fast enough lately to sync inline, and
        no other blocking disk work (L{sharing_the_disk}) is in flight."""
        return self._neighbour_jobs == 0 and self._timer() >= self._thread_until

    def sharing_the_disk(self, runner: ThreadRunner) -> ThreadRunner:
        """
        C{runner}, counted: while any job it was given has not finished,
        every flush goes to the storage thread.

        Why: an C{fdatasync} waits for the device, and the device is busy
        behind other work's writes and syncs.  Measured on this machine: a
        200-byte flush that took 0.2-0.4 ms took 57-67 ms while a 130 MB
        file (a snapshot of about a million keys) was fsynced on another
        thread.  On the reactor that is a stall three times issue 12's
        bound (figure 6, 20 ms), and the back-off above only reacts once
        the stall has happened.  The service wraps the snapshot thread
        (taking, receiving and restoring snapshots) with this.
        """
        return partial(self._run_neighbour, runner)

    def _run_neighbour(self, runner: ThreadRunner, f: Callable[[], T]) -> "Deferred[T]":
        self._neighbour_jobs += 1
        try:
            d = runner(f)
        except BaseException:
            self._neighbour_jobs -= 1
            raise

        def finished(result: object) -> object:
            self._neighbour_jobs -= 1
            return result

        return d.addBoth(finished)

    def run_soon(self, work: Callable[[], T]) -> "Deferred[T]":
        """Run C{work} on this thread at the end of the reactor turn, timed;
        the Deferred fires (or fails) with its result then."""
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = reactor
        d: Deferred[T] = Deferred()
        self._clock.callLater(0, self._run, work, d)  # type: ignore[attr-defined]  # an IReactorTime
        return d

    def run_timed(self, work: Callable[[], T]) -> T:
        """Run C{work} on this thread now, timed (its duration folded in
        even if it raises), and return its result or raise its exception."""
        self.inline_flushes += 1
        started = self._timer()
        try:
            return work()
        finally:
            self._observe(self._timer() - started)

    def _run(self, work: Callable[[], T], d: "Deferred[T]") -> None:
        # d fires whatever raises, the timing included: at the end of the
        # turn nobody else could fire it, and the log would flush forever.
        try:
            result = self.run_timed(work)
        except BaseException:
            d.errback(Failure())
        else:
            d.callback(result)

    def _observe(self, seconds: float) -> None:
        """Fold in one inline flush's duration; back off if the disk is slow."""
        if self._average is None:
            self._average = seconds
        else:
            w = INLINE_FLUSH_AVERAGE_WEIGHT
            self._average = w * seconds + (1 - w) * self._average
        if seconds > self._slow or self._average > self._average_limit:
            self.slow_flushes += 1
            self._thread_until = self._timer() + self._backoff
            self._backoff = min(self._backoff * 2, self._max_backoff)
            # The next inline flush is a probe: judged on its own.
            self._average = None
        else:
            self._backoff = self._initial_backoff


class StorageThread:
    """
    The log's own thread for flushes: a L{ThreadRunner} with one thread.

    Why not the reactor's thread pool: the log never runs two flushes at
    once, so a pool buys nothing, and its hand-off (a team coordinator, a
    worker queue, context propagation, returning the worker to the pool) is
    Python work of tens of microseconds on both threads, competing for the
    GIL, on the critical path of every write.  Here a job is one
    C{SimpleQueue.put} (C code) and its result one C{callFromThread}.

    The thread starts on the first job and ends after L{stop} (called when
    the log closes); it is a daemon, so a process ending without closing
    the log ends like a crash, which the log survives by design.
    """

    def __init__(self, reactor: object = None, *, name: str = "kvstore-wal") -> None:
        """
        @param reactor: provides C{callFromThread}; by default the global
            reactor, looked up on the first job.
        @param name: the thread's name, so that profilers (py-spy, C{top -H})
            and the figure-6 probe tell the log's thread from the snapshots'.
        """
        self.name = name
        self._jobs: "queue.SimpleQueue[tuple[Callable[[], object], Deferred[object]] | None]" = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._reactor = reactor

    def __call__(self, f: Callable[[], T]) -> "Deferred[T]":
        if self._thread is None:
            if self._reactor is None:
                from twisted.internet import reactor

                self._reactor = reactor
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        d: Deferred[T] = Deferred()
        self._jobs.put((f, d))  # type: ignore[arg-type]  # Deferred is invariant: Deferred[T] is stored as Deferred[object]
        return d

    def _run(self) -> None:
        call_from_thread = self._reactor.callFromThread  # type: ignore[attr-defined]  # the injected reactor provides IReactorFromThreads, its declared type does not say so
        while True:
            job = self._jobs.get()
            if job is None:
                return
            f, d = job
            try:
                result = f()
            except BaseException:
                call_from_thread(d.errback, Failure())
            else:
                call_from_thread(d.callback, result)

    def stop(self) -> None:
        """End the thread once the jobs queued so far are done."""
        if self._thread is not None:
            self._jobs.put(None)


def run_inline(f: Callable[[], T]) -> "Deferred[T]":
    """
    A L{ThreadRunner} for a log that never fsyncs (C{--unsafe-no-fsync}):
    run C{f} at once, on the calling thread, and return its result as a
    fired Deferred (or a failed one).

    Why: without fsync a flush is a C{pwrite} into the page cache, a few
    microseconds; handing it to the storage thread and its result back
    (a queue, a thread wake-up, a C{callFromThread} and one more reactor
    pass) costs more than the write, on the path of every write.  With
    fsync on, never: the reactor would wait for the disk.  Nothing else
    changes: the log already accepts a runner whose Deferred has fired
    (tests use one), and the node sends acknowledgements after the flush
    either way.
    """
    try:
        return succeed(f())
    except BaseException:
        return fail()


def _stop_runner(runner: object) -> None:
    if isinstance(runner, StorageThread):
        runner.stop()
