# -*- test-case-name: tests.test_review_cli -*-
"""
Bugs found by reviewing issue 14's client side (C{kvstore-cli}, the asyncio
client, L{LineConnection}): each test failed on the code as merged.
"""

from __future__ import annotations

import asyncio
import threading

from twisted.trial.unittest import SynchronousTestCase

from kvstore.client.asyncio import AsyncClient
from tests.client_fakes import FakeNode, store_script


class AsyncClientRedirectTests(SynchronousTestCase):
    """A connection the client leaves for the leader is closed once its calls are answered."""

    def test_old_connection_closed_after_its_last_reply(self) -> None:
        """After a redirect while another call waits on the follower's connection, that connection is closed
        once the waiting call has its reply (it used to stay open for good)."""
        leader = FakeNode(self, store_script())
        release = threading.Event()
        self.addCleanup(release.set)

        def follower_script(line: str) -> str:
            if line.startswith("GET"):
                release.wait(10)
                return "value of a: 1"
            return f"Error: Not leader. Current leader is Node 1 at {leader.address}"

        follower = FakeNode(self, follower_script)
        kv = AsyncClient([follower.address], timeout=5, backoff=(0.01, 0.05))
        self.addCleanup(kv.close)

        async def body() -> tuple[str, bool]:
            loop = asyncio.get_running_loop()
            put = asyncio.ensure_future(kv.put("k", "v"))
            get = asyncio.ensure_future(kv.get("a"))
            await put
            release.set()
            value = await get
            deadline = loop.time() + 5
            while loop.time() < deadline:
                if follower.closed_connections.acquire(blocking=False):
                    return value, True
                await asyncio.sleep(0.01)
            return value, False

        value, closed = asyncio.run(body())
        self.assertEqual(value, "1")
        self.assertEqual(leader.lines(), ["PUT k v"])
        self.assertTrue(closed, "the follower's connection was left open")
