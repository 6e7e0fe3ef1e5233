"""
Tests for L{kvstore.daemon.sd_notify}: the datagrams a node sends to systemd's
notification socket (a real socket here, see L{tests.notify_socket}),
driven by a L{Clock}.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest import SkipTest

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.options import Options
from kvstore.raft.core import Role
from kvstore.daemon.sd_notify import (
    STATUS_MIN_INTERVAL,
    STATUS_POLL_INTERVAL,
    NodeNotifier,
    Notifier,
    notify_address,
    watchdog_interval,
)
from kvstore.daemon.service import build_service

from tests.notify_socket import FakeNotifySocket


def fake_core(role: Role = Role.FOLLOWER, term: int = 1, leader: int | None = None) -> SimpleNamespace:
    return SimpleNamespace(role=role, term=term, leader_id=leader)


class AddressAndWatchdogTests(SynchronousTestCase):
    """Reading C{$NOTIFY_SOCKET}, C{$WATCHDOG_USEC} and C{$WATCHDOG_PID}."""

    def test_path_and_abstract_addresses(self) -> None:
        """A path is used as is; a leading @ means the abstract namespace; others are unsupported."""
        self.assertEqual(notify_address("/run/systemd/notify"), "/run/systemd/notify")
        self.assertEqual(notify_address("@kvstore/x"), b"\0kvstore/x")
        self.assertIsNone(notify_address("vsock:2:1234"))
        self.assertIsNone(notify_address("@"))

    def test_watchdog_interval_is_half_of_watchdog_usec(self) -> None:
        """The ping interval is WatchdogSec/2, for this process or when no pid is named."""
        self.assertEqual(watchdog_interval({"WATCHDOG_USEC": "30000000"}, 7), 15.0)
        self.assertEqual(watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 7), 15.0)

    def test_watchdog_is_off_for_another_pid_or_without_usec(self) -> None:
        """No pings when the watchdog is meant for another process, unset or malformed."""
        self.assertIsNone(watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, 7))
        self.assertIsNone(watchdog_interval({}, 7))
        self.assertIsNone(watchdog_interval({"WATCHDOG_USEC": "x"}, 7))
        self.assertIsNone(watchdog_interval({"WATCHDOG_USEC": "0"}, 7))


class NodeNotifierTests(SynchronousTestCase):
    """What L{NodeNotifier} sends, and when."""

    def setUp(self) -> None:
        self.socket = FakeNotifySocket(self)
        self.clock = Clock()
        self.core = fake_core()

    def notifier(self, environ: dict[str, str] | None = None) -> NodeNotifier:
        env = {"NOTIFY_SOCKET": self.socket.path, **(environ or {})}
        return NodeNotifier.from_environment(env, self.core, lambda: self.clock)

    def test_nothing_without_notify_socket(self) -> None:
        """Without NOTIFY_SOCKET nothing is sent and no timer is scheduled."""
        notifier = NodeNotifier.from_environment({"WATCHDOG_USEC": "1000000"}, self.core, lambda: self.clock)
        notifier.start()
        self.clock.advance(10)
        notifier.stopping()
        self.assertEqual(self.socket.pending(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_ready_waits_for_listening(self) -> None:
        """READY=1, with the first STATUS=, is sent only once the listening Deferred fires."""
        listening: Deferred[object] = Deferred()
        notifier = self.notifier()
        notifier.start(listening)
        self.assertEqual(self.socket.pending(), [])
        listening.callback("port")
        self.assertEqual(self.socket.pending(), [{"READY": "1", "STATUS": "role=follower term=1 leader=none"}])
        self.assertEqual(self.successResultOf(listening), "port")
        notifier.stopping()

    def test_abstract_namespace(self) -> None:
        """An @name NOTIFY_SOCKET reaches a socket in the abstract namespace."""
        if not sys.platform.startswith("linux"):
            raise SkipTest("the abstract namespace is Linux's")
        self.socket = FakeNotifySocket(self, abstract=True)
        notifier = self.notifier()
        notifier.start()
        self.assertEqual(self.socket.pending()[0]["READY"], "1")
        notifier.stopping()

    def test_status_sent_on_change_and_rate_limited(self) -> None:
        """A role, term or leader change is sent once, no sooner than STATUS_MIN_INTERVAL after the last."""
        notifier = self.notifier()
        notifier.start()
        self.socket.pending()
        self.clock.advance(STATUS_POLL_INTERVAL)
        self.assertEqual(self.socket.pending(), [])  # nothing changed
        self.core.role, self.core.term = Role.CANDIDATE, 2
        self.clock.advance(STATUS_POLL_INTERVAL)
        self.assertEqual(self.socket.pending(), [])  # too soon after READY's STATUS
        self.clock.pump([STATUS_POLL_INTERVAL] * 4)
        self.assertEqual(self.socket.pending(), [{"STATUS": "role=candidate term=2 leader=none"}])
        self.core.role, self.core.leader_id = Role.LEADER, 0
        self.clock.advance(STATUS_POLL_INTERVAL)
        self.core.role, self.core.term, self.core.leader_id = Role.FOLLOWER, 3, 2
        self.clock.pump([STATUS_POLL_INTERVAL] * 8)
        # The short leadership fell inside the window: only the latest state is sent.
        self.assertEqual(self.socket.pending(), [{"STATUS": "role=follower term=3 leader=2"}])
        notifier.stopping()

    def test_watchdog_pings_from_the_reactor(self) -> None:
        """WATCHDOG=1 goes out every WATCHDOG_USEC/2 while the reactor runs, and stops with the node."""
        notifier = self.notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
        notifier.start()
        self.socket.pending()
        self.clock.pump([0.5] * 4)  # 2 seconds: two pings
        pings = [m for m in self.socket.pending() if m.get("WATCHDOG") == "1"]
        self.assertEqual(len(pings), 2)
        notifier.stopping()
        self.clock.advance(10)
        self.assertEqual([m for m in self.socket.pending() if "WATCHDOG" in m], [])

    def test_no_watchdog_for_another_pid(self) -> None:
        """No WATCHDOG=1 when WATCHDOG_PID names another process."""
        notifier = self.notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)})
        notifier.start()
        self.clock.pump([0.5] * 8)
        self.assertEqual([m for m in self.socket.pending() if "WATCHDOG" in m], [])
        notifier.stopping()

    def test_stopping_is_sent_once(self) -> None:
        """STOPPING=1 is sent once, and stops the timers."""
        notifier = self.notifier()
        notifier.start()
        self.socket.pending()
        notifier.stopping()
        notifier.stopping()
        self.assertEqual(self.socket.pending(), [{"STOPPING": "1", "STATUS": "stopping"}])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unreachable_socket_is_dropped_not_raised(self) -> None:
        """A datagram that cannot be delivered is dropped: notification never stops the node."""
        notifier = Notifier(str(Path(self.socket.path).with_name("missing")))
        self.assertFalse(notifier.send("READY=1"))
        notifier.close()


class ServiceNotifiesTests(SynchronousTestCase):
    """The node service sends READY=1 when it starts and STOPPING=1 when it stops."""

    def test_service_ready_then_stopping(self) -> None:
        """Starting the service sends READY=1; stopping it sends STOPPING=1 before the node stops."""
        socket_ = FakeNotifySocket(self)
        self.patch(os, "environ", {**os.environ, "NOTIFY_SOCKET": socket_.path})
        tmp = Path(self.mktemp())
        options = Options()
        options.parseOptions(["--data-dir", str(tmp / "data"), "--port", "24998"])
        reactor = MemoryReactorClock()
        service = build_service(options.config, reactor)
        service.clock = reactor
        service.startService()
        (ready,) = socket_.pending()
        self.assertEqual(ready["READY"], "1")
        self.assertEqual(ready["STATUS"], "role=leader term=1 leader=0")  # a one-node cluster elects itself at once
        self.successResultOf(service.stopService())
        self.assertEqual(socket_.pending(), [{"STOPPING": "1", "STATUS": "stopping"}])
