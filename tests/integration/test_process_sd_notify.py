"""
A real C{twistd -n kvstore} process under a fake systemd: C{NOTIFY_SOCKET}
names a datagram socket the test reads.
"""

from __future__ import annotations

import signal

import pytest

from kvstore.testing.processes import FAST_ELECTIONS, allocate_port

from tests.integration.custom_process import CustomNodeProcess
from tests.integration.support import ProcessTestCase
from tests.notify_socket import FakeNotifySocket

pytestmark = pytest.mark.integration


class NotifyProcessTests(ProcessTestCase):
    """systemd notifications from a real node process."""

    def test_ready_watchdog_then_stopping_on_sigterm(self) -> None:
        """
        The node sends READY=1 once it listens, WATCHDOG=1 pings while it
        runs, and STOPPING=1 on SIGTERM before it shuts down cleanly.
        """
        notify = FakeNotifySocket(self)
        port = allocate_port()
        node = CustomNodeProcess(
            0,
            port,
            self.tmp_path / "logs",
            ["--port", str(port), "--data-dir", str(self.tmp_path / "data"), *FAST_ELECTIONS],
            twistd_args=["--pidfile=", f"--logfile={self.tmp_path / 'node.log'}"],
            # 0.4 s watchdog: a ping every 0.2 s.
            env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"},
        )
        self.started_nodes.append(node)
        node.start()
        ready = notify.wait_for("READY", "1", timeout=30)
        assert ready["STATUS"].startswith("role="), ready
        # READY=1 means listening: a client connects at once, without retrying.
        assert node.request("STATUS").startswith("node=0 ")
        notify.wait_for("WATCHDOG", "1", timeout=10)
        notify.wait_for("WATCHDOG", "1", timeout=10)
        node.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        notify.wait_for("STOPPING", "1", timeout=30)
        # twistd re-raises the signal that stopped it once shut down;
        # systemd counts death by SIGTERM as a clean exit.
        assert node.process.wait(30) in (0, -signal.SIGTERM), node.describe()  # type: ignore[union-attr]
        assert "Server Shut Down." in (self.tmp_path / "node.log").read_text()
