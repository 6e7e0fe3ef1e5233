# -*- test-case-name: tests.test_client_asyncio_sessions -*-
"""
The asyncio client's exactly-once writes, C{incr} and C{cas} (issue 14's
API, as the blocking and Twisted clients have them): the session opened on
the first write, tagged writes retried after C{Outcome unknown} and lost
connections, a new session when one expired before anything could have been
applied, C{OutcomeUnknown} only when the retries are exhausted or an expiry
makes the outcome unknowable, and one session per write in flight.  Against
the scripted node of L{tests.test_client_sessions} that keeps sessions as
the state machine does.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from twisted.trial.unittest import SynchronousTestCase

from kvstore.client import BadRequest, KeyNotFound, NoLeader, OutcomeUnknown, Unavailable
from kvstore.client.asyncio import AsyncClient
from tests.client_fakes import DeadlineSkipper, FakeNode
from tests.test_client_sessions import UNKNOWN, SessionStore


def run(body: Callable[[], Awaitable[Any]]) -> Any:
    """Run C{body()} on a fresh event loop (each test owns its loop)."""
    return asyncio.run(body())  # type: ignore[arg-type]


class AsyncSessionTests(SynchronousTestCase):
    """The asyncio client's exactly-once writes."""

    def setUp(self) -> None:
        self.store = SessionStore()
        self.node = FakeNode(self, self.store)

    def client(self, timeout: float = 5.0, script: Callable[[str], object] | None = None,
               **kwargs: Any) -> AsyncClient:
        address = self.node.address if script is None else FakeNode(self, script).address
        client = AsyncClient([address], timeout=timeout, backoff=(0.01, 0.05), **kwargs)
        self.addCleanup(client.close)
        return client

    def raises(self, error: type[BaseException], call: Callable[[], Awaitable[Any]],
               runner: Callable[[Callable[[], Awaitable[Any]]], Any] = run) -> BaseException:
        """The C{error} that awaiting C{call()} raises (fails the test if none), run by C{runner}."""
        async def body() -> BaseException:
            try:
                await call()
            except error as e:
                return e
            self.fail(f"{error.__name__} not raised")

        return runner(body)  # type: ignore[no-any-return]

    def test_first_write_opens_a_session_and_writes_are_tagged(self) -> None:
        """The first write opens a session; every write then carries it with the next sequence number;
        reads are not tagged; incr returns the new value and cas whether it set the value."""
        kv = self.client()

        async def body() -> list[object]:
            await kv.put("k", "v w")
            results: list[object] = [await kv.incr("n"), await kv.incr("n", -5), await kv.cas("k", "v", "x"),
                                     await kv.cas("n", "-4", "0"), await kv.get("n")]
            await kv.delete("k")
            return results

        self.assertEqual(run(body), [1, -4, False, True, "0"])
        self.assertEqual(self.node.lines(), [
            "SESSION", "@1:1 PUT k v w", "@1:2 INCR n 1", "@1:3 INCR n -5", "@1:4 CAS k v x", "@1:5 CAS n -4 0",
            "GET n", "@1:6 DELETE k"])

    def test_refusals_keep_their_meaning(self) -> None:
        """A CAS or DELETE of a missing key raises KeyNotFound, INCR of a non-integer BadRequest; a request
        that cannot be sent raises BadRequest before any session is opened."""
        kv = self.client()
        self.raises(BadRequest, lambda: kv.incr("a b"))
        self.raises(BadRequest, lambda: kv.cas("k", "a b", "c"))
        self.raises(BadRequest, lambda: kv.incr("k", 2**63))
        self.assertEqual(self.node.lines(), [])
        self.raises(KeyNotFound, lambda: kv.cas("missing", "a", "b"))
        self.raises(KeyNotFound, lambda: kv.delete("missing"))
        run(lambda: kv.put("k", "text"))
        self.raises(BadRequest, lambda: kv.incr("k"))

    def test_outcome_unknown_is_retried_with_the_same_tag(self) -> None:
        """After Outcome unknown the write is sent again with the same tag and gets the first attempt's
        reply: applied once, however many attempts."""
        self.store.fault("@1:1 INCR n 1", "apply-unknown", "apply-unknown")
        kv = self.client()
        self.assertEqual(run(lambda: kv.incr("n")), 1)
        self.assertEqual(self.node.lines(), ["SESSION"] + ["@1:1 INCR n 1"] * 3)
        self.assertEqual(self.store.applied, [(1, 1)])

    def test_lost_connection_is_retried_with_the_same_tag(self) -> None:
        """A connection lost after the write was sent (and applied) is reconnected and the write sent
        again with the same tag: applied once, the caller sees success."""
        self.store.fault("@1:2 INCR n 1", "apply-close")
        kv = self.client()

        async def body() -> list[int]:
            return [await kv.incr("n") for _ in range(3)]

        self.assertEqual(run(body), [1, 2, 3])
        self.assertEqual(self.store.applied, [(1, 1), (1, 2), (1, 3)])
        self.assertEqual(self.node.lines().count("@1:2 INCR n 1"), 2)

    def test_expired_session_is_renewed_when_nothing_was_applied(self) -> None:
        """Session expired on a write none of whose attempts may have been applied: a new session is
        opened and the write sent there, once."""
        kv = self.client()

        async def body() -> list[int]:
            first = await kv.incr("n")
            del self.store.sessions[1]  # expired on the server
            return [first, await kv.incr("n"), await kv.incr("n")]

        self.assertEqual(run(body), [1, 2, 3])
        self.assertEqual(self.node.lines()[-4:], ["@1:2 INCR n 1", "SESSION", "@2:1 INCR n 1", "@2:2 INCR n 1"])

    def test_expiry_after_an_unknown_outcome_is_unknown(self) -> None:
        """If the session is gone when a write whose earlier attempt may have been applied is retried,
        the client cannot know, and says so with OutcomeUnknown."""
        kv = self.client()
        run(lambda: kv.put("k", "0"))
        self.store.fault("@1:2 INCR n 1", "apply-unknown")
        original = self.store._handle

        def handle(line: str) -> str:
            reply = original(line)
            if line == "@1:2 INCR n 1":
                self.store.sessions.pop(1, None)  # expires right after applying
            return reply

        self.store._handle = handle  # type: ignore[method-assign]
        error = self.raises(OutcomeUnknown, lambda: kv.incr("n"))
        self.assertIn("expired", str(error))
        self.assertEqual(self.store.data["n"], "1")
        self.assertNotIn("SESSION", self.node.lines()[1:])

    def test_retries_exhausted(self) -> None:
        """A write that keeps getting Outcome unknown raises OutcomeUnknown at the deadline; so does one
        whose later attempts are refused as not applied, since an earlier one may have been."""
        # Each deadline passes at the third backoff pause of its write, not after some real time: with
        # 0.5 s the second case once saw a single attempt (the apply-unknown one) and never reached the
        # no-leader refusal, and no fixed real deadline is sure to outlast the replies on a loaded machine.
        clock = DeadlineSkipper(self, pauses=3)
        kv = self.client(timeout=30)
        clock.run(lambda: kv.put("k", "v"))
        self.store.fault("@1:2 INCR n 1", *(["apply-unknown"] * 1000))
        self.raises(OutcomeUnknown, lambda: kv.incr("n"), clock.run)
        self.store.faults.clear()
        self.store.fault("@1:3 INCR m 1", "apply-unknown", *(["Error: Not leader. No leader elected yet"] * 1000))
        clock.skip_after(3)
        error = self.raises(OutcomeUnknown, lambda: kv.incr("m"), clock.run)
        self.assertIn("no leader elected", str(error))
        self.assertEqual(self.store.data["m"], "1")

    def test_stale_sequence_is_unknown(self) -> None:
        """A Stale sequence number reply is an unknown outcome, not a success."""
        kv = self.client()
        run(lambda: kv.put("k", "v"))
        self.store.sessions[1] = (9, "irrelevant")
        self.raises(OutcomeUnknown, lambda: kv.put("k", "w"))
        self.assertEqual(self.store.data["k"], "v")

    def test_session_not_opened_is_not_applied(self) -> None:
        """When no session can be opened in time the write was never sent: a not-applied error, never
        OutcomeUnknown."""
        # The deadline must outlast the fake node's first reply, or the call ends with no reply at all
        # (Unavailable, not NoLeader): 0.3 s once failed on a loaded machine, and 1.5 s once in CI.  So the
        # real deadline is long, and the clock skips past it at the second backoff pause (no waiting it out).
        clock = DeadlineSkipper(self, pauses=2)
        kv = self.client(timeout=30, script=lambda line: "Error: Not leader. No leader elected yet")
        self.raises(NoLeader, lambda: kv.incr("n"), clock.run)
        unknown = self.client(timeout=30, script=lambda line: UNKNOWN if line == "SESSION" else "Error: x")
        clock.skip_after(2)
        error = self.raises(Unavailable, lambda: unknown.incr("n"), clock.run)
        self.assertIn("could not open an exactly-once session", str(error))

    def test_exactly_once_off(self) -> None:
        """With exactly_once=False writes are plain and an unknown outcome is never retried."""
        kv = self.client(exactly_once=False)
        self.store.fault("INCR n 1", "apply-unknown")
        self.raises(OutcomeUnknown, lambda: kv.incr("n"))

        async def body() -> tuple[int, bool]:
            return await kv.incr("n", 2), await kv.cas("n", "3", "4")

        self.assertEqual(run(body), (3, True))
        self.assertEqual(self.node.lines(), ["INCR n 1", "INCR n 2", "CAS n 3 4"])

    def test_concurrent_writes_use_one_session_each_at_a_time(self) -> None:
        """Concurrent lanes of writes on one client each borrow a session no other write is using: every
        tag is used once, sequence numbers rise within a session, and the counter is exact."""
        kv = self.client(timeout=20)

        async def lane() -> None:
            for _ in range(25):
                await kv.incr("n")

        async def body() -> None:
            await asyncio.gather(*(lane() for _ in range(4)))

        run(body)
        self.assertEqual(self.store.data["n"], "100")
        tags = [line.split(" ")[0] for line in self.node.lines() if line.startswith("@")]
        self.assertEqual(len(tags), 100)
        self.assertEqual(len(set(tags)), 100)
        sessions = {tag.split(":")[0] for tag in tags}
        self.assertLessEqual(len(sessions), 4)
        self.assertEqual(self.node.lines().count("SESSION"), len(sessions))
        for session in sessions:
            seqs = [int(t.split(":")[1]) for t in tags if t.split(":")[0] == session]
            self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
