# -*- test-case-name: tests.test_client_sessions -*-
"""
The client library's exactly-once writes (issue 14): C{incr} and C{cas},
the session opened on the first write, tagged writes retried after
C{Outcome unknown} and lost connections, a new session when one expired
before anything could have been applied, and C{OutcomeUnknown} only when
the retries are exhausted or an expiry makes the outcome unknowable.  The
blocking client runs against scripted fake nodes (L{tests.client_fakes}) that
keep sessions as the state machine does; the Twisted client against a
L{MemoryReactorClock}.
"""

from __future__ import annotations

import threading
from typing import Callable

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore import errors as server_errors
from kvstore.client import BadRequest, Client, KeyNotFound, NoLeader, OutcomeUnknown, Unavailable
from kvstore.client import _policy, _protocol as p, _sessions
from kvstore.client.deferred import DeferredClient
from kvstore.protocols import replies
from kvstore.protocols.client import format_error
from tests.client_fakes import CLOSE, DeadlineSkipper, FakeNode

UNKNOWN = "Error: Outcome unknown: leadership lost (the write may or may not have been applied)"


class SessionStore:
    """
    A leader that stores like the real one, with sessions: C{SESSION}
    opens one, a tagged write is applied once per (session, seq) and a
    duplicate gets the recorded reply.  C{faults} maps a request line to
    what to do instead of replying normally, once per listed occurrence:
    C{"apply-unknown"} (apply, reply Outcome unknown), C{"apply-close"}
    (apply, then close the connection), or a reply line sent without
    applying.
    """

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.sessions: dict[int, tuple[int, str]] = {}
        self.next_session = 1
        self.applied: list[tuple[int, int]] = []
        self.faults: dict[str, list[object]] = {}
        self.lock = threading.Lock()

    def fault(self, line: str, *actions: object) -> None:
        self.faults.setdefault(line, []).extend(actions)

    def __call__(self, line: str) -> object:
        with self.lock:
            actions = self.faults.get(line)
            action = actions.pop(0) if actions else None
            if isinstance(action, str) and action not in ("apply-unknown", "apply-close"):
                return action
            reply = self._handle(line)
            if action == "apply-unknown":
                return UNKNOWN
            if action == "apply-close":
                return CLOSE
            return reply

    def _handle(self, line: str) -> str:
        if line == "SESSION":
            session, self.next_session = self.next_session, self.next_session + 1
            self.sessions[session] = (0, "")
            return replies.session_reply(session)
        if line.startswith("@"):
            tag, _, command = line.partition(" ")
            session, seq = (int(x) for x in tag[1:].split(":"))
            if session not in self.sessions:
                return replies.session_expired_error(session)
            highest, recorded = self.sessions[session]
            if seq == highest:
                return recorded
            if seq < highest:
                return replies.stale_sequence_error(highest)
            reply = self._apply(command)
            self.sessions[session] = (seq, reply)
            self.applied.append((session, seq))
            return reply
        return self._apply(line)

    def _apply(self, line: str) -> str:
        word, _, rest = line.partition(" ")
        if word == "PUT":
            key, _, value = rest.partition(" ")
            self.data[key] = value
            return f"{key} added successfully."
        if word == "DELETE":
            if self.data.pop(rest, None) is None:
                return f"Error: Key {rest} not found"
            return f"{rest} deleted successfully."
        if word == "INCR":
            key, _, delta = rest.partition(" ")
            try:
                value = int(self.data.get(key, "0")) + int(delta or "1")
            except ValueError:
                return replies.not_an_integer_error(key)
            self.data[key] = str(value)
            return replies.incr_reply(key, value)
        if word == "CAS":
            key, expected, new = rest.split(" ", 2)
            if key not in self.data:
                return f"Error: Key {key} not found"
            if self.data[key] != expected:
                return replies.cas_failed_error(key, self.data[key])
            self.data[key] = new
            return replies.cas_reply(key)
        if word == "GET":
            key = rest.split(" ")[0]
            return f"value of {key}: {self.data[key]}" if key in self.data else f"Error: Key {key} not found"
        return f"Error: Unknown command '{word}'"


