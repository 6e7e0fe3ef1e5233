# -*- test-case-name: tests.test_review_admin_systemd -*-
"""
C{--admin-listen systemd...} adopts the socket systemd passed, as
C{--listen systemd...} does (found in review): the option accepted
kvstore's own socket-activation descriptions, but the service handed them
to Twisted's C{systemd:} endpoint, which sees no socket without
C{$LISTEN_FDNAMES} and does not understand C{systemd:name=NAME} or a bare
C{systemd} at all.
"""

from __future__ import annotations

import os
import socket

from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon import service, socket_activation
from kvstore.daemon.options import Options
from kvstore.daemon.socket_activation import ActivatedSocketEndpoint

#: Where the "passed" sockets go (as in tests.test_socket_activation).
FIRST_FD = 910


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class AdminSocketActivationTests(SynchronousTestCase):
    """The admin endpoint adopts a socket passed by systemd."""

    def test_admin_listen_systemd_name(self) -> None:
        """With sockets named kvstore and admin passed, --admin-listen systemd:name=admin adopts the second."""
        self.patch(socket_activation, "LISTEN_FDS_START", FIRST_FD)
        for offset in range(2):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sock.listen()
            with self.assertRaises(OSError):
                os.fstat(FIRST_FD + offset)  # must be free
            os.dup2(sock.fileno(), FIRST_FD + offset)
            self.addCleanup(_close_quietly, FIRST_FD + offset)
            sock.close()
        environ = dict(os.environ)
        environ.update({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "kvstore:admin"})
        self.patch(os, "environ", environ)
        options = Options()
        options.parseOptions(["--data-dir", self.mktemp(), "--listen", "systemd:name=kvstore",
                              "--admin-listen", "systemd:name=admin"])
        instruments, admin = service._instruments(options.config, MemoryReactor())
        assert admin is not None
        endpoint = admin[1]
        self.assertIsInstance(endpoint, ActivatedSocketEndpoint)
        self.assertEqual(endpoint.fd, FIRST_FD + 1)
