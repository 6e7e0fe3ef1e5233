# -*- test-case-name: tests.test_client_lines -*-
"""
L{LineConnection}: one blocking connection to one node, request lines in,
reply lines out, nothing interpreted and nothing retried.

L{kvstore.client.Client} hides which node answers: it follows the leader and
retries.  Some programs must see exactly what one node replies: the
integration and fault tests (a follower's C{Not leader}, a paused leader's
late replies), C{kvstore-cli}'s per-node C{STATUS}, diagnostics.  They use
this class, which frames replies with the library's own reader
(L{kvstore.client._protocol.ReplyReader}), so that there is one reading of
the byte stream for every client in the tree.

Errors are the socket's (L{OSError}, C{TimeoutError} when the timeout
passes) plus L{ProtocolError} for a reply that is not UTF-8 or is too long:
at this level a failure is a fact about the connection, not a judgement
about the request.
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from typing import Iterable, Sequence

from kvstore.client._protocol import ReplyReader
from kvstore.client.blocking import parse_address
from kvstore.client.errors import BadRequest

__all__ = ["LineConnection"]


class LineConnection:
    """
    A blocking connection to the node at C{address} (C{"host:port"}).

    @param timeout: seconds any single socket operation (connect, send,
        receive) may block.
    """

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        self.address = address
        self.timeout = timeout
        self._sock = socket.create_connection(parse_address(address), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = ReplyReader()
        self._ready: deque[str] = deque()
        # Replies still due for lines sent: request() and pipeline() skip
        # those of earlier requests (one whose read timed out, say), so that
        # a late reply is never returned for a later request.
        self._due = 0

    def __enter__(self) -> "LineConnection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def send_lines(self, lines: Iterable[str]) -> None:
        """
        Send request lines without reading any reply.

        @raise BadRequest: if a line holds a line feed (it would travel as
            two requests and put every later reply out of step); nothing is
            sent then.
        """
        lines = list(lines)
        if any("\n" in line for line in lines):
            raise BadRequest("a request line must not contain a line feed")
        self._due += len(lines)
        self._send(lines)

    def _send(self, lines: Sequence[str]) -> None:
        self._sock.sendall("".join(line + "\n" for line in lines).encode("utf-8"))

    def read_reply(self) -> str:
        """
        Read one reply line (without its LF).

        @raise ConnectionResetError: if the node closes the connection first.
        """
        while not self._ready:
            chunk = self._sock.recv(262144)
            if not chunk:
                raise ConnectionResetError(f"connection to {self.address} closed")
            self._ready.extend(self._reader.feed(chunk))
        self._due = max(0, self._due - 1)
        return self._ready.popleft()

    def _skip_earlier_replies(self, earlier: int) -> None:
        for _ in range(earlier):
            self.read_reply()

    def request(self, line: str) -> str:
        """Send one request and return its reply (after the replies still
        due to earlier requests, which are read and dropped)."""
        earlier = self._due
        self.send_lines([line])
        self._skip_earlier_replies(earlier)
        return self.read_reply()

    def pipeline(self, lines: Sequence[str]) -> list[str]:
        """
        Send every request, then read one reply per request.  The requests
        are written from a helper thread so that a long pipeline cannot
        deadlock with the node's flow control (it stops reading while its
        replies are not being read).
        """
        if any("\n" in line for line in lines):
            raise BadRequest("a request line must not contain a line feed")
        error: list[BaseException] = []
        earlier = self._due
        self._due += len(lines)  # here, not in the writer thread, which runs while replies are read

        def write() -> None:
            try:
                self._send(lines)
            except BaseException as e:  # re-raised below, in the caller's thread
                error.append(e)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        try:
            self._skip_earlier_replies(earlier)
            replies = [self.read_reply() for _ in lines]
        finally:
            writer.join(self.timeout)
        if error:
            raise error[0]
        return replies
