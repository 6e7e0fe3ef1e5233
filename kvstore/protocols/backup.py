# -*- test-case-name: tests.test_protocols_backup -*-
"""
C{SNAPSHOT} on the client port: a consistent, committed snapshot of a
running cluster, streamed raw, for an online backup (C{kvstore-snapshot
save}, like C{etcdctl snapshot save}).

A connection whose first line is C{SNAPSHOT} (any case, nothing else on the
line, a CR before the LF ignored) is answered with one line::

    snapshot <index> <term> <size>

followed by exactly C{<size>} raw bytes: the snapshot file, format of
L{kvstore.storage.snapshots}, ending with its SHA-256 trailer, which the
receiver checks.  Then the node closes the connection; it reads nothing
more from it.  On failure the answer is one C{Error: ...} line instead
(C{Error: Unavailable: ...} for a node that cannot vouch for the data now:
no leader, or shutting down), and the connection closes.  C{SNAPSHOT} later
on a connection is not a request the client protocol knows.

What the node does (L{SnapshotSender}):

  1. A linearizable read barrier (ReadIndex, as a C{GET} does): when it
     passes, this node has applied every write acknowledged, by any node,
     before the request arrived.
  2. Its newest snapshot if that covers the index applied at that moment;
     otherwise a new one, taken now (L{kvstore.node.node.Node.snapshot_now}).
     Either holds only committed entries.
  3. The file is protected from pruning while it is streamed, read in
     1 MiB chunks on the node's snapshot thread, one chunk at a time, and
     written as the socket drains (the sender is the transport's push
     producer), so a slow reader costs the node one chunk of memory.

Why on the client port and not a new one: an operator already reaches
every node there, and the first-byte dispatch (L{kvstore.protocols.dispatch})
sends connections that start with C{S} here, so C{PUT} and C{GET}
connections never pass through this module.  Connections that turn out not
to be C{SNAPSHOT} (C{STATUS}, or anything else starting with C{S}) are
handed to the client protocol with every byte read so far.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any, Callable, Iterator, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol, IProtocol, IPushProducer, ITCPTransport
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from kvstore.errors import KeyNotFound, KeyValueError
from kvstore.protocols.client import format_error
from kvstore.storage.snapshots import CHUNK_SIZE, SnapshotInfo, SnapshotStore
from kvstore.storage.wal import ThreadRunner

__all__ = ["REQUEST", "SnapshotSource", "SnapshotSender", "SnapshotOrClient", "SnapshotOrClientFactory", "header_line"]

#: The request line, without its LF.
REQUEST = b"SNAPSHOT"
#: The key the read barrier reads: any key does (a missing one is fine).
_BARRIER_KEY = "kvstore-backup-barrier"


class _StateMachine(Protocol):
    @property
    def applied_index(self) -> int: ...


class SnapshotSource(Protocol):
    """What the sender needs of the node (L{kvstore.node.node.Node})."""

    @property
    def state_machine(self) -> _StateMachine: ...

    @property
    def snapshot_store(self) -> SnapshotStore | None: ...

    @property
    def snapshot_runner(self) -> ThreadRunner | None: ...

    def get(self, key: str, stale: bool = False) -> "Deferred[str]": ...

    def snapshot_now(self) -> "Deferred[SnapshotInfo]": ...

    def protect_snapshot(self, name: str) -> None: ...

    def release_snapshot(self, name: str) -> None: ...


def header_line(index: int, term: int, size: int) -> bytes:
    """The line that precedes the file's bytes."""
    return f"snapshot {index} {term} {size}\n".encode("ascii")


def _error_line(failure: Failure) -> bytes:
    error = failure.value
    if isinstance(error, KeyValueError):
        text = format_error(error)
    else:
        text = f"Error: Unavailable: cannot take a snapshot: {failure.getErrorMessage()}"
    return (" ".join(text.split()) + "\n").encode("utf-8")


