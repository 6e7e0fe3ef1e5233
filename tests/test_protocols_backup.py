# -*- test-case-name: tests.test_protocols_backup -*-
"""
L{kvstore.protocols.backup}: C{SNAPSHOT} on the client port streams a
committed snapshot, chosen after a read barrier, and every other
connection starting with C{S} reaches the client protocol untouched.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.errors import KeyNotFound, Unavailable
from kvstore.protocols.backup import SnapshotOrClient, SnapshotOrClientFactory, SnapshotSender, header_line
from kvstore.protocols.dispatch import DispatchFactory
from kvstore.statemachine import KeyValueStateMachine, encode_put
from kvstore.storage.snapshots import CHUNK_SIZE, SnapshotInfo, SnapshotMeta, SnapshotStore


def run_now(function: Callable[[], Any]) -> Deferred[Any]:
    try:
        return succeed(function())
    except Exception:
        return fail()


class HeldRunner:
    """A thread runner whose calls finish only when the test says so."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def __call__(self, function: Callable[[], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append((function, d))
        return d

    def finish_one(self) -> None:
        """Run the oldest held call (not those it leads to)."""
        function, d = self.calls.pop(0)
        try:
            result = function()
        except Exception:
            d.errback(Failure())
        else:
            d.callback(result)

    def finish_all(self) -> None:
        """Run held calls, and those they lead to, until none is left."""
        while self.calls:
            self.finish_one()


class FakeNode:
    """The parts of a node the sender uses, on a real snapshot directory."""

    def __init__(self, test: SynchronousTestCase, keys: int = 10, runner: Any = run_now) -> None:
        self.machine = KeyValueStateMachine()
        for i in range(1, keys + 1):
            self.machine.apply(i, encode_put(f"k{i}", "v" * 50))
        self.state_machine = self.machine
        self.snapshot_store = SnapshotStore.open(test.mktemp())
        self.snapshot_runner = runner
        self.barrier: Callable[[], Deferred[str]] = lambda: fail(KeyNotFound("kvstore-backup-barrier"))
        self.taken = 0
        self.protected: dict[str, int] = {}
        self.ever_protected: list[str] = []

    def get(self, key: str, stale: bool = False) -> Deferred[str]:
        assert not stale
        return self.barrier()

    def write_snapshot(self) -> SnapshotInfo:
        writer = self.snapshot_store.begin(SnapshotMeta(self.machine.applied_index, 1, cluster_id="c"))
        writer.write(self.machine.snapshot())
        return writer.finish()

    def snapshot_now(self) -> Deferred[SnapshotInfo]:
        self.taken += 1
        return succeed(self.write_snapshot())

    def protect_snapshot(self, name: str) -> None:
        self.protected[name] = self.protected.get(name, 0) + 1
        self.ever_protected.append(name)

    def release_snapshot(self, name: str) -> None:
        self.protected[name] -= 1
        if not self.protected[name]:
            del self.protected[name]

    def file_bytes(self, info: SnapshotInfo) -> bytes:
        with open(info.path, "rb") as f:
            return f.read()


class RecordingClient(Protocol):
    """Stands in for the client protocol: records what it is handed."""

    def __init__(self) -> None:
        self.received = b""
        self.half_closed = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data


def connect(node: FakeNode) -> tuple[SnapshotOrClient, StringTransport, list[RecordingClient]]:
    clients: list[RecordingClient] = []

    class ClientFactory(Factory):
        def buildProtocol(self, addr: Any) -> RecordingClient:
            client = RecordingClient()
            clients.append(client)
            return client

    protocol = SnapshotOrClientFactory(node, ClientFactory()).buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport, clients


def split_reply(data: bytes) -> tuple[bytes, bytes]:
    line, _, rest = data.partition(b"\n")
    return line, rest


