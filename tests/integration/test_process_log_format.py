"""
A real C{twistd -n kvstore --log-format json} process: every line of its
log is a JSON object, both on standard output and in a C{--logfile}.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from kvstore.testing.processes import FAST_ELECTIONS, allocate_port, wait_until

from tests.integration.custom_process import CustomNodeProcess
from tests.integration.support import ProcessTestCase

pytestmark = pytest.mark.integration


def _records(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


class JsonLogProcessTests(ProcessTestCase):
    """--log-format json in a real node process."""

    def run_node(self, twistd_args: list[str], log: Path) -> list[dict[str, object]]:
        port = allocate_port()
        node = CustomNodeProcess(
            0,
            port,
            self.tmp_path / "logs",
            ["--port", str(port), "--data-dir", str(self.tmp_path / "data"), "--log-format", "json", *FAST_ELECTIONS],
            twistd_args=twistd_args,
        )
        self.started_nodes.append(node)
        node.start()
        node.wait_ready(30)
        assert node.request("PUT k v") == "k added successfully."
        node.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        node.process.wait(30)  # type: ignore[union-attr]
        wait_until(lambda: "Server Shut Down." in log.read_text(), 10, message=node.describe)
        return _records(log.read_text())

    def check(self, records: list[dict[str, object]]) -> None:
        for record in records:
            assert {"time", "level", "namespace", "text"} <= record.keys(), record
        texts = [str(r["text"]) for r in records]
        assert any(t.startswith("twistd ") and "starting up" in t for t in texts), texts
        (serving,) = [r for r in records if str(r["text"]).startswith("kvstore node 0 ")]
        assert serving["namespace"] == "kvstore.daemon.service.KVStoreService"
        assert serving["level"] == "info"
        assert serving["fields"]["node"] == 0  # type: ignore[index]

    def test_json_lines_on_stdout(self) -> None:
        """With -n and --logfile=-, standard output holds only JSON lines, from twistd and kvstore."""
        node_out = self.tmp_path / "logs" / "node-0.out"
        self.check(self.run_node(["--pidfile=", "--logfile=-"], node_out))

    def test_json_lines_in_logfile(self) -> None:
        """With --logfile, the file holds only JSON lines."""
        log = self.tmp_path / "node.log"
        self.check(self.run_node(["--pidfile=", f"--logfile={log}"], log))
