# -*- test-case-name: tests.test_protocols_direct_send,tests.test_protocols_sending -*-
"""
Sending now instead of at the reactor's next iteration.

C{transport.write} in Twisted only buffers: the bytes leave when the reactor
next polls and finds the socket writable, after everything else it has to
do in the current iteration.  On a replicated write's critical path that
happens four times (AppendEntries, acknowledgement, reply, and the
read-index round of a GET), each waiting for the rest of its reactor
iteration.  L{write_now} sends a message at once, for a caller that knows
nothing more will be written to this transport in this pass.

Its fast path writes straight to the socket when the transport has nothing
buffered.  Going through C{transport.write} and C{doWrite} instead costs,
on an idle connection, an C{epoll_ctl} to register the socket for writing
(C{startWriting}) and another to unregister it once the buffer drained
(C{stopWriting}), plus Twisted's buffer bookkeeping: two system calls and
some Python for every message, about as much again as the C{send} itself.
What the kernel does not take, and every message while older bytes are
still buffered, goes through Twisted's buffer as before, so bytes always
leave in the order they were written.

The fast path relies on the internals of L{twisted.internet.abstract.FileDescriptor}
(C{dataBuffer}, C{offset}, C{_tempDataBuffer}, C{_writeDisconnected}, ...)
as of Twisted 26: tests.test_protocols_direct_send checks the installed
version still keeps its buffers there, and fails if it stops doing so.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp

# tcp.Connection.writeSomeData: a class whose writeSomeData differs (a UNIX
# socket passing file descriptors, say) sends in its own way: use its path.
_TCP_WRITE_SOME_DATA = tcp.Connection.writeSomeData


def write_now(transport: Any, data: bytes) -> None:
    """
    Write C{data} to C{transport} and send it, and anything buffered before
    it, at once.

    On a plain TCP connection with nothing buffered this is one C{send}
    system call; what the kernel does not take is buffered by the transport
    (which then watches the socket, as after any C{write}).  Any other
    transport, or one with bytes already buffered, gets C{write} and then
    L{send_now}.  An error from C{send} other than a full buffer is not
    raised: the data is buffered, and the reactor, watching the socket for
    writing, finds the same error and loses the connection as it always
    does.
    """
    if not _sends_directly(transport):
        transport.write(data)
        send_now(transport)
        return
    try:
        sent = transport.socket.send(data)
    except OSError:
        # EAGAIN or ENOBUFS (the kernel's buffer is full: Twisted's takes it
        # all), or an error (reset, broken pipe) that the reactor, now
        # watching the socket for writing, finds and reports when it sends.
        transport.write(data)
        return
    if sent < len(data):
        transport.write(data[sent:])


def _sends_directly(transport: Any) -> bool:
    """
    Whether C{transport} is a plain, open TCP connection with nothing
    buffered and no reason to have its writes go through its buffer, so
    that bytes sent to its socket now leave right after everything written
    before them.
    """
    if not isinstance(transport, tcp.Connection) or type(transport).writeSomeData is not _TCP_WRITE_SOME_DATA:
        return False
    try:
        return bool(
            not transport.TLS  # a startTLS'd connection encrypts in write()
            and transport.connected
            and not transport.disconnected
            # Closing: the reactor must see the buffer drain to finish the close.
            and not transport.disconnecting
            and not transport._writeDisconnecting
            and not transport._writeDisconnected
            and not transport._aborting
            # Nothing buffered, so nothing older can be overtaken.
            and not transport.dataBuffer
            and not transport.offset
            and not transport._tempDataBuffer
            # A pull producer is asked for more when the buffer drains; a
            # paused streaming producer is resumed when it does: both happen
            # only in doWrite.
            and (transport.producer is None or (transport.streamingProducer and not transport.producerPaused))
        )
    except AttributeError:
        # A Twisted whose FileDescriptor keeps its state elsewhere: the
        # buffered path is always right, if slower.
        return False


def send_now(transport: Any) -> None:
    """
    Write C{transport}'s buffered bytes now, if it is a plain file-descriptor
    transport (TCP) that is neither closing nor half-closing.

    Whatever the kernel does not take stays buffered and the reactor, still
    watching the socket (C{write} registered it), sends it later; an error
    is left for the reactor to report the same way, for the same reason:
    the socket stays registered for writing until C{doWrite} succeeds.
    """
    do_write = getattr(transport, "doWrite", None)
    if do_write is None or not getattr(transport, "connected", False):
        return
    if getattr(transport, "disconnecting", True) or getattr(transport, "_writeDisconnecting", False):
        # doWrite would finish the close, whose result only the reactor
        # knows how to act on.
        return
    if getattr(transport, "producerPaused", False):
        # Its buffer was full and it paused its producer (a client
        # connection): draining it here would resume that producer, and so
        # read and run new requests, inside whatever callback is sending.
        # The reactor drains it and resumes the producer from the top.
        return
    do_write()
