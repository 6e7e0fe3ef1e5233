"""
Tests for L{kvstore.daemon.config_file}'s checks of C{[cluster.members]} and
C{[node.<id>]}: a member's address is one address (it cannot smuggle more
members into the C{--peers} list built from it), a node id is written once,
and every node's section is checked on every node, since the same file is
deployed to every machine.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.options import parse_config

MEMBERS = """\
[cluster]
id = "test-cluster"

[cluster.members]
0 = "127.0.0.1:7000"
1 = "127.0.0.1:7001"
"""


class MemberCheckTests(SynchronousTestCase):
    """A cluster file is refused, naming the file and key, unless its members and sections are sound."""

    def refused(self, text: str, *argv: str) -> str:
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "kvstore.toml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        with self.assertRaises(UsageError) as e:
            parse_config(["--config", str(path), *argv])
        message = str(e.exception)
        self.assertIn(str(path), message)
        return message

    def test_member_address_cannot_add_members(self) -> None:
        """A member address containing ',' or '@' (which would become extra --peers items) is refused."""
        for address in ("7002,3@127.0.0.1:7003", "127.0.0.1,3@10.0.0.9:7002", "a b:7002", "[::1,3@x]:7002"):
            with self.subTest(address=address):
                message = self.refused(MEMBERS + f'2 = "{address}"\n', "--node-id", "0")
                self.assertIn("[cluster.members] 2", message)

    def test_node_id_written_twice(self) -> None:
        """Two member keys or two node sections naming one id ("1" and "01") are refused, not silently merged."""
        message = self.refused(MEMBERS + '01 = "127.0.0.1:7009"\n', "--node-id", "0")
        self.assertIn("01", message)
        message = self.refused(MEMBERS + '\n[node.1]\ndata-dir = "/a"\n\n[node.01]\ndata-dir = "/b"\n', "--node-id", "0")
        self.assertIn("node.01", message)

    def test_other_nodes_sections_are_checked(self) -> None:
        """An unknown key or a wrong type in another node's section is refused on every node."""
        message = self.refused(MEMBERS + '\n[node.1]\ndata-dri = "/a"\n', "--node-id", "0")
        self.assertIn("[node.1] data-dri", message)
        message = self.refused(MEMBERS + '\n[node.1]\ncommit-timeout = "soon"\n', "--node-id", "0")
        self.assertIn("[node.1] commit-timeout", message)

    def test_sound_file_still_accepted(self) -> None:
        """Hostnames, IPv4 and bracketed IPv6 members with valid sections still load."""
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "kvstore.toml"
        path.write_text(
            MEMBERS + '2 = "[::1]:7002"\n3 = "db-3.example.com:7003"\n\n[node.1]\ndata-dir = "/a"\n', encoding="utf-8"
        )
        config = parse_config(["--config", str(path), "--node-id", "0"])
        self.assertEqual(
            [(p.node_id, p.host, p.port) for p in config.peers],
            [(1, "127.0.0.1", 7001), (2, "::1", 7002), (3, "db-3.example.com", 7003)],
        )
