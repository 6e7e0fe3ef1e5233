# -*- test-case-name: tests.test_join_reply_cap -*-
"""
C{--join}'s blocking connection (L{kvstore.daemon.join._Connection}) reads
a reply line of at most L{MAX_REPLY_BYTES}: a peer that streams bytes
without a newline fails the attempt instead of filling the joining
process's memory.
"""

from __future__ import annotations

import socket
import threading

from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon import join
from kvstore.daemon.join import MAX_REPLY_BYTES, _Connection
from kvstore.tools.ports import allocate_port


class _OneShotServer:
    """A listening socket on 127.0.0.1 whose one connection gets C{payload}
    after the request line, from a thread (the connection under test
    blocks)."""

    def __init__(self, payload: bytes) -> None:
        # Outside the ephemeral range, like every server a test starts.
        self.port = allocate_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.payload = payload
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        peer, _ = self.listener.accept()
        with peer:
            peer.recv(1024)
            try:
                peer.sendall(self.payload)
                peer.shutdown(socket.SHUT_WR)
                peer.recv(1)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        self.thread.join(10)


class ReplyCapTests(SynchronousTestCase):
    def _ask(self, payload: bytes) -> str:
        server = _OneShotServer(payload)
        self.addCleanup(server.close)
        connection = _Connection("127.0.0.1", server.port, 10.0)
        self.addCleanup(connection.close)
        return connection.ask("MEMBERS")

    def test_endless_line_refused(self) -> None:
        """A reply with no newline within the cap raises ConnectionError (an OSError, so join_cluster tries the next address)."""
        self.patch(join, "MAX_REPLY_BYTES", 64 * 1024)
        with self.assertRaises(ConnectionError) as caught:
            self._ask(b"x" * (256 * 1024))
        self.assertIn("longer than", str(caught.exception))
        self.assertIsInstance(caught.exception, OSError)

    def test_reply_within_cap_read(self) -> None:
        """A reply line under the cap is returned whole."""
        self.assertEqual(self._ask(b"0@127.0.0.1:5000/voter\n"), "0@127.0.0.1:5000/voter")

    def test_cap_is_generous(self) -> None:
        """The cap leaves room for a MEMBERS reply of thousands of members."""
        self.assertGreaterEqual(MAX_REPLY_BYTES, 1000 * len("4294967295@[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535/learner "))
