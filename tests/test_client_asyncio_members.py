# -*- test-case-name: tests.test_client_asyncio_members -*-
"""
C{AsyncClient.members()}: the asyncio client has the C{members()} of
C{Client} and C{DeferredClient} (docs/client.md: "all three with the same
methods"; issue 14 names C{.members()} in the client's surface).
"""

from __future__ import annotations

import asyncio

from twisted.trial.unittest import SynchronousTestCase

from kvstore.client import ProtocolError
from kvstore.client.asyncio import AsyncClient
from kvstore.client.members import Member
from tests.client_fakes import FakeNode

REPLY = "0@127.0.0.1:5000/voter 1@127.0.0.1:5001/voter 3@127.0.0.1:5003/learner"


class AsyncMembersTests(SynchronousTestCase):
    """AsyncClient.members() against a scripted node."""

    def members(self, reply: str) -> list[Member]:
        node = FakeNode(self, lambda line: reply)

        async def body() -> list[Member]:
            async with AsyncClient([node.address], timeout=5) as kv:
                return await kv.members()

        result = asyncio.run(body())
        self.assertEqual(node.lines(), ["MEMBERS"])
        return result

    def test_members_parsed(self) -> None:
        """members() sends MEMBERS and returns the members parsed, in the reply's order."""
        self.assertEqual(
            self.members(REPLY),
            [Member(0, "127.0.0.1:5000", "voter"), Member(1, "127.0.0.1:5001", "voter"),
             Member(3, "127.0.0.1:5003", "learner")],
        )

    def test_not_a_member_list(self) -> None:
        """A reply that is not a member list raises ProtocolError, as with the other clients."""
        self.assertRaises(ProtocolError, self.members, "PONG")
