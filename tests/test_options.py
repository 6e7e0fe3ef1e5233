"""
Tests for L{kvstore.daemon.options}: command-line parsing and validation into a
L{NodeConfig}.
"""

import dataclasses
import subprocess
import sys
from pathlib import Path

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.peer import MAX_ENTRIES_BYTES
from kvstore.raft.config import RaftConfig
from kvstore.daemon.options import (
    NodeConfig,
    Options,
    PeerAddress,
    derive_cluster_id,
    parse_config,
)
from tests.support import parametrize

_ROOT = Path(__file__).resolve().parents[1]

SEED_COMMAND_LINES = [
    ["--node-id", "0", "--port", "5000", "--peers", "5001,5002"],
    ["--node-id", "1", "--port", "5001", "--peers", "5000,5002"],
    ["--node-id", "2", "--port", "5002", "--peers", "5000,5001"],
]


def _error(argv: list[str]) -> str:
    """Return the UsageError text for C{argv}, failing if it parses."""
    try:
        parse_config(argv)
    except usage.UsageError as e:
        return str(e)
    raise AssertionError(f"{argv!r} parsed; expected a UsageError")


class OptionsTests(SynchronousTestCase):
    """
    L{parse_config} and L{Options}: the seed's command lines, ids, cluster
    ids, defaults, validation errors and documentation of every option.
    """

    # -- the seed's command lines and the id convention ---------------------------

    def test_seed_command_lines_give_ids_0_1_2_and_one_membership(self) -> None:
        """
        The seed's three command lines describe one cluster: ids 0, 1, 2 on ports
        5000-5002, the same membership, and the same derived cluster id.
        """
        configs = [parse_config(argv) for argv in SEED_COMMAND_LINES]
        assert [c.node_id for c in configs] == [0, 1, 2]
        expected = tuple(PeerAddress(i, "127.0.0.1", 5000 + i) for i in range(3))
        assert {c.members for c in configs} == {expected}
        assert len({c.cluster_id for c in configs}) == 1
        for config in configs:
            assert config.me == expected[config.node_id]
            assert config.peers == tuple(m for m in expected if m.node_id != config.node_id)

    def test_implicit_ids_sort_by_host_then_port(self) -> None:
        """
        Without explicit ids, ids are positions in the membership sorted by
        (host, port), hosts compared before ports.
        """
        config = parse_config(
            ["--node-id", "1", "--host", "10.0.0.2", "--port", "9000",
             "--peers", "10.0.0.1:9999,10.0.0.3:1000"]
        )
        assert config.members == (
            PeerAddress(0, "10.0.0.1", 9999),
            PeerAddress(1, "10.0.0.2", 9000),
            PeerAddress(2, "10.0.0.3", 1000),
        )

    def test_implicit_id_mismatch_explains_the_fix(self) -> None:
        """
        A --node-id that differs from the node's sorted position is an error that
        names the expected id and suggests ID@HOST:PORT.
        """
        message = _error(["--node-id", "1", "--port", "5000", "--peers", "5001,5002"])
        assert "--node-id 0" in message
        assert "ID@HOST:PORT" in message

    def test_explicit_ids(self) -> None:
        """
        Explicit ids are used as given, in both ID@HOST:PORT and ID@PORT forms,
        whatever the address order, and peers come out sorted by id.
        """
        config = parse_config(
            ["--node-id", "7", "--port", "5000", "--peers", "9@10.0.0.5:6000,3@5001"]
        )
        assert config.peers == (
            PeerAddress(3, "127.0.0.1", 5001),
            PeerAddress(9, "10.0.0.5", 6000),
        )
        assert [m.node_id for m in config.members] == [3, 7, 9]

    def test_explicit_and_implicit_forms_of_one_cluster_share_a_cluster_id(self) -> None:
        """
        The cluster id depends only on the membership, so writing the seed's ids
        explicitly gives the same cluster id as the implicit form.
        """
        implicit = parse_config(SEED_COMMAND_LINES[0])
        explicit = parse_config(
            ["--node-id", "0", "--port", "5000", "--peers", "1@127.0.0.1:5001,2@5002"]
        )
        assert explicit.members == implicit.members
        assert explicit.cluster_id == implicit.cluster_id

    def test_no_peers_is_a_single_node_cluster_with_any_id(self) -> None:
        """
        Without peers, the node is a one-member cluster and may have any id.
        """
        config = parse_config(["--node-id", "4"])
        assert config.peers == ()
        assert config.members == (PeerAddress(4, "127.0.0.1", 5000),)

    def test_ipv6_peers_and_host(self) -> None:
        """
        IPv6 literals are written in brackets in --peers; a bare or bracketed
        IPv6 --host listens with tcp6 and is advertised in brackets.
        """
        config = parse_config(["--host", "[::1]", "--peers", "[::1]:5001"])
        assert config.host == "::1"
        assert config.address == "[::1]:5000"
        assert config.listen == "tcp6:5000:interface=\\:\\:1"
        assert config.peers == (PeerAddress(1, "::1", 5001),)
        assert config.peers[0].address == "[::1]:5001"

    # -- cluster id ----------------------------------------------------------------

    def test_cluster_id_differs_between_memberships(self) -> None:
        """
        Two clusters on one machine with different members get different
        derived cluster ids.
        """
        a = parse_config(["--port", "5000", "--peers", "5001,5002"])
        b = parse_config(["--port", "5000", "--peers", "5001,5003"])
        assert a.cluster_id != b.cluster_id

    def test_cluster_id_is_documented_hash(self) -> None:
        """
        The derived cluster id is 16 hex digits, computed from the sorted
        id@host:port list, independent of input order.
        """
        members = [PeerAddress(1, "h", 2), PeerAddress(0, "h", 1)]
        value = derive_cluster_id(members)
        assert value == derive_cluster_id(list(reversed(members)))
        assert len(value) == 16
        int(value, 16)

    def test_explicit_cluster_id_overrides(self) -> None:
        """
        --cluster-id replaces the derived value.
        """
        config = parse_config(["--cluster-id", "prod-eu.1", "--peers", "5001"])
        assert config.cluster_id == "prod-eu.1"

    @parametrize("value", ["", "has space", "a/b", "x" * 65])
    def test_bad_cluster_id(self, value: str) -> None:
        """
        A cluster id must be 1-64 safe characters.
        """
        assert "--cluster-id" in _error(["--cluster-id", value])

    # -- defaults and conversions --------------------------------------------------

    def test_defaults(self) -> None:
        """
        With no arguments, every field has its documented default, with
        durations converted to seconds.
        """
        config = parse_config([])
        assert config == NodeConfig(
            node_id=0,
            host="127.0.0.1",
            port=5000,
            listen="tcp:5000:interface=127.0.0.1",
            peers=(),
            cluster_id=derive_cluster_id([PeerAddress(0, "127.0.0.1", 5000)]),
            data_dir="kvstore-data/node-0",
            raft=RaftConfig(0, max_entries_bytes=MAX_ENTRIES_BYTES),
            commit_timeout=5.0,
            read_timeout=5.0,
            max_line_bytes=65536 + 1024 + 64,
            max_key_bytes=1024,
            max_value_bytes=65536,
            segment_bytes=64 * 1024 * 1024,
            fsync=True,
            cluster_id_derived=True,
        )
        assert config.address == "127.0.0.1:5000"

    def test_config_is_frozen(self) -> None:
        """
        NodeConfig is immutable.
        """
        config = parse_config([])
        with self.assertRaises(dataclasses.FrozenInstanceError):
            config.port = 1  # type: ignore[misc]

    def test_data_dir_default_follows_node_id(self) -> None:
        """
        The default data directory is kvstore-data/node-<id>; --data-dir replaces it.
        """
        assert parse_config(["--node-id", "2"]).data_dir == "kvstore-data/node-2"
        assert parse_config(["--data-dir", "/srv/kv"]).data_dir == "/srv/kv"

    def test_timing_options_in_seconds(self) -> None:
        """
        Millisecond options become seconds; second options stay seconds.
        """
        config = parse_config(
            ["--heartbeat-interval", "50", "--election-timeout", "200-350.5",
             "--commit-timeout", "1.5", "--read-timeout", "0.25"]
        )
        self.assertAlmostEqual(config.raft.heartbeat_interval, 0.05)
        self.assertAlmostEqual(config.raft.election_timeout_min, 0.2)
        self.assertAlmostEqual(config.raft.election_timeout_max, 0.3505)
        assert config.commit_timeout == 1.5
        assert config.read_timeout == 0.25

    def test_size_options(self) -> None:
        """
        Byte counts accept plain integers and binary suffixes; the line limit
        follows the key and value limits unless given.
        """
        config = parse_config(
            ["--max-key-bytes", "100", "--max-value-bytes", "1k", "--segment-bytes", "1MiB"]
        )
        assert config.max_key_bytes == 100
        assert config.max_value_bytes == 1024
        assert config.max_line_bytes == 100 + 1024 + 64
        assert config.segment_bytes == 1024 * 1024
        config = parse_config(["--max-line-bytes", "2G"])
        assert config.max_line_bytes == 2 * 1024**3

    def test_unsafe_no_fsync(self) -> None:
        """
        --unsafe-no-fsync turns fsync off.
        """
        assert parse_config(["--unsafe-no-fsync"]).fsync is False

    # -- --listen ------------------------------------------------------------------

    def test_listen_default_follows_host_and_port(self) -> None:
        """
        Without --listen the node listens on tcp:<port>:interface=<host>.
        """
        config = parse_config(["--host", "10.1.2.3", "--port", "7000"])
        assert config.listen == "tcp:7000:interface=10.1.2.3"

    @parametrize(
        "description",
        ["tcp:5000:interface=0.0.0.0", "systemd:domain=INET:index=0", "tcp6:5000", "unix:/tmp/kv.sock"],
    )
    def test_listen_replaces_default_but_not_advertised_address(self, description: str) -> None:
        """
        --listen replaces the listening endpoint, while --host/--port remain the
        advertised address.  A systemd endpoint is accepted without any
        inherited sockets: those are checked when the service starts.
        """
        config = parse_config(["--listen", description, "--host", "10.0.0.1"])
        assert config.listen == description
        assert config.address == "10.0.0.1:5000"

    @parametrize("description", ["", "bogus:5000", "tcp:notaport", "tcp:5000:nosuch=1"])
    def test_bad_listen(self, description: str) -> None:
        """
        An unparseable endpoint description is a usage error.
        """
        assert "--listen" in _error(["--listen", description])

    # -- validation errors -----------------------------------------------------------

    @parametrize(
        "argv, fragment",
        [
            (["--node-id", "x"], "--node-id must be an integer"),
            (["--node-id", "-1"], "--node-id must be >= 0"),
            (["--port", "0"], "between 1 and 65535"),
            (["--port", "65536"], "between 1 and 65535"),
            (["--port", "http"], "port must be a number"),
            (["--host", ""], "invalid host"),
            (["--host", "0.0.0.0"], "--listen"),
            (["--host", "::"], "wildcard"),
            (["--peers", "5001,,5002"], "empty item"),
            (["--peers", "5001,"], "empty item"),
            (["--peers", "abc"], "port must be a number"),
            (["--peers", "host:"], "port must be a number"),
            (["--peers", "::1:5001"], "brackets"),
            (["--peers", "[::1]5001"], "[IPV6]:PORT"),
            (["--peers", "x@5001"], "id must be an integer"),
            (["--peers", "0.0.0.0:5001"], "wildcard"),
            (["--peers", "1@5001,5002"], "mixes explicit ids"),
            (["--peers", "5001,1@5002"], "mixes explicit ids"),
            (["--peers", "1@5001,1@5002"], "node id 1 is used more than once"),
            (["--node-id", "1", "--peers", "1@5001"], "node id 1 is used more than once"),
            (["--peers", "5001,127.0.0.1:5001"], "127.0.0.1:5001 appears more than once"),
            (["--peers", "5000"], "127.0.0.1:5000 appears more than once"),
            (["--peers", "1@5000"], "appears more than once"),
            (["--heartbeat-interval", "0"], "--heartbeat-interval must be a positive"),
            (["--heartbeat-interval", "nan"], "--heartbeat-interval must be a positive"),
            (["--heartbeat-interval", "fast"], "--heartbeat-interval must be a number"),
            (["--election-timeout", "1500"], "MIN-MAX"),
            (["--election-timeout", "a-b"], "must be a number"),
            (["--election-timeout", "300-2000"], "more than 3 x --heartbeat-interval"),
            (["--heartbeat-interval", "400", "--election-timeout", "1200-2000"], "more than 3 x"),
            (["--election-timeout", "1000-1000"], "maximum (1000 ms) must be more than its minimum"),
            (["--election-timeout", "2000-1000"], "must be more than its minimum"),
            (["--commit-timeout", "0"], "--commit-timeout must be a positive"),
            (["--commit-timeout", "-1"], "--commit-timeout must be a positive"),
            (["--read-timeout", "inf"], "--read-timeout must be a positive"),
            (["--max-key-bytes", "0"], "--max-key-bytes must be at least 1"),
            (["--max-value-bytes", "lots"], "--max-value-bytes must be a byte count"),
            (["--max-line-bytes", "1000"], "--max-line-bytes (1000) must be at least"),
            (["--max-key-bytes", "10", "--max-value-bytes", "10", "--max-line-bytes", "20"],
             "must be at least --max-key-bytes + --max-value-bytes + 6 (26)"),
            (["--segment-bytes", "100"], "--segment-bytes must be at least 4096"),
            (["--segment-bytes", "1TB"], "--segment-bytes must be a byte count"),
            (["--data-dir", " "], "--data-dir must not be empty"),
            (["--no-such-option"], "no-such-option"),
        ],
    )
    def test_validation_errors(self, argv: list[str], fragment: str) -> None:
        """
        Every malformed or inconsistent value is a usage error whose message
        names the problem.
        """
        assert fragment in _error(argv)

    # -- help ------------------------------------------------------------------------

    def test_every_option_is_documented(self) -> None:
        """
        Every option has a help text, and --help shows all of them together with
        the peer id convention.
        """
        options = Options()
        for flag in options.optFlags:
            assert flag[2].strip(), flag
        for parameter in options.optParameters:
            assert parameter[3].strip(), parameter
        text = str(options)
        for name in [f[0] for f in options.optFlags] + [p[0] for p in options.optParameters]:
            assert f"--{name}" in text, name
        flat = " ".join(text.split())
        assert "sorted by (host, port)" in flat
        assert "twistd -n kvstore --node-id 0 --port 5000 --peers 5001,5002" in text
        assert "UNSAFE" in flat

    def test_options_module_does_not_import_reactor(self) -> None:
        """
        Parsing options never installs a reactor (twistd chooses it later).
        """
        code = (
            "import sys; from kvstore.daemon.options import parse_config; "
            "parse_config(['--listen', 'tcp:5000', '--peers', '5001']); "
            "assert 'twisted.internet.reactor' not in sys.modules, 'reactor imported'"
        )
        subprocess.run([sys.executable, "-c", code], check=True, cwd=_ROOT)

