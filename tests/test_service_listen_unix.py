# -*- test-case-name: tests.test_service_listen_unix -*-
"""
When C{twistd kvstore} listens: at once in L{kvstore.daemon.service.makeService}
(so a port in use is a one-line refusal), except on a UNIX socket when
twistd then daemonizes, chroots or changes directory, which would leave the
socket's lock file naming a dead pid or bind and unlink different paths.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon import service as service_module
from kvstore.daemon.service import makeService

_build_service = service_module.build_service


class EarlyListenTests(SynchronousTestCase):
    """makeService listens early only where twistd's later set-up cannot undo it."""

    def make(self, *twistd_argv: str) -> tuple[MemoryReactorClock, Any]:
        """Parse C{twistd_argv} (with a kvstore data directory added) as
        twistd does and call makeService with an in-memory reactor."""
        reactor = MemoryReactorClock()

        def build(config: Any, pidfile: str | None = None) -> Any:
            return _build_service(config, reactor, pidfile=pidfile)

        self.patch(service_module, "build_service", build)
        config = ServerOptions()
        config.parseOptions([*twistd_argv, "--data-dir", self.mktemp()])
        service = makeService(config.subOptions)
        self.addCleanup(service._lock.release)
        return reactor, service

    def test_daemon_unix_socket_listens_after_daemonizing(self) -> None:
        """Daemonized (no -n), a UNIX socket is bound by privilegedStartService, not makeService."""
        reactor, service = self.make("kvstore", "--listen", "unix:node.sock")
        self.assertEqual(reactor.unixServers, [])
        service.privilegedStartService()
        self.assertEqual([address for address, *_ in reactor.unixServers], ["node.sock"])

    def test_rundir_or_chroot_unix_socket_listens_later(self) -> None:
        """With --rundir elsewhere or --chroot, a UNIX socket waits for twistd's set-up."""
        elsewhere = self.mktemp()
        for twistd_options in (["-n", "--rundir", elsewhere], ["-n", "--chroot", elsewhere]):
            with self.subTest(twistd_options=twistd_options):
                reactor, service = self.make(*twistd_options, "kvstore", "--listen", "unix:node.sock")
                self.assertEqual(reactor.unixServers, [])

    def test_foreground_unix_socket_listens_early(self) -> None:
        """In the foreground from the working directory, a UNIX socket listens in makeService."""
        reactor, service = self.make("-n", "kvstore", "--listen", "unix:node.sock")
        self.assertEqual(len(reactor.unixServers), 1)

    def test_daemon_tcp_listens_early(self) -> None:
        """TCP listens in makeService even when twistd daemonizes (a port in use is refused in one line)."""
        reactor, service = self.make("kvstore", "--port", "24996")
        self.assertEqual([port for port, *_ in reactor.tcpServers], [24996])
