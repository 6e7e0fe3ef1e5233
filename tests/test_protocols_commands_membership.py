# -*- test-case-name: tests.test_protocols_commands_membership -*-
"""
The membership admin commands of the client language (issue 13): their
grammar, their refusals and their encoding.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.commands import (
    AddNode,
    CommandError,
    Members,
    RemoveNode,
    Transfer,
    encode_command,
    parse_address,
    parse_command,
)
from tests.support import parametrize


class ParseMembershipCommandsTests(SynchronousTestCase):
    @parametrize(
        "line, command",
        [
            (b"MEMBERS", Members()),
            (b"members\r", Members()),
            (b"ADDNODE 3 127.0.0.1:5003", AddNode(3, "127.0.0.1:5003")),
            (b"addnode 0 [::1]:5000", AddNode(0, "[::1]:5000")),
            (b"ADDNODE 12 db-3.example.com:7000", AddNode(12, "db-3.example.com:7000")),
            (b"REMOVENODE 2", RemoveNode(2)),
            (b"TRANSFER 1", Transfer(1)),
        ],
    )
    def test_valid(self, line: bytes, command: object) -> None:
        """Each admin command parses to its dataclass, words case-insensitive."""
        self.assertEqual(parse_command(line), command)

    @parametrize(
        "line, reason",
        [
            (b"MEMBERS x", "Usage: MEMBERS"),
            (b"ADDNODE 3", "Usage: ADDNODE <id> <host>:<port>"),
            (b"ADDNODE 3 127.0.0.1:5003 extra", "Usage: ADDNODE <id> <host>:<port>"),
            (b"ADDNODE -1 127.0.0.1:5003", "Invalid node id '-1'"),
            (b"ADDNODE 03 127.0.0.1:5003", "Invalid node id '03'"),
            (b"ADDNODE 9223372036854775808 h:1", "Invalid node id '9223372036854775808'"),
            (b"ADDNODE 3 127.0.0.1", "Invalid address '127.0.0.1': expected HOST:PORT"),
            (b"ADDNODE 3 127.0.0.1:70000", "Invalid address '127.0.0.1:70000': the port must be 1 to 65535"),
            (b"ADDNODE 3 ::1:5000", "Invalid address '::1:5000': expected HOST:PORT"),
            (b"ADDNODE 3 [::1]5000", "Invalid address '[::1]5000': write IPv6 as [HOST]:PORT"),
            (b"REMOVENODE", "Usage: REMOVENODE <id>"),
            (b"REMOVENODE 1 2", "Usage: REMOVENODE <id>"),
            (b"REMOVENODE one", "Invalid node id 'one'"),
            (b"TRANSFER", "Usage: TRANSFER <id>"),
            (b"TRANSFER 1.5", "Invalid node id '1.5'"),
        ],
    )
    def test_invalid(self, line: bytes, reason: str) -> None:
        """A malformed admin request is a CommandError with the exact reply text."""
        with self.assertRaises(CommandError) as raised:
            parse_command(line)
        self.assertEqual(str(raised.exception), reason)

    @given(st.integers(0, 2**63 - 1), st.integers(1, 65535))
    def test_round_trip(self, node_id: int, port: int) -> None:
        """encode_command is the inverse of parse_command for each admin command."""
        for command in (Members(), AddNode(node_id, f"10.0.0.1:{port}"), RemoveNode(node_id), Transfer(node_id)):
            self.assertEqual(parse_command(encode_command(command).rstrip(b"\n")), command)

    def test_parse_address(self) -> None:
        """parse_address splits HOST:PORT and [IPV6]:PORT."""
        self.assertEqual(parse_address("127.0.0.1:5000"), ("127.0.0.1", 5000))
        self.assertEqual(parse_address("[::1]:5000"), ("::1", 5000))
        self.assertRaises(ValueError, parse_address, "host:")
