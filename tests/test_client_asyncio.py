# -*- test-case-name: tests.test_client_asyncio -*-
"""
The asyncio client (L{kvstore.client.asyncio.AsyncClient}) against scripted
fake nodes (L{tests.client_fakes}): the same rules as the blocking client
(redirects, what is retried, timeouts, errors), plus what is its own:
pipelining of concurrent calls, the per-connection deadline watchdog that
keeps replies in step after a timeout or a cancelled call, and sharing one
connection attempt between calls.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Awaitable, Callable

from twisted.trial.unittest import SynchronousTestCase

from kvstore.client import (
    BadRequest,
    ClientError,
    ConnectionFailed,
    KeyNotFound,
    NoLeader,
    OutcomeUnknown,
    ProtocolError,
    Unavailable,
)
from kvstore.client.asyncio import AsyncClient
from tests.client_fakes import CLOSE, SILENT, DeadlineSkipper, FakeNode, store_script, unused_address


def run(body: Callable[[], Awaitable[Any]]) -> Any:
    """Run C{body()} on a fresh event loop (each test owns its loop)."""
    return asyncio.run(body())  # type: ignore[arg-type]


class AsyncClientTestCase(SynchronousTestCase):
    def client(self, *nodes: str, timeout: float = 5.0) -> AsyncClient:
        # Plain writes here; tests/test_client_asyncio_sessions.py has the exactly-once ones.
        client = AsyncClient(list(nodes), timeout=timeout, backoff=(0.01, 0.05), exactly_once=False)
        self.addCleanup(client.close)
        return client


class LeaderTests(AsyncClientTestCase):
    """The client finds the leader from any listed node."""

    def test_follows_not_leader(self) -> None:
        """A write refused by a follower is applied once, on the leader it names, and the client stays there."""
        leader = FakeNode(self, store_script())
        follower = FakeNode(self, lambda line: f"Error: Not leader. Current leader is Node 1 at {leader.address}")
        kv = self.client(follower.address)

        async def body() -> str:
            await kv.put("k", "v 1")
            return await kv.get("k")

        self.assertEqual(run(body), "v 1")
        self.assertEqual(follower.lines(), ["PUT k v 1"])
        self.assertEqual(leader.lines(), ["PUT k v 1", "GET k"])
        self.assertEqual(kv.node, leader.address)

    def test_skips_a_node_that_is_down(self) -> None:
        """A listed node that refuses connections is skipped."""
        leader = FakeNode(self, store_script())
        kv = self.client(unused_address(), leader.address)
        run(lambda: kv.put("k", "v"))
        self.assertEqual(leader.lines(), ["PUT k v"])

    def test_no_node_reachable(self) -> None:
        """With every node down, ConnectionFailed is raised after about the timeout."""
        kv = self.client(unused_address(), unused_address(), timeout=0.5)
        start = time.monotonic()
        self.assertRaises(ConnectionFailed, run, lambda: kv.put("k", "v"))
        self.assertLess(time.monotonic() - start, 3.0)

    def test_no_leader_elected(self) -> None:
        """While no leader is elected the client retries with backoff, then raises NoLeader."""
        node = FakeNode(self, lambda line: "Error: Not leader. No leader elected yet")
        # The deadline passes at the third backoff pause, not after 0.5 s of real time: on a loaded machine
        # 0.5 s may pass before the node's first reply (the call then fails for want of any reply).
        clock = DeadlineSkipper(self, pauses=3)
        kv = self.client(node.address, timeout=30)
        self.assertRaises(NoLeader, clock.run, lambda: kv.put("k", "v"))
        self.assertGreater(len(node.lines()), 1)

    def test_unavailable_read_retried(self) -> None:
        """A read refused as Unavailable is retried and succeeds when the node can serve it."""
        answers = iter(["Error: Unavailable: the read index was not confirmed in time", "value of k: v"])
        node = FakeNode(self, lambda line: next(answers))
        self.assertEqual(run(lambda: self.client(node.address).get("k")), "v")


class OutcomeTests(AsyncClientTestCase):
    """A write that may have been applied is never retried; what was not applied is."""

    def test_outcome_unknown_reply(self) -> None:
        """Error: Outcome unknown raises OutcomeUnknown, and the write was sent once."""
        node = FakeNode(self, lambda line: "Error: Outcome unknown: leadership lost")
        self.assertRaises(OutcomeUnknown, run, lambda: self.client(node.address).put("k", "v"))
        self.assertEqual(node.lines(), ["PUT k v"])

    def test_connection_lost_after_write(self) -> None:
        """A connection lost after a PUT was sent raises OutcomeUnknown without retrying."""
        node = FakeNode(self, lambda line: CLOSE)
        self.assertRaises(OutcomeUnknown, run, lambda: self.client(node.address).put("k", "v"))
        self.assertEqual(node.lines(), ["PUT k v"])

    def test_read_retried_after_lost_connection(self) -> None:
        """A GET whose connection is lost is sent again, on a new connection, and answered."""
        answers = iter([CLOSE, "value of k: v"])
        node = FakeNode(self, lambda line: next(answers))
        self.assertEqual(run(lambda: self.client(node.address).get("k")), "v")
        self.assertEqual(node.lines(), ["GET k", "GET k"])
        self.assertEqual(node.connections, 2)

    def test_write_timeout(self) -> None:
        """A write with no reply by the deadline raises OutcomeUnknown within about the timeout."""
        node = FakeNode(self, lambda line: "PONG" if line == "PING" else SILENT)
        kv = self.client(node.address)

        async def body() -> float:
            # Connected first, with the default margin: the 0.3 s deadline is for the reply alone.  Had the
            # connection to take longer on a loaded machine, the write would never be sent (ConnectionFailed).
            await kv.ping()
            kv.timeout = 0.3
            start = time.monotonic()
            try:
                await kv.put("k", "v")
            except OutcomeUnknown:
                return time.monotonic() - start
            raise AssertionError("the silent node answered")

        self.assertLess(run(body), 3.0)
        self.assertEqual(node.lines(), ["PING", "PUT k v"])

    def test_silent_node_is_left_after_a_timeout(self) -> None:
        """After a call times out on a node that accepts requests but never answers (paused, cut off), the
        next call goes to the next listed node."""
        paused = FakeNode(self, lambda line: "PONG" if line == "PING" else SILENT)
        leader = FakeNode(self, store_script())
        kv = self.client(paused.address, leader.address)

        async def body() -> str:
            # Connected first, with the default margin: the 0.3 s deadline is for the reply alone (a slow
            # connection on a loaded machine would be a connection failure, and the write never sent).
            await kv.ping()
            kv.timeout = 0.3
            try:
                await kv.put("k", "first")
            except OutcomeUnknown:
                pass
            else:
                raise AssertionError("the silent node answered")
            # The leader's replies must not race a 0.3 s deadline on a loaded machine.
            kv.timeout = 5.0
            await kv.put("k", "second")
            return await kv.get("k")

        self.assertEqual(run(body), "second")
        self.assertEqual(paused.lines(), ["PING", "PUT k first"])
        self.assertEqual(kv.node, leader.address)

    def test_read_timeout(self) -> None:
        """A read with no reply by the deadline raises Unavailable."""
        node = FakeNode(self, lambda line: SILENT)
        self.assertRaises(Unavailable, run, lambda: self.client(node.address, timeout=0.3).get("k"))

    def test_connection_closed_while_idle(self) -> None:
        """A write after the node closed the idle connection goes on a new connection and succeeds."""
        data: dict[str, str] = {}
        store = store_script(data)
        node = FakeNode(self, lambda line: CLOSE if line == "CLOSE-ME" else store(line))
        kv = self.client(node.address)

        async def body() -> None:
            await kv.ping()
            assert kv._protocol is not None
            kv._protocol._transport.write(b"CLOSE-ME\n")  # type: ignore[union-attr]  # the node hangs up
            # Once the loop has seen the close (as an application's would have by its next call):
            deadline = time.monotonic() + 5
            while kv.node is not None and time.monotonic() < deadline:
                await asyncio.sleep(0.01)  # poll, bounded by the deadline
            await kv.put("k", "v")

        run(body)
        self.assertEqual(data, {"k": "v"})
        self.assertEqual(node.connections, 2)


class InStepTests(AsyncClientTestCase):
    """After a timeout or a cancelled call, later calls still get their own replies."""

    def test_late_reply_is_dropped(self) -> None:
        """A reply that comes after its call timed out is dropped; the next call gets its own, on a new connection."""
        release = threading.Event()

        def script(line: str) -> str:
            if line == "PING":
                return "PONG"
            if line == "GET slow":
                release.wait(10)
                return "value of slow: late"
            return "value of k: fresh"

        node = FakeNode(self, script)
        kv = self.client(node.address)

        async def body() -> str:
            # Connected first, with the default margin: the 0.3 s deadline is for the slow reply alone (a
            # slow connection on a loaded machine would time out instead, and the read never be sent).
            await kv.ping()
            kv.timeout = 0.3
            try:
                await kv.get("slow")
            except Unavailable:
                pass
            else:
                raise AssertionError("the slow read did not time out")
            release.set()
            # A new connection and its reply must not race a 0.3 s deadline on a loaded machine.
            kv.timeout = 5.0
            return await kv.get("k")

        self.assertEqual(run(body), "fresh")
        self.assertEqual(node.connections, 2)

    def test_cancelled_call_keeps_replies_in_step(self) -> None:
        """Cancelling a call in flight leaves the connection usable and in step."""
        release = threading.Event()

        def script(line: str) -> str:
            if line == "GET first":
                release.wait(10)
            return f"value of {line.split()[1]}: {line.split()[1]}-value"

        node = FakeNode(self, script)
        kv = self.client(node.address)

        async def body() -> str:
            first = asyncio.ensure_future(kv.get("first"))
            deadline = time.monotonic() + 5
            while not node.lines():
                assert time.monotonic() < deadline, "the first request never reached the node"
                await asyncio.sleep(0.01)  # poll, bounded by the deadline
            first.cancel()
            release.set()
            return await kv.get("second")

        self.assertEqual(run(body), "second-value")


class PipeliningTests(AsyncClientTestCase):
    """Concurrent calls share one connection and are pipelined on it."""

    def test_concurrent_calls_pipelined(self) -> None:
        """Eight concurrent calls are all in flight at once on one connection, each with its own reply."""
        node = FakeNode(self, lambda line: f"value of {line.split()[1]}: {line.split()[1]}-value", batch=8)
        kv = self.client(node.address, timeout=10)

        async def body() -> list[str]:
            return list(await asyncio.gather(*(kv.get(f"k{i}") for i in range(8))))

        self.assertEqual(run(body), [f"k{i}-value" for i in range(8)])
        self.assertEqual(node.connections, 1)


class ErrorTests(AsyncClientTestCase):
    """Replies map onto the library's exceptions."""

    def test_key_not_found(self) -> None:
        """GET and DELETE of a missing key raise KeyNotFound."""
        kv = self.client(FakeNode(self, store_script()).address)
        self.assertRaises(KeyNotFound, run, lambda: kv.get("missing"))
        # A second asyncio.run: the client reconnects on the new loop.
        self.assertRaises(KeyNotFound, run, lambda: kv.delete("missing"))

    def test_bad_request_not_sent(self) -> None:
        """A key with a space is refused locally; nothing reaches the node."""
        node = FakeNode(self, store_script())
        self.assertRaises(BadRequest, run, lambda: self.client(node.address).put("a b", "v"))
        self.assertEqual(node.lines(), [])

    def test_reply_out_of_step(self) -> None:
        """A reply that does not fit the request raises ProtocolError."""
        node = FakeNode(self, lambda line: "PONG")
        self.assertRaises(ProtocolError, run, lambda: self.client(node.address).get("k"))

    def test_status_raw_and_stale(self) -> None:
        """status() returns a dict, get(stale=True) sends STALE, raw_command returns the reply line."""
        replies = {"STATUS": "node=1 role=leader", "GET k STALE": "value of k: old", "INCR n 2": "value of n: 2"}
        node = FakeNode(self, replies.__getitem__)
        kv = self.client(node.address)

        async def body() -> tuple[object, ...]:
            return await kv.status(), await kv.get("k", stale=True), await kv.raw_command("INCR n 2")

        self.assertEqual(run(body), ({"node": "1", "role": "leader"}, "old", "value of n: 2"))

    def test_closed_client(self) -> None:
        """After close() (or leaving the async with block) calls raise ClientError."""
        node = FakeNode(self, store_script())

        async def body() -> None:
            async with AsyncClient([node.address], exactly_once=False) as kv:
                await kv.ping()
            await kv.ping()

        self.assertRaises(ClientError, run, body)


