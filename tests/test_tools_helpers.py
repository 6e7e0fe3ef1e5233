# -*- test-case-name: tests.test_tools_helpers -*-
"""
The helpers that every program running local nodes shares: the port finder,
the /proc readers and the client-reply parsers.
"""

from __future__ import annotations

import os
import socket

from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.client import format_error, format_status
from kvstore.errors import NotLeader
from kvstore.protocols.replies import parse_leader_address, parse_status
from kvstore.tools.ports import allocate_port_range, port_is_free
from kvstore.tools.procinfo import fd_count, rss_kib


class PortTests(SynchronousTestCase):
    """L{allocate_port_range} hands out free ports, never the same twice."""

    def test_ports_are_free_and_in_range(self) -> None:
        """Every port of the range, and each C{also} offset, is free and within bounds."""
        base = allocate_port_range(3, low=20000, high=29999, also=(10,))
        self.assertTrue(20000 <= base and base + 10 <= 29999)
        for port in (base, base + 1, base + 2, base + 10):
            self.assertTrue(port_is_free(port))

    def test_never_twice(self) -> None:
        """Two allocations in one process never overlap."""
        first = allocate_port_range(5)
        second = allocate_port_range(5)
        self.assertFalse(set(range(first, first + 5)) & set(range(second, second + 5)))

    def test_a_bound_port_is_not_free(self) -> None:
        """A port something listens on is reported busy."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.assertFalse(port_is_free(s.getsockname()[1]))


class ProcInfoTests(SynchronousTestCase):
    """The /proc readers report this very process."""

    def test_own_rss_and_fds(self) -> None:
        """This process has a positive resident set and some open descriptors."""
        if not os.path.exists(f"/proc/{os.getpid()}/status"):
            raise self.skipTest("no /proc")
        self.assertGreater(rss_kib(os.getpid()), 0)
        self.assertGreater(fd_count(os.getpid()), 0)


class ReplyParserTests(SynchronousTestCase):
    """The parsers read back exactly what the client protocol writes."""

    def test_status_round_trip(self) -> None:
        """format_status then parse_status gives the rendered values back."""
        line = format_status({"node": 0, "role": "leader", "leader": None, "peers": [1, 2]})
        self.assertEqual(parse_status(line), {"node": "0", "role": "leader", "leader": "none", "peers": "1,2"})

    def test_status_error(self) -> None:
        """An error line is not a status."""
        self.assertRaises(ValueError, parse_status, "Error: Unavailable: x")

    def test_leader_address(self) -> None:
        """The redirect address of a Not leader error is read back, IPv6 included."""
        self.assertEqual(parse_leader_address(format_error(NotLeader(1, "127.0.0.1:5001"))), ("127.0.0.1", 5001))
        self.assertEqual(parse_leader_address(format_error(NotLeader(1, "[::1]:5001"))), ("[::1]", 5001))
        self.assertIsNone(parse_leader_address(format_error(NotLeader(None, None))))
