"""
The C{--forward-writes} option (issue 14): off by default, on from the
command line or from C{forward-writes = true} in a configuration file, for
the whole cluster or one node.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.options import parse_config


class ForwardWritesOptionTests(SynchronousTestCase):
    """How a node learns whether it forwards writes."""

    def write(self, text: str) -> str:
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "kvstore.toml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return str(path)

    def test_off_by_default(self) -> None:
        """A node forwards nothing unless asked: the seed's Not leader reply stays the default."""
        self.assertFalse(parse_config([]).forward_writes)

    def test_command_line(self) -> None:
        """--forward-writes turns forwarding on."""
        self.assertTrue(parse_config(["--forward-writes"]).forward_writes)

    def test_configuration_file_cluster_and_node(self) -> None:
        """forward-writes = true in [cluster] turns it on for every node, and a [node.N] table may turn it off for one."""
        path = self.write(
            """\
            [cluster]
            forward-writes = true

            [cluster.members]
            0 = "127.0.0.1:7000"
            1 = "127.0.0.1:7001"

            [node.1]
            forward-writes = false
            """
        )
        self.assertTrue(parse_config(["--config", path, "--node-id", "0"]).forward_writes)
        self.assertFalse(parse_config(["--config", path, "--node-id", "1"]).forward_writes)

    def test_configuration_file_wants_a_boolean(self) -> None:
        """A value that is not true or false is refused, naming the key."""
        path = self.write('forward-writes = "yes"\n')
        with self.assertRaises(UsageError) as e:
            parse_config(["--config", path])
        self.assertIn("forward-writes: expected true or false, not a string", str(e.exception))
