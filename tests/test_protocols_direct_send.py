# -*- test-case-name: tests.test_protocols_direct_send -*-
"""
Tests for L{kvstore.protocols.sending.write_now}'s fast path: bytes for a
TCP transport with nothing buffered go straight to its socket, without
registering it with the reactor; anything else goes through Twisted's
buffer, in order.

The transports are Twisted's own L{tcp.Server} over real connected sockets
(loopback TCP, or a UNIX socketpair where only the kernel's behaviour
matters), driven by a reactor stand-in that records what the transport asks
of it: each test plays the reactor's part (C{doWrite}) itself.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet import tcp
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.client import ClientProtocol
from kvstore.protocols.peer_links import PeerClientProtocol, PeerLink
from kvstore.protocols.sending import _sends_directly, write_now
from kvstore.tools.ports import allocate_port


class _RecordingReactor:
    """The part of IReactorFDSet a transport uses, recording each call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def addWriter(self, selectable: object) -> None:
        self.calls.append("addWriter")

    def removeWriter(self, selectable: object) -> None:
        self.calls.append("removeWriter")

    def addReader(self, selectable: object) -> None:
        self.calls.append("addReader")

    def removeReader(self, selectable: object) -> None:
        self.calls.append("removeReader")

    @property
    def writes_registered(self) -> int:
        return self.calls.count("addWriter")


class _ScriptedSocket:
    """A socket whose C{send} raises C{error} (the others delegate)."""

    def __init__(self, real: socket.socket, error: OSError) -> None:
        self._real = real
        self._error = error
        self.sends = 0

    def send(self, data: Any) -> int:
        self.sends += 1
        raise self._error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _tcp_pair(test: SynchronousTestCase) -> tuple[socket.socket, socket.socket]:
    """A connected loopback TCP pair (ours, theirs), closed after C{test}."""
    listener = socket.socket()
    test.addCleanup(listener.close)
    listener.bind(("127.0.0.1", allocate_port()))
    listener.listen(1)
    ours = socket.create_connection(listener.getsockname())
    test.addCleanup(ours.close)
    theirs, _ = listener.accept()
    test.addCleanup(theirs.close)
    theirs.settimeout(5)
    return ours, theirs


def _unix_pair(test: SynchronousTestCase) -> tuple[socket.socket, socket.socket]:
    """A connected UNIX socketpair (ours, theirs), closed after C{test}."""
    ours, theirs = socket.socketpair()
    test.addCleanup(ours.close)
    test.addCleanup(theirs.close)
    theirs.settimeout(5)
    return ours, theirs


def _server(sock: socket.socket, protocol: Any = None) -> tuple[tcp.Server, _RecordingReactor]:
    """Twisted's transport for an accepted connection, over C{sock}, made
    as a listening port makes it, with a recording reactor."""
    reactor = _RecordingReactor()
    transport = tcp.Server(sock, protocol or Protocol(), ("127.0.0.1", 1), None, 1, reactor)  # type: ignore[arg-type]  # no listening port here; the reactor stand-in provides what a Connection uses
    if protocol is not None:
        protocol.makeConnection(transport)
    reactor.calls.clear()
    return transport, reactor


