# -*- test-case-name: tests.test_client_blocking -*-
"""
The blocking client (L{kvstore.client.Client}) against scripted fake nodes
(L{tests.client_fakes}): leader discovery, redirects, what is retried and
what is not, timeouts, errors, and pipelining from several threads.
"""

from __future__ import annotations

import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from kvstore.client import (
    BadRequest,
    Client,
    ClientError,
    ConnectionFailed,
    KeyNotFound,
    NoLeader,
    OutcomeUnknown,
    ProtocolError,
    Unavailable,
)
from tests.client_fakes import CLOSE, SILENT, DeadlineSkipper, FakeNode, store_script, unused_address


class ClientTestCase(SynchronousTestCase):
    def client(self, *nodes: str, timeout: float = 5.0) -> Client:
        # These tests are of plain writes; tests/test_client_sessions.py has the exactly-once ones.
        client = Client(list(nodes), timeout=timeout, backoff=(0.01, 0.05), exactly_once=False)
        self.addCleanup(client.close)
        return client

    def leader_and_follower(self) -> tuple[FakeNode, FakeNode]:
        leader = FakeNode(self, store_script())
        follower = FakeNode(self, lambda line: f"Error: Not leader. Current leader is Node 1 at {leader.address}")
        return leader, follower


class LeaderDiscoveryTests(ClientTestCase):
    """The client finds the leader from any listed node."""

    def test_follows_not_leader(self) -> None:
        """A write sent to a follower is refused there and applied once, on the leader it names."""
        leader, follower = self.leader_and_follower()
        kv = self.client(follower.address)
        kv.put("k", "v 1")
        self.assertEqual(follower.lines(), ["PUT k v 1"])
        self.assertEqual(leader.lines(), ["PUT k v 1"])
        self.assertEqual(kv.node, leader.address)
        self.assertEqual(kv.get("k"), "v 1")

    def test_skips_a_node_that_is_down(self) -> None:
        """A listed node that refuses connections is skipped."""
        leader = FakeNode(self, store_script())
        kv = self.client(unused_address(), leader.address)
        kv.put("k", "v")
        self.assertEqual(leader.lines(), ["PUT k v"])

    def test_no_node_reachable(self) -> None:
        """With every node down, ConnectionFailed is raised after about the timeout."""
        kv = self.client(unused_address(), unused_address(), timeout=0.5)
        start = time.monotonic()
        self.assertRaises(ConnectionFailed, kv.put, "k", "v")
        self.assertLess(time.monotonic() - start, 3.0)

    def test_no_leader_elected(self) -> None:
        """While no leader is elected the client retries with backoff, then raises NoLeader."""
        node = FakeNode(self, lambda line: "Error: Not leader. No leader elected yet")
        # The deadline passes at the third backoff pause, not after 0.5 s of real time: on a loaded machine
        # 0.5 s may pass before the node's first reply (the call then fails for want of any reply).
        DeadlineSkipper(self, pauses=3).install_blocking()
        kv = self.client(node.address, timeout=30)
        self.assertRaises(NoLeader, kv.put, "k", "v")
        self.assertGreater(len(node.lines()), 1)

    def test_unavailable_read_retried(self) -> None:
        """A read refused as Unavailable is retried and succeeds when the node can serve it."""
        answers = iter(["Error: Unavailable: the read index was not confirmed in time", "value of k: v"])
        node = FakeNode(self, lambda line: next(answers))
        self.assertEqual(self.client(node.address).get("k"), "v")

    def test_always_unavailable(self) -> None:
        """A read that stays Unavailable raises Unavailable with the server's reason."""
        node = FakeNode(self, lambda line: "Error: Unavailable: no leader known")
        # The deadline passes at the second backoff pause, not after 0.3 s of real time: without a reply
        # by then the error would not carry the server's reason.
        DeadlineSkipper(self, pauses=2).install_blocking()
        with self.assertRaises(Unavailable) as caught:
            self.client(node.address, timeout=30).get("k")
        self.assertIn("no leader known", str(caught.exception))


class UnknownOutcomeTests(ClientTestCase):
    """A write that may have been applied is never retried without sessions."""

    def test_outcome_unknown_reply(self) -> None:
        """Error: Outcome unknown raises OutcomeUnknown and the write is sent once."""
        node = FakeNode(self, lambda line: "Error: Outcome unknown: leadership lost "
                                           "(the write may or may not have been applied)")
        with self.assertRaises(OutcomeUnknown) as caught:
            self.client(node.address).put("k", "v")
        self.assertEqual(node.lines(), ["PUT k v"])
        self.assertIn("leadership lost", str(caught.exception))
        self.assertIn("may or may not have been applied", str(caught.exception))

    def test_connection_lost_after_write(self) -> None:
        """A connection lost after a PUT or DELETE was sent raises OutcomeUnknown without retrying."""
        for call in [lambda kv: kv.put("k", "v"), lambda kv: kv.delete("k")]:
            node = FakeNode(self, lambda line: CLOSE)
            self.assertRaises(OutcomeUnknown, call, self.client(node.address))
            self.assertEqual(len(node.lines()), 1)

    def test_write_timeout(self) -> None:
        """A write with no reply by the deadline raises OutcomeUnknown."""
        node = FakeNode(self, lambda line: SILENT)
        self.assertRaises(OutcomeUnknown, self.client(node.address, timeout=0.3).put, "k", "v")
        self.assertEqual(node.lines(), ["PUT k v"])

    def test_internal_error_on_write(self) -> None:
        """Error: Internal error on a write is an unknown outcome."""
        node = FakeNode(self, lambda line: "Error: Internal error")
        self.assertRaises(OutcomeUnknown, self.client(node.address).delete, "k")


