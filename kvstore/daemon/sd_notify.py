# -*- test-case-name: tests.test_sd_notify -*-
"""
systemd's service notification protocol (sd_notify(3)), our own small
sender: one datagram of C{NAME=value} lines to the socket named by
C{$NOTIFY_SOCKET}, so that a C{Type=notify} unit knows the truth about the
node.

  - C{READY=1} once recovery is done and the node listens (systemd's start
    job then completes, and units ordered after this one start);
  - C{STATUS=role=... term=... leader=...} whenever those change, at most
    once per L{STATUS_MIN_INTERVAL} (shown by C{systemctl status});
  - C{STOPPING=1} when the node starts shutting down;
  - C{WATCHDOG=1} from the reactor every C{$WATCHDOG_USEC}/2 when the unit
    sets C{WatchdogSec=} (and C{$WATCHDOG_PID} is unset or this process):
    a reactor that stops turning stops the pings, and systemd kills and
    restarts the node.

Without C{$NOTIFY_SOCKET} (not under systemd, or C{Type=exec}) every call is
a no-op.  A datagram is sent without blocking; one that cannot be sent is
dropped with a warning, as libsystemd's sender would fail: notification must
never stop the node.  No dependency on libsystemd or python-systemd.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Callable, Mapping

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

__all__ = [
    "NodeNotifier",
    "Notifier",
    "STATUS_MIN_INTERVAL",
    "STATUS_POLL_INTERVAL",
    "notify_address",
    "watchdog_interval",
]

#: Seconds between two checks of the node's role, term and leader.
STATUS_POLL_INTERVAL = 0.25
#: At least this many seconds between two STATUS= datagrams, so that an
#: election storm does not flood the service manager.
STATUS_MIN_INTERVAL = 1.0

_log = Logger()


def notify_address(value: str) -> str | bytes | None:
    """
    The socket address C{$NOTIFY_SOCKET} names: a filesystem path (C{/...})
    or, with a leading C{@}, a name in Linux's abstract namespace.  L{None}
    for anything else (for example systemd's C{vsock:} addresses for virtual
    machines, which this sender does not support).
    """
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        # fsencode: the environment decoded the bytes with surrogateescape.
        return b"\0" + os.fsencode(value[1:])
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """
    Seconds between two C{WATCHDOG=1} pings: half of C{$WATCHDOG_USEC}, as
    sd_watchdog_enabled(3) advises; L{None} when the unit set no watchdog,
    or set it for another process (C{$WATCHDOG_PID}), or the values are not
    numbers.
    """
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    expected_pid = environ.get("WATCHDOG_PID")
    try:
        if expected_pid and int(expected_pid) != pid:
            return None
        microseconds = int(usec)
    except ValueError:
        return None
    if microseconds <= 0:
        return None
    return microseconds / 2 / 1_000_000


class Notifier:
    """
    Sends notification datagrams to one address, never blocking: a datagram
    that cannot be sent at once (the manager's queue is full, the socket is
    gone) is dropped and logged.
    """

    def __init__(self, address: str | bytes) -> None:
        self.address = address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._warned = False

    def send(self, *assignments: str) -> bool:
        """
        Send C{assignments} (C{"READY=1"}, C{"STATUS=..."}) as one datagram.

        @return: whether it was sent.
        """
        data = "\n".join(assignments).encode("utf-8")
        try:
            self._socket.sendto(data, self.address)
        except OSError as e:
            if not self._warned:  # once: a gone manager would fill the log
                self._warned = True
                _log.warn(
                    "cannot notify systemd at {address!r}: {error}; dropped {what}",
                    address=self.address,
                    error=e,
                    what=data.decode("utf-8", "replace"),
                )
            return False
        return True

    def close(self) -> None:
        """Close the socket."""
        self._socket.close()


def _core_status(core: Any) -> str:
    """The STATUS= text for a Raft core: its role, term and known leader."""
    leader = core.leader_id
    return f"role={core.role.value} term={core.term} leader={'none' if leader is None else leader}"


class NodeNotifier:
    """
    What a node tells systemd, and when: see the module docstring.

    @param notifier: where datagrams go, or L{None} to send nothing (then
        every method does nothing).
    @param status: returns the current STATUS= text; polled every
        L{STATUS_POLL_INTERVAL}.
    @param watchdog: seconds between WATCHDOG=1 pings, or L{None}.
    """

    def __init__(
        self,
        notifier: Notifier | None,
        status: Callable[[], str],
        clock: IReactorTime | None,
        watchdog: float | None = None,
    ) -> None:
        self.notifier = notifier
        self._status = status
        self._clock = clock
        self._watchdog = watchdog
        self._loops: list[LoopingCall] = []
        self._last_status: str | None = None
        self._last_status_time = float("-inf")
        self._ready = False
        self._stopping = False

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str], core: Any, get_clock: Callable[[], IReactorTime]
    ) -> "NodeNotifier":
        """
        The notifier for the node whose Raft core is C{core}, configured by
        the environment systemd sets (C{$NOTIFY_SOCKET}, C{$WATCHDOG_USEC},
        C{$WATCHDOG_PID}); one that does nothing without C{$NOTIFY_SOCKET}.
        C{get_clock} returns the reactor the timers run on; it is called
        only when there is something to notify.
        """
        value = environ.get("NOTIFY_SOCKET", "")
        address = notify_address(value) if value else None
        if value and address is None:
            _log.warn("NOTIFY_SOCKET={value!r} is not supported; not notifying systemd", value=value)
        if address is None:
            return cls(None, lambda: "", None)
        return cls(
            Notifier(address),
            lambda: _core_status(core),
            get_clock(),
            watchdog_interval(environ, os.getpid()),
        )

    def start(self, listening: "Deferred[Any] | None" = None) -> None:
        """
        Send READY=1 (with the first STATUS=) once C{listening} has fired
        (at once if it is L{None}), then start the status and watchdog
        timers.  C{listening}'s result passes through unchanged.
        """
        if self.notifier is None:
            return
        if listening is None:
            self._send_ready()
            return

        def listened(port: object) -> object:
            self._send_ready()
            return port

        listening.addCallback(listened)

    def _send_ready(self) -> None:
        if self._stopping or self._ready or self.notifier is None:
            return
        self._ready = True
        assert self._clock is not None
        self._last_status = self._status()
        self._last_status_time = self._clock.seconds()
        self.notifier.send("READY=1", f"STATUS={self._last_status}")
        self._start_loop(self._poll_status, STATUS_POLL_INTERVAL)
        if self._watchdog is not None:
            self._start_loop(self._ping_watchdog, self._watchdog)

    def _start_loop(self, function: Callable[[], object], interval: float) -> None:
        loop = LoopingCall(function)
        assert self._clock is not None
        loop.clock = self._clock
        loop.start(interval, now=False)
        self._loops.append(loop)

    def _ping_watchdog(self) -> None:
        assert self.notifier is not None
        self.notifier.send("WATCHDOG=1")

    def _poll_status(self) -> None:
        """Send STATUS= if it changed and the last one is old enough; a
        change inside the window is sent by a later poll."""
        assert self._clock is not None
        status = self._status()
        now = self._clock.seconds()
        if status == self._last_status or now - self._last_status_time < STATUS_MIN_INTERVAL:
            return
        self._last_status = status
        self._last_status_time = now
        assert self.notifier is not None
        self.notifier.send(f"STATUS={status}")

    def stopping(self) -> None:
        """Send STOPPING=1 and stop the timers; the node is shutting down."""
        if self._stopping or self.notifier is None:
            return
        self._stopping = True
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        self.notifier.send("STOPPING=1", "STATUS=stopping")
        self.notifier.close()