class BlockingSessionTests(SynchronousTestCase):
    """The blocking client's exactly-once writes."""

    def setUp(self) -> None:
        self.store = SessionStore()
        self.node = FakeNode(self, self.store)

    def client(self, timeout: float = 5.0, script: Callable[[str], object] | None = None, **kwargs: object) -> Client:
        address = self.node.address if script is None else FakeNode(self, script).address
        client = Client([address], timeout=timeout, backoff=(0.01, 0.05), **kwargs)  # type: ignore[arg-type]
        self.addCleanup(client.close)
        return client

    def test_first_write_opens_a_session_and_writes_are_tagged(self) -> None:
        """The first write opens a session; every write then carries it with the next sequence number;
        reads are not tagged; incr returns the new value and cas whether it set the value."""
        kv = self.client()
        kv.put("k", "v w")
        self.assertEqual(kv.incr("n"), 1)
        self.assertEqual(kv.incr("n", -5), -4)
        self.assertTrue(kv.cas("k", "v", "x") is False)
        self.assertTrue(kv.cas("n", "-4", "0") is True)
        self.assertEqual(kv.get("n"), "0")
        kv.delete("k")
        self.assertEqual(self.node.lines(), [
            "SESSION", "@1:1 PUT k v w", "@1:2 INCR n 1", "@1:3 INCR n -5", "@1:4 CAS k v x", "@1:5 CAS n -4 0",
            "GET n", "@1:6 DELETE k"])

    def test_refusals_keep_their_meaning(self) -> None:
        """A CAS or DELETE of a missing key raises KeyNotFound, INCR of a non-integer BadRequest; a request
        that cannot be sent raises BadRequest before any session is opened."""
        kv = self.client()
        self.assertRaises(BadRequest, kv.incr, "a b")
        self.assertRaises(BadRequest, kv.cas, "k", "a b", "c")
        self.assertRaises(BadRequest, kv.cas, "k", "", "c")
        self.assertRaises(BadRequest, kv.incr, "k", 2**63)
        self.assertEqual(self.node.lines(), [])
        self.assertRaises(KeyNotFound, kv.cas, "missing", "a", "b")
        self.assertRaises(KeyNotFound, kv.delete, "missing")
        kv.put("k", "text")
        self.assertRaises(BadRequest, kv.incr, "k")

    def test_outcome_unknown_is_retried_with_the_same_tag(self) -> None:
        """After Outcome unknown the write is sent again with the same tag and gets the first attempt's
        reply: applied once, however many attempts."""
        self.store.fault("@1:1 INCR n 1", "apply-unknown", "apply-unknown")
        kv = self.client()
        self.assertEqual(kv.incr("n"), 1)
        self.assertEqual(self.store.data["n"], "1")
        self.assertEqual(self.node.lines(), ["SESSION"] + ["@1:1 INCR n 1"] * 3)
        self.assertEqual(self.store.applied, [(1, 1)])

    def test_lost_connection_is_retried_with_the_same_tag(self) -> None:
        """A connection lost after the write was sent (and applied) is reconnected and the write sent
        again with the same tag: applied once, the caller sees success."""
        self.store.fault("@1:2 INCR n 1", "apply-close")
        kv = self.client()
        self.assertEqual(kv.incr("n"), 1)
        self.assertEqual(kv.incr("n"), 2)
        self.assertEqual(kv.incr("n"), 3)
        self.assertEqual(self.store.data["n"], "3")
        self.assertEqual(self.store.applied, [(1, 1), (1, 2), (1, 3)])
        self.assertEqual(self.node.lines().count("@1:2 INCR n 1"), 2)

    def test_expired_session_is_renewed_when_nothing_was_applied(self) -> None:
        """Session expired on a write none of whose attempts may have been applied: a new session is
        opened and the write sent there, once."""
        kv = self.client()
        kv.incr("n")
        del self.store.sessions[1]  # expired on the server
        self.assertEqual(kv.incr("n"), 2)
        self.assertEqual(self.node.lines()[-3:], ["@1:2 INCR n 1", "SESSION", "@2:1 INCR n 1"])
        self.assertEqual(kv.incr("n"), 3)
        self.assertEqual(self.node.lines()[-1], "@2:2 INCR n 1")

    def test_expiry_after_an_unknown_outcome_is_unknown(self) -> None:
        """If the session is gone when a write whose earlier attempt may have been applied is retried,
        the client cannot know, and says so with OutcomeUnknown; the write is not sent elsewhere."""
        kv = self.client()
        kv.put("k", "0")
        self.store.fault("@1:2 INCR n 1", "apply-unknown")
        original = self.store._handle

        def handle(line: str) -> str:
            reply = original(line)
            if line == "@1:2 INCR n 1":
                self.store.sessions.pop(1, None)  # expires right after applying
            return reply

        self.store._handle = handle  # type: ignore[method-assign]
        error = self.assertRaises(OutcomeUnknown, kv.incr, "n")
        self.assertIn("expired", str(error))
        self.assertEqual(self.store.data["n"], "1")
        self.assertNotIn("SESSION", self.node.lines()[1:])

    def test_retries_exhausted(self) -> None:
        """A write that keeps getting Outcome unknown raises OutcomeUnknown at the deadline; so does one
        whose later attempts are refused as not applied, since an earlier one may have been."""
        # Each deadline passes at the third backoff pause of its write, not after 0.5 s of real time: on a
        # loaded machine 0.5 s may pass before the replies the test counts on (the put's, or the no-leader
        # refusal after the first attempt).
        clock = DeadlineSkipper(self, pauses=3)
        clock.install_blocking()
        kv = self.client(timeout=30)
        kv.put("k", "v")
        self.store.fault("@1:2 INCR n 1", *(["apply-unknown"] * 1000))
        self.assertRaises(OutcomeUnknown, kv.incr, "n")
        self.store.faults.clear()
        self.store.fault("@1:3 INCR m 1", "apply-unknown", *(["Error: Not leader. No leader elected yet"] * 1000))
        clock.skip_after(3)
        error = self.assertRaises(OutcomeUnknown, kv.incr, "m")
        self.assertIn("no leader elected", str(error))
        self.assertEqual(self.store.data["m"], "1")

    def test_stale_sequence_is_unknown(self) -> None:
        """A Stale sequence number reply (the server applied a later write of the session) is an unknown
        outcome, not a success."""
        kv = self.client()
        kv.put("k", "v")
        self.store.sessions[1] = (9, "irrelevant")
        self.assertRaises(OutcomeUnknown, kv.put, "k", "w")
        self.assertEqual(self.store.data["k"], "v")

    def test_session_not_opened_is_not_applied(self) -> None:
        """When no session can be opened in time the write was never sent: a not-applied error, never
        OutcomeUnknown."""
        # The deadline must outlast the fake node's first reply, or the call ends with no reply at all
        # (Unavailable, not NoLeader): 0.3 s once failed on a loaded machine, and 1.5 s once in CI (the
        # asyncio client's twin of this test).  So the real deadline is long, and the clock skips past it
        # at the second backoff pause (no waiting it out).
        clock = DeadlineSkipper(self, pauses=2)
        clock.install_blocking()
        kv = self.client(timeout=30, script=lambda line: "Error: Not leader. No leader elected yet")
        self.assertRaises(NoLeader, kv.incr, "n")
        unknown = self.client(timeout=30, script=lambda line: UNKNOWN if line == "SESSION" else "Error: x")
        clock.skip_after(2)
        error = self.assertRaises(Unavailable, unknown.incr, "n")
        self.assertIn("could not open an exactly-once session", str(error))

    def test_exactly_once_off(self) -> None:
        """With exactly_once=False writes are plain and an unknown outcome is never retried."""
        kv = self.client(exactly_once=False)
        self.store.fault("INCR n 1", "apply-unknown")
        self.assertRaises(OutcomeUnknown, kv.incr, "n")
        self.assertEqual(kv.incr("n", 2), 3)
        self.assertTrue(kv.cas("n", "3", "4"))
        self.assertEqual(self.node.lines(), ["INCR n 1", "INCR n 2", "CAS n 3 4"])

    def test_threads_use_one_session_each_at_a_time(self) -> None:
        """Threads sharing a client write concurrently, each write in a session no other write is using:
        every tag is used once, and the counter is exact."""
        kv = self.client(timeout=20)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(25):
                    kv.incr("n")
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(self.store.data["n"], "100")
        tags = [line.split(" ")[0] for line in self.node.lines() if line.startswith("@")]
        self.assertEqual(len(tags), 100)
        self.assertEqual(len(set(tags)), 100)
        sessions = {tag.split(":")[0] for tag in tags}
        self.assertLessEqual(len(sessions), 4)
        for session in sessions:
            seqs = [int(t.split(":")[1]) for t in tags if t.split(":")[0] == session]
            self.assertEqual(seqs, sorted(seqs))


