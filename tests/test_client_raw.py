# -*- test-case-name: tests.test_client_raw -*-
"""
Commands passed through as typed (C{Client.raw_command}, what
C{kvstore-cli} sends for C{INCR}, C{CAS}, C{MEMBERS} and anything newer):
their encoding, how their replies are read, and the retry rules they get
(a command the library does not know is a write unless its word is a known
read).
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.client import BadRequest, Client, OutcomeUnknown
from kvstore.client import _policy, _protocol as p
from kvstore.client._raw import Raw
from kvstore.client.deferred import DeferredClient
from tests.client_fakes import CLOSE, FakeNode

from tests.support import parametrize


class RawRequestTests(SynchronousTestCase):
    """The request and its reply, without I/O."""

    @parametrize("line, write", [("INCR n 5", True), ("cas k a b", True), ("MEMBERS", False),
                                 ("members", False), ("GET k", False), ("STATUS", False), ("FOO bar", True)])
    def test_read_or_write(self, line: str, write: bool) -> None:
        """Only a known read word makes a command safe to retry; anything else counts as a write."""
        request = Raw.of(line)
        self.assertEqual(p.is_write(request), write)
        self.assertEqual(p.encode_request(request), line.encode() + b"\n")

    @parametrize("line", ["", "   ", "INCR n\nDELETE k", "PUT k a\rb", "GET \x00"])
    def test_refused_before_sending(self, line: str) -> None:
        """An empty command, or one with a control character that would split or corrupt the line, is refused."""
        self.assertRaises(BadRequest, Raw.of, line)

    def test_reply_as_typed(self) -> None:
        """A reply that is not an error is the command's answer, whatever its shape."""
        self.assertEqual(p.interpret_reply(Raw.of("INCR n"), "value of n: 1"), p.Value("value of n: 1"))
        self.assertEqual(p.interpret_reply(Raw.of("MEMBERS"), "0 1 2"), p.Value("0 1 2"))

    def test_error_replies_read_like_any_request(self) -> None:
        """Not leader is followed, Outcome unknown raises, other errors are the server's text."""
        request = Raw.of("INCR n")
        redirect = _policy.after_reply(
            request, p.interpret_reply(request, "Error: Not leader. Current leader is Node 2 at h:3"), "h:1")
        self.assertEqual(redirect, _policy.Redirect("h:3"))
        unknown = _policy.after_reply(request, p.interpret_reply(request, "Error: Outcome unknown: lost"), "h:1")
        self.assertIsInstance(unknown, _policy.Raise)
        self.assertIsInstance(unknown.error, OutcomeUnknown)  # type: ignore[union-attr]
        refused = _policy.after_reply(request, p.interpret_reply(request, "Error: Value of n is not an integer"),
                                      "h:1")
        self.assertEqual(str(refused.error), "Value of n is not an integer")  # type: ignore[union-attr]


class RawCommandClientTests(SynchronousTestCase):
    """Client.raw_command against a scripted node."""

    def test_blocking_round_trip(self) -> None:
        """The reply line comes back as sent by the node."""
        node = FakeNode(self, lambda line: "value of n: 6")
        with Client([node.address], timeout=5) as kv:
            self.assertEqual(kv.raw_command("INCR n 6"), "value of n: 6")
        self.assertEqual(node.lines(), ["INCR n 6"])

    def test_unknown_write_is_not_retried(self) -> None:
        """A passed-through write whose connection is lost after sending is an unknown outcome, sent once."""
        node = FakeNode(self, lambda line: CLOSE)
        with Client([node.address], timeout=5, backoff=(0.01, 0.05)) as kv:
            self.assertRaises(OutcomeUnknown, kv.raw_command, "INCR n")
        self.assertEqual(node.lines(), ["INCR n"])

    def test_read_is_retried(self) -> None:
        """A passed-through read whose connection is lost is sent again."""
        answers = iter([CLOSE, "0 1 2"])
        node = FakeNode(self, lambda line: next(answers))
        with Client([node.address], timeout=5, backoff=(0.01, 0.05)) as kv:
            self.assertEqual(kv.raw_command("MEMBERS"), "0 1 2")
        self.assertEqual(node.lines(), ["MEMBERS", "MEMBERS"])

    def test_deferred_refuses_locally(self) -> None:
        """The Twisted client fails a command that could not travel as one line, without connecting."""
        reactor = MemoryReactorClock()
        kv = DeferredClient(reactor, ["h:1"])
        self.failureResultOf(kv.raw_command("INCR a\nb"), BadRequest)
        self.assertEqual(reactor.tcpClients, [])
