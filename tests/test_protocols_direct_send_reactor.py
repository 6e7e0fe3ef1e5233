# -*- test-case-name: tests.test_protocols_direct_send_reactor -*-
"""
L{kvstore.protocols.sending.write_now} under the real reactor, over real
loopback TCP connections: bytes arrive in the order they were written
whatever mix of direct sends, partial sends, C{write} and C{writeSequence}
a connection sees across reactor iterations; closing after a direct send
delivers everything; a reset peer ends the connection exactly once; a
client that does not read its replies is still throttled.

Each connection's sending socket gets a small kernel send buffer and its
reader stops reading at times, so that the kernel refuses part of a send
and the transport's buffer is used, as on a slow link.
"""

from __future__ import annotations

import random
import socket
import struct
from typing import Any

import pytest

from twisted.internet import reactor as _reactor
from twisted.internet import tcp
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from kvstore.protocols.client import ClientProtocol
from kvstore.protocols.sending import write_now
from kvstore.tools.ports import allocate_port
from tests.test_protocols_client import FakeService

pytestmark = pytest.mark.integration  # the real reactor and network

reactor: Any = _reactor

_SMALL_SNDBUF = 16384  # the kernel doubles it


def _chunk(number: int, size: int) -> bytes:
    """C{size} bytes that say which write they came from, so that bytes
    out of order or missing show in the stream."""
    pattern = b"<%07d>" % number
    return (pattern * (size // len(pattern) + 1))[:size]


class _Reader(Protocol):
    """The receiving end: keeps every byte, counts connectionLost."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.made: Deferred[None] = Deferred()
        self.lost: Deferred[object] = Deferred()
        self.lost_count = 0

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]
        self.made.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        self.lost_count += 1
        if not self.lost.called:
            self.lost.callback(reason.value)


class _Writer(Protocol):
    """The sending end: runs a script of writes, one step per reactor turn
    or several in one turn, then closes."""

    def __init__(self) -> None:
        self.made: Deferred[None] = Deferred()
        self.lost: Deferred[object] = Deferred()
        self.lost_count = 0

    def connectionMade(self) -> None:
        self.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SMALL_SNDBUF)  # type: ignore[union-attr]
        self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]
        self.made.callback(None)

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        self.lost_count += 1
        if not self.lost.called:
            self.lost.callback(reason.value)


class _Pair:
    """A listening writer side and a connected reader side."""

    def __init__(self, test: TestCase) -> None:
        self.test = test
        self.writer = _Writer()
        self.reader = _Reader()

    @inlineCallbacks
    def connect(self) -> Any:
        writer = self.writer
        factory = Factory.forProtocol(lambda: writer)
        port = reactor.listenTCP(allocate_port(), factory, interface="127.0.0.1")
        self.test.addCleanup(port.stopListening)
        reader = self.reader
        client_factory = ClientFactory.forProtocol(lambda: reader)
        connector = reactor.connectTCP("127.0.0.1", port.getHost().port, client_factory)
        self.test.addCleanup(connector.disconnect)
        yield writer.made
        yield reader.made
        self.test.assertIsInstance(writer.transport, tcp.Server)


def _turn() -> "Deferred[None]":
    """One reactor iteration (at least)."""
    return deferLater(reactor, 0, lambda: None)


class OrderingTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_random_mixes_of_writes_arrive_in_order(self) -> None:
        """Whatever mix of direct sends (several per turn, big ones sent in
        part), C{write} and C{writeSequence} a connection sees while its
        reader stalls and resumes, the reader gets every byte in order, and
        closing right after the last direct send delivers all of it."""
        for seed in range(4):
            rng = random.Random(seed)
            pair = _Pair(self)
            yield pair.connect()
            transport: Any = pair.writer.transport
            reader_transport: Any = pair.reader.transport
            expected = bytearray()
            number = 0
            for _ in range(30):
                for _ in range(rng.choice((1, 1, 2, 4))):
                    number += 1
                    size = rng.choice((1, 10, 100, 1000, 5000, 50_000, 150_000))
                    data = _chunk(number, size)
                    expected += data
                    how = rng.choice(("write_now", "write_now", "write", "writeSequence"))
                    if how == "write_now":
                        write_now(transport, data)
                    elif how == "write":
                        transport.write(data)
                    else:
                        transport.writeSequence([data[: size // 2], data[size // 2 :]])
                stall = rng.random()
                if stall < 0.2:
                    reader_transport.pauseProducing()
                elif stall < 0.5:
                    reader_transport.resumeProducing()
                yield _turn()
            number += 1
            last = _chunk(number, 777)
            expected += last
            write_now(transport, last)
            transport.loseConnection()
            reader_transport.resumeProducing()
            yield pair.reader.lost
            yield pair.writer.lost
            self.assertEqual(len(pair.reader.received), len(expected), f"seed {seed}")
            self.assertTrue(pair.reader.received == expected, f"seed {seed}: bytes out of order")
            self.assertEqual(pair.writer.lost_count, 1)

    @inlineCallbacks
    def test_direct_sends_from_data_received_keep_order(self) -> None:
        """Answers sent with C{write_now} from within C{dataReceived}, mixed
        with C{write}, arrive in order while the asker reads slowly."""
        answers = bytearray()
        numbers = iter(range(1, 1_000_000))

        class Echo(_Writer):
            def dataReceived(self, data: bytes) -> None:
                for _ in range(data.count(b"\n")):
                    number = next(numbers)
                    answer = _chunk(number, 20_000 if number % 7 == 0 else 60)
                    answers.extend(answer)
                    if number % 3 == 0:
                        self.transport.write(answer)  # type: ignore[union-attr]
                    else:
                        write_now(self.transport, answer)

        pair = _Pair(self)
        pair.writer = Echo()
        yield pair.connect()
        reader_transport: Any = pair.reader.transport
        for i in range(300):
            reader_transport.write(b"q\n" * (1 + i % 5))
            if i % 50 == 10:
                reader_transport.pauseProducing()
            elif i % 50 == 30:
                reader_transport.resumeProducing()
            yield _turn()
        reader_transport.resumeProducing()
        while len(pair.reader.received) < len(answers) or len(answers) < sum(1 + i % 5 for i in range(300)) * 60:
            yield _turn()
        self.assertTrue(pair.reader.received == answers)


class ErrorTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_reset_peer_loses_the_connection_once(self) -> None:
        """Direct sends to a peer that reset the connection (found by the
        send, the reactor not having read the reset yet) raise nothing and
        end in exactly one connectionLost, whatever is written after."""
        writer = _Writer()
        port = reactor.listenTCP(allocate_port(), Factory.forProtocol(lambda: writer), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        sock = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(sock.close)
        yield writer.made
        transport: Any = writer.transport
        transport.stopReading()  # the reactor must not see the reset first
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST, delivered at once over loopback
        write_now(transport, b"first")  # the send finds the reset
        write_now(transport, b"second")
        transport.write(b"third")
        transport.loseConnection()
        reason = yield writer.lost
        for _ in range(5):
            yield _turn()
        self.assertEqual(writer.lost_count, 1)
        self.assertFalse(transport.connected)
        self.assertIsNotNone(reason)


class ThrottlingTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_client_that_does_not_read_is_throttled_then_served(self) -> None:
        """A client pipelining big GETs without reading its replies fills the
        kernel's buffer, then a bounded part of Twisted's, and the node stops
        reading its requests; once it reads, every reply arrives, in order,
        and the node reads again."""
        service = FakeService(auto=True)
        value = "v" * 10_000
        service.data["big"] = value
        protocols: list[ClientProtocol] = []

        def build() -> ClientProtocol:
            protocol = ClientProtocol(service)
            protocols.append(protocol)
            return protocol

        port = reactor.listenTCP(allocate_port(), Factory.forProtocol(build), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        sock = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(sock.close)
        sock.setblocking(False)
        while not protocols:
            yield _turn()
        requests = b"GET big\n" * 4000  # 40 MB of replies
        sent = 0
        stalled_turns = 0
        # Send requests (not reading replies) until the node stops taking them.
        while sent < len(requests) and stalled_turns < 50:
            try:
                n = sock.send(requests[sent : sent + 65536])
            except BlockingIOError:
                n = 0
            sent += n
            stalled_turns = 0 if n else stalled_turns + 1
            yield _turn()
        self.assertEqual(len(protocols), 1)
        transport: Any = protocols[0].transport
        self.assertLess(len(service.calls), 4000, "the node never stopped reading")
        buffered = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        self.assertLess(buffered, 2 * 1024 * 1024)
        self.assertTrue(protocols[0].paused)
        # Now read everything, sending the rest of the requests as we go.
        got = bytearray()
        want = len(b"value of big: " + value.encode() + b"\n")
        want_total = 4000 * want
        idle = 0
        while len(got) < want_total:
            idle += 1
            if idle > 2000:
                self.fail(f"stalled: {len(got)} of {want_total} bytes, {len(service.calls)} requests run, "
                          f"sent {sent}, paused {protocols[0].paused} reasons {protocols[0]._pause_reasons}, "
                          f"buffered {len(transport.dataBuffer) - transport.offset + transport._tempDataLen} "
                          f"producerPaused {transport.producerPaused}")
            try:
                chunk = sock.recv(1 << 20)
            except BlockingIOError:
                chunk = b""
            got += chunk
            if chunk:
                idle = 0
            if sent < len(requests):
                try:
                    sent += sock.send(requests[sent : sent + 65536])
                except BlockingIOError:
                    pass
            yield _turn()
        self.assertEqual(len(service.calls), 4000)
        self.assertEqual(bytes(got), (b"value of big: " + value.encode() + b"\n") * 4000)
