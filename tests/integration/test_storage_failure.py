"""
A node whose fsync fails stops itself with exit status 70, so that systemd
and monitoring see a failure (and the unit does not restart it blindly).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvstore.daemon.service import EXIT_STORAGE_FAILURE
from kvstore.testing.processes import allocate_port

from tests.integration.support import ProcessTestCase

pytestmark = pytest.mark.integration

CHECKOUT = Path(__file__).resolve().parents[2]

WRAPPER = """
import errno, sys
import kvstore.storage.fs as fs_module
real_fsync = fs_module.FileSystem.fsync
calls = [0]
def failing_fsync(self, fd):
    calls[0] += 1
    if calls[0] > {healthy}:
        raise OSError(errno.EIO, "injected EIO")
    return real_fsync(self, fd)
fs_module.FileSystem.fsync = failing_fsync
sys.argv = ["twistd"] + sys.argv[1:]
from twisted.scripts.twistd import run
run()
"""


class StorageFailureTests(ProcessTestCase):
    """
    A real node whose fsync fails exits with the storage-failure status.
    """

    def test_fsync_failure_exits_with_storage_failure_status(self) -> None:
        """After an fsync fails with EIO the node stops and exits 70, not 0."""
        wrapper = self.tmp_path / "eio_twistd.py"
        wrapper.write_text(WRAPPER.format(healthy=8))
        port = allocate_port()
        env = dict(os.environ, PYTHONPATH=str(CHECKOUT))
        process = subprocess.Popen(
            [sys.executable, str(wrapper), "-n", "--pidfile=", f"--logfile={self.tmp_path / 'node.log'}", "kvstore",
             f"--port={port}", f"--data-dir={self.tmp_path / 'data'}"],
            env=env,
            stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 20
            while process.poll() is None and time.monotonic() < deadline:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                        s.sendall(b"PUT k v\n")
                        s.settimeout(1)
                        try:
                            s.recv(100)
                        except OSError:
                            pass
                except OSError:
                    pass
            assert process.wait(timeout=10) == EXIT_STORAGE_FAILURE
            assert "storage failure" in (self.tmp_path / "node.log").read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
