"""
Tests for L{kvstore.daemon.config_file} and C{--config FILE}: options from a TOML
file, one file for a whole cluster, the command line overriding it, and
errors naming the file, line and key.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.config_file import ConfigFileError, as_arguments, load
from kvstore.daemon.options import Options, parse_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "etc" / "kvstore.toml.example"

CLUSTER = """\
[cluster]
id = "test-cluster"
heartbeat-interval = 50
election-timeout = [300, 600]

[cluster.members]
0 = "127.0.0.1:7000"
1 = "127.0.0.1:7001"
2 = "[::1]:7002"

[node.1]
data-dir = "/data/one"
heartbeat-interval = 60
"""


def option_names() -> tuple[list[str], list[str]]:
    """The parameters and flags of the node's Options, as the loader is given them."""
    long = Options().longOpt
    parameters = [o[:-1] for o in long if o.endswith("=") and o != "config="]
    flags = [o for o in long if not o.endswith("=") and o not in ("help", "version")]
    return parameters, flags


class ConfigFileCase(SynchronousTestCase):
    def write(self, text: str, name: str = "kvstore.toml") -> str:
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return str(path)

    def refused(self, text: str, *argv: str) -> str:
        path = self.write(text)
        with self.assertRaises(UsageError) as e:
            parse_config(["--config", path, *argv])
        message = str(e.exception)
        self.assertIn(path, message)
        return message


class LoadingTests(ConfigFileCase):
    """What a file sets, and what overrides what."""

    def test_example_describes_one_three_node_cluster(self) -> None:
        """etc/kvstore.toml.example gives nodes 0, 1 and 2 one cluster id and one membership."""
        configs = [parse_config(["--config", str(EXAMPLE), "--node-id", str(i)]) for i in range(3)]
        self.assertEqual([c.node_id for c in configs], [0, 1, 2])
        self.assertEqual({c.cluster_id for c in configs}, {"example-1"})
        self.assertEqual(len({c.members for c in configs}), 1)
        self.assertEqual([m.address for m in configs[0].members], ["10.0.0.1:5000", "10.0.0.2:5000", "10.0.0.3:5000"])
        self.assertEqual([c.data_dir for c in configs], [f"/var/lib/kvstore/node-{i}" for i in range(3)])
        self.assertEqual(configs[2].address, "10.0.0.3:5000")

    def test_cluster_file_picks_the_node(self) -> None:
        """--node-id picks the members' address, the other members as peers, and the node's own section."""
        path = self.write(CLUSTER)
        one = parse_config(["--config", path, "--node-id", "1"])
        self.assertEqual((one.host, one.port), ("127.0.0.1", 7001))
        self.assertEqual([str(p) for p in one.peers], ["0@127.0.0.1:7000", "2@[::1]:7002"])
        self.assertEqual((one.data_dir, one.raft.heartbeat_interval, one.raft.election_timeout_min), ("/data/one", 0.06, 0.3))
        self.assertEqual(one.cluster_id, "test-cluster")
        two = parse_config(["--config", path, "--node-id", "2"])
        self.assertEqual((two.host, two.port, two.raft.heartbeat_interval), ("::1", 7002, 0.05))

    def test_command_line_overrides_the_file(self) -> None:
        """An option on the command line wins over the file's, before or after --config."""
        path = self.write(CLUSTER)
        for argv in (
            ["--config", path, "--node-id", "1", "--data-dir", "/cli", "--heartbeat-interval", "70"],
            ["--data-dir", "/cli", "--heartbeat-interval", "70", "--node-id", "1", "--config", path],
        ):
            with self.subTest(argv=argv):
                config = parse_config(argv)
                self.assertEqual((config.data_dir, config.raft.heartbeat_interval), ("/cli", 0.07))

    def test_every_option_can_be_set(self) -> None:
        """Every option of the node's Options is accepted as a key and becomes that option."""
        parameters, flags = option_names()
        self.assertIn("log-format", parameters)
        lines = [f"{name} = true" for name in flags]
        for name in parameters:
            # A string where the option takes one, else a number.
            try:
                load(f'{name} = "1"', "f.toml", parameters=parameters, flags=flags, node_id=None)
            except ConfigFileError as e:
                self.assertIn("expected", str(e))
                lines.append(f"{name} = 1")
            else:
                lines.append(f'{name} = "1"')
        loaded = load("\n".join(lines), "f.toml", parameters=parameters, flags=flags, node_id=None)
        arguments = as_arguments(loaded)
        for name in parameters:
            self.assertTrue(any(a.startswith(f"--{name}=") for a in arguments), name)
        for name in flags:
            self.assertIn(f"--{name}", arguments)

    def test_file_values_equal_command_line_values(self) -> None:
        """A per-machine file with every option gives the same configuration as the same command line."""
        path = self.write(
            """\
            node-id = 1
            host = "127.0.0.2"
            port = 6001
            peers = ["0@127.0.0.2:6000", "2@127.0.0.2:6002"]
            listen = "tcp:6001:interface=127.0.0.2"
            cluster-id = "c1"
            data-dir = "d"
            heartbeat-interval = 20.5
            election-timeout = "100-300"
            commit-timeout = 2
            read-timeout = 3.5
            max-key-bytes = "2KiB"
            max-value-bytes = 1000
            max-line-bytes = 4000
            segment-bytes = "1MiB"
            unsafe-no-fsync = true
            log-format = "json"
            """
        )
        from_file = Options()
        from_file.parseOptions(["--config", path])
        from_cli = Options()
        from_cli.parseOptions(
            "--node-id 1 --host 127.0.0.2 --port 6001 --peers 0@127.0.0.2:6000,2@127.0.0.2:6002 "
            "--listen tcp:6001:interface=127.0.0.2 --cluster-id c1 --data-dir d --heartbeat-interval 20.5 "
            "--election-timeout 100-300 --commit-timeout 2 --read-timeout 3.5 --max-key-bytes 2KiB "
            "--max-value-bytes 1000 --max-line-bytes 4000 --segment-bytes 1MiB --unsafe-no-fsync "
            "--log-format json".split()
        )
        self.assertEqual(from_file.config, from_cli.config)
        self.assertEqual(from_file.log_format, "json")


