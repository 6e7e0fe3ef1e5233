"""
Socket activation with real processes: a node started with C{--listen
systemd} serves clients on a listening socket it inherited as file
descriptor 3 with C{LISTEN_PID}/C{LISTEN_FDS} set, the way systemd passes
it (and, where it is installed, through C{systemd-socket-activate} itself),
including a connection made before the node was started.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pytest
from twisted.trial.unittest import SkipTest

from kvstore.testing.processes import FAST_ELECTIONS, allocate_port, child_environment, wait_until

from tests.integration.custom_process import CustomNodeProcess
from tests.integration.support import ProcessTestCase

pytestmark = pytest.mark.integration

#: Runs in the child: moves the inherited socket to descriptor 3, sets the
#: variables for its own pid (known only once it runs, as systemd's child
#: learns it), then becomes the node with exec (same pid).
_LAUNCHER = """
import os, sys
source = int(sys.argv[1])
if source != 3:
    os.dup2(source, 3)
    os.close(source)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = "1"
os.environ.pop("LISTEN_FDNAMES", None)
os.execv(sys.argv[2], sys.argv[2:])
"""


class ActivatedNode(CustomNodeProcess):
    """A node whose command line is prefixed by C{prefix} and that
    inherits C{pass_fds}; killed after the test like any other."""

    def __init__(self, port: int, log_dir: Path, kvstore_args: Sequence[str], prefix: Sequence[str], pass_fds: Sequence[int] = ()) -> None:
        super().__init__(0, port, log_dir, kvstore_args, twistd_args=["--pidfile=", f"--logfile={log_dir / 'node.log'}"])
        self.prefix = list(prefix)
        self.pass_fds = tuple(pass_fds)
        self.log_path = log_dir / "node.log"

    def argv(self) -> list[str]:
        return [*self.prefix, *super().argv()]

    def start(self) -> "ActivatedNode":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_path, "ab") as out:
            self.process = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=child_environment(),
                start_new_session=True,
                pass_fds=self.pass_fds,
            )
        return self


class SocketActivationProcessTests(ProcessTestCase):
    """A node adopting a listening socket passed as systemd passes it."""

    def node_args(self, port: int, listen: str = "systemd") -> list[str]:
        return ["--port", str(port), "--data-dir", str(self.tmp_path / "data"), "--listen", listen, *FAST_ELECTIONS]

    def serve_and_stop(self, node: ActivatedNode) -> None:
        """The node answers writes and reads, then stops cleanly on SIGTERM."""
        node.wait_ready(30)
        self.assertEqual(node.request("PUT k activated"), "k added successfully.")
        self.assertEqual(node.request("GET k"), "value of k: activated")
        # twistd exits by the signal that stopped it (Twisted re-raises it).
        self.assertIn(node.stop(30), (0, -signal.SIGTERM), node.describe())
        self.assertNotIn("Traceback", node.log(), node.describe())

    def test_inherited_fd_3(self) -> None:
        """With the socket at fd 3, LISTEN_PID its own pid and LISTEN_FDS=1 (no names), the node serves on it, and a client that connected before the node started is answered."""
        port = allocate_port()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(16)
        early = socket.create_connection(("127.0.0.1", port), timeout=30)  # queued in the backlog
        self.addCleanup(early.close)
        node = ActivatedNode(
            port,
            self.tmp_path / "logs",
            self.node_args(port),
            prefix=[sys.executable, "-c", _LAUNCHER, str(listener.fileno())],
            pass_fds=[listener.fileno()],
        )
        self.started_nodes.append(node)
        node.start()
        listener.close()  # only the node holds the socket now
        early.sendall(b"PING\n")
        self.assertEqual(early.makefile("rb").readline(), b"PONG\n")
        self.assertIn("kvstore node 0", wait_until(node.log, 30, message=node.describe))
        self.serve_and_stop(node)

    def test_no_socket_passed_is_refused(self) -> None:
        """--listen systemd without a passed socket exits 1 at once, saying so."""
        port = allocate_port()
        node = ActivatedNode(port, self.tmp_path / "logs", self.node_args(port), prefix=[])
        self.started_nodes.append(node)
        node.start()
        assert node.process is not None
        self.assertEqual(node.process.wait(60), 1)
        self.assertIn("systemd passed no socket", node.output())

    def test_systemd_socket_activate(self) -> None:
        """systemd's own launcher (systemd-socket-activate), which starts the node on the first connection: that connection is served, by plain systemd and by name."""
        tool = shutil.which("systemd-socket-activate")
        if tool is None:
            raise SkipTest("systemd-socket-activate is not installed (Debian: package systemd)")
        for listen, extra in (("systemd", []), ("systemd:name=kvstore", ["--fdname=kvstore"])):
            with self.subTest(listen=listen):
                port = allocate_port()
                data = self.tmp_path / f"data-{len(extra)}"
                args = ["--port", str(port), "--data-dir", str(data), "--listen", listen, *FAST_ELECTIONS]
                node = ActivatedNode(port, self.tmp_path / f"logs-{len(extra)}", args, prefix=[tool, "-l", f"127.0.0.1:{port}", *extra])
                self.started_nodes.append(node)
                node.start()

                def connected() -> socket.socket:
                    return socket.create_connection(("127.0.0.1", port), timeout=30)

                first = wait_until(connected, 30, message=node.describe)  # starts the node
                self.addCleanup(first.close)
                first.sendall(b"PING\n")
                self.assertEqual(first.makefile("rb").readline(), b"PONG\n")
                self.serve_and_stop(node)
