# -*- test-case-name: tests.test_admin_requests_incr_cas -*-
"""
INCR, CAS, SESSION and session-tagged writes go through the counting client
protocol of the admin endpoint (L{kvstore.admin.requests}) like the seed's
commands: answered as without counting, and counted by command.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from kvstore.admin.requests import CountingClientFactory, RequestCounts
from kvstore.errors import KeyNotFound, OutcomeUnknown


class _Service:
    """A node answering INCR, CAS and SESSION from a dict."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def put(self, key: str, value: str, session: object = None) -> Deferred[None]:
        self.data[key] = value
        return succeed(None)

    def delete(self, key: str, session: object = None) -> Deferred[None]:
        return fail(KeyNotFound(key))

    def get(self, key: str, stale: bool) -> Deferred[str]:
        return succeed(self.data[key]) if key in self.data else fail(KeyNotFound(key))

    def incr(self, key: str, delta: int, session: object = None) -> Deferred[int]:
        if key == "lost":
            return fail(OutcomeUnknown("leadership changed"))
        value = int(self.data.get(key, "0")) + delta
        self.data[key] = str(value)
        return succeed(value)

    def cas(self, key: str, expected: str, new: str, session: object = None) -> Deferred[None]:
        self.data[key] = new
        return succeed(None)

    def open_session(self) -> Deferred[int]:
        return succeed(7)

    def status(self) -> dict[str, object]:
        return {"node": 0}


class NewCommandsCountedTests(SynchronousTestCase):
    """The commands added after the admin endpoint are served and counted."""

    def test_incr_cas_session_tagged(self) -> None:
        """Each new command gets its normal reply and a count under its own
        name; a tagged write counts as its command, and an INCR whose
        outcome is unknown is a failed proposal."""
        counts = RequestCounts()
        proto = CountingClientFactory(_Service(), counts).buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(b"INCR n 5\nCAS n 5 6\nSESSION\n@7:1 INCR n\nINCR lost\n")
        self.assertEqual(
            transport.value().decode().splitlines(),
            [
                "value of n: 5",
                "n updated successfully.",
                "session 7",
                "value of n: 7",
                "Error: Outcome unknown: leadership changed (the write may or may not have been applied)",
            ],
        )
        requests = counts.requests()
        self.assertEqual(requests[("incr", "ok")], 2)
        self.assertEqual(requests[("cas", "ok")], 1)
        self.assertEqual(requests[("session", "ok")], 1)
        self.assertEqual(requests[("incr", "outcome_unknown")], 1)
        self.assertEqual(counts.failed_proposals, 1)


class _MembershipService(_Service):
    """A leader that manages membership."""

    def members_text(self) -> str:
        return "0@127.0.0.1:5000/voter"

    def add_node(self, node_id: int, address: str) -> Deferred[None]:
        return succeed(None)

    def remove_node(self, node_id: int) -> Deferred[None]:
        return succeed(None)

    def transfer_leadership(self, node_id: int) -> Deferred[None]:
        return succeed(None)


class MembershipCountedTests(SynchronousTestCase):
    """The membership admin commands work with the admin endpoint on."""

    def test_admin_commands(self) -> None:
        """MEMBERS, ADDNODE, REMOVENODE and TRANSFER are answered as without
        counting (not refused as unmanaged) and counted by name."""
        counts = RequestCounts()
        proto = CountingClientFactory(_MembershipService(), counts).buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(b"MEMBERS\nADDNODE 3 127.0.0.1:5003\nREMOVENODE 3\nTRANSFER 0\n")
        self.assertEqual(
            transport.value().decode().splitlines(),
            [
                "0@127.0.0.1:5000/voter",
                "Node 3 added successfully.",
                "Node 3 removed successfully.",
                "Leadership transferred to Node 0.",
            ],
        )
        requests = counts.requests()
        self.assertEqual(requests[("addnode", "ok")], 1)
        self.assertEqual(requests[("removenode", "ok")], 1)
        self.assertEqual(requests[("transfer", "ok")], 1)