@implementer(IPushProducer)
class SnapshotSender:
    """
    Answers one C{SNAPSHOT} request on C{transport} (see the module
    docstring), then closes it.
    """

    log = Logger()

    def __init__(self, source: SnapshotSource, transport: ITCPTransport) -> None:
        self._source = source
        self._transport = transport
        self._chunks: Iterator[tuple[int, bytes]] | None = None
        self._protected: str | None = None
        self._paused = False
        self._reading = False
        self._done = False
        self._sent = 0
        self._size = 0
        self._info: SnapshotInfo | None = None
        self._header_sent = False

    # -- choosing the snapshot ---------------------------------------------

    def start(self) -> None:
        store, runner = self._source.snapshot_store, self._source.snapshot_runner
        if store is None or runner is None:
            self._fail_with(b"Error: Unavailable: this node keeps no snapshots\n")
            return
        barrier = self._source.get(_BARRIER_KEY)
        barrier.addErrback(_missing_key_is_fine)
        barrier.addCallback(lambda _: self._choose(store, runner))
        barrier.addErrback(self._failed)

    def _choose(self, store: SnapshotStore, runner: ThreadRunner) -> "Deferred[None]":
        """After the barrier: the newest snapshot if it covers what is
        applied now, else a new one."""
        if self._done:
            raise _Gone()
        applied = self._source.state_machine.applied_index

        def listed(existing: list[SnapshotInfo]) -> "Deferred[None]":
            if self._done:
                raise _Gone()
            if existing and existing[0].index >= applied:
                self._protect(existing[0].name)
                # Pruned between the listing and now: take a new one.
                return self._sized(existing[0], runner).addErrback(self._vanished, runner)
            return self._take_new(runner)

        return runner(store.list).addCallback(listed)

    def _vanished(self, failure: Failure, runner: ThreadRunner) -> "Deferred[None]":
        failure.trap(FileNotFoundError)
        self._release()
        return self._take_new(runner)

    def _take_new(self, runner: ThreadRunner) -> "Deferred[None]":
        def taken(info: SnapshotInfo) -> "Deferred[None]":
            self._protect(info.name)  # the same turn it fired in: nothing pruned it yet
            return self._sized(info, runner)

        return self._source.snapshot_now().addCallback(taken)

    def _protect(self, name: str) -> None:
        self._source.protect_snapshot(name)
        self._protected = name
        if self._done:  # the connection went while we waited
            self._release()

    def _sized(self, info: SnapshotInfo, runner: ThreadRunner) -> "Deferred[None]":
        if self._done:
            raise _Gone()
        self._info = info

        def opened(size: int) -> None:
            if self._done:
                raise _Gone()
            self._size = size
            self.log.info(
                "sending snapshot {name} ({size} bytes) for a backup to {peer}",
                name=info.name, size=size, peer=self._transport.getPeer(),
            )
            self._transport.write(header_line(info.index, info.term, size))
            self._header_sent = True
            self._transport.registerProducer(self, True)  # type: ignore[attr-defined]  # a TCP transport is also an IConsumer
            self._read_next()

        return runner(partial(os.path.getsize, info.path)).addCallback(opened)

    # -- streaming -----------------------------------------------------------

    def _read_next(self) -> None:
        if self._done or self._paused or self._reading:
            return
        store, runner = self._source.snapshot_store, self._source.snapshot_runner
        assert store is not None and runner is not None and self._info is not None
        if self._chunks is None:
            self._chunks = store.read_chunks(self._info, CHUNK_SIZE)
        self._reading = True
        runner(partial(next, self._chunks, None)).addCallbacks(self._chunk, self._failed)

    def _chunk(self, item: tuple[int, bytes] | None) -> None:
        self._reading = False
        if self._done:
            chunks, self._chunks = self._chunks, None
            if chunks is not None:
                _close_quietly(chunks)
            return
        if item is None:
            if self._sent != self._size:
                self._failed(Failure(RuntimeError(f"the snapshot file changed size ({self._sent} of {self._size} bytes)")))
                return
            self.log.info("snapshot {name} sent for a backup", name=self._info.name if self._info else "?")
            self._finish()
            return
        _, data = item
        if self._sent + len(data) > self._size:
            self._failed(Failure(RuntimeError("the snapshot file grew while it was sent")))
            return
        self._sent += len(data)
        self._transport.write(data)  # may pause us (a full send buffer)
        self._read_next()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._read_next()

    def stopProducing(self) -> None:
        self.connection_lost()

    # -- ending ----------------------------------------------------------------

    def _failed(self, failure: Failure) -> None:
        if self._done or failure.check(_Gone):
            return
        self._reading = False
        if self._header_sent:
            # The header went out: the receiver sees a short file.
            self.log.warn("sending a snapshot for a backup failed: {error}", error=failure.getErrorMessage())
            self._transport.abortConnection()
            self._finish(close=False)
            return
        self._fail_with(_error_line(failure))

    def _fail_with(self, line: bytes) -> None:
        self._transport.write(line)
        self._finish()

    def _finish(self, close: bool = True) -> None:
        if self._done:
            return
        self._done = True
        self._release()
        self._drop_chunks()
        try:
            self._transport.unregisterProducer()  # type: ignore[attr-defined]  # a TCP transport is also an IConsumer
        except Exception:
            pass
        if close:
            self._transport.loseConnection()

    def _release(self) -> None:
        name, self._protected = self._protected, None
        if name is not None:
            self._source.release_snapshot(name)

    def connection_lost(self) -> None:
        """The connection is gone: stop, release the file."""
        if not self._done:
            self._done = True
            self._release()
            self._drop_chunks()

    def _drop_chunks(self) -> None:
        """Close the file now, or (a read is running on the snapshot
        thread) when that read returns."""
        if not self._reading and self._chunks is not None:
            chunks, self._chunks = self._chunks, None
            _close_quietly(chunks)


