# -*- test-case-name: tests.test_config_file_join -*-
"""
C{join} in a TOML configuration file (issue 13): the same as C{--join}.
With C{[cluster.members]} it goes in the joining node's C{[node.<id>]}
section (or C{--join} on the command line); the joining node takes its
address from its members entry if it has one, otherwise from its section or
the command line, never C{--peers}; the bootstrap members are unaffected;
C{join} shared by every node of a members file is refused, naming the file
and key.
"""

from __future__ import annotations

from pathlib import Path

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.options import NodeConfig, parse_config

MEMBERS = """\
[cluster]
id = "test-cluster"

[cluster.members]
0 = "127.0.0.1:7000"
1 = "127.0.0.1:7001"
2 = "127.0.0.1:7002"
"""

JOINER = """
[node.3]
host = "127.0.0.1"
port = 7003
join = ["127.0.0.1:7000", "127.0.0.1:7001"]
"""

THROUGH = (("127.0.0.1", 7000), ("127.0.0.1", 7001))


class ConfigFileJoinTests(SynchronousTestCase):
    """join in the file behaves as --join on the command line."""

    def write(self, text: str) -> str:
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "kvstore.toml"
        path.write_text(text, encoding="utf-8")
        return str(path)

    def parse(self, text: str, *argv: str) -> NodeConfig:
        return parse_config(["--config", self.write(text), *argv])

    def refused(self, text: str, *argv: str) -> str:
        path = self.write(text)
        with self.assertRaises(UsageError) as caught:
            parse_config(["--config", path, *argv])
        message = str(caught.exception)
        self.assertIn(path, message)
        return message

    def test_a_joining_nodes_section_is_the_join_command_line(self) -> None:
        """A node outside [cluster.members] with join, host and port in its section parses as --join does:
        the members to ask, its own address, no peers, the file's cluster id."""
        config = self.parse(MEMBERS + JOINER, "--node-id", "3")
        self.assertEqual(config.join, THROUGH)
        self.assertEqual((config.node_id, config.host, config.port, config.peers), (3, "127.0.0.1", 7003, ()))
        self.assertEqual((config.cluster_id, config.cluster_id_derived), ("test-cluster", False))
        command_line = parse_config([
            "--node-id", "3", "--host", "127.0.0.1", "--port", "7003", "--cluster-id", "test-cluster",
            "--join", "127.0.0.1:7000,127.0.0.1:7001",
        ])
        for field in ("node_id", "host", "port", "peers", "join", "cluster_id", "cluster_id_derived"):
            with self.subTest(field=field):
                self.assertEqual(getattr(config, field), getattr(command_line, field))

    def test_the_bootstrap_members_ignore_the_joining_nodes_section(self) -> None:
        """The same file on a bootstrap member: its peers are the other members, and it does not join."""
        config = self.parse(MEMBERS + JOINER, "--node-id", "0")
        self.assertEqual(config.join, ())
        self.assertEqual([p.node_id for p in config.peers], [1, 2])

    def test_a_joining_member_takes_its_address_from_the_members_but_no_peers(self) -> None:
        """A node listed in [cluster.members] whose section has join gets its host and port from there, no peers."""
        text = MEMBERS + '3 = "127.0.0.1:7003"\n\n[node.3]\njoin = "127.0.0.1:7000"\n'
        config = self.parse(text, "--node-id", "3")
        self.assertEqual((config.host, config.port, config.peers, config.join), ("127.0.0.1", 7003, (), THROUGH[:1]))

    def test_join_on_the_command_line_with_a_members_file(self) -> None:
        """--join on the command line with a members file: a member takes its address from it and no peers;
        a node not in it gives its address on the command line."""
        member = self.parse(MEMBERS, "--node-id", "2", "--join", "127.0.0.1:7000")
        self.assertEqual((member.host, member.port, member.peers, member.join), ("127.0.0.1", 7002, (), THROUGH[:1]))
        new = self.parse(MEMBERS, "--node-id", "5", "--host", "127.0.0.1", "--port", "7005", "--join", "127.0.0.1:7001")
        self.assertEqual((new.node_id, new.port, new.peers, new.join), (5, 7005, (), THROUGH[1:]))

    def test_join_in_a_per_machine_file(self) -> None:
        """In a file without [cluster.members], join at the top level is --join for the node it describes."""
        config = self.parse('node-id = 4\nport = 7004\njoin = ["127.0.0.1:7000", "127.0.0.1:7001"]\n')
        self.assertEqual((config.node_id, config.port, config.peers, config.join), (4, 7004, (), THROUGH))

    def test_join_shared_by_every_member_is_refused(self) -> None:
        """join at the top level or in [cluster] of a members file would make every member join: refused."""
        for text in ('join = "127.0.0.1:7000"\n' + MEMBERS, MEMBERS.replace("[cluster]\n", '[cluster]\njoin = "127.0.0.1:7000"\n')):
            with self.subTest(text=text):
                message = self.refused(text, "--node-id", "0")
                self.assertIn("join: every member would join; set join in the joining node's [node.<id>] section", message)

    def test_bad_join_values_are_refused(self) -> None:
        """An empty array, a number, or a malformed address are refused naming the key."""
        cases = {
            "join = []": "[node.3] join: expected at least one \"HOST:PORT\"",
            "join = 7000": "[node.3] join: expected a string, not an integer",
            'join = ["nohost"]': "--join",
        }
        for line, expected in cases.items():
            with self.subTest(line=line):
                text = MEMBERS + '\n[node.3]\nhost = "127.0.0.1"\nport = 7003\n' + line + "\n"
                self.assertIn(expected, self.refused(text, "--node-id", "3"))

    def test_a_node_outside_the_members_without_join_is_still_refused(self) -> None:
        """Only a joining node may be missing from [cluster.members]."""
        message = self.refused(MEMBERS, "--node-id", "3")
        self.assertIn("--node-id 3 is not in [cluster.members]", message)
        message = self.refused(MEMBERS + '\n[node.3]\nport = 7003\n', "--node-id", "3")
        self.assertIn("node 3 is not in [cluster.members]", message)

    def test_a_joining_nodes_section_may_not_set_peers(self) -> None:
        """A joining node learns its peers from the cluster: peers in its section is refused."""
        message = self.refused(MEMBERS + JOINER + 'peers = "0@127.0.0.1:7000"\n', "--node-id", "3")
        self.assertIn("[node.3] peers: a joining node learns its peers from the cluster", message)
