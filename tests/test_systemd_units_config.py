"""
Tests that etc/kvstore@.service runs nodes from the cluster's TOML file by
default, and that its readiness settings match what the node does.
"""

from __future__ import annotations

import shlex

from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.options import parse_config

from tests.test_systemd_units import ETC, UNIT, _directives, _exec_start_argv

UNIT_TOML = "/etc/kvstore/kvstore.toml"


def _default_opts() -> list[str]:
    """KVSTORE_OPTS as the unit's Environment= sets it (no environment file)."""
    (assignment,) = [
        value
        for line in _directives(UNIT.read_text(encoding="utf-8"), "Environment")
        for value in shlex.split(line)
        if value.startswith("KVSTORE_OPTS=")
    ]
    return shlex.split(assignment.split("=", 1)[1])


class UnitConfigFileTests(SynchronousTestCase):
    """The unit with the example TOML file, and its notify settings."""

    def test_unit_runs_the_cluster_file_by_default(self) -> None:
        """Without an environment file, instances 0, 1 and 2 read the cluster file and form one cluster, with the unit's data directories."""
        opts = _default_opts()
        self.assertEqual(opts, ["--config", UNIT_TOML])
        opts[1] = str(ETC / "kvstore.toml.example")
        configs = []
        for node_id in range(3):
            argv = _exec_start_argv(str(node_id), opts)
            config = parse_config(argv[argv.index("kvstore") + 1 :])
            self.assertEqual(config.node_id, node_id)
            # The unit's --data-dir (its StateDirectory) overrides the file's.
            self.assertEqual(config.data_dir, f"/var/lib/kvstore/node-{node_id}")
            configs.append(config)
        self.assertEqual({c.cluster_id for c in configs}, {"example-1"})
        self.assertEqual(len({c.members for c in configs}), 1)

    def test_environment_file_is_optional_and_overrides(self) -> None:
        """The per-node environment file is optional ('-'), so its KVSTORE_OPTS, when present, replaces the default."""
        text = UNIT.read_text(encoding="utf-8")
        self.assertEqual(_directives(text, "EnvironmentFile"), ["-/etc/kvstore/node-%i.conf"])

    def test_notify_settings(self) -> None:
        """The unit waits for READY=1 from the main process only, with a watchdog."""
        text = UNIT.read_text(encoding="utf-8")
        self.assertEqual(_directives(text, "Type"), ["notify"])
        self.assertEqual(_directives(text, "NotifyAccess"), ["main"])
        self.assertEqual(len(_directives(text, "WatchdogSec")), 1)
        # Only a foreground twistd is the main process that notifies.
        (exec_start,) = _directives(text, "ExecStart")
        self.assertIn("--nodaemon", exec_start.split())
