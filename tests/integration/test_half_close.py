"""
Clients that shut down their sending side after the last request (as
``printf 'GET k\\n' | nc -q1 host port`` does) still get every reply, and an
unterminated last line is not run.
"""

from __future__ import annotations

import socket

import pytest

from kvstore.testing.processes import wait_until

from tests.integration.support import ProcessTestCase

pytestmark = pytest.mark.integration


def exchange_then_half_close(port: int, data: bytes) -> bytes:
    """Send C{data}, shut down the sending side, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return received
            received += chunk


class HalfCloseTests(ProcessTestCase):
    """
    Clients that half-close after their last request, against a real node.
    """

    def test_half_closed_client_gets_every_reply(self) -> None:
        """Requests followed at once by a half-close are all answered, in order,
        writes included, and then the server closes the connection."""
        node = self.make_node().start()
        node.wait_ready(15)
        wait_until(lambda: node.status()["role"] == "leader", 15, message=lambda: node.describe())
        # Once over real TCP; every interleaving of bytes, half-close and
        # commit is played deterministically in tests/test_protocols_half_close.py.
        reply = exchange_then_half_close(node.port, b"PING\nPUT k v\nGET k\nSTATUS\n")
        lines = reply.decode().splitlines()
        assert lines[:3] == ["PONG", "k added successfully.", "value of k: v"], lines
        assert lines[3].startswith("node=") and len(lines) == 4

    def test_unterminated_last_line_is_not_run(self) -> None:
        """A half-close after a partial line answers the complete requests and
        never runs the partial one."""
        node = self.make_node().start()
        node.wait_ready(15)
        wait_until(lambda: node.status()["role"] == "leader", 15, message=lambda: node.describe())
        assert exchange_then_half_close(node.port, b"PUT a 1\nPUT b 2") == b"a added successfully.\n"
        with node.client() as client:
            assert client.request("GET b") == "Error: Key b not found"
