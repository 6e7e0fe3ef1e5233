# -*- test-case-name: tests.test_protocols_sending -*-
"""
Sending now instead of at the reactor's next iteration.

C{transport.write} in Twisted only buffers: the bytes leave when the reactor
next polls and finds the socket writable, after everything else it has to
do in the current iteration.  On a replicated write's critical path that
happens four times (AppendEntries, acknowledgement, reply, and the
read-index round of a GET), each waiting for the rest of its reactor
iteration.  L{send_now} performs that write at once, exactly as the reactor
would (C{doWrite}), for a caller that knows nothing more will be written to
this transport in this pass, so it costs no extra system calls.
"""

from __future__ import annotations

from typing import Any


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
