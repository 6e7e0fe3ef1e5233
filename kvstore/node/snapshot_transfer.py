# -*- test-case-name: tests.test_snapshot_transfer -*-
"""
The chunked InstallSnapshot transfer between nodes (issue 12).

A leader whose follower needs entries it has compacted away sends that
follower its newest snapshot file.  The Raft core only decides I{that} a
snapshot must go (an C{InstallSnapshot} naming the snapshot's index and
term); this module moves the file, and the core hears again only at the
end: on the follower once the whole file is received, verified and
installed on disk (L{SnapshotReceiver} calls C{installed}, and the node
steps the core), on the leader once the transfer is done or given up
(L{TransferRouter} calls C{report}, and the node calls
C{core.report_snapshot}).

The file travels as it is on disk, in chunks of about 1 MiB
(L{kvstore.raft.messages.SnapshotChunk}), each answered with the follower's
position (L{kvstore.raft.messages.SnapshotChunkResponse}: the next byte it
expects).  The follower writes each chunk through
L{SnapshotStore.begin_receive}'s writer, which hashes as it goes, so the
checksum in the file's trailer is verified without a second pass before the
file is renamed into place.

Flow control is a window: at most C{window} chunks (4 by default)
unacknowledged, so a transfer costs the leader a few MiB of memory and
leaves the link free for the AppendEntries of the other followers.  Loss is
repaired by going back to the first unacknowledged chunk, at once when the
follower refuses a chunk that skipped ahead, or after C{timeout} seconds
without progress; after C{max_retries} such timeouts in a row the sender
gives up and the core offers again later (the router starts a transfer to a
follower whose transfers keep failing 1 s later, doubling up to 30 s).  Since the follower always says
where it is, an interrupted transfer of the same snapshot resumes where the
follower got to, and one the follower lost (it restarted) starts over.

Everything here is sans-I/O in the manner of the Raft core: messages go out
through a C{send(Message)} callable, timers run on an C{IReactorTime}, and
the blocking file work (a 1 MiB read or write, the final fsync and rename)
goes through a L{ThreadRunner}, so the same code runs on the reactor with a
thread, under C{task.Clock} in the tests, and in the simulator with its
simulated disk.  A runner that runs jobs at once on the calling thread is
the default; file jobs of one sender or receiver never overlap, whatever
runner is used.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any, Callable, Iterator, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from kvstore.node.monitoring import NO_METRICS
from kvstore.node.node import Node, PeerSender
from kvstore.raft.core import Role
from kvstore.raft.messages import (
    MAX_SNAPSHOT_CHUNK_BYTES,
    AppendEntriesResponse,
    InstallSnapshot,
    MalformedMessage,
    Message,
    SnapshotChunk,
    SnapshotChunkResponse,
    check_snapshot_chunk,
)
from kvstore.storage.errors import StorageError
from kvstore.storage.snapshots import CHUNK_SIZE, SnapshotInfo, SnapshotRejected, SnapshotStore, SnapshotWriter, snapshot_name
from kvstore.storage.wal import ThreadRunner

__all__ = [
    "DEFAULT_WINDOW",
    "DEFAULT_TIMEOUT",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_COMPLETION_TIMEOUT",
    "DEFAULT_MAX_RESTARTS",
    "DEFAULT_IDLE_TIMEOUT",
    "SnapshotSender",
    "SnapshotReceiver",
    "TransferRouter",
    "attach_transfers",
    "run_now",
]

T = TypeVar("T")

#: Chunks a sender keeps unacknowledged.
DEFAULT_WINDOW = 4
#: Seconds without progress before a sender goes back to its first
#: unacknowledged chunk and sends again.
DEFAULT_TIMEOUT = 2.0
#: Timeouts in a row, without progress, after which a sender gives up.
DEFAULT_MAX_RETRIES = 5
#: Seconds a sender waits, once every byte is acknowledged, for the follower
#: to verify and install the file before it gives up.
DEFAULT_COMPLETION_TIMEOUT = 60.0
#: How often a follower may refuse a whole, acknowledged file (a bad
#: checksum) before the sender gives up.
DEFAULT_MAX_RESTARTS = 2
#: Seconds a receiver keeps an unfinished transfer without a new chunk
#: before it removes the partial file.
DEFAULT_IDLE_TIMEOUT = 30.0
#: Seconds a leader waits before sending a snapshot to a follower again
#: after a failed transfer, doubling with each failure in a row up to
#: L{MAX_RETRY_BACKOFF}: the core offers again at its next heartbeat, and a
#: follower that cannot take the file (an older protocol version, a missing
#: file) must not cost a file open and a warning every heartbeat.
RETRY_BACKOFF = 1.0
MAX_RETRY_BACKOFF = 30.0
#: Chunks a receiver accepts ahead of its writes (a sender with a larger
#: window than this is refused the excess, and goes back).
MAX_QUEUED_CHUNKS = 16


def run_now(f: Callable[[], T]) -> "Deferred[T]":
    """A L{ThreadRunner} that runs the job at once on the calling thread:
    for tests, and wherever a 1 MiB read or write on the reactor is fine."""
    try:
        result = f()
    except BaseException:
        return fail(Failure())
    return succeed(result)


class _Jobs:
    """
    Runs blocking jobs through a L{ThreadRunner} one at a time, in the order
    they were queued, whatever the runner (a thread pool may run two jobs at
    once; a writer and the reader of one file must not).  A runner that runs
    jobs at once is trampolined, so a long run of jobs queued from the
    callbacks of earlier ones never deepens the stack.
    """

    def __init__(self, run_in_thread: ThreadRunner) -> None:
        self._run = run_in_thread
        self._queue: deque[tuple[Callable[[], Any], Deferred[Any]]] = deque()
        self._busy = False
        self._pumping = False

    def __call__(self, f: Callable[[], T]) -> "Deferred[T]":
        d: Deferred[T] = Deferred()
        self._queue.append((f, d))
        self._pump()
        return d

    @property
    def idle(self) -> bool:
        return not self._busy and not self._queue

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._queue and not self._busy:
                f, d = self._queue.popleft()
                self._busy = True
                self._run(f).addBoth(self._finished, d)
        finally:
            self._pumping = False

    def _finished(self, result: object, d: "Deferred[Any]") -> None:
        self._busy = False
        if isinstance(result, Failure):
            d.errback(result)
        else:
            d.callback(result)
        self._pump()


def _log_failure(log: Logger, text: str) -> Callable[[Failure], None]:
    def logged(failure: Failure) -> None:
        log.failure(text, failure)

    return logged


class SnapshotSender:
    """
    Sends one snapshot file to one follower (the leader's side).

    Create one per follower being sent to, and L{start} it.  Feed it the
    follower's L{SnapshotChunkResponse}s (L{receive_response}) and, when
    the core acknowledges the snapshot, L{complete}.  It ends exactly once,
    calling C{on_finish(sender, ok)}: C{ok} True when the follower has the
    snapshot, False when it gave up (timeouts, a file it cannot read, a
    follower that refuses the whole file again and again, or
    L{unsendable}), C{None} when it found that this node no longer leads in
    its term (C{still_leading()} is false: nobody is left to tell).
    L{cancel} ends it without calling C{on_finish}.

    @ivar name: the file's name; protect it from pruning until the sender
        has finished (L{TransferRouter.protected} does).
    @ivar size: the file's size, once opened.
    @ivar started_at: the clock's time when sending began (the file opened).
    @ivar finished: whether it has ended.
    @ivar ok: how it ended (C{None} until it has, or if cancelled).
    @ivar stats: counts of chunks sent, retransmitted and of restarts.
    """

    log = Logger()

    def __init__(
        self,
        store: SnapshotStore,
        *,
        leader: int,
        follower: int,
        term: int,
        index: int,
        snapshot_term: int,
        send: Callable[[Message], None],
        clock: IReactorTime,
        on_finish: Callable[["SnapshotSender", bool | None], None] = lambda sender, ok: None,
        still_leading: Callable[[], bool] = lambda: True,
        run_in_thread: ThreadRunner = run_now,
        window: int = DEFAULT_WINDOW,
        chunk_bytes: int = CHUNK_SIZE,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        completion_timeout: float = DEFAULT_COMPLETION_TIMEOUT,
        max_restarts: int = DEFAULT_MAX_RESTARTS,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        if not 1 <= chunk_bytes <= MAX_SNAPSHOT_CHUNK_BYTES:
            raise ValueError(f"chunk_bytes must be 1 to {MAX_SNAPSHOT_CHUNK_BYTES}, not {chunk_bytes}")
        self._store = store
        self.leader = leader
        self.follower = follower
        self.term = term
        self.index = index
        self.snapshot_term = snapshot_term
        self._send = send
        self._clock = clock
        self._on_finish = on_finish
        self._still_leading = still_leading
        self._jobs = _Jobs(run_in_thread)
        self._window = window
        self._chunk_bytes = chunk_bytes
        self._timeout = timeout
        self._max_retries = max_retries
        self._completion_timeout = completion_timeout
        self._max_restarts = max_restarts

        self.name = snapshot_name(index, snapshot_term)
        self._info = SnapshotInfo(os.path.join(store.directory, self.name), index, snapshot_term)
        self.size: int | None = None
        self.started_at: float | None = None  # when the file was opened and sending began
        self.finished = False
        self.ok: bool | None = None
        self.stats = {"chunks": 0, "bytes": 0, "retransmitted": 0, "restarts": 0}

        self._acked = 0  # the follower has written every byte before this
        self._next = 0  # the next byte to read
        self._inflight: deque[tuple[int, bytes]] = deque()  # sent, not acknowledged: from _acked, contiguous
        self._last_chunk: tuple[int, bytes] | None = None  # the final chunk, to probe with once all is acked
        self._chunks: Iterator[tuple[int, bytes]] | None = None
        self._generation = 0  # bumped whenever the read position jumps
        self._reading = False
        self._timer: IDelayedCall | None = None
        self._retries = 0
        self._resent_at: int | None = None  # the position a refusal already made us go back to
        self._refused_at: int | None = None  # the follower's position in its latest refusal
        self._all_acked_at: float | None = None
        self._probing = False
        self._start_call: IDelayedCall | None = None

    def __repr__(self) -> str:
        return (
            f"<SnapshotSender {self.name} to node {self.follower} term {self.term}:"
            f" {self._acked}/{self.size} acknowledged>"
        )

    # -- lifecycle -------------------------------------------------------

    def start(self, delay: float = 0.0, before: Callable[[], bool] | None = None) -> None:
        """Open the file (in the runner) and begin sending, after C{delay}
        seconds if given (the file is protected meanwhile).  C{before}, if
        given, is asked first, when the delay is over: C{False} means do
        not start (it replaced this sender)."""
        if delay > 0:
            self._start_call = self._clock.callLater(delay, self.start, 0.0, before)
            return
        self._start_call = None
        if self.finished:
            return
        if before is not None and not before():
            return
        self._jobs(self._file_size).addCallbacks(self._opened, self._open_failed)

    def _file_size(self) -> int:
        fs = self._store.fs
        fd = fs.open_rw(self._info.path)
        try:
            return fs.file_size(fd)
        finally:
            fs.close(fd)

    def _opened(self, size: int) -> None:
        if self.finished:
            return
        if size <= 0:
            self._finish(False, f"snapshot file {self._info.path} is empty")
            return
        self.size = size
        self.started_at = self._clock.seconds()
        self._chunks = self._store.read_chunks(self._info, self._chunk_bytes, 0)
        self.log.info(
            "sending snapshot {name} ({size} bytes) to node {follower} in term {term}",
            name=self.name, size=size, follower=self.follower, term=self.term,
        )
        self._fill()

    def _open_failed(self, failure: Failure) -> None:
        self._finish(False, f"cannot open snapshot file {self._info.path}: {failure.getErrorMessage()}")

    def cancel(self) -> None:
        """End without reporting (a newer offer replaced this one, or this
        node stopped leading)."""
        self._end()

    def complete(self) -> None:
        """The follower's core acknowledged the snapshot: done."""
        self._finish(True, "the follower acknowledged the snapshot")

    def unsendable(self) -> None:
        """The link cannot carry chunks to this follower (it negotiated an
        older peer protocol version): give up at once."""
        self._finish(False, "the follower's peer protocol version cannot carry snapshot chunks")

    def _finish(self, ok: bool | None, why: str) -> None:
        if self.finished:
            return
        self._end()
        self.ok = ok
        if ok is None:
            self.log.info(
                "stopped sending snapshot {name} to node {follower}: {why}",
                name=self.name, follower=self.follower, why=why,
            )
        elif ok:
            self.log.info(
                "snapshot {name} sent to node {follower} ({why}; {chunks} chunks, {retransmitted} sent again)",
                name=self.name, follower=self.follower, why=why, chunks=self.stats["chunks"],
                retransmitted=self.stats["retransmitted"],
            )
        else:
            self.log.warn(
                "gave up sending snapshot {name} to node {follower}: {why}",
                name=self.name, follower=self.follower, why=why,
            )
        self._on_finish(self, ok)

    def _end(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self._start_call is not None and self._start_call.active():
            self._start_call.cancel()
        self._start_call = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._inflight.clear()
        self._last_chunk = None
        self._close_reader()

    def _close_reader(self) -> None:
        chunks, self._chunks = self._chunks, None
        if chunks is not None:
            close = getattr(chunks, "close", None)
            if close is not None:  # after any read still running: jobs never overlap
                self._jobs(close).addErrback(_log_failure(self.log, "closing a snapshot file failed"))

    # -- sending ---------------------------------------------------------

    def _fill(self) -> None:
        """Read and send chunks until the window is full (one read at a time)."""
        if self.finished or self._reading or self._chunks is None or self.size is None:
            return
        if len(self._inflight) >= self._window or self._next >= self.size:
            return
        self._reading = True
        chunks, generation = self._chunks, self._generation
        self._jobs(lambda: next(chunks, None)).addCallbacks(
            self._read, self._read_failed, callbackArgs=(generation,)
        )

    def _read(self, item: tuple[int, bytes] | None, generation: int) -> None:
        self._reading = False
        if self.finished:
            return
        if generation == self._generation:
            if item is None:
                self._finish(False, f"snapshot file {self._info.path} ended before {self.size} bytes")
                return
            offset, data = item
            assert offset == self._next, (offset, self._next)
            self._next += len(data)
            self._inflight.append((offset, data))
            if self._next == self.size:
                self._last_chunk = (offset, data)
            self.stats["chunks"] += 1
            self._send_chunk(offset, data)
            if self.finished:
                return
            self._arm()
        self._fill()

    def _read_failed(self, failure: Failure) -> None:
        self._reading = False
        self._finish(False, f"reading snapshot file {self._info.path} failed: {failure.getErrorMessage()}")

    def _send_chunk(self, offset: int, data: bytes) -> None:
        assert self.size is not None
        self.stats["bytes"] += len(data)
        body = SnapshotChunk(self.term, self.index, self.snapshot_term, self.size, offset, data)
        self._send(Message(self.leader, self.follower, body))

    def _probe(self) -> None:
        """Send the final chunk again, to learn whether the follower has
        installed the file (reading it first if this sender never did: it
        resumed a transfer the follower had finished receiving)."""
        if self._last_chunk is not None:
            self._send_chunk(*self._last_chunk)
            return
        if self._probing or self.size is None:
            return
        self._probing = True
        chunks = self._store.read_chunks(self._info, self._chunk_bytes, max(0, self.size - self._chunk_bytes))

        def read_one() -> tuple[int, bytes] | None:
            try:
                return next(chunks, None)
            finally:
                chunks.close()  # type: ignore[attr-defined]  # read_chunks returns a generator

        def read(item: tuple[int, bytes] | None) -> None:
            self._probing = False
            if item is not None and not self.finished:
                self._last_chunk = item
                self._send_chunk(*item)

        def failed(failure: Failure) -> None:
            self._probing = False
            self._read_failed(failure)

        self._jobs(read_one).addCallbacks(read, failed)

    def _resend_window(self) -> None:
        for offset, data in list(self._inflight):
            if self.finished:
                return
            self.stats["retransmitted"] += 1
            self._send_chunk(offset, data)

    def _arm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._timeout)
        else:
            self._timer = self._clock.callLater(self._timeout, self._timed_out)

    def _leading(self) -> bool:
        """Whether this node still leads in the transfer's term; if not,
        end without an outcome (the chunks would only be refused)."""
        if self._still_leading():
            return True
        self._finish(None, f"this node no longer leads in term {self.term}")
        return False

    def _timed_out(self) -> None:
        self._timer = None
        if self.finished or not self._leading():
            return
        assert self.size is not None
        if self._acked == self.size:
            # Every byte is written there: the follower is verifying and
            # installing.  Ask again (its answer is done once installed).
            assert self._all_acked_at is not None
            if self._clock.seconds() - self._all_acked_at >= self._completion_timeout:
                self._finish(
                    False, f"the follower did not install the snapshot within {self._completion_timeout:g} s"
                )
                return
            self._probe()
            self._arm()
            return
        self._retries += 1
        if self._retries > self._max_retries:
            self._finish(
                False, f"no progress in {self._retries} timeouts of {self._timeout:g} s (at byte {self._acked})"
            )
            return
        refused_at, self._refused_at = self._refused_at, None
        if refused_at is not None and refused_at != self._acked:
            # The follower keeps telling us another position (its state
            # changed under an older answer we ignored): believe it.
            self._restart_from(refused_at)
        else:
            self._resend_window()
        if not self.finished:
            self._arm()

    # -- answers ---------------------------------------------------------

    def receive_response(self, body: SnapshotChunkResponse) -> None:
        """The follower answered a chunk (answers of other transfers are ignored)."""
        if self.finished or body.term != self.term or body.index != self.index or self.size is None:
            return
        if not self._leading():
            return
        if body.done:
            self._finish(True, "the follower installed it")
            return
        position = body.offset
        if position > self.size:
            self.log.warn(
                "node {follower} answered snapshot {name} with offset {offset}, past its size {size}; ignored",
                follower=self.follower, name=self.name, offset=position, size=self.size,
            )
            return
        if body.accepted:
            if position > self._acked:
                self._advance(position)
            return
        self._refused(position)

    def _advance(self, position: int) -> None:
        """The follower has written everything before C{position}."""
        assert self.size is not None
        inflight = self._inflight
        while inflight and inflight[0][0] + len(inflight[0][1]) <= position:
            inflight.popleft()
        self._acked = position
        self._retries = 0
        self._resent_at = None
        self._refused_at = None
        if position > self._next or (inflight and inflight[0][0] != position):
            # Not where our chunks end: the follower got this far in an
            # earlier transfer of this file.  Go on from there.
            self._restart_from(position)
            return
        if position == self.size:
            self._all_acked_at = self._clock.seconds()
        self._arm()
        self._fill()

    def _refused(self, position: int) -> None:
        assert self.size is not None
        self._refused_at = position
        if position == self._acked:
            # A chunk after a lost one: go back to the lost one, once per loss.
            if self._inflight and self._resent_at != position:
                self._resent_at = position
                self._resend_window()
            return
        if position > self._acked:
            # The follower is ahead of us (an interrupted transfer of this
            # file got that far): resume there.
            self.log.info(
                "node {follower} has {position} bytes of snapshot {name} already; resuming there",
                follower=self.follower, position=position, name=self.name,
            )
            self._retries = 0
            self._acked = position
            if position == self.size:
                self._all_acked_at = self._clock.seconds()
            self._restart_from(position)
            return
        if position != 0:
            return  # an older answer overtaken by later ones
        # The follower has nothing of this transfer: it restarted, dropped
        # the partial file, or refused the whole file (a bad checksum).
        if self._acked == self.size:
            self.stats["restarts"] += 1
            if self.stats["restarts"] > self._max_restarts:
                self._finish(False, f"the follower refused the whole file {self.stats['restarts']} times")
                return
        self.log.info(
            "node {follower} has none of snapshot {name} (at byte {acked} here); starting over",
            follower=self.follower, name=self.name, acked=self._acked,
        )
        self._acked = 0
        self._all_acked_at = None
        self._restart_from(0)

    def _restart_from(self, position: int) -> None:
        """Drop what is in flight and read on from C{position}."""
        self._generation += 1
        self._inflight.clear()
        self._resent_at = None
        self._refused_at = None
        self._acked = position
        self._next = position
        if position == self.size and self._all_acked_at is None:
            self._all_acked_at = self._clock.seconds()
        old = self._chunks
        self._chunks = self._store.read_chunks(self._info, self._chunk_bytes, position)
        if old is not None:
            close = getattr(old, "close", None)
            if close is not None:
                self._jobs(close).addErrback(_log_failure(self.log, "closing a snapshot file failed"))
        self._arm()
        self._fill()


class _Incoming:
    """The transfer a receiver is in the middle of."""

    def __init__(self, leader: int, body: SnapshotChunk) -> None:
        self.leader = leader
        self.term = body.term
        self.index = body.index
        self.snapshot_term = body.snapshot_term
        self.size = body.size
        self.writer: SnapshotWriter | None = None
        self.expected = 0  # the next offset accepted: written plus queued
        self.queued = 0  # chunks accepted, not yet written
        self.failed = False  # a file job failed: the transfer is being dropped
        self.replaced = False

    @property
    def name(self) -> str:
        return snapshot_name(self.index, self.snapshot_term)

    def same_file(self, body: SnapshotChunk) -> bool:
        return (self.snapshot_term, self.size) == (body.snapshot_term, body.size)


class SnapshotReceiver:
    """
    Receives the leader's snapshot (the follower's side): one transfer at a
    time, from the leader of the current term only.

    Feed it every L{SnapshotChunk} that arrives (L{receive}).  A chunk it
    cannot use -- malformed, not from the current leader
    (C{current_leader()} gives C{(leader id or None, current term)}), of an
    older transfer, out of order, disagreeing with the transfer in
    progress, beyond the announced size -- is refused with a log line and
    changes nothing; the refusal tells the leader where this receiver is.
    A chunk of a newer transfer (higher term, or same term and higher
    index) replaces the transfer in progress, whose partial file is
    removed.  Once every byte is written the file is verified and renamed
    into place (a bad checksum: refused, nothing installed) and
    C{installed(leader, term, index, snapshot_term)} is called.  If it
    returns a Deferred, a C{done} answer goes to the leader when that fires
    (the node fires it once the core's acknowledgement is durable), and
    repeated chunks of the transfer are answered done only from then on; if
    it returns C{None}, the core's own acknowledgement is the answer to the
    last chunk, and repeated chunks (a leader that missed it) are answered
    done.
    """

    log = Logger()

    def __init__(
        self,
        store: SnapshotStore,
        *,
        node_id: int,
        send: Callable[[Message], None],
        clock: IReactorTime,
        current_leader: Callable[[], tuple[int | None, int]],
        installed: Callable[[int, int, int, int], "Deferred[Any] | None"],
        run_in_thread: ThreadRunner = run_now,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self._store = store
        self._node_id = node_id
        self._send = send
        self._clock = clock
        self._current_leader = current_leader
        self._installed = installed
        self._jobs = _Jobs(run_in_thread)
        self._idle_timeout = idle_timeout
        self._transfer: _Incoming | None = None
        self._idle: IDelayedCall | None = None
        #: The last transfer installed here: (leader, term, index,
        #: snapshot_term, size), and whether its done answer may go out.
        self._completed: tuple[tuple[int, int, int, int, int], bool] | None = None
        self._stopped = False
        self.stats = {"accepted": 0, "refused": 0, "installed": 0}

    @property
    def in_progress(self) -> tuple[int, int, int, int] | None:
        """C{(term, index, snapshot_term, bytes accepted)} of the transfer
        in progress, if any."""
        t = self._transfer
        return None if t is None else (t.term, t.index, t.snapshot_term, t.expected)

    def stop(self) -> None:
        """Drop the transfer in progress (its partial file is removed)."""
        self._stopped = True
        self._drop(self._transfer)

    # -- chunks ----------------------------------------------------------

    def receive(self, message: Message) -> None:
        """A L{SnapshotChunk} arrived from C{message.sender}."""
        body = message.body
        if self._stopped or not isinstance(body, SnapshotChunk):
            return
        leader = message.sender
        try:
            check_snapshot_chunk(body)
        except MalformedMessage as e:
            self._refuse(leader, body, 0, "warn", f"malformed chunk: {e}", respond=False)
            return
        current, term = self._current_leader()
        if body.term < term:
            self._refuse(leader, body, 0, "info", f"stale chunk of term {body.term} (this node is in term {term})")
            return
        if body.term > term or leader != current:
            self._refuse(
                leader, body, 0, "warn",
                f"chunk from node {leader} in term {body.term}, which is not this node's leader"
                f" (node {current} in term {term})",
            )
            return
        completed = self._completed
        if completed is not None and completed[0] == (leader, body.term, body.index, body.snapshot_term, body.size):
            # A repeat of a transfer already installed here.
            self._answer(leader, body, body.size, accepted=completed[1], done=completed[1])
            return
        t = self._transfer
        if t is not None and (body.term, body.index) < (t.term, t.index):
            self._refuse(
                leader, body, 0, "info",
                f"chunk of an older transfer (index {body.index} in term {body.term}; receiving"
                f" {t.name} of term {t.term})",
            )
            return
        if t is None and completed is not None and (body.term, body.index) < completed[0][1:3]:
            self._refuse(
                leader, body, 0, "info",
                f"chunk of an older transfer (index {body.index} in term {body.term}; installed"
                f" {snapshot_name(completed[0][2], completed[0][3])} of term {completed[0][1]})",
            )
            return
        if t is None or (body.term, body.index) > (t.term, t.index):
            if t is not None:
                self.log.info(
                    "snapshot {new} from node {leader} in term {term} replaces the transfer of {old} (term"
                    " {old_term}), {received} bytes in",
                    new=snapshot_name(body.index, body.snapshot_term), leader=leader, term=body.term,
                    old=t.name, old_term=t.term, received=t.expected,
                )
                self._drop(t, replaced=True)
            if body.offset != 0:
                self._refuse(leader, body, 0, "info", f"chunk at offset {body.offset} of a transfer not started here")
                return
            t = self._begin(leader, body)
        elif not t.same_file(body) or t.leader != leader:
            self._refuse(
                leader, body, t.expected, "warn",
                f"chunk disagrees with the transfer in progress (snapshot term {body.snapshot_term}, size"
                f" {body.size}; expected {t.snapshot_term} and {t.size})",
            )
            return
        if body.offset != t.expected:
            what = "repeated" if body.offset < t.expected else "out-of-order"
            self._refuse(leader, body, t.expected, "info", f"{what} chunk at offset {body.offset}, expected {t.expected}")
            return
        end = body.offset + len(body.data)
        if end > t.size:  # check_snapshot_chunk catches it too; the simulator's messages skip decoding
            self._refuse(leader, body, t.expected, "warn", f"chunk ends at {end}, beyond the announced size {t.size}")
            return
        if t.queued >= MAX_QUEUED_CHUNKS:
            self._refuse(leader, body, t.expected, "info", f"{t.queued} chunks already waiting to be written")
            return
        t.expected = end
        t.queued += 1
        self.stats["accepted"] += 1
        self._touch()
        offset, data = body.offset, body.data
        self._jobs(lambda: self._write(t, offset, data)).addCallbacks(
            self._written, self._file_failed, callbackArgs=(t, body), errbackArgs=(t, body)
        )

    def _begin(self, leader: int, body: SnapshotChunk) -> _Incoming:
        t = _Incoming(leader, body)
        self._transfer = t
        self.log.info(
            "receiving snapshot {name} ({size} bytes) from leader {leader} in term {term}",
            name=t.name, size=t.size, leader=leader, term=t.term,
        )

        def begin() -> None:
            t.writer = self._store.begin_receive(t.index, t.snapshot_term, t.size)

        self._jobs(begin).addErrback(self._file_failed, t, body)
        return t

    @staticmethod
    def _write(t: _Incoming, offset: int, data: bytes) -> int:
        """In the runner: append one chunk; the bytes written so far."""
        if t.failed or t.replaced or t.writer is None:
            return -1  # the transfer was dropped: nothing to do
        t.writer.write(offset, data)
        return t.writer.received

    def _written(self, received: int, t: _Incoming, body: SnapshotChunk) -> None:
        t.queued -= 1
        if received < 0 or t is not self._transfer:
            return
        self._answer(t.leader, body, received, accepted=True)
        if received == t.size:
            self._jobs(lambda: t.writer.finish() if t.writer is not None and not t.replaced else None).addCallbacks(
                self._finished, self._file_failed, callbackArgs=(t,), errbackArgs=(t, body)
            )

    def _finished(self, info: SnapshotInfo | None, t: _Incoming) -> None:
        if info is None or t is not self._transfer:
            if info is not None:
                self.log.info("snapshot {name} was installed after a newer transfer replaced it", name=t.name)
            return
        self._transfer = None
        self._cancel_idle()
        self.stats["installed"] += 1
        record = (t.leader, t.term, t.index, t.snapshot_term, t.size)
        self._completed = (record, False)
        self.log.info(
            "received and verified snapshot {name} ({size} bytes, sha256 {digest}) from leader {leader} in term"
            " {term}",
            name=t.name, size=t.size, digest=info.digest, leader=t.leader, term=t.term,
        )
        try:
            acknowledged = self._installed(t.leader, t.term, t.index, t.snapshot_term)
        except Exception:
            self.log.failure("installing snapshot {name} failed", name=t.name)
            return
        if acknowledged is None:
            # The node took it without a confirmation to wait for: its
            # core's acknowledgement is the answer, and a leader that missed
            # it and asks again is answered done.
            self._completed = (record, True)
            return

        def durable(_: object) -> None:
            if self._completed is not None and self._completed[0] == record:
                self._completed = (record, True)
                self._send_response(t.leader, t.term, t.index, t.size, accepted=True, done=True)

        acknowledged.addCallbacks(durable, _log_failure(self.log, "the node failed to install a received snapshot"))

    def _file_failed(self, failure: Failure, t: _Incoming, body: SnapshotChunk) -> None:
        """A write, the opening or the verification failed: drop the
        transfer, and tell the leader to start over."""
        if t.failed or t.replaced:
            return
        t.failed = True
        if failure.check(SnapshotRejected):
            self.log.warn(
                "rejected snapshot {name} from leader {leader}: {reason}; nothing installed",
                name=t.name, leader=t.leader, reason=failure.getErrorMessage(),
            )
        elif failure.check(StorageError) and not failure.check(OSError):
            # The store refused the file without an I/O error: this node is
            # writing its own snapshot of the same index and term right now
            # (it applied that far too).  The leader starts over later.
            self.log.info(
                "not receiving snapshot {name} from leader {leader}: {reason}",
                name=t.name, leader=t.leader, reason=failure.getErrorMessage(),
            )
        else:
            self.log.failure(
                "receiving snapshot {name} from leader {leader} failed; nothing installed", failure,
                name=t.name, leader=t.leader,
            )
        if t is self._transfer:
            self._drop(t)
            self._answer(t.leader, body, 0, accepted=False)

    def _drop(self, t: _Incoming | None, replaced: bool = False) -> None:
        """Forget C{t} and remove its partial file (after its queued jobs)."""
        if t is None:
            return
        if replaced:
            t.replaced = True
        else:
            t.failed = True
        if self._transfer is t:
            self._transfer = None
            self._cancel_idle()

        def abort() -> None:
            if t.writer is not None:
                t.writer.abort()

        self._jobs(abort).addErrback(_log_failure(self.log, "removing a partial snapshot file failed"))

    # -- answers and timers ----------------------------------------------

    def _refuse(
        self, leader: int, body: SnapshotChunk, position: int, level: str, reason: str, respond: bool = True
    ) -> None:
        self.stats["refused"] += 1
        emit = self.log.warn if level == "warn" else self.log.info
        emit(
            "refused a snapshot chunk from node {leader} (index {index}, offset {offset}): {reason}",
            leader=leader, index=getattr(body, "index", "?"), offset=getattr(body, "offset", "?"), reason=reason,
        )
        if respond:
            self._answer(leader, body, position, accepted=False)

    def _answer(self, leader: int, body: SnapshotChunk, position: int, *, accepted: bool, done: bool = False) -> None:
        self._send_response(leader, body.term, body.index, position, accepted=accepted, done=done)

    def _send_response(self, leader: int, term: int, index: int, position: int, *, accepted: bool, done: bool) -> None:
        if self._stopped:
            return
        self._send(Message(self._node_id, leader, SnapshotChunkResponse(term, index, position, accepted, done)))

    def _touch(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self._idle_timeout)
        else:
            self._idle = self._clock.callLater(self._idle_timeout, self._idled)

    def _cancel_idle(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None

    def _idled(self) -> None:
        self._idle = None
        t = self._transfer
        if t is None:
            return
        if t.queued or t.expected == t.size:
            self._touch()  # still writing or verifying: not idle
            return
        self.log.info(
            "abandoned the transfer of snapshot {name} from node {leader} after {seconds:g} s without a chunk"
            " ({received} of {size} bytes)",
            name=t.name, leader=t.leader, seconds=self._idle_timeout, received=t.expected, size=t.size,
        )
        self._drop(t)


class TransferRouter:
    """
    The node's one handle on snapshot transfers: a sender per follower
    being sent to (leader side) and the receiver (follower side).

    The node calls:
      - L{offer} with each outgoing C{InstallSnapshot} message the core
        emits, instead of sending it (it returns C{False} for any other
        message): it starts a sender for that follower, replacing one for
        another snapshot or term;
      - L{receive} with each incoming message before stepping the core: it
        takes L{SnapshotChunk} and L{SnapshotChunkResponse} (returns
        C{True}: do not step the core with them) and watches
        C{AppendEntriesResponse}s for the core's acknowledgement of a
        snapshot (returns C{False}: step the core as usual);
      - L{stop_sending} when it stops leading, and L{stop} when it stops;
      - L{protected} for the file names its snapshot pruning must spare.

    It calls C{report(follower, ok)} when a transfer ends (the node calls
    C{core.report_snapshot(follower, ok)}) and, through the receiver,
    C{installed(leader, term, index, snapshot_term)} when a snapshot has
    arrived (the node steps the core with it).  C{protect(name)} and
    C{release(name)} bracket each transfer's use of a file (the node's
    pruning spares protected files), C{sent(follower, seconds, size)}
    follows each snapshot a follower acknowledged (for monitoring), and a
    sender whose C{leading(term)} turns false ends quietly.  L{attach_transfers} wires
    all of this to a node.
    """

    log = Logger()

    def __init__(
        self,
        store: SnapshotStore,
        *,
        node_id: int,
        send: Callable[[Message], None],
        clock: IReactorTime,
        current_leader: Callable[[], tuple[int | None, int]],
        installed: Callable[[int, int, int, int], "Deferred[Any] | None"],
        report: Callable[[int, bool], None],
        run_in_thread: ThreadRunner = run_now,
        leading: Callable[[int], bool] = lambda term: True,
        protect: Callable[[str], None] = lambda name: None,
        release: Callable[[str], None] = lambda name: None,
        sent: Callable[[int, float, int], None] = lambda follower, seconds, size: None,
        newest: Callable[[], tuple[int, int] | None] = lambda: None,
        renewed: Callable[[int, int, int], None] = lambda follower, index, snapshot_term: None,
        window: int = DEFAULT_WINDOW,
        chunk_bytes: int = CHUNK_SIZE,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        completion_timeout: float = DEFAULT_COMPLETION_TIMEOUT,
        max_restarts: int = DEFAULT_MAX_RESTARTS,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self._store = store
        self._node_id = node_id
        self._send = send
        self._clock = clock
        self._report = report
        self._run_in_thread = run_in_thread
        self._leading = leading
        self._protect = protect
        self._release = release
        self._sent = sent
        self._newest = newest
        self._renewed = renewed
        self._sender_options: dict[str, Any] = dict(
            window=window, chunk_bytes=chunk_bytes, timeout=timeout, max_retries=max_retries,
            completion_timeout=completion_timeout, max_restarts=max_restarts,
        )
        self.senders: dict[int, SnapshotSender] = {}
        #: Failed transfers in a row, per follower (see L{RETRY_BACKOFF}).
        self.failures: dict[int, int] = {}
        self.receiver = SnapshotReceiver(
            store, node_id=node_id, send=send, clock=clock, current_leader=current_leader, installed=installed,
            run_in_thread=run_in_thread, idle_timeout=idle_timeout,
        )

    def offer(self, message: Message) -> bool:
        """
        If C{message} is the core's C{InstallSnapshot} for a follower, send
        that follower the snapshot it names and return C{True} (the message
        itself must not go on the wire); otherwise return C{False}.
        """
        body = message.body
        if not isinstance(body, InstallSnapshot):
            return False
        self.send_snapshot(message.receiver, body.term, body.index, body.snapshot_term)
        return True

    def send_snapshot(
        self, follower: int, term: int, index: int, snapshot_term: int, *, back_off: bool = True
    ) -> None:
        """Send the snapshot at C{index}/C{snapshot_term} to C{follower} for
        the leader of C{term}, unless that very transfer is running.  After
        failed transfers to C{follower} (and C{back_off}) it starts only
        after a back-off delay, and then sends the newest snapshot this
        node has by then (C{newest()}; C{renewed(follower, index,
        snapshot_term)} tells the core): one taken during the delay is
        closer to the leader's log, so the follower has less to catch up
        and the leader's compaction is less likely to overtake it."""
        current = self.senders.get(follower)
        if current is not None:
            if (current.term, current.index, current.snapshot_term) == (term, index, snapshot_term):
                return
            self.log.info(
                "a new offer of snapshot {new} to node {follower} replaces the transfer of {old}",
                new=snapshot_name(index, snapshot_term), follower=follower, old=current.name,
            )
            self._remove(current)
            current.cancel()
        sender = SnapshotSender(
            self._store, leader=self._node_id, follower=follower, term=term, index=index,
            snapshot_term=snapshot_term, send=self._send, clock=self._clock, on_finish=self._finished,
            still_leading=lambda: self._leading(term), run_in_thread=self._run_in_thread, **self._sender_options,
        )
        self.senders[follower] = sender
        self._protect(sender.name)
        failures = self.failures.get(follower, 0) if back_off else 0
        delay = min(MAX_RETRY_BACKOFF, RETRY_BACKOFF * 2 ** (failures - 1)) if failures else 0.0
        if delay:
            self.log.info(
                "sending snapshot {name} to node {follower} in {delay:g} s ({failures} failed transfers in a row)",
                name=sender.name, follower=follower, delay=delay, failures=failures,
            )
            sender.start(delay, before=lambda: self._still_newest(sender))
        else:
            sender.start()

    def _still_newest(self, sender: SnapshotSender) -> bool:
        """After a back-off delay: C{True} to start C{sender}; or replace it
        with a sender of a newer snapshot taken meanwhile and C{False}."""
        newest = self._newest()
        if newest is None or newest[0] <= sender.index or self.senders.get(sender.follower) is not sender:
            return True
        self.send_snapshot(sender.follower, sender.term, newest[0], newest[1], back_off=False)
        self._renewed(sender.follower, newest[0], newest[1])
        return False

    def _remove(self, sender: SnapshotSender) -> bool:
        """Forget C{sender} if it is the current one for its follower, and
        unprotect its file."""
        if self.senders.get(sender.follower) is not sender:
            return False
        del self.senders[sender.follower]
        self._release(sender.name)
        return True

    def _finished(self, sender: SnapshotSender, ok: bool | None) -> None:
        if self._remove(sender) and ok is not None:
            if ok:
                self.failures.pop(sender.follower, None)
                if sender.started_at is not None and sender.size is not None:
                    self._sent(sender.follower, self._clock.seconds() - sender.started_at, sender.size)
            else:
                self.failures[sender.follower] = self.failures.get(sender.follower, 0) + 1
            self._report(sender.follower, ok)

    def receive(self, message: Message) -> bool:
        """Route an incoming message; C{True} if it was a transfer's (the
        core must not see it)."""
        body = message.body
        if isinstance(body, AppendEntriesResponse):
            if self.senders:
                sender = self.senders.get(message.sender)
                if sender is not None and body.success and body.term == sender.term and body.index >= sender.index:
                    sender.complete()
            return False
        if isinstance(body, SnapshotChunk):
            self.receiver.receive(message)
            return True
        if isinstance(body, SnapshotChunkResponse):
            sender = self.senders.get(message.sender)
            if sender is not None:
                sender.receive_response(body)
            return True
        return False

    def unsendable(self, message: Message) -> None:
        """The peer links could not send C{message} (a peer protocol version
        too old): a chunk fails its transfer at once."""
        body = message.body
        if isinstance(body, SnapshotChunk):
            sender = self.senders.get(message.receiver)
            if sender is not None and sender.term == body.term and sender.index == body.index:
                sender.unsendable()

    def protected(self) -> frozenset[str]:
        """The names of the snapshot files being sent: spare them when pruning."""
        return frozenset(sender.name for sender in self.senders.values())

    def stop_sending(self) -> None:
        """End every transfer this node is sending, without reports (it no
        longer leads; its core has forgotten its followers' progress)."""
        for sender in list(self.senders.values()):
            self._remove(sender)
            sender.cancel()

    def stop(self) -> None:
        """End everything (the node stops)."""
        self.stop_sending()
        self.receiver.stop()


class _Offers:
    """The router as a node's C{SnapshotOffers} (an C{offer} returning nothing)."""

    def __init__(self, router: TransferRouter) -> None:
        self._router = router

    def offer(self, message: Message) -> None:
        self._router.offer(message)


def attach_transfers(
    node: Node,
    store: SnapshotStore | None = None,
    peers: PeerSender | None = None,
    clock: IReactorTime | None = None,
    *,
    run_in_thread: ThreadRunner = run_now,
    **options: Any,
) -> TransferRouter:
    """
    Give C{node} a L{TransferRouter} and return it.

    The router reads the core's leader, term and role; its chunks go out
    through C{peers} (the node's own peer sender); it sends from and
    receives into C{store} (by default the node's C{snapshot_store});
    its file work goes through C{run_in_thread}; C{options} are
    L{TransferRouter}'s tuning keywords.  If C{peers} has an C{unsendable}
    observer list (L{kvstore.protocols.peer_links.PeerLinks}), the router
    joins it, so a follower of an older protocol version fails its
    transfer at once.

    The node side uses the node's snapshot hooks where it has them
    (C{step_installed_snapshot}, C{report_snapshot}, C{protect_snapshot},
    C{release_snapshot}, C{set_snapshot_offers}), and otherwise steps and
    reports to the core directly.  Either way the node's C{transfers}
    attribute is set, through which it hands the router incoming messages
    first (chunks, their answers, and the AppendEntriesResponses that end
    a transfer), offers (unless C{set_snapshot_offers} took them) and its
    stop.
    """
    core = node.core
    if store is None:
        store = getattr(node, "snapshot_store", None)
        if store is None:
            raise ValueError("no snapshot store: pass one, or build the node with its snapshot directory")
    if peers is None:
        peers = node._peers
    if clock is None:
        clock = node._clock

    def installed(leader: int, term: int, index: int, snapshot_term: int) -> "Deferred[Any] | None":
        hook = getattr(node, "step_installed_snapshot", None)
        if hook is not None:
            result: Deferred[Any] | None = hook(leader, term, index, snapshot_term)
            return result
        node.receive(Message(leader, core.node_id, InstallSnapshot(term, index, snapshot_term)))
        return None

    def report(follower: int, ok: bool) -> None:
        hook = getattr(node, "report_snapshot", None)
        if hook is not None:
            hook(follower, ok)
            return
        core.report_snapshot(follower, ok)
        node.wake()

    router = TransferRouter(
        store,
        node_id=core.node_id,
        send=peers.send,
        clock=clock,
        current_leader=lambda: (core.leader_id, core.term),
        installed=installed,
        report=report,
        run_in_thread=run_in_thread,
        leading=lambda term: core.role is Role.LEADER and core.term == term,
        protect=getattr(node, "protect_snapshot", lambda name: None),
        release=getattr(node, "release_snapshot", lambda name: None),
        sent=getattr(node, "metrics", NO_METRICS).snapshot_sent,
        newest=lambda: (node.core.snapshot_index, node.core.snapshot_term) if node.core.snapshot_index else None,
        renewed=lambda follower, index, snapshot_term: node.core.snapshot_offer_renewed(follower, index, snapshot_term),
        **options,
    )
    node.transfers = router
    set_offers = getattr(node, "set_snapshot_offers", None)
    if set_offers is not None:
        set_offers(_Offers(router))
    observers = getattr(peers, "unsendable", None)
    if isinstance(observers, list):
        observers.append(router.unsendable)
    return router
