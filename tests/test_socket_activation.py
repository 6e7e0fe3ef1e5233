"""
Tests for L{kvstore.daemon.socket_activation}: the C{--listen systemd...}
descriptions, reading C{$LISTEN_PID}/C{$LISTEN_FDS}/C{$LISTEN_FDNAMES}, and
adopting a passed listening socket with its own address family.  Real
sockets stand in for systemd's, renumbered where the protocol says they
start (patched from 3 to a free descriptor).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon import socket_activation
from kvstore.daemon.options import Options
from kvstore.daemon.socket_activation import (
    ActivatedSocketEndpoint,
    ActivationError,
    ActivationRequest,
    PassedSocket,
    listen_environment,
    parse_description,
    passed_sockets,
    server_endpoint,
)

#: Where these tests put their "passed" sockets: high enough to be free.
FIRST_FD = 900


class DescriptionTests(SynchronousTestCase):
    """The descriptions --listen accepts."""

    def test_valid(self) -> None:
        """systemd alone, by name, by index, with or without a domain."""
        cases = {
            "systemd": ActivationRequest(),
            "systemd:name=kvstore": ActivationRequest(name="kvstore"),
            "systemd:index=1": ActivationRequest(index=1),
            "systemd:domain=INET:index=0": ActivationRequest(index=0, domain="INET"),
            "systemd:domain=INET6": ActivationRequest(domain="INET6"),
        }
        for description, expected in cases.items():
            with self.subTest(description=description):
                self.assertEqual(parse_description(description), expected)

    def test_invalid(self) -> None:
        """Unknown keys, bad values and both name and index are refused, by the option parser too."""
        for description in ("systemd:port=5000", "systemd:index=-1", "systemd:name=a:index=0", "systemd:domain=IPX", "systemd:name=", "systemd:index=1:index=2"):
            with self.subTest(description=description):
                with self.assertRaises(ValueError):
                    parse_description(description)
                with self.assertRaises(UsageError) as e:
                    Options().parseOptions(["--listen", description])
                self.assertIn(f"--listen {description!r}", str(e.exception))

    def test_options_accept(self) -> None:
        """--listen systemd and systemd:name=NAME pass the option parser."""
        for description in ("systemd", "systemd:name=kvstore"):
            options = Options()
            options.parseOptions(["--listen", description])
            self.assertEqual(options.config.listen, description)


class EnvironmentTests(SynchronousTestCase):
    """passed_sockets(): what systemd passed, and to whom."""

    def test_none(self) -> None:
        """No variables: nothing passed."""
        self.assertEqual(passed_sockets({}, 42), [])

    def test_named_and_unnamed(self) -> None:
        """Descriptors from 3, named by $LISTEN_FDNAMES or "unknown" without it."""
        self.assertEqual(
            passed_sockets({"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "kvstore:admin"}, 42),
            [PassedSocket(3, "kvstore"), PassedSocket(4, "admin")],
        )
        self.assertEqual(passed_sockets({"LISTEN_PID": "42", "LISTEN_FDS": "1"}, 42), [PassedSocket(3, "unknown")])

    def test_for_another_process(self) -> None:
        """Sockets meant for another pid are not taken, and the error says whose they are."""
        with self.assertRaises(ActivationError) as e:
            passed_sockets({"LISTEN_PID": "41", "LISTEN_FDS": "1"}, 42)
        self.assertIn("for process 41, not this one (42)", str(e.exception))

    def test_variables_from_the_initial_environment(self) -> None:
        """When Twisted's import deleted $LISTEN_PID and $LISTEN_FDS, they are read from the environment the program started with."""
        initial = Path(self.mktemp())
        initial.write_bytes(b"PATH=/bin\0LISTEN_PID=42\0LISTEN_FDS=1\0LISTEN_FDNAMES=kvstore\0")
        self.assertEqual(
            listen_environment({"LISTEN_FDNAMES": "kvstore"}, str(initial)),
            {"LISTEN_PID": "42", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "kvstore"},
        )
        self.assertEqual(listen_environment({"LISTEN_PID": "7", "LISTEN_FDS": "2"}, str(initial)), {"LISTEN_PID": "7", "LISTEN_FDS": "2"})
        self.assertEqual(listen_environment({}, str(initial) + ".missing"), {})

    def test_malformed(self) -> None:
        """A non-numeric count, or names that do not match the count, are refused."""
        for environ in ({"LISTEN_PID": "42", "LISTEN_FDS": "x"}, {"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "one"}):
            with self.subTest(environ=environ):
                with self.assertRaises(ActivationError):
                    passed_sockets(environ, 42)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class AdoptionTests(SynchronousTestCase):
    """server_endpoint(): choosing, checking and adopting a passed socket."""

    def pass_sockets(self, *sockets: socket.socket, names: str | None = None) -> dict[str, str]:
        """Put C{sockets} at FIRST_FD, FIRST_FD + 1, ... as systemd would at
        3, 4, ...; they are closed after the test (or by L{take_back})."""
        self.patch(socket_activation, "LISTEN_FDS_START", FIRST_FD)
        for offset, sock in enumerate(sockets):
            fd = FIRST_FD + offset
            with self.assertRaises(OSError):
                os.fstat(fd)  # must be free
            os.dup2(sock.fileno(), fd)
            self.addCleanup(_close_quietly, fd)
            sock.close()
        environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": str(len(sockets))}
        if names is not None:
            environ["LISTEN_FDNAMES"] = names
        return environ

    def take_back(self, count: int = 1) -> None:
        """Close the passed descriptors now (between subtests)."""
        for fd in range(FIRST_FD, FIRST_FD + count):
            _close_quietly(fd)

    def listening(self, family: int = socket.AF_INET) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
        sock.listen()
        return sock

    def test_adopts_with_the_sockets_own_family(self) -> None:
        """An IPv4 and an IPv6 listening socket are adopted with their own family, made non-blocking."""
        for family in (socket.AF_INET, socket.AF_INET6):
            with self.subTest(family=family):
                environ = self.pass_sockets(self.listening(family))
                self.assertTrue(os.get_blocking(FIRST_FD))
                reactor = MemoryReactor()
                endpoint = server_endpoint(reactor, "systemd", environ, os.getpid())
                self.assertIsInstance(endpoint, ActivatedSocketEndpoint)
                self.assertFalse(os.get_blocking(FIRST_FD))
                self.assertFalse(os.get_inheritable(FIRST_FD))
                factory = Factory()
                self.successResultOf(endpoint.listen(factory))
                self.assertEqual(reactor.adoptedPorts, [(FIRST_FD, family, factory)])
                self.take_back()

    def test_chooses_by_name_and_index(self) -> None:
        """With several sockets, name= and index= pick one; plain systemd is refused, listing them."""
        environ = self.pass_sockets(self.listening(), self.listening(), names="admin:kvstore")
        self.assertEqual(server_endpoint(MemoryReactor(), "systemd:name=kvstore", environ, os.getpid()).fd, FIRST_FD + 1)
        self.assertEqual(server_endpoint(MemoryReactor(), "systemd:index=0", environ, os.getpid()).fd, FIRST_FD)
        with self.assertRaises(ActivationError) as e:
            server_endpoint(MemoryReactor(), "systemd", environ, os.getpid())
        self.assertIn(f"systemd passed 2 sockets: fd {FIRST_FD} named 'admin', fd {FIRST_FD + 1} named 'kvstore'", str(e.exception))
        with self.assertRaises(ActivationError) as e:
            server_endpoint(MemoryReactor(), "systemd:name=peers", environ, os.getpid())
        self.assertIn("no socket named 'peers'", str(e.exception))

    def test_wrong_domain_refused(self) -> None:
        """domain=INET for an IPv6 socket (what ListenStream=PORT makes) is refused with the reason."""
        environ = self.pass_sockets(self.listening(socket.AF_INET6))
        with self.assertRaises(ActivationError) as e:
            server_endpoint(MemoryReactor(), "systemd:domain=INET:index=0", environ, os.getpid())
        self.assertIn("is an AF_INET6 socket, not AF_INET", str(e.exception))

    def test_not_a_listening_stream_socket(self) -> None:
        """A datagram socket, a stream socket that is not listening, and a descriptor that is no socket are refused."""
        cases = (
            (socket.socket(socket.AF_INET, socket.SOCK_DGRAM), "not a stream"),
            (socket.socket(socket.AF_INET, socket.SOCK_STREAM), "not listening"),
        )
        for sock, reason in cases:
            with self.subTest(reason=reason):
                environ = self.pass_sockets(sock)
                with self.assertRaises(ActivationError) as e:
                    server_endpoint(MemoryReactor(), "systemd", environ, os.getpid())
                self.assertIn(reason, str(e.exception))
                self.take_back()
        with open(os.devnull) as f:
            os.dup2(f.fileno(), FIRST_FD)
            self.addCleanup(_close_quietly, FIRST_FD)
        with self.assertRaises(ActivationError) as e:
            server_endpoint(MemoryReactor(), "systemd", {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"}, os.getpid())
        self.assertIn("is not a socket", str(e.exception))

    def test_none_passed(self) -> None:
        """Without sockets, the error says none was passed and asks about the .socket unit."""
        with self.assertRaises(ActivationError) as e:
            server_endpoint(MemoryReactor(), "systemd", {}, os.getpid())
        self.assertIn("systemd passed no socket (is the node started by its .socket unit?)", str(e.exception))