class SafeRetryTests(ClientTestCase):
    """What is known not to have been applied is retried."""

    def test_read_retried_after_lost_connection(self) -> None:
        """A GET whose connection is lost is sent again and answered."""
        answers = iter([CLOSE, "value of k: v"])
        node = FakeNode(self, lambda line: next(answers))
        self.assertEqual(self.client(node.address).get("k"), "v")
        self.assertEqual(node.lines(), ["GET k", "GET k"])

    def test_read_timeout(self) -> None:
        """A read with no reply by the deadline raises Unavailable."""
        node = FakeNode(self, lambda line: SILENT)
        self.assertRaises(Unavailable, self.client(node.address, timeout=0.3).get, "k")

    def test_connection_closed_while_idle(self) -> None:
        """A write on a connection the server closed while idle goes on a new connection, and succeeds."""
        data: dict[str, str] = {}
        store = store_script(data)
        node = FakeNode(self, lambda line: CLOSE if line == "CLOSE-ME" else store(line))
        kv = self.client(node.address)
        kv.ping()
        kv._connection._sock.sendall(b"CLOSE-ME\n")  # the server hangs up while the client is idle
        self.assertTrue(node.closed_connections.acquire(timeout=5))
        kv.put("k", "v")
        self.assertEqual(data, {"k": "v"})
        self.assertEqual(node.connections, 2)


class ErrorTests(ClientTestCase):
    """Replies map onto the exception hierarchy."""

    def test_key_not_found(self) -> None:
        """GET and DELETE of a missing key raise KeyNotFound (a KeyError)."""
        kv = self.client(FakeNode(self, store_script()).address)
        self.assertRaises(KeyNotFound, kv.get, "missing")
        self.assertRaises(KeyNotFound, kv.delete, "missing")
        self.assertRaises(KeyError, kv.get, "missing", stale=True)

    def test_bad_request_not_sent(self) -> None:
        """A key with a space is refused locally; nothing reaches the server."""
        node = FakeNode(self, store_script())
        kv = self.client(node.address)
        self.assertRaises(BadRequest, kv.put, "a b", "v")
        self.assertRaises(BadRequest, kv.put, "k", "v\nDELETE x")
        self.assertEqual(node.lines(), [])

    def test_bad_request_from_server(self) -> None:
        """An Error: reply about the request raises BadRequest with the server's text."""
        node = FakeNode(self, lambda line: "Error: Key too long (maximum 4 bytes)")
        with self.assertRaises(BadRequest) as caught:
            self.client(node.address).put("kkkkk", "v")
        self.assertIn("Key too long", str(caught.exception))

    def test_reply_out_of_step(self) -> None:
        """A reply that does not fit the request raises ProtocolError."""
        node = FakeNode(self, lambda line: "PONG")
        self.assertRaises(ProtocolError, self.client(node.address).get, "k")

    def test_status_and_stale_get(self) -> None:
        """status() returns a dict; get(stale=True) sends GET ... STALE."""
        node = FakeNode(self, lambda line: "node=1 role=leader" if line == "STATUS" else "value of k: old")
        kv = self.client(node.address)
        self.assertEqual(kv.status(), {"node": "1", "role": "leader"})
        self.assertEqual(kv.get("k", stale=True), "old")
        self.assertEqual(node.lines(), ["STATUS", "GET k STALE"])

    def test_closed_client(self) -> None:
        """After close() (or leaving the with block) calls raise ClientError."""
        node = FakeNode(self, store_script())
        with Client([node.address]) as kv:
            kv.ping()
        self.assertRaises(ClientError, kv.ping)


class PipeliningTests(ClientTestCase):
    """Threads sharing a client pipeline their requests on one connection."""

    def test_concurrent_calls_share_one_connection(self) -> None:
        """Eight threads' requests are all in flight at once on one connection, and each gets its own reply."""
        threads = 8
        node = FakeNode(self, lambda line: f"value of {line.split()[1]}: {line.split()[1]}-value", batch=threads)
        kv = self.client(node.address, timeout=10)
        results: dict[int, str] = {}
        errors: list[BaseException] = []
        start = threading.Barrier(threads)

        def work(i: int) -> None:
            try:
                start.wait(5)
                results[i] = kv.get(f"k{i}")
            except BaseException as e:
                errors.append(e)

        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(15)
        self.assertEqual(errors, [])
        self.assertEqual(results, {i: f"k{i}-value" for i in range(threads)})
        self.assertEqual(node.connections, 1)
