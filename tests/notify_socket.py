"""
A fake systemd notification socket for tests: a real C{AF_UNIX} datagram
socket bound in a short temporary directory (socket paths are limited to
about 100 bytes, which trial's per-test directories can exceed), read by
the test.
"""

from __future__ import annotations

import select
import shutil
import socket
import tempfile
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase


class FakeNotifySocket:
    """
    A bound datagram socket standing in for systemd's C{$NOTIFY_SOCKET};
    closed and removed when the test ends.

    @ivar path: the address to put in C{NOTIFY_SOCKET}.
    """

    def __init__(self, case: SynchronousTestCase, abstract: bool = False) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        case.addCleanup(self.socket.close)
        if abstract:
            name = f"kvstore-test-{id(self)}-{time.monotonic_ns()}"
            self.socket.bind(b"\0" + name.encode())
            self.path = "@" + name
        else:
            directory = tempfile.mkdtemp(prefix="kvn-", dir="/tmp")
            case.addCleanup(shutil.rmtree, directory, ignore_errors=True)
            self.path = str(Path(directory) / "notify")
            self.socket.bind(self.path)
        self.received: list[dict[str, str]] = []

    def pending(self) -> list[dict[str, str]]:
        """Every datagram already queued, parsed into C{NAME: value} dicts."""
        messages = []
        while select.select([self.socket], [], [], 0)[0]:
            messages.append(_parse(self.socket.recv(65536)))
        self.received.extend(messages)
        return messages

    def wait_for(self, name: str, value: str, timeout: float) -> dict[str, str]:
        """
        Read datagrams until one sets C{name=value} and return it.

        @raise AssertionError: after C{timeout} seconds without one.
        """
        deadline = time.monotonic() + timeout
        while True:
            for message in self.pending():
                if message.get(name) == value:
                    return message
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {name}={value} within {timeout}s; received {self.received}")
            select.select([self.socket], [], [], left)


def _parse(datagram: bytes) -> dict[str, str]:
    message = {}
    for line in datagram.decode("utf-8").splitlines():
        name, _, value = line.partition("=")
        message[name] = value
    return message