class _RecordingTransport:
    """Records what a protocol writes, in the order of the write calls."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        pass


class WriteCoalescingTests(SynchronousTestCase):
    """Requests made in one turn of the event loop leave in at most two writes."""

    def test_first_request_at_once_the_rest_at_the_end_of_the_turn(self) -> None:
        """The first request of a turn is written at once (no added latency for one caller); those made
        after it in the same turn go together in one write when the turn ends (one system call, not N)."""
        from kvstore.client.asyncio import _LineProtocol

        async def body() -> list[list[bytes]]:
            loop = asyncio.get_running_loop()
            proto = _LineProtocol("h:1", loop)
            transport = _RecordingTransport()
            proto.connection_made(transport)  # type: ignore[arg-type]
            deadline = loop.time() + 60
            futures = [proto.request(f"GET k{i}\n".encode(), deadline) for i in range(4)]
            seen = [list(transport.writes)]
            await asyncio.sleep(0)
            seen.append(list(transport.writes))
            proto.data_received(b"value of k0: a\nvalue of k1: b\nvalue of k2: c\nvalue of k3: d\n")
            self.assertEqual([f.result() for f in futures], ["value of k0: a", "value of k1: b", "value of k2: c",
                                                            "value of k3: d"])
            return seen

        during, after = run(body)
        self.assertEqual(during, [b"GET k0\n"])
        self.assertEqual(after, [b"GET k0\n", b"GET k1\nGET k2\nGET k3\n"])
