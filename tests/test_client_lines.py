# -*- test-case-name: tests.test_client_lines -*-
"""
L{kvstore.client.lines.LineConnection}, the library's one-node line
connection that the process harness and the fault suite use: replies
exactly as the node sent them, framed by the library's reader, pipelining,
and failures reported as the socket's.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.client import BadRequest
from kvstore.client.lines import LineConnection
from tests.client_fakes import CLOSE, FakeNode, store_script, unused_address


class LineConnectionTests(SynchronousTestCase):
    """One node, lines in and lines out."""

    def connect(self, node: FakeNode, timeout: float = 5.0) -> LineConnection:
        connection = LineConnection(node.address, timeout)
        self.addCleanup(connection.close)
        return connection

    def test_replies_as_sent(self) -> None:
        """Errors such as Not leader come back as lines, not exceptions: nothing is interpreted or followed."""
        node = FakeNode(self, lambda line: "Error: Not leader. Current leader is Node 2 at 127.0.0.1:1")
        self.assertEqual(self.connect(node).request("PUT k v"), "Error: Not leader. Current leader is Node 2 at "
                                                                 "127.0.0.1:1")

    def test_pipeline(self) -> None:
        """A pipeline's requests are all sent before any reply is read, and each reply is matched in order."""
        node = FakeNode(self, store_script(), batch=3)
        replies = self.connect(node).pipeline(["PUT a 1", "GET a", "DELETE a"])
        self.assertEqual(replies, ["a added successfully.", "value of a: 1", "a deleted successfully."])

    def test_send_then_read(self) -> None:
        """Lines sent without waiting are answered in order by later reads."""
        connection = self.connect(FakeNode(self, store_script()))
        connection.send_lines(["PUT a 1", "GET a"])
        self.assertEqual([connection.read_reply(), connection.read_reply()], ["a added successfully.", "value of a: 1"])

    def test_line_feed_refused(self) -> None:
        """A line holding a line feed is refused before anything is sent (it would be two requests)."""
        node = FakeNode(self, store_script())
        connection = self.connect(node)
        self.assertRaises(BadRequest, connection.send_lines, ["PUT a 1\nDELETE b"])
        self.assertRaises(BadRequest, connection.pipeline, ["GET a", "PUT a 1\nDELETE b"])
        self.assertEqual(connection.request("GET a"), "Error: Key a not found")
        self.assertEqual(node.lines(), ["GET a"])

    def test_failures_are_socket_errors(self) -> None:
        """A refused connection and a node that hangs up are OSErrors (what the harness's waits retry on)."""
        self.assertRaises(OSError, LineConnection, unused_address(), 2)
        connection = self.connect(FakeNode(self, lambda line: CLOSE))
        self.assertRaises(ConnectionResetError, connection.request, "GET a")