class RefusalTests(ConfigFileCase):
    """Unknown keys, wrong types and inconsistent members are refused, naming file, line and key."""

    def test_unknown_key(self) -> None:
        """An unknown key is refused with its line, its section and a suggestion."""
        message = self.refused(CLUSTER + 'data_dir = "/x"\n', "--node-id", "1")
        self.assertIn(", line 14: [node.1] data_dir: unknown option (did you mean data-dir?)", message)

    def test_unknown_table(self) -> None:
        """A misspelt table is an unknown key."""
        message = self.refused('[nodes.1]\nport = 1\n')
        self.assertIn("line 1: nodes: unknown option (did you mean node?)", message)

    def test_wrong_types(self) -> None:
        """A value of the wrong TOML type is refused, naming the expected type."""
        cases = [
            ('port = "5000"\n', "line 1: port: expected an integer, not a string"),
            ("heartbeat-interval = true\n", "line 1: heartbeat-interval: expected a number, not a boolean"),
            ('unsafe-no-fsync = "yes"\n', "line 1: unsafe-no-fsync: expected true or false, not a string"),
            ("[cluster]\nlisten = 5\n", "line 2: [cluster] listen: expected a string, not an integer"),
            ("election-timeout = [1, 2, 3]\n", "line 1: election-timeout: expected [MIN, MAX]"),
            ("node = 3\n", "line 1: node: expected a table"),
        ]
        for text, expected in cases:
            with self.subTest(text=text):
                self.assertIn(expected, self.refused(text))

    def test_invalid_toml(self) -> None:
        """A file that is not TOML is refused with the parser's line."""
        self.assertIn("not valid TOML", self.refused("port = = 1\n"))
        self.assertIn("line 1", self.refused("port = = 1\n"))

    def test_inconsistent_members(self) -> None:
        """Duplicate addresses, sections of non-members, addresses set twice and unknown nodes are refused."""
        cases = [
            (CLUSTER.replace('2 = "[::1]:7002"', '2 = "127.0.0.1:7000"'), ("--node-id", "1"), "line 9: [cluster.members] 2: address 127.0.0.1:7000 is also member 0's"),
            (CLUSTER + "[node.5]\nport = 1\n", ("--node-id", "1"), "line 14: [node.5]: node 5 is not in [cluster.members] (0, 1, 2)"),
            (CLUSTER + "port = 7005\n", ("--node-id", "1"), "line 14: [node.1] port: the members' addresses come from [cluster.members]"),
            (CLUSTER.replace("[cluster]\n", '[cluster]\npeers = "1@x:1"\n'), ("--node-id", "1"), "[cluster] peers: "),
            (CLUSTER, ("--node-id", "4"), "--node-id 4 is not in [cluster.members] (0, 1, 2)"),
            (CLUSTER, (), "describes a cluster of members 0, 1, 2: choose this node with --node-id"),
            (CLUSTER.replace('0 = "127.0.0.1:7000"', '0 = "0.0.0.0:7000"'), ("--node-id", "1"), "[cluster.members] 0: '0.0.0.0' is a wildcard"),
            (CLUSTER.replace('0 = "127.0.0.1:7000"', 'zero = "127.0.0.1:7000"'), ("--node-id", "1"), "[cluster.members] zero: member keys are node ids"),
            (CLUSTER.replace('0 = "127.0.0.1:7000"', '0 = "127.0.0.1"'), ("--node-id", "1"), "[cluster.members] 0: expected \"HOST:PORT\""),
        ]
        for text, argv, expected in cases:
            with self.subTest(expected=expected):
                self.assertIn(expected, self.refused(text, *argv))

    def test_node_sections(self) -> None:
        """A node section may not name its id again, sections need --node-id, and their names are ids."""
        self.assertIn("line 14: [node.1] node-id: the section's name is the node id", self.refused(CLUSTER + "node-id = 1\n", "--node-id", "1"))
        self.assertIn("has [node.<id>] sections: choose this node with --node-id", self.refused("[node.0]\nport = 5000\n"))
        self.assertIn("line 1: [node.a]: node sections are named by node id", self.refused("[node.a]\nport = 5000\n"))
        config = parse_config(["--config", self.write("node-id = 2\n[node.2]\nport = 5002\n[node.1]\nport = 5001\n")])
        self.assertEqual((config.node_id, config.port), (2, 5002))

    def test_set_twice(self) -> None:
        """A key at the top level and in [cluster] is refused: set it once."""
        message = self.refused("heartbeat-interval = 50\n[cluster]\nheartbeat-interval = 60\n")
        self.assertIn("line 1: heartbeat-interval: also set in ", message)
        self.assertIn(", line 3: [cluster] heartbeat-interval; set it once", message)
        message = self.refused('cluster-id = "a"\n[cluster]\nid = "b"\n')
        self.assertIn("line 3: [cluster] id; set it once", message)
        self.assertIn("[cluster] node-id: --node-id picks one node", self.refused("[cluster]\nnode-id = 1\n"))
        self.assertIn("[cluster] id: expected a string", self.refused("[cluster]\nid = 1\n"))

    def test_invalid_value_names_where_the_file_sets_it(self) -> None:
        """A value the option parser refuses is traced back to the file's line and key."""
        message = self.refused("[cluster]\nheartbeat-interval = -5\n")
        self.assertIn("--heartbeat-interval must be a positive finite number", message)
        self.assertIn("--heartbeat-interval comes from", message)
        self.assertIn("line 2: [cluster] heartbeat-interval", message)

    def test_missing_file(self) -> None:
        """A file that cannot be read is refused with the reason."""
        with self.assertRaises(ConfigFileError) as e:
            parse_config(["--config", "/nonexistent/kvstore.toml"])
        self.assertIn("--config /nonexistent/kvstore.toml: No such file or directory", str(e.exception))
