# -*- test-case-name: tests.test_socket_activation -*-
"""
Socket activation: C{--listen systemd} adopts the listening socket systemd
passes (a C{.socket} unit, C{etc/kvstore@.socket}) instead of binding one.

The protocol (U{sd_listen_fds(3)<https://www.freedesktop.org/software/systemd/man/sd_listen_fds.html>}):
the passed sockets are file descriptors 3, 4, ..., C{$LISTEN_FDS} of them,
meant for the process whose pid is C{$LISTEN_PID}; C{$LISTEN_FDNAMES}, if
set, names them (colon-separated; a socket unit's C{FileDescriptorName=}).
One socket serves clients and peers alike, as the node's one port does.

The descriptions C{--listen} accepts:

  - C{systemd}: the one socket passed (refused if there are several);
  - C{systemd:name=NAME}: the socket named C{NAME};
  - C{systemd:index=N}: the C{N}th socket passed, from 0;

each optionally with C{:domain=INET}, C{INET6} or C{UNIX}, which the socket
must then have (Twisted's own C{systemd:domain=INET:index=0} syntax is thus
accepted as it was).

Why not Twisted's C{systemd:} endpoint, which these descriptions resemble:
it sees no socket at all unless C{$LISTEN_FDNAMES} is set (systemd sets it
since version 227, but C{systemd-socket-activate} only with C{--fdname}, and
other launchers not at all); and it needs the address family spelled out,
trusting it: C{domain=INET} for the IPv6 socket a C{ListenStream=5000}
makes (dual-stack, the usual unit) adopts a port whose addresses Twisted
then reads as IPv4.  This module reads the family from the socket itself,
checks that it is a listening stream socket, and explains what was passed
when the requested socket is not there.

One more thing about Twisted: importing L{twisted.internet.endpoints}
(which twistd does long before it loads kvstore) reads C{$LISTEN_PID} and
C{$LISTEN_FDS} and deletes them from the environment, so that no one else
takes the sockets -- even when it then ignores them for want of names.
L{listen_environment} therefore reads them from the environment the
program was started with, C{/proc/self/environ}, which deleting a variable
does not change (Linux, as systemd).
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from typing import Any, Mapping

from twisted.internet.defer import Deferred, execute
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from zope.interface import implementer

__all__ = [
    "LISTEN_FDS_START",
    "listen_environment",
    "ActivatedSocketEndpoint",
    "ActivationError",
    "ActivationRequest",
    "PassedSocket",
    "is_systemd_description",
    "parse_description",
    "passed_sockets",
    "server_endpoint",
]

#: The first file descriptor systemd passes (SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3

_DOMAINS = {"INET": socket.AF_INET, "INET6": socket.AF_INET6, "UNIX": socket.AF_UNIX}
_FAMILY_NAMES: dict[int, str] = {family: f"AF_{name}" for name, family in _DOMAINS.items()}
# systemd's rule for FileDescriptorName=: printable ASCII but ':' and space.
_NAME_RE = re.compile(r"^[!-9;-~]{1,255}$")


class ActivationError(ValueError):
    """The socket C{--listen systemd...} asks for was not passed, or is not
    a listening stream socket; the message says what was passed."""


@dataclass(frozen=True)
class ActivationRequest:
    """Which passed socket a C{systemd} description asks for: by C{name},
    by C{index}, or the only one (both L{None}); C{domain}, if given, is
    the address family it must have."""

    name: str | None = None
    index: int | None = None
    domain: str | None = None


@dataclass(frozen=True)
class PassedSocket:
    """One descriptor systemd passed, and its name (C{"unknown"} when
    C{$LISTEN_FDNAMES} is not set, as in sd_listen_fds_with_names(3))."""

    fd: int
    name: str


def is_systemd_description(description: str) -> bool:
    """Whether C{description} asks for a socket passed by systemd."""
    return description == "systemd" or description.startswith("systemd:")


def parse_description(description: str) -> ActivationRequest:
    """
    Parse a C{systemd} or C{systemd:key=value:...} description.

    @raise ValueError: for an unknown key, a bad value, or both C{name} and
        C{index}.
    """
    if not is_systemd_description(description):
        raise ValueError(f"{description!r} is not a systemd description")
    arguments: dict[str, str] = {}
    for part in description.split(":")[1:]:
        key, sep, value = part.partition("=")
        if not sep or key not in ("name", "index", "domain"):
            raise ValueError(f"expected name=NAME, index=N or domain=INET|INET6|UNIX, not {part!r}")
        if key in arguments:
            raise ValueError(f"{key} is given twice")
        arguments[key] = value
    if "name" in arguments and "index" in arguments:
        raise ValueError("give name or index, not both")
    domain = arguments.get("domain")
    if domain is not None and domain not in _DOMAINS:
        raise ValueError(f"domain must be INET, INET6 or UNIX, not {domain!r}")
    index = None
    if "index" in arguments:
        if not arguments["index"].isdigit():
            raise ValueError(f"index must be an integer >= 0, not {arguments['index']!r}")
        index = int(arguments["index"])
    name = arguments.get("name")
    if name is not None and not _NAME_RE.match(name):
        raise ValueError(f"name must be 1 to 255 printable characters without ':' or spaces, not {name!r}")
    return ActivationRequest(name, index, domain)


#: The variables of the protocol.
_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def listen_environment(environ: Mapping[str, str], initial_path: str = "/proc/self/environ") -> dict[str, str]:
    """
    The protocol's variables: from C{environ} if C{$LISTEN_PID} or
    C{$LISTEN_FDS} is there, else from the environment this program was
    started with (C{initial_path}), where they survive Twisted's deleting
    them (see the module docstring); empty if neither has them.
    """
    if "LISTEN_PID" in environ or "LISTEN_FDS" in environ:
        return {name: environ[name] for name in _VARIABLES if name in environ}
    try:
        with open(initial_path, "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    initial = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {name: initial[name.encode()].decode("utf-8", "replace") for name in _VARIABLES if name.encode() in initial}


def passed_sockets(environ: Mapping[str, str], pid: int) -> list[PassedSocket]:
    """
    The sockets systemd passed to process C{pid}, from C{environ}.

    @raise ActivationError: if the variables are set but malformed, or are
        meant for another process.
    """
    if "LISTEN_FDS" not in environ and "LISTEN_PID" not in environ:
        return []
    listen_pid = environ.get("LISTEN_PID", "")
    if listen_pid != str(pid):
        raise ActivationError(
            f"the sockets in $LISTEN_FDS are for process {listen_pid or '(no $LISTEN_PID)'}, not this one ({pid})"
        )
    count_text = environ.get("LISTEN_FDS", "")
    if not count_text.isdigit():
        raise ActivationError(f"$LISTEN_FDS must be a number of sockets, not {count_text!r}")
    count = int(count_text)
    names_text = environ.get("LISTEN_FDNAMES")
    names = names_text.split(":") if names_text is not None else ["unknown"] * count
    if len(names) != count:
        raise ActivationError(f"$LISTEN_FDNAMES names {len(names)} sockets but $LISTEN_FDS is {count}")
    return [PassedSocket(LISTEN_FDS_START + i, name) for i, name in enumerate(names)]


def _describe(sockets: list[PassedSocket]) -> str:
    if not sockets:
        return "systemd passed no socket (is the node started by its .socket unit?)"
    listed = ", ".join(f"fd {s.fd} named {s.name!r}" for s in sockets)
    return f"systemd passed {len(sockets)} socket{'s' if len(sockets) > 1 else ''}: {listed}"


def _select(request: ActivationRequest, sockets: list[PassedSocket]) -> PassedSocket:
    if request.name is not None:
        named = [s for s in sockets if s.name == request.name]
        if len(named) != 1:
            problem = "no socket" if not named else f"{len(named)} sockets"
            raise ActivationError(f"{problem} named {request.name!r}: {_describe(sockets)}")
        return named[0]
    if request.index is not None:
        if request.index >= len(sockets):
            raise ActivationError(f"no socket at index {request.index}: {_describe(sockets)}")
        return sockets[request.index]
    if len(sockets) != 1:
        hint = "; choose one with systemd:name=NAME" if sockets else ""
        raise ActivationError(f"--listen systemd needs exactly one socket: {_describe(sockets)}{hint}")
    return sockets[0]


def _listening_family(fd: int) -> int:
    """
    The address family of C{fd}, which must be a listening stream socket.

    @raise ActivationError: if it is not.
    """
    try:
        # A duplicate, so that closing the probe leaves fd open.
        probe = socket.socket(fileno=os.dup(fd))
    except OSError as e:
        raise ActivationError(f"fd {fd} is not a socket ({e.strerror or e})") from None
    with probe:
        if probe.type != socket.SOCK_STREAM:
            raise ActivationError(f"fd {fd} is not a stream (TCP or UNIX stream) socket: use ListenStream=")
        if not probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise ActivationError(f"fd {fd} is a socket that is not listening")
        if probe.family not in _FAMILY_NAMES:
            raise ActivationError(f"fd {fd} has address family {probe.family!r}; INET, INET6 or UNIX expected")
        return int(probe.family)


@implementer(IStreamServerEndpoint)
class ActivatedSocketEndpoint:
    """
    A server endpoint that listens by adopting the listening socket C{fd}
    of address family C{family} (C{reactor.adoptStreamPort}, which takes a
    duplicate and, stopping, closes it without shutting the socket down:
    systemd's copy keeps listening, and connections queue until the node
    is started again).
    """

    def __init__(self, reactor: Any, fd: int, family: int) -> None:
        self.reactor = reactor
        self.fd = fd
        self.family = family

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        return execute(self.reactor.adoptStreamPort, self.fd, self.family, protocolFactory)


def server_endpoint(reactor: Any, description: str, environ: Mapping[str, str], pid: int) -> ActivatedSocketEndpoint:
    """
    The endpoint adopting the socket C{description} (a C{systemd}
    description) asks for, among those C{environ} says systemd passed to
    process C{pid}.

    @raise ActivationError: if that socket was not passed, or is not a
        listening stream socket of the requested domain.
    @raise ValueError: if C{description} does not parse.
    """
    request = parse_description(description)
    chosen = _select(request, passed_sockets(environ, pid))
    family = _listening_family(chosen.fd)
    if request.domain is not None and _DOMAINS[request.domain] != family:
        raise ActivationError(
            f"fd {chosen.fd} is an {_FAMILY_NAMES[family]} socket, not AF_{request.domain} as "
            f"domain={request.domain} says (ListenStream=PORT makes an AF_INET6 socket that also "
            "accepts IPv4; leave domain= out to take the socket's own)"
        )
    # Twisted's adoptStreamPort wants a non-blocking socket and does not make
    # it one (systemd passes blocking sockets unless NonBlocking=yes): a
    # client that resets between poll and accept would block the reactor.
    os.set_blocking(chosen.fd, False)
    os.set_inheritable(chosen.fd, False)
    return ActivatedSocketEndpoint(reactor, chosen.fd, family)