class SessionPoolTests(SynchronousTestCase):
    """The pool of idle sessions."""

    def test_pool(self) -> None:
        """A session is lent to one write at a time, comes back with its next number, most recent first;
        a gone session does not come back."""
        pool = _sessions.SessionPool()
        self.assertIsNone(pool.take())
        a, b = _sessions.Session(1), _sessions.Session(2)
        pool.give_back(a)
        pool.give_back(b)
        self.assertEqual((a.next_seq, b.next_seq), (2, 2))
        self.assertIs(pool.take(), b)
        b.gone = True
        pool.give_back(b)
        self.assertEqual(len(pool), 1)
        self.assertIs(pool.take(), a)


class ReplyAndPolicyTests(SynchronousTestCase):
    """The pure parts: the new replies as the server formats them, and what the policy does with them."""

    def test_replies_as_the_server_formats_them(self) -> None:
        """INCR, CAS and SESSION replies and the session errors are read from the server's own texts."""
        tag = lambda command: p.Tagged(3, 4, command)  # noqa: E731
        cases = [
            (p.Incr("n", 1), replies.incr_reply("n", -7), p.Number(-7)),
            (tag(p.Incr("n", 1)), replies.incr_reply("n", 7), p.Number(7)),
            (p.Cas("k", "a", "b"), replies.cas_reply("k"), p.Done("k updated successfully.")),
            (p.Cas("k", "a", "b"), format_error(server_errors.CasFailed("k", "x y")), p.CasMismatch("x y")),
            (tag(p.Cas("k", "a", "b")), format_error(server_errors.KeyNotFound("k")), p.NotFound("k")),
            (p.OpenSession(), replies.session_reply(12), p.SessionOpened(12)),
            (tag(p.Put("k", "v")), format_error(server_errors.SessionExpired(3)),
             p.SessionExpired(format_error(server_errors.SessionExpired(3))[7:])),
            (tag(p.Put("k", "v")), format_error(server_errors.StaleSequence(9)),
             p.StaleSequence(format_error(server_errors.StaleSequence(9))[7:])),
            (p.Incr("k", 1), format_error(server_errors.NotAnInteger("k")), p.RequestError("Value of k is not an integer")),
        ]
        for request, line, expected in cases:
            with self.subTest(line=line):
                self.assertEqual(p.interpret_reply(request, line), expected)
        for request, line in [(p.Incr("n", 1), "value of m: 1"), (p.Incr("n", 1), "value of n: x"),
                              (p.OpenSession(), "session x"), (p.Cas("k", "a", "b"), "j updated successfully.")]:
            self.assertRaises(Exception, p.interpret_reply, request, line)

    def test_policy(self) -> None:
        """Tagged writes and SESSION are retried after an unknown outcome or a lost connection, plain
        writes are not; CAS returns True or False; an expired session asks for renewal."""
        tagged = p.Tagged(1, 1, p.Incr("n", 1))
        for request in (tagged, p.OpenSession()):
            action = _policy.after_reply(request, p.OutcomeUnknown("x"), "h:1")
            assert isinstance(action, _policy.Retry)
            self.assertIsInstance(action.error, OutcomeUnknown)
            lost = _policy.after_lost_connection(request, "h:1", sent=True, reason="reset")
            assert isinstance(lost, _policy.Retry)
            self.assertIsInstance(lost.error, OutcomeUnknown)
        for request in (p.Incr("n", 1), p.Cas("k", "a", "b")):
            self.assertIsInstance(_policy.after_reply(request, p.OutcomeUnknown("x"), "h:1"), _policy.Raise)
            self.assertIsInstance(_policy.after_lost_connection(request, "h:1", True, "x"), _policy.Raise)
        self.assertEqual(_policy.after_reply(p.Cas("k", "a", "b"), p.Done("k updated successfully."), "h"),
                         _policy.Return(True))
        mismatch = _policy.after_reply(p.Tagged(1, 1, p.Cas("k", "a", "b")), p.CasMismatch("z"), "h")
        assert isinstance(mismatch, _policy.Raise)
        self.assertEqual((type(mismatch.error).__name__, str(mismatch.error)), ("CasFailed", "CAS failed: value of k is z"))
        self.assertEqual(_policy.after_reply(p.Put("k", "v"), p.Done("k added successfully."), "h"),
                         _policy.Return(None))
        self.assertIsInstance(_policy.after_reply(tagged, p.SessionExpired("gone"), "h"), _policy.RenewSession)
        stale = _policy.after_reply(tagged, p.StaleSequence("stale"), "h")
        assert isinstance(stale, _policy.Raise)
        self.assertIsInstance(stale.error, OutcomeUnknown)

    def test_final_error(self) -> None:
        """Once an attempt may have been applied, a later 'not applied' error becomes OutcomeUnknown."""
        attempts = _sessions.Attempts()
        self.assertIsInstance(attempts.final_error(NoLeader("x")), NoLeader)
        attempts.maybe_applied = True
        self.assertIsInstance(attempts.final_error(NoLeader("x")), OutcomeUnknown)
        self.assertIsInstance(attempts.final_error(KeyNotFound("k")), OutcomeUnknown)


