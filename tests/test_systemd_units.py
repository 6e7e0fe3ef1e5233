"""
Tests for the systemd unit and the example configuration in etc/.

``systemd-analyze verify`` checks the unit as systemd would load it (it needs
no running systemd); the other tests check that the command line the unit
builds is one twistd and kvstore accept.
"""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.options import parse_config

from tests.support import parametrize

ROOT = Path(__file__).resolve().parents[1]
ETC = ROOT / "etc"
UNIT = ETC / "kvstore@.service"
CONF = ETC / "kvstore.conf.example"
UNIT_TWISTD = "/opt/kvstore/bin/twistd"


def _twistd_path() -> str | None:
    beside_python = Path(sys.executable).parent / "twistd"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("twistd")


def _directives(text: str, key: str) -> list[str]:
    return [
        line.split("=", 1)[1]
        for line in text.splitlines()
        if line.startswith(key + "=")
    ]


def _conf_opts(text: str) -> list[list[str]]:
    """
    The KVSTORE_OPTS values in an environment file: the active one first,
    then the commented examples for the other nodes.
    """
    active = re.findall(r'^KVSTORE_OPTS="([^"]*)"', text, re.MULTILINE)
    commented = re.findall(r'^#\s+KVSTORE_OPTS="([^"]*)"', text, re.MULTILINE)
    return [shlex.split(value) for value in active + commented]


def _exec_start_argv(instance: str, opts: list[str]) -> list[str]:
    """
    The unit's ExecStart for C{instance}, with specifiers and $KVSTORE_OPTS
    expanded as systemd would.
    """
    (line,) = _directives(UNIT.read_text(encoding="utf-8"), "ExecStart")
    argv: list[str] = []
    for word in shlex.split(line.replace("%i", instance).replace("%S", "/var/lib")):
        if word == "$KVSTORE_OPTS":
            argv.extend(opts)
        else:
            argv.append(word)
    return argv


class SystemdUnitTests(SynchronousTestCase):
    """
    The unit file, its example environment file and the sysusers entry,
    checked by systemd-analyze where present.
    """

    def setUp(self) -> None:
        self.tmp_path = Path(self.mktemp())
        self.tmp_path.mkdir()

    @parametrize("name", ["kvstore@.service", "kvstore@1.service"])
    def test_systemd_analyze_verify(self, name: str) -> None:
        """
        `systemd-analyze verify` accepts the unit, as a template and as an
        instance, without warnings, once ExecStart names an existing twistd.
        """
        if shutil.which("systemd-analyze") is None:
            raise SkipTest("systemd-analyze is not installed")
        if _twistd_path() is None:
            raise SkipTest("no twistd executable found")
        twistd = _twistd_path()
        assert twistd is not None
        text = UNIT.read_text(encoding="utf-8")
        assert UNIT_TWISTD in text
        unit = self.tmp_path / name
        unit.write_text(text.replace(UNIT_TWISTD, twistd), encoding="utf-8")
        result = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(unit)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        # Unknown keys and unparseable values are only warnings for systemd.
        own = [line for line in output.splitlines() if "kvstore@" in line]
        assert not own, output

    def test_exec_start_twistd_flags(self) -> None:
        """
        The twistd options before `kvstore` keep twistd in the foreground,
        logging to stdout (the journal), with --pidfile left at its default (so
        the node writes its pid file in its data directory).
        """
        from twisted.scripts.twistd import ServerOptions

        argv = _exec_start_argv("1", [])
        twistd_args = argv[1 : argv.index("kvstore")]
        options = ServerOptions()
        # Only twistd's own flags; the kvstore part is checked separately.
        options.parseOptions(twistd_args)
        assert options["nodaemon"]
        assert not any(arg.startswith("--pidfile") for arg in twistd_args)
        assert options["logfile"] == "-"

    def test_unit_and_example_configure_a_three_node_cluster(self) -> None:
        """
        The example environment files, expanded into the unit's ExecStart for
        instances 0, 1 and 2, are valid kvstore options describing one cluster,
        with data in the unit's state directory.
        """
        text = UNIT.read_text(encoding="utf-8")
        assert _directives(text, "StateDirectory") == ["kvstore/node-%i"]
        assert _directives(text, "EnvironmentFile") == ["-/etc/kvstore/node-%i.conf"]
        all_opts = _conf_opts(CONF.read_text(encoding="utf-8"))
        assert len(all_opts) == 3
        configs = []
        for node_id, opts in enumerate(all_opts):
            argv = _exec_start_argv(str(node_id), opts)
            config = parse_config(argv[argv.index("kvstore") + 1 :])
            assert config.node_id == node_id
            assert config.data_dir == f"/var/lib/kvstore/node-{node_id}"
            configs.append(config)
        assert len({c.cluster_id for c in configs}) == 1
        assert len({c.members for c in configs}) == 1
        assert [m.node_id for m in configs[0].members] == [0, 1, 2]

    def test_sysusers_entry_matches_unit_user(self) -> None:
        """
        The sysusers entry creates the user the unit runs as.
        """
        (user,) = _directives(UNIT.read_text(encoding="utf-8"), "User")
        entries = [
            line.split()
            for line in (ETC / "kvstore.sysusers.conf").read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")
        ]
        assert ["u", user] in [entry[:2] for entry in entries]