def _received(sock: socket.socket, count: int) -> bytes:
    """Exactly C{count} bytes from C{sock} (which has a timeout)."""
    chunks = []
    while count:
        chunk = sock.recv(min(count, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def _available(sock: socket.socket) -> bytes:
    """What C{sock} has to read right now, without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(1 << 20)
    except BlockingIOError:
        return b""
    finally:
        sock.settimeout(5)


def _drain(transport: tcp.Connection, theirs: socket.socket, count: int) -> bytes:
    """Play the reactor: C{doWrite} while C{transport} has bytes buffered,
    reading them at the other end; return the C{count} bytes read."""
    received = []
    while transport.dataBuffer[transport.offset :] or transport._tempDataBuffer:
        assert transport.doWrite() is None
        while chunk := _available(theirs):
            received.append(chunk)
    so_far = sum(map(len, received))
    return b"".join(received) + _received(theirs, count - so_far)


def _fill_kernel_buffer(sock: socket.socket) -> int:
    """Send to non-blocking C{sock} until the kernel takes no more; return
    how many bytes it took."""
    taken = 0
    for size in (1 << 16, 1 << 10, 1):
        while True:
            try:
                taken += sock.send(b"f" * size)
            except BlockingIOError:
                break
    return taken


class TwistedInternalsTests(SynchronousTestCase):
    """
    The fast path reads Twisted's private buffer attributes.  These tests
    fail if the installed Twisted stops keeping unsent bytes where it looks,
    which would make it send new bytes ahead of older ones.
    """

    def test_buffer_attributes_exist(self) -> None:
        """A TCP transport still has every attribute the fast path reads."""
        transport, _ = _server(_unix_pair(self)[0])
        for name in ("dataBuffer", "offset", "_tempDataBuffer", "_tempDataLen", "connected", "disconnected",
                     "disconnecting", "_writeDisconnecting", "_writeDisconnected", "_aborting", "TLS",
                     "producer", "streamingProducer", "producerPaused", "socket"):
            with self.subTest(name=name):
                self.assertTrue(hasattr(transport, name))
        self.assertTrue(_sends_directly(transport))

    def test_write_buffers_in_temp_data_buffer(self) -> None:
        """C{write} keeps its bytes in C{_tempDataBuffer} until the reactor's
        C{doWrite}, and registers the socket for writing."""
        transport, reactor = _server(_unix_pair(self)[0])
        transport.write(b"abc")
        self.assertEqual(transport._tempDataBuffer, [b"abc"])
        self.assertEqual(reactor.writes_registered, 1)
        self.assertFalse(_sends_directly(transport))

    def test_partial_do_write_keeps_the_rest_in_data_buffer(self) -> None:
        """What one C{doWrite} could not send stays in C{dataBuffer} (past
        C{offset}), and C{_tempDataBuffer} is empty: the fast path must
        still see bytes buffered."""
        ours, theirs = _unix_pair(self)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        transport, _ = _server(ours)
        data = b"x" * (1 << 20)
        transport.write(data)
        transport.doWrite()
        self.assertEqual(transport._tempDataBuffer, [])
        self.assertEqual(transport.dataBuffer, data)
        self.assertTrue(0 < transport.offset < len(data))
        self.assertFalse(_sends_directly(transport))
        self.assertEqual(_drain(transport, theirs, len(data)), data)
        self.assertTrue(_sends_directly(transport))


    def test_do_write_that_sent_nothing_keeps_it_all_in_data_buffer(self) -> None:
        """A C{doWrite} the kernel refused moves the bytes to C{dataBuffer}
        at C{offset} 0: the fast path must still see them buffered."""
        ours, theirs = _unix_pair(self)
        transport, _ = _server(ours)
        filled = _fill_kernel_buffer(ours)
        transport.write(b"older")
        transport.doWrite()
        self.assertEqual((transport.dataBuffer, transport.offset, transport._tempDataBuffer), (b"older", 0, []))
        self.assertFalse(_sends_directly(transport))
        write_now(transport, b" newer")
        self.assertEqual(_drain(transport, theirs, filled + 11)[filled:], b"older newer")


class FastPathTests(SynchronousTestCase):
    def test_empty_buffer_sends_straight_to_the_socket(self) -> None:
        """With nothing buffered the bytes are sent at once and the socket is
        never registered with the reactor for writing."""
        ours, theirs = _tcp_pair(self)
        transport, reactor = _server(ours)
        write_now(transport, b"hello")
        self.assertEqual(reactor.calls, [])
        self.assertEqual(transport._tempDataBuffer, [])
        self.assertEqual(_received(theirs, 5), b"hello")

    def test_partial_send_buffers_the_rest_in_order(self) -> None:
        """What the kernel does not take is buffered by the transport (which
        registers for writing) and arrives after the rest, in order, followed
        by what is written next."""
        ours, theirs = _unix_pair(self)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        transport, reactor = _server(ours)
        data = bytes(range(256)) * (16 << 10)  # 4 MiB
        write_now(transport, data)
        self.assertEqual(reactor.writes_registered, 1)
        buffered = sum(map(len, transport._tempDataBuffer))
        self.assertTrue(0 < buffered < len(data))
        write_now(transport, b"next")  # behind the buffered bytes
        self.assertEqual(_drain(transport, theirs, len(data) + 4), data + b"next")

    def test_full_kernel_buffer_buffers_everything(self) -> None:
        """A send the kernel refuses (EAGAIN) leaves all of it to the
        transport's buffer: nothing raised, nothing lost."""
        ours, theirs = _unix_pair(self)
        transport, reactor = _server(ours)
        filled = _fill_kernel_buffer(ours)
        write_now(transport, b"abc")
        self.assertEqual(transport._tempDataBuffer, [b"abc"])
        self.assertEqual(reactor.writes_registered, 1)
        self.assertEqual(_drain(transport, theirs, filled + 3), b"f" * filled + b"abc")

    def test_enobufs_buffers_everything(self) -> None:
        """ENOBUFS is "try later" too, as Twisted treats it."""
        ours, _ = _unix_pair(self)
        transport, reactor = _server(ours)
        transport.socket = _ScriptedSocket(ours, OSError(errno.ENOBUFS, "no buffer space"))  # type: ignore[assignment]
        write_now(transport, b"abc")
        self.assertEqual(transport._tempDataBuffer, [b"abc"])
        self.assertEqual(reactor.writes_registered, 1)

    def test_buffered_bytes_are_never_overtaken(self) -> None:
        """With bytes already buffered, new bytes go behind them (through the
        buffer), never straight to the socket."""
        ours, theirs = _tcp_pair(self)
        transport, _ = _server(ours)
        transport.write(b"older ")
        write_now(transport, b"newer")
        self.assertEqual(_drain(transport, theirs, 11), b"older newer")

    def test_send_error_is_left_for_the_reactor(self) -> None:
        """An error from send (the peer is gone) is not raised to the
        caller: the bytes are buffered and the socket registered for
        writing, so the reactor's doWrite finds the error and loses the
        connection as it always has."""
        ours, theirs = _unix_pair(self)
        transport, reactor = _server(ours)
        theirs.close()
        write_now(transport, b"abc")  # EPIPE, not raised
        self.assertEqual(reactor.writes_registered, 1)
        self.assertIsInstance(transport.doWrite(), ConnectionLost)

    def test_connection_reset_is_left_for_the_reactor(self) -> None:
        """The same for a reset connection."""
        ours, _ = _tcp_pair(self)
        transport, reactor = _server(ours)
        transport.socket = _ScriptedSocket(ours, ConnectionResetError(errno.ECONNRESET, "reset"))  # type: ignore[assignment]
        write_now(transport, b"abc")
        self.assertEqual(reactor.writes_registered, 1)
        self.assertIsInstance(transport.doWrite(), ConnectionLost)


class OldPathTests(SynchronousTestCase):
    """Transports and states the fast path leaves to C{write}."""

    def _assert_not_sent_directly(self, transport: tcp.Connection) -> None:
        scripted = _ScriptedSocket(transport.socket, AssertionError("sent straight to the socket"))  # type: ignore[arg-type]
        transport.socket = scripted  # type: ignore[assignment]
        transport.doWrite = lambda: None  # type: ignore[method-assign]  # send_now's doWrite: not this test's subject
        write_now(transport, b"abc")
        self.assertEqual(scripted.sends, 0)

    def test_closing_transports(self) -> None:
        """A closing, half-closing, half-closed or aborted transport is left
        to the reactor."""
        for attribute in ("disconnecting", "_writeDisconnecting", "_writeDisconnected", "_aborting"):
            with self.subTest(attribute=attribute):
                transport, _ = _server(_unix_pair(self)[0])
                setattr(transport, attribute, True)
                self._assert_not_sent_directly(transport)

    def test_disconnected_transport(self) -> None:
        """A transport that lost its connection writes nothing."""
        transport, _ = _server(_unix_pair(self)[0])
        transport.connected = 0
        transport.disconnected = 1
        self._assert_not_sent_directly(transport)

    def test_paused_streaming_producer(self) -> None:
        """A transport that paused its streaming producer waits for the
        reactor to drain it (and resume the producer)."""
        transport, _ = _server(_unix_pair(self)[0])
        transport.registerProducer(PeerClientProtocol(PeerLink(2, "127.0.0.1:1", b"hello")), True)
        transport.producerPaused = True
        self._assert_not_sent_directly(transport)

    def test_pull_producer(self) -> None:
        """A pull producer is asked for more as the buffer drains, which only
        the buffered path does."""

        class Pull:
            def resumeProducing(self) -> None:
                pass

            def stopProducing(self) -> None:
                pass

        transport, _ = _server(_unix_pair(self)[0])
        transport.registerProducer(Pull(), False)  # type: ignore[arg-type]
        self._assert_not_sent_directly(transport)

    def test_tls(self) -> None:
        """A connection that started TLS encrypts in C{write}: its bytes go
        there, never to the socket in clear."""
        ours, theirs = _unix_pair(self)
        written: list[bytes] = []

        class TLSLayer(Protocol):
            def write(self, data: bytes) -> None:
                written.append(data)

        transport, _ = _server(ours, None)
        transport.protocol = TLSLayer()
        transport.TLS = True
        write_now(transport, b"secret")
        self.assertEqual(written, [b"secret"])
        self.assertEqual(_available(theirs), b"")

    def test_other_write_some_data(self) -> None:
        """A TCP subclass that sends in its own way (C{writeSomeData}) is
        left to it."""

        class Own(tcp.Server):
            def writeSomeData(self, data: bytes) -> int:
                return 0

        ours, _ = _unix_pair(self)
        transport = Own(ours, Protocol(), ("127.0.0.1", 1), None, 1, _RecordingReactor())  # type: ignore[arg-type]
        self._assert_not_sent_directly(transport)

    def test_other_transports(self) -> None:
        """A transport without a socket (a test transport, a TLS wrapper) is
        written as before."""
        transport = StringTransport()
        write_now(transport, b"abc")
        self.assertEqual(transport.value(), b"abc")


class CallerTests(SynchronousTestCase):
    """The critical path's senders use the fast path."""

    def test_peer_link_sends_one_netstring_straight_to_the_socket(self) -> None:
        """A peer message leaves as one netstring, at once, without
        registering the socket for writing."""
        ours, theirs = _tcp_pair(self)
        link = PeerLink(2, "127.0.0.1:1", b"hello")
        protocol = PeerClientProtocol(link)
        transport, reactor = _server(ours, protocol)
        transport.doWrite()  # the hello went through the buffer: send it
        self.assertEqual(_received(theirs, len(b"5:hello,")), b"5:hello,")
        reactor.calls.clear()
        link.send(b"message")
        self.assertEqual(reactor.calls, [])
        self.assertEqual(_received(theirs, 10), b"7:message,")

    def test_paused_peer_link_buffers(self) -> None:
        """A paused link (its peer is not reading) only buffers."""
        ours, theirs = _tcp_pair(self)
        link = PeerLink(2, "127.0.0.1:1", b"hello")
        protocol = PeerClientProtocol(link)
        transport, _ = _server(ours, protocol)
        transport.doWrite()
        _received(theirs, len(b"5:hello,"))
        protocol.pauseProducing()
        link.send(b"message")
        self.assertEqual(transport._tempDataBuffer, [b"7:message,"])
        self.assertEqual(protocol.buffered_while_paused, len(b"message"))

    def test_client_reply_goes_straight_to_the_socket(self) -> None:
        """A client's reply is sent at once, without registering the socket
        for writing."""
        ours, theirs = _tcp_pair(self)
        transport, reactor = _server(ours, ClientProtocol(object()))  # type: ignore[arg-type]  # PING needs no service
        transport.protocol.dataReceived(b"PING\nPING\n")
        self.assertEqual(_received(theirs, 10), b"PONG\nPONG\n")
        self.assertEqual(reactor.writes_registered, 0)
