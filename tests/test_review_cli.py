# -*- test-case-name: tests.test_review_cli -*-
"""
Bugs found by reviewing issue 14's client side (C{kvstore-cli}, the asyncio
client, L{LineConnection}): each test failed on the code as merged.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kvstore.client.asyncio import AsyncClient
from kvstore.client.lines import LineConnection
from kvstore.tools import cli
from tests.client_fakes import FakeNode, store_script
from tests.test_tools_cli import FakeClient


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
        kv = AsyncClient([follower.address], timeout=5, backoff=(0.01, 0.05), exactly_once=False)
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
                await asyncio.sleep(0.01)  # poll, bounded by the deadline
            return value, False

        value, closed = asyncio.run(body())
        self.assertEqual(value, "1")
        self.assertEqual(leader.lines(), ["PUT k v"])
        self.assertTrue(closed, "the follower's connection was left open")


class LineConnectionLateReplyTests(SynchronousTestCase):
    """A reply that arrives after its request timed out is not taken for the next request's."""

    def test_request_after_timeout_gets_its_own_reply(self) -> None:
        """request() after a timed-out request skips the late reply and returns its own."""
        release = threading.Event()
        self.addCleanup(release.set)

        def script(line: str) -> str:
            if line == "GET slow":
                release.wait(10)
                return "value of slow: late"
            return "value of fast: 2"

        node = FakeNode(self, script)
        connection = LineConnection(node.address, timeout=0.2)
        self.addCleanup(connection.close)
        self.assertRaises(TimeoutError, connection.request, "GET slow")
        release.set()
        connection.timeout = 5
        connection._sock.settimeout(5)
        self.assertEqual(connection.request("GET fast"), "value of fast: 2")

    def test_pipeline_after_timeout_gets_its_own_replies(self) -> None:
        """pipeline() after a timed-out request skips the late reply and returns its requests' own."""
        release = threading.Event()
        self.addCleanup(release.set)

        def script(line: str) -> str:
            if line == "GET slow":
                release.wait(10)
                return "value of slow: late"
            return f"value of {line.split()[1]}: 2"

        node = FakeNode(self, script)
        connection = LineConnection(node.address, timeout=0.2)
        self.addCleanup(connection.close)
        self.assertRaises(TimeoutError, connection.request, "GET slow")
        release.set()
        connection.timeout = 5
        connection._sock.settimeout(5)
        self.assertEqual(connection.pipeline(["GET a", "GET b"]), ["value of a: 2", "value of b: 2"])


class CliInterruptTests(SynchronousTestCase):
    """Ctrl-C during a one-shot command ends it like any other failure: status 2, and JSON with --json."""

    def setUp(self) -> None:
        self.client = FakeClient()
        client = self.client

        class Context:
            def __init__(self, nodes: list[str], timeout: float) -> None:
                pass

            def __enter__(self) -> FakeClient:
                return client

            def __exit__(self, *exc: object) -> None:
                client.close()

        self.patch(cli, "Client", Context)
        self.out, self.err = io.StringIO(), io.StringIO()
        self.patch(cli.sys, "stdout", self.out)
        self.patch(cli.sys, "stderr", self.err)

    def test_one_shot_interrupted(self) -> None:
        """Ctrl-C during `kvstore-cli --json put k v` prints an "interrupted" object and exits 2, no traceback."""
        self.client.fail = KeyboardInterrupt()
        self.assertEqual(cli.main(["--json", "put", "k", "v"]), 2)
        answer: dict[str, Any] = json.loads(self.out.getvalue())
        self.assertEqual((answer["ok"], answer["error"]), (False, "interrupted"))
        self.assertTrue(self.client.closed)

    def test_one_shot_interrupted_text(self) -> None:
        """Without --json, Ctrl-C during a one-shot command says so on standard error and exits 2."""
        self.client.fail = KeyboardInterrupt()
        self.assertEqual(cli.main(["delete", "k"]), 2)
        self.assertIn("Interrupted", self.err.getvalue())
        self.assertEqual(self.out.getvalue(), "")
