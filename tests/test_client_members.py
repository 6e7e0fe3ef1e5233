# -*- test-case-name: tests.test_client_members -*-
"""
C{Client.members()} and C{DeferredClient.members()}: the C{MEMBERS} reply
(issue 13's exact form) as a list of L{Member}s.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.client import Client, ProtocolError
from kvstore.client.members import Member, parse_members
from tests.client_fakes import FakeNode

REPLY = "0@127.0.0.1:5000/voter 1@127.0.0.1:5001/voter 3@127.0.0.1:5003/learner"


class ParseMembersTests(SynchronousTestCase):
    """The reply line, parsed."""

    def test_issue_example(self) -> None:
        """The issue's example reply gives each id, address and role."""
        self.assertEqual(
            parse_members(REPLY),
            [Member(0, "127.0.0.1:5000", "voter"), Member(1, "127.0.0.1:5001", "voter"),
             Member(3, "127.0.0.1:5003", "learner")],
        )

    def test_bad_token_refused(self) -> None:
        """A token that is not a member is a protocol error, not a wrong answer."""
        for line in ["0 1 2", "0@h:1/boss", "x@h:1/voter", "01@h:1/voter"]:
            with self.subTest(line=line):
                self.assertRaises(ProtocolError, parse_members, line)


class ClientMembersTests(SynchronousTestCase):
    """Client.members() against a scripted node."""

    def test_blocking(self) -> None:
        """The blocking client sends MEMBERS and returns the parsed members."""
        node = FakeNode(self, lambda line: REPLY)
        with Client([node.address], timeout=5) as kv:
            self.assertEqual([m.id for m in kv.members()], [0, 1, 3])
        self.assertEqual(node.lines(), ["MEMBERS"])
