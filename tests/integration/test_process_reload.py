"""
SIGHUP on a real C{twistd -n kvstore --config FILE} process: the node
re-reads the file, applies the client limits (to new connections) and the
log level, names the changes that need a restart, and keeps its running
configuration when the file has become invalid.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from kvstore.testing.processes import FAST_ELECTIONS, allocate_port, wait_until

from tests.integration.custom_process import CustomNodeProcess
from tests.integration.support import ProcessTestCase

pytestmark = pytest.mark.integration


class ReloadProcessTests(ProcessTestCase):
    """A node reloaded with SIGHUP (sent by pid to the node this test started)."""

    def setUp(self) -> None:
        super().setUp()
        self.config = self.tmp_path / "kvstore.toml"
        self.log = self.tmp_path / "node.log"
        self.port = allocate_port()

    def start(self) -> CustomNodeProcess:
        node = CustomNodeProcess(
            0,
            self.port,
            self.tmp_path / "logs",
            ["--config", str(self.config), "--port", str(self.port), "--data-dir", str(self.tmp_path / "data"), *FAST_ELECTIONS],
            twistd_args=["--pidfile=", f"--logfile={self.log}"],
        )
        self.started_nodes.append(node)
        node.start()
        node.wait_ready(30)
        return node

    def write_config(self, text: str) -> None:
        """Replace the file atomically, as an operator should: a reload
        must never read it half written."""
        partial = self.config.with_suffix(".partial")
        partial.write_text(text)
        partial.replace(self.config)

    def sighup(self, node: CustomNodeProcess) -> None:
        assert node.process is not None
        node.process.send_signal(signal.SIGHUP)

    def reload(self, node: CustomNodeProcess, text: str, expect: str) -> str:
        """Write the file, send SIGHUP, and wait for the log line containing C{expect}; return that line."""
        self.write_config(text)
        before = self.log.read_text().count(expect)
        self.sighup(node)

        def logged() -> str | None:
            lines = [line for line in self.log.read_text().splitlines() if expect in line]
            return lines[-1] if len(lines) > before else None

        return wait_until(logged, 30, message=lambda: f"{expect!r} in the log\n{node.describe()}\n{self.log.read_text()[-3000:]}")

    def put(self, node: CustomNodeProcess, size: int) -> str:
        return node.request(f"PUT k{size} {'v' * size}")

    def test_sighup_reloads_the_file(self) -> None:
        """Limits apply to new connections, restart-only changes are named, a bad file is refused and the node keeps serving."""
        self.config.write_text("max-value-bytes = 1000\n")
        node = self.start()
        self.assertEqual(self.put(node, 1500), "Error: Value too long (maximum 1000 bytes)")
        with node.client() as old_connection:
            self.assertEqual(old_connection.request("PING"), "PONG")
            # heartbeat-interval would be overridden by the command line's.
            line = self.reload(node, "max-value-bytes = 2000\nmax-inflight = 8\n", "configuration reloaded from")
            self.assertIn(f"configuration reloaded from {self.config}: applied max-line-bytes 2088 -> 3088, max-value-bytes 1000 -> 2000;", line)
            self.assertIn("needs a restart to take effect: max-inflight 32 -> 8", line)
            self.assertEqual(self.put(node, 1500), "k1500 added successfully.")
            # A connection accepted before the reload keeps its limits.
            self.assertEqual(old_connection.request(f"PUT old {'v' * 1500}"), "Error: Value too long (maximum 1000 bytes)")

        line = self.reload(node, "max-value-bytes = 2000\nbogus = 1\n", "configuration reload refused")
        self.assertIn(f"{self.config}, line 2: bogus: unknown option", line)
        self.assertEqual(self.put(node, 1800), "k1800 added successfully.")
        self.assertEqual(self.put(node, 2500), "Error: Value too long (maximum 2000 bytes)")
        self.assertIn(node.stop(30), (0, -signal.SIGTERM), node.describe())

    def test_log_level(self) -> None:
        """Raised to warn, info lines stop (a reload's own summary included); lowered back, they return."""
        self.config.write_text('log-level = "info"\n')
        node = self.start()
        self.reload(node, 'log-level = "warn"\n', "log-level info -> warn")
        # At warn, this reload's info summary is dropped; the new limit
        # shows that the reload happened.
        self.write_config('log-level = "warn"\nmax-value-bytes = 1000\n')
        self.sighup(node)
        wait_until(lambda: "maximum 1000 bytes" in self.put(node, 1500), 30, message=node.describe)
        # Lowering the level logs its summary once the level is info again.
        self.reload(node, 'log-level = "info"\nmax-value-bytes = 2000\n', "log-level warn -> info")
        log = self.log.read_text()
        self.assertNotIn("max-value-bytes 65536 -> 1000", log)
        self.assertIn("max-value-bytes 1000 -> 2000", log)
        self.assertIn(node.stop(30), (0, -signal.SIGTERM), node.describe())
