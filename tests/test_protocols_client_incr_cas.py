# -*- test-case-name: tests.test_protocols_client_incr_cas -*-
"""
The replies to INCR, CAS, SESSION and tagged writes (issue 14), exactly as
the protocol documents them, through L{ClientProtocol} on a
L{StringTransport} against a fake node; and the reply readers in
L{kvstore.protocols.replies} as the inverse of the writers.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.errors import (
    CasFailed,
    IntegerOverflow,
    KeyNotFound,
    NotAnInteger,
    NotLeader,
    OutcomeUnknown,
    SessionExpired,
    StaleSequence,
)
from kvstore.protocols import replies
from kvstore.protocols.client import ClientProtocol, KeyValueService
from kvstore.statemachine import SessionTag


class RecordingService:
    """A node whose every call returns a pending Deferred the test fires."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any], Deferred[Any]]] = []

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append((name, args, kwargs, d))
        return d

    def put(self, key: str, value: str, session: SessionTag | None = None) -> Deferred[None]:
        return self._call("put", key, value, **({"session": session} if session else {}))

    def delete(self, key: str, session: SessionTag | None = None) -> Deferred[None]:
        return self._call("delete", key, **({"session": session} if session else {}))

    def incr(self, key: str, delta: int, session: SessionTag | None = None) -> Deferred[int]:
        return self._call("incr", key, delta, **({"session": session} if session else {}))

    def cas(self, key: str, expected: str, new: str, session: SessionTag | None = None) -> Deferred[None]:
        return self._call("cas", key, expected, new, **({"session": session} if session else {}))

    def open_session(self) -> Deferred[int]:
        return self._call("open_session")

    def get(self, key: str, stale: bool) -> Deferred[str]:
        return self._call("get", key, stale)

    def status(self) -> dict[str, object]:
        return {"node": 0}


