# -*- test-case-name: tests.test_client_protocol -*-
"""
The client library's pure parts: request encoding against the server's own
grammar, reply interpretation against the server's own reply formatting,
reply framing under arbitrary chunking, and the retry policy's decisions.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kvstore import errors as server_errors
from kvstore.client import _policy, _protocol as p, errors
from kvstore.protocols.client import format_error, format_status
from kvstore.protocols.commands import parse_command

# Keys: no whitespace (in Python's sense, the server's), no control characters.
keys = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")).filter(lambda c: not c.isspace()),
    min_size=1, max_size=40)
values = st.text(st.characters(blacklist_categories=("Cs",)).filter(
    lambda c: c == "\t" or not (ord(c) < 0x20 or ord(c) == 0x7F)), max_size=80)
requests = st.one_of(
    st.builds(p.Put, keys, values),
    st.builds(p.Get, keys, st.booleans()),
    st.builds(p.Delete, keys),
    st.just(p.Ping()),
    st.just(p.Status()),
)
addresses = st.builds(lambda port: f"127.0.0.1:{port}", st.integers(1, 65535))
reasons = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=60)


class RequestEncodingTests(SynchronousTestCase):
    """L{p.encode_request} speaks the server's grammar."""

    @settings(max_examples=500, deadline=None)
    @given(requests)
    def test_server_parses_what_client_encodes(self, request: p.Request) -> None:
        """Every valid request encodes to one line that the server parses back to the same request."""
        line = p.encode_request(request)
        self.assertTrue(line.endswith(b"\n"))
        self.assertEqual(line.count(b"\n"), 1)
        self.assertEqual(parse_command(line[:-1]), request)

    def test_refuses_what_would_not_be_one_request(self) -> None:
        """Keys that are empty or hold whitespace or control characters, and values with line breaks, are refused before sending."""
        for request in [p.Put("", "v"), p.Put("a b", "v"), p.Get("a\tb"), p.Delete("a\nPUT x y"),
                        p.Put("k", "v\nDELETE k"), p.Put("k", "v\r"), p.Get("a\u2028b"), p.Put("k\x00", "v")]:
            with self.subTest(request=request):
                self.assertRaises(errors.BadRequest, p.encode_request, request)

    def test_tab_and_spaces_allowed_in_values(self) -> None:
        """A value may hold TAB and leading, trailing and inner spaces."""
        self.assertEqual(p.encode_request(p.Put("k", " a\tb ")), b"PUT k  a\tb \n")


class ReplyReaderTests(SynchronousTestCase):
    """L{p.ReplyReader} frames reply lines whatever the chunking."""

    @settings(max_examples=300, deadline=None)
    @given(st.lists(values, max_size=10), st.data())
    def test_any_chunking(self, lines: list[str], data: st.DataObject) -> None:
        """Lines come out whole, in order, however the byte stream is cut."""
        stream = b"".join(line.encode("utf-8") + b"\n" for line in lines)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
        reader, out, start = p.ReplyReader(), [], 0
        for cut in cuts + [len(stream)]:
            out += reader.feed(stream[start:cut])
            start = cut
        self.assertEqual(out, lines)
        self.assertEqual(reader.buffered, 0)

    def test_overlong_reply(self) -> None:
        """A reply longer than the limit is a protocol error, not unbounded buffering."""
        reader = p.ReplyReader(max_line_bytes=10)
        reader.feed(b"x" * 10)
        self.assertRaises(errors.ProtocolError, reader.feed, b"y")


class ReplyInterpretationTests(SynchronousTestCase):
    """L{p.interpret_reply} reads every reply the server can send, as the server formats it."""

    @settings(max_examples=300, deadline=None)
    @given(keys, values)
    def test_success_replies(self, key: str, value: str) -> None:
        """PUT, DELETE and GET replies, including values that look like other replies."""
        self.assertEqual(p.interpret_reply(p.Put(key, value), f"{key} added successfully."),
                         p.Done(f"{key} added successfully."))
        self.assertEqual(p.interpret_reply(p.Delete(key), f"{key} deleted successfully."),
                         p.Done(f"{key} deleted successfully."))
        self.assertEqual(p.interpret_reply(p.Get(key), f"value of {key}: {value}"), p.Value(value))
        self.assertEqual(p.interpret_reply(p.Ping(), "PONG"), p.Done("PONG"))

    @settings(max_examples=300, deadline=None)
    @given(st.integers(0, 2**31), addresses, reasons, keys)
    def test_cluster_errors_as_the_server_formats_them(self, node: int, address: str, reason: str, key: str) -> None:
        """Not leader (all three forms), Outcome unknown, Unavailable, Key not found and Internal error round-trip."""
        put = p.Put(key, "v")
        cases = [
            (server_errors.NotLeader(node, address), put, p.NotLeader(node, address)),
            (server_errors.NotLeader(node, None), put, p.NotLeader(node, None)),
            (server_errors.NotLeader(None, None), put, p.NotLeader(None, None)),
            (server_errors.OutcomeUnknown(reason), put, p.OutcomeUnknown(reason)),
            (server_errors.Unavailable(reason), p.Get(key), p.Unavailable(reason)),
            (server_errors.KeyNotFound(key), p.Get(key), p.NotFound(key)),
            (server_errors.KeyNotFound(key), p.Delete(key), p.NotFound(key)),
        ]
        for error, request, expected in cases:
            self.assertEqual(p.interpret_reply(request, format_error(error)), expected)
        self.assertEqual(p.interpret_reply(put, "Error: Internal error"), p.InternalError())

    def test_request_errors(self) -> None:
        """An Error: reply about the request itself is a request error, not a cluster error."""
        for line in ["Error: Key too long (maximum 1024 bytes)", "Error: Usage: PUT <key> <value>",
                     "Error: Value too long (maximum 65536 bytes)"]:
            with self.subTest(line=line):
                self.assertEqual(p.interpret_reply(p.Put("k", "v"), line), p.RequestError(line[7:]))

    def test_key_not_found_names_the_key(self) -> None:
        """Key not found about another key is not taken for this request's answer."""
        self.assertEqual(p.interpret_reply(p.Get("a"), "Error: Key b not found"),
                         p.RequestError("Key b not found"))

    @settings(max_examples=200, deadline=None)
    @given(st.dictionaries(st.text("abcdefgh_", min_size=1), st.one_of(
        st.none(), st.booleans(), st.integers(), st.text(max_size=10),
        st.lists(st.integers(0, 9), max_size=3)), min_size=1))
    def test_status(self, status: dict[str, object]) -> None:
        """A STATUS line as the server formats it parses into its names, in order."""
        reply = p.interpret_reply(p.Status(), format_status(status))
        assert isinstance(reply, p.StatusFields)
        self.assertEqual(list(reply.fields), list(status))

    def test_reply_out_of_step(self) -> None:
        """A reply that does not fit its request is a protocol error (the connection is out of step)."""
        for request, line in [(p.Put("a", "v"), "b added successfully."), (p.Get("a"), "PONG"),
                              (p.Ping(), "a added successfully."), (p.Status(), "PONG"),
                              (p.Delete("a"), "a added successfully.")]:
            with self.subTest(request=request):
                self.assertRaises(errors.ProtocolError, p.interpret_reply, request, line)