class StreamingTests(SynchronousTestCase):
    """SNAPSHOT is answered with a header line and exactly the file's bytes."""

    def test_new_snapshot_streamed(self) -> None:
        """Without a snapshot covering the applied index, one is taken and sent whole, then the connection closes."""
        node = FakeNode(self)
        protocol, transport, clients = connect(node)
        protocol.dataReceived(b"SNAPSHOT\n")
        self.assertEqual(node.taken, 1)
        info = node.snapshot_store.list()[0]
        content = node.file_bytes(info)
        line, rest = split_reply(transport.value())
        self.assertEqual(line + b"\n", header_line(10, 1, len(content)))
        self.assertEqual(rest, content)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(clients, [])
        self.assertEqual(node.ever_protected, [info.name])
        self.assertEqual(node.protected, {})

    def test_fresh_snapshot_reused(self) -> None:
        """A snapshot already covering the applied index is sent as it is: none is taken."""
        node = FakeNode(self)
        info = node.write_snapshot()
        protocol, transport, _ = connect(node)
        protocol.dataReceived(b"snapshot\r\n")
        self.assertEqual(node.taken, 0)
        self.assertEqual(split_reply(transport.value())[1], node.file_bytes(info))

    def test_stale_snapshot_replaced(self) -> None:
        """A snapshot older than the applied index is not sent: a new one is taken."""
        node = FakeNode(self)
        node.write_snapshot()
        node.machine.apply(11, encode_put("k11", "new"))
        protocol, transport, _ = connect(node)
        protocol.dataReceived(b"SNAPSHOT\n")
        self.assertEqual(node.taken, 1)
        self.assertTrue(transport.value().startswith(b"snapshot 11 1 "))

    def test_barrier_runs_first(self) -> None:
        """Nothing is chosen until the read barrier passes; the index applied then decides."""
        node = FakeNode(self)
        node.write_snapshot()
        barrier: Deferred[str] = Deferred()
        node.barrier = lambda: barrier
        protocol, transport, _ = connect(node)
        protocol.dataReceived(b"SNAPSHOT\n")
        self.assertEqual(transport.value(), b"")
        node.machine.apply(11, encode_put("k11", "acknowledged before the request"))
        barrier.callback("value")
        self.assertEqual(node.taken, 1)
        self.assertTrue(transport.value().startswith(b"snapshot 11 1 "))

    def test_barrier_failure(self) -> None:
        """A node that cannot pass the barrier answers with its error and sends nothing else."""
        node = FakeNode(self)
        node.barrier = lambda: fail(Unavailable("no leader"))
        protocol, transport, _ = connect(node)
        protocol.dataReceived(b"SNAPSHOT\n")
        self.assertEqual(transport.value(), b"Error: Unavailable: no leader\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(node.ever_protected, [])

    def test_snapshot_failure(self) -> None:
        """A snapshot that cannot be taken is an Unavailable error line."""
        node = FakeNode(self)
        node.snapshot_now = lambda: fail(OSError("disk full"))  # type: ignore[method-assign]
        protocol, transport, _ = connect(node)
        protocol.dataReceived(b"SNAPSHOT\n")
        self.assertEqual(transport.value(), b"Error: Unavailable: cannot take a snapshot: disk full\n")

    def test_no_snapshots(self) -> None:
        """A node without a snapshot directory says so."""
        node = FakeNode(self)
        node.snapshot_store = None  # type: ignore[assignment]
        protocol, transport, _ = connect(node)
        protocol.dataReceived(b"SNAPSHOT\n")
        self.assertTrue(transport.value().startswith(b"Error: Unavailable: "))


class FlowTests(SynchronousTestCase):
    """The file is read one chunk at a time, as the socket drains, and released when the connection goes."""

    def big_node(self, runner: Any) -> tuple[FakeNode, SnapshotInfo]:
        node = FakeNode(self, keys=30_000, runner=runner)  # about 1.8 MB: two chunks
        return node, node.write_snapshot()

    def test_one_chunk_at_a_time(self) -> None:
        """While the transport is paused no chunk is read; resuming reads the next one."""
        runner = HeldRunner()
        node, info = self.big_node(runner)
        assert info.size is not None and info.size > CHUNK_SIZE
        protocol, transport, _ = connect(node)
        protocol.dataReceived(b"SNAPSHOT\n")
        runner.finish_one()  # the listing
        runner.finish_one()  # the size
        sender = protocol.sender
        assert sender is not None
        header = len(header_line(info.index, 1, info.size))
        self.assertEqual(len(transport.value()), header)
        self.assertEqual(len(runner.calls), 1)  # the first chunk, and only it
        sender.pauseProducing()  # as a full send buffer does, while it is read
        runner.finish_one()
        self.assertEqual(len(transport.value()), header + CHUNK_SIZE)
        self.assertEqual(runner.calls, [])  # paused: nothing more is read
        sender.resumeProducing()
        self.assertEqual(len(runner.calls), 1)
        runner.finish_all()
        self.assertEqual(split_reply(transport.value())[1], node.file_bytes(info))
        self.assertEqual(node.protected, {})

    def test_connection_lost_releases(self) -> None:
        """A connection lost in the middle releases the file and reads no more of it."""
        runner = HeldRunner()
        node, info = self.big_node(runner)
        protocol, transport, _ = connect(node)
        protocol.dataReceived(b"SNAPSHOT\n")
        runner.finish_one()
        runner.finish_one()
        runner.finish_one()  # the first chunk; the second is being read
        self.assertEqual(node.protected, {info.name: 1})
        protocol.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(node.protected, {})
        sent = len(transport.value())
        runner.finish_all()
        self.assertEqual(len(transport.value()), sent)

    def test_file_changed_size(self) -> None:
        """A file that is longer than announced is cut off, not passed on."""
        runner = HeldRunner()
        node, info = self.big_node(runner)
        protocol, transport, _ = connect(node)
        protocol.dataReceived(b"SNAPSHOT\n")
        function, d = runner.calls.pop(0)
        d.callback(function())  # list
        function, d = runner.calls.pop(0)
        d.callback(function() - 10)  # the size, understated
        runner.finish_all()
        runner.finish_all()
        self.assertTrue(transport.disconnecting)
        self.assertLess(len(split_reply(transport.value())[1]), os.path.getsize(info.path))
        self.assertEqual(node.protected, {})


class SniffingTests(SynchronousTestCase):
    """Connections starting with S that are not SNAPSHOT reach the client protocol with every byte."""

    def test_status(self) -> None:
        """STATUS, arriving in pieces, is handed to the client protocol whole."""
        node = FakeNode(self)
        protocol, transport, clients = connect(node)
        protocol.dataReceived(b"S")
        protocol.dataReceived(b"TA")
        self.assertEqual(len(clients), 1)
        protocol.dataReceived(b"TUS\nPING\n")
        self.assertEqual(clients[0].received, b"STATUS\nPING\n")
        self.assertIs(clients[0].transport, transport)

    def test_snapshot_in_pieces(self) -> None:
        """SNAPSHOT split across reads is still recognised."""
        node = FakeNode(self)
        protocol, transport, clients = connect(node)
        for piece in (b"SNA", b"PSHO", b"T", b"\r", b"\n"):
            protocol.dataReceived(piece)
        self.assertEqual(clients, [])
        self.assertTrue(transport.value().startswith(b"snapshot 10 1 "))

    def test_longer_word(self) -> None:
        """A word that only starts like SNAPSHOT goes to the client protocol."""
        node = FakeNode(self)
        protocol, _, clients = connect(node)
        protocol.dataReceived(b"SNAPSHOTS\n")
        self.assertEqual(clients[0].received, b"SNAPSHOTS\n")

    def test_half_close_before_the_line(self) -> None:
        """A client that stops sending before a full line is handed over with what it sent."""
        node = FakeNode(self)
        protocol, _, clients = connect(node)
        protocol.dataReceived(b"SNAP")
        protocol.readConnectionLost()
        self.assertEqual(clients[0].received, b"SNAP")

    def test_dispatch(self) -> None:
        """The dispatcher sends connections starting with S (either case) to the snapshot factory, others not."""
        built: list[str] = []

        def factory(name: str) -> Factory:
            class Named(Factory):
                def buildProtocol(self, addr: Any) -> Protocol:
                    built.append(name)
                    return Protocol()

            return Named()

        dispatch = DispatchFactory(factory("client"), factory("peer"), factory("snapshot"))
        for first in (b"SNAPSHOT\n", b"status\n", b"PUT k v\n", b"12:{}", b"GET k\n"):
            protocol = dispatch.buildProtocol(None)
            protocol.makeConnection(StringTransport())
            protocol.dataReceived(first)
        self.assertEqual(built, ["snapshot", "snapshot", "client", "peer", "client"])
        without = DispatchFactory(factory("client"), factory("peer"))
        protocol = without.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"STATUS\n")
        self.assertEqual(built[-1], "client")


class SenderTypeTests(SynchronousTestCase):
    """The sender is the transport's streaming producer while it sends."""

    def test_registered(self) -> None:
        """While streaming the sender is registered as a streaming producer, and unregistered at the end."""
        runner = HeldRunner()
        node = FakeNode(self, keys=30_000, runner=runner)
        node.write_snapshot()
        protocol, transport, _ = connect(node)
        protocol.dataReceived(b"SNAPSHOT\n")
        runner.finish_one()
        runner.finish_one()
        self.assertIsInstance(transport.producer, SnapshotSender)
        self.assertTrue(transport.streaming)
        runner.finish_all()
        self.assertIsNone(transport.producer)