class ReplyTests(SynchronousTestCase):
    """Each outcome of the new commands becomes one exact reply line."""

    def setUp(self) -> None:
        self.service = RecordingService()
        self.assertIsInstance(self.service, KeyValueService)
        self.proto = ClientProtocol(self.service)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def reply_to(self, line: bytes, outcome: object) -> str:
        """Send C{line}, complete its call with C{outcome}, return the one reply line."""
        self.transport.clear()
        before = len(self.service.calls)
        self.proto.dataReceived(line + b"\n")
        self.assertEqual(len(self.service.calls), before + 1, "no call made")
        d = self.service.calls[-1][3]
        if isinstance(outcome, BaseException):
            d.errback(Failure(outcome))
        else:
            d.callback(outcome)
        data = self.transport.value().decode("utf-8")
        self.assertTrue(data.endswith("\n") and data.count("\n") == 1, data)
        return data[:-1]

    def test_success_replies(self) -> None:
        """INCR replies with the new value as a GET shows it, CAS with 'updated', SESSION with the id."""
        self.assertEqual(self.reply_to(b"INCR n", 1), "value of n: 1")
        self.assertEqual(self.reply_to(b"INCR n -9223372036854775808", -9223372036854775808),
                         "value of n: -9223372036854775808")
        self.assertEqual(self.reply_to(b"CAS k a b", None), "k updated successfully.")
        self.assertEqual(self.reply_to(b"SESSION", 17), "session 17")

    def test_error_replies(self) -> None:
        """Each refusal has its fixed text, naming the key (and the value a failed CAS found)."""
        cases = [
            (b"INCR n", NotAnInteger("n"), "Error: Value of n is not an integer"),
            (b"INCR n 5", IntegerOverflow("n"), "Error: Overflow: value of n would not fit in a signed 64-bit integer"),
            (b"CAS k a b", CasFailed("k", "actual value"), "Error: CAS failed: value of k is actual value"),
            (b"CAS k a b", CasFailed("k", ""), "Error: CAS failed: value of k is "),
            (b"CAS k a b", KeyNotFound("k"), "Error: Key k not found"),
            (b"@3:1 PUT k v", SessionExpired(3),
             "Error: Session expired: session 3 is unknown or has expired (the write was not applied)"),
            (b"@3:1 INCR n", StaleSequence(4),
             "Error: Stale sequence number: the session has applied up to 4 (not applied now; the reply to an older"
             " request is no longer kept)"),
            (b"SESSION", NotLeader(2, "127.0.0.1:5002"), "Error: Not leader. Current leader is Node 2 at 127.0.0.1:5002"),
            (b"@3:2 CAS k a b", OutcomeUnknown("leadership lost"),
             "Error: Outcome unknown: leadership lost (the write may or may not have been applied)"),
        ]
        for line, error, text in cases:
            with self.subTest(line=line, error=error):
                self.assertEqual(self.reply_to(line, error), text)

    def test_tagged_writes_reach_the_node_with_their_tag(self) -> None:
        """A tagged write calls the same service method with session=SessionTag(session, seq), and
        replies as the untagged one does."""
        self.assertEqual(self.reply_to(b"@5:1 PUT k v w", None), "k added successfully.")
        self.assertEqual(self.reply_to(b"@5:2 DELETE k", None), "k deleted successfully.")
        self.assertEqual(self.reply_to(b"@5:3 INCR n 2", 7), "value of n: 7")
        self.assertEqual(self.reply_to(b"@5:4 CAS k a b", None), "k updated successfully.")
        self.assertEqual(self.reply_to(b"INCR n", 8), "value of n: 8")
        calls = [(name, args, kwargs) for name, args, kwargs, _ in self.service.calls]
        self.assertEqual(calls, [
            ("put", ("k", "v w"), {"session": SessionTag(5, 1)}),
            ("delete", ("k",), {"session": SessionTag(5, 2)}),
            ("incr", ("n", 2), {"session": SessionTag(5, 3)}),
            ("cas", ("k", "a", "b"), {"session": SessionTag(5, 4)}),
            ("incr", ("n", 1), {}),
        ])

    def test_new_writes_are_ordered_as_writes(self) -> None:
        """INCR, CAS, SESSION and tagged writes are writes for the connection's ordering: a GET
        pipelined behind them starts only once they finish, and replies keep request order."""
        self.proto.dataReceived(b"INCR n\n@1:1 CAS k a b\nSESSION\nGET n\n")
        self.assertEqual([c[0] for c in self.service.calls], ["incr", "cas", "open_session"])
        self.service.calls[2][3].callback(9)
        self.service.calls[0][3].callback(1)
        self.assertEqual(len(self.service.calls), 3)
        self.service.calls[1][3].callback(None)
        self.assertEqual(self.service.calls[-1][:2], ("get", ("n", False)))
        self.service.calls[-1][3].callback("1")
        self.assertEqual(self.transport.value(),
                         b"value of n: 1\nk updated successfully.\nsession 9\nvalue of n: 1\n")


class ReplyReaderTests(SynchronousTestCase):
    """The readers in kvstore.protocols.replies invert the writers."""

    def test_incr_reply(self) -> None:
        """parse_incr_reply reads what incr_reply writes, for the right key only."""
        for value in (0, 1, -1, 2**63 - 1, -(2**63)):
            self.assertEqual(replies.parse_incr_reply(replies.incr_reply("n", value), "n"), value)
        self.assertIsNone(replies.parse_incr_reply("value of m: 1", "n"))
        self.assertIsNone(replies.parse_incr_reply("value of n: x", "n"))
        self.assertIsNone(replies.parse_incr_reply("value of n: ", "n"))

    def test_session_reply(self) -> None:
        """parse_session_reply reads what session_reply writes, and nothing else."""
        self.assertEqual(replies.parse_session_reply(replies.session_reply(12345)), 12345)
        for other in ("session", "session ", "session x", "session -1", "sessions 1", "Error: Session expired: 1"):
            self.assertIsNone(replies.parse_session_reply(other))

    def test_cas_failed(self) -> None:
        """parse_cas_failed gives back the actual value cas_failed_error wrote, spaces included."""
        self.assertEqual(replies.parse_cas_failed(replies.cas_failed_error("k", " a b "), "k"), " a b ")
        self.assertIsNone(replies.parse_cas_failed(replies.cas_failed_error("k", "a"), "kk"))
        self.assertTrue(replies.session_expired_error(3).startswith(replies.SESSION_EXPIRED_PREFIX))
        self.assertTrue(replies.stale_sequence_error(3).startswith(replies.STALE_SEQUENCE_PREFIX))