class DeferredSessionTests(SynchronousTestCase):
    """The Twisted client's exactly-once writes, on a MemoryReactorClock."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.kv = DeferredClient(self.reactor, ["127.0.0.1:5000", "127.0.0.1:5001"], timeout=5, backoff=(0.1, 0.5))
        self.addCleanup(self.kv.close)

    def accept(self, index: int = -1) -> tuple[StringTransport, object]:
        host, port, factory, *_ = self.reactor.tcpClients[index]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport()
        protocol.makeConnection(transport)
        return transport, protocol

    def reply(self, protocol: object, *lines: str) -> None:
        protocol.dataReceived(b"".join(line.encode() + b"\n" for line in lines))  # type: ignore[attr-defined]

    def test_session_then_tagged_writes(self) -> None:
        """The first write opens a session, then every write is tagged; incr fires with the new value and
        cas with True or False."""
        incr = self.kv.incr("n", 3)
        transport, protocol = self.accept()
        self.assertEqual(transport.value(), b"SESSION\n")
        self.reply(protocol, "session 8")
        self.assertEqual(transport.value(), b"SESSION\n@8:1 INCR n 3\n")
        self.reply(protocol, "value of n: 3")
        self.assertEqual(self.successResultOf(incr), 3)
        cas = self.kv.cas("n", "3", "x")
        self.reply(protocol, replies.cas_failed_error("n", "4"))
        self.assertIs(self.successResultOf(cas), False)
        cas = self.kv.cas("n", "4", "x")
        self.reply(protocol, "n updated successfully.")
        self.assertIs(self.successResultOf(cas), True)
        self.assertEqual(transport.value().split(b"\n")[-3:], [b"@8:2 CAS n 3 x", b"@8:3 CAS n 4 x", b""])

    def test_unknown_and_lost_connection_are_retried(self) -> None:
        """Outcome unknown, then a lost connection: the same tag is sent again each time, and the
        recorded reply completes the call."""
        put = self.kv.put("k", "v")
        transport, protocol = self.accept()
        self.reply(protocol, "session 2")
        self.reply(protocol, UNKNOWN)
        self.assertNoResult(put)
        self.reactor.advance(1)
        transport2, protocol2 = self.accept()
        self.assertEqual(transport2.value(), b"@2:1 PUT k v\n")
        protocol2.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        self.reactor.advance(1)
        transport3, protocol3 = self.accept()
        self.assertEqual(transport3.value(), b"@2:1 PUT k v\n")
        self.reply(protocol3, "k added successfully.")
        self.assertIsNone(self.successResultOf(put))

    def test_expired_session(self) -> None:
        """An expired session is renewed if nothing may have been applied; after an unknown outcome the
        call fails with OutcomeUnknown instead."""
        first = self.kv.incr("n")
        transport, protocol = self.accept()
        self.reply(protocol, "session 2", replies.session_expired_error(2))
        self.assertEqual(transport.value(), b"SESSION\n@2:1 INCR n 1\nSESSION\n")
        self.reply(protocol, "session 5", "value of n: 1")
        self.assertEqual(self.successResultOf(first), 1)
        second = self.kv.incr("n")
        self.reply(protocol, UNKNOWN)
        self.reactor.advance(1)
        _, protocol2 = self.accept()
        self.reply(protocol2, replies.session_expired_error(5))
        self.failureResultOf(second, OutcomeUnknown)