def _missing_key_is_fine(failure: Failure) -> None:
    """The barrier read a key that need not exist."""
    failure.trap(KeyNotFound)


class _Gone(Exception):
    """The connection went away while the sender waited."""


def _close_quietly(chunks: Iterator[tuple[int, bytes]]) -> None:
    close: Callable[[], None] | None = getattr(chunks, "close", None)
    if close is not None:
        try:
            close()
        except OSError:
            pass


@implementer(IHalfCloseableProtocol)
class SnapshotOrClient(TwistedProtocol):
    """
    A connection that starts with C{S}: C{SNAPSHOT} (answered by a
    L{SnapshotSender}) or a client request such as C{STATUS} (handed, with
    the bytes read so far, to the client protocol).  Waits only while what
    has arrived could still be the line C{SNAPSHOT}.
    """

    transport: ITCPTransport

    def __init__(self, factory: "SnapshotOrClientFactory", addr: IAddress | None) -> None:
        self._factory = factory
        self._addr = addr
        self._buffer = b""
        self.client: IProtocol | None = None
        self.sender: SnapshotSender | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.client is not None:
            self.client.dataReceived(data)
            return
        if self.sender is not None:
            return  # nothing after SNAPSHOT is read
        buffer = self._buffer + data
        end = buffer.find(b"\n")
        if end < 0:
            if (REQUEST + b"\r").startswith(buffer.upper()):
                self._buffer = buffer
                return
            self._become_client(buffer)
            return
        line = buffer[:end]
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.upper() == REQUEST:
            self._buffer = b""
            self.sender = SnapshotSender(self._factory.source, self.transport)
            self.transport.pauseProducing()  # type: ignore[attr-defined]  # a TCP transport: read nothing more
            self.sender.start()
            return
        self._become_client(buffer)

    def _become_client(self, buffer: bytes) -> None:
        self._buffer = b""
        client = self._factory.client_factory.buildProtocol(self._addr)
        assert client is not None
        self.client = client
        client.makeConnection(self.transport)
        if buffer:
            client.dataReceived(buffer)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]  # Twisted declares reason with a default; ours always gets one
        if self.client is not None:
            self.client.connectionLost(reason)
        if self.sender is not None:
            self.sender.connection_lost()

    def readConnectionLost(self) -> None:
        if self.sender is not None:
            return  # the request is in: keep sending
        if self.client is None:
            self._become_client(self._buffer)
        client = self.client
        if client is not None and IHalfCloseableProtocol.providedBy(client):
            client.readConnectionLost()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        client = self.client
        if client is not None and IHalfCloseableProtocol.providedBy(client):
            client.writeConnectionLost()
        else:
            self.transport.loseConnection()


class SnapshotOrClientFactory(Factory):
    """Builds L{SnapshotOrClient} for the dispatcher's connections that start with C{S}."""

    noisy = False

    def __init__(self, source: SnapshotSource, client_factory: Factory) -> None:
        self.source = source
        self.client_factory = client_factory

    def buildProtocol(self, addr: Any) -> SnapshotOrClient:
        return SnapshotOrClient(self, addr)