class PolicyTests(SynchronousTestCase):
    """L{_policy} retries exactly what is known not to have been applied."""

    def test_not_leader_with_address_redirects(self) -> None:
        """A Not leader reply naming the leader's address sends the request there."""
        self.assertEqual(_policy.after_reply(p.Put("k", "v"), p.NotLeader(1, "h:2"), "h:1"), _policy.Redirect("h:2"))

    def test_not_leader_without_leader_backs_off(self) -> None:
        """No leader elected yet: retry after a pause; NoLeader if time runs out."""
        action = _policy.after_reply(p.Put("k", "v"), p.NotLeader(None, None), "h:1")
        assert isinstance(action, _policy.Retry)
        self.assertTrue(action.backoff)
        self.assertIsInstance(action.error, errors.NoLeader)

    def test_outcome_unknown_is_not_retried(self) -> None:
        """Outcome unknown and Internal error on a write raise OutcomeUnknown at once."""
        for request in [p.Put("k", "v"), p.Delete("k")]:
            for reply in [p.OutcomeUnknown("lost leadership"), p.InternalError()]:
                action = _policy.after_reply(request, reply, "h:1")
                assert isinstance(action, _policy.Raise)
                self.assertIsInstance(action.error, errors.OutcomeUnknown)
                self.assertIn("may or may not have been applied", str(action.error))

    def test_lost_connection(self) -> None:
        """A lost connection retries reads and unsent writes, never a write that may have gone."""
        for request in [p.Put("k", "v"), p.Delete("k")]:
            lost = _policy.after_lost_connection(request, "h:1", sent=True, reason="reset")
            assert isinstance(lost, _policy.Raise)
            self.assertIsInstance(lost.error, errors.OutcomeUnknown)
            self.assertIsInstance(_policy.after_lost_connection(request, "h:1", sent=False, reason="x"),
                                  _policy.Retry)
        for request in [p.Get("k"), p.Get("k", True), p.Status(), p.Ping()]:
            self.assertIsInstance(_policy.after_lost_connection(request, "h:1", sent=True, reason="x"),
                                  _policy.Retry)

    def test_timeout_errors(self) -> None:
        """A write without a reply by the deadline is OutcomeUnknown; a read is Unavailable; nothing reached is ConnectionFailed."""
        self.assertIsInstance(_policy.after_timeout(p.Put("k", "v"), "h:1", True, 1, None), errors.OutcomeUnknown)
        self.assertIsInstance(_policy.after_timeout(p.Get("k"), "h:1", True, 1, None), errors.Unavailable)
        self.assertIsInstance(_policy.after_timeout(p.Put("k", "v"), None, False, 1, None), errors.ConnectionFailed)

    def test_error_classes(self) -> None:
        """Errors that guarantee nothing changed are NotApplied; OutcomeUnknown is not."""
        for cls in [errors.KeyNotFound, errors.BadRequest, errors.Unavailable, errors.NoLeader, errors.ConnectionFailed]:
            self.assertTrue(issubclass(cls, errors.NotApplied), cls)
        self.assertFalse(issubclass(errors.OutcomeUnknown, errors.NotApplied))
        self.assertTrue(errors.OutcomeUnknown("x").may_have_been_applied)

    def test_backoff_grows_and_is_capped(self) -> None:
        """Backoff doubles per attempt up to the maximum, scaled by jitter."""
        self.assertEqual([_policy.backoff_delay(a, 0.1, 0.5, 0.5) for a in range(4)], [0.1, 0.2, 0.4, 0.5])
