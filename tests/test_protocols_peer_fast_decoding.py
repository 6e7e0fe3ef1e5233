# -*- test-case-name: tests.test_protocols_peer_fast_decoding -*-
"""
Differential tests of the peer decoder's fast path: on valid payloads and
on mutations of them, L{decode_message} (fast path first) and
L{decode_message_generic} (the reference) return equal messages or raise
the same error with the same text.
"""

from __future__ import annotations

from typing import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.peer import (
    Membership,
    _decode_fast,
    decode_message,
    decode_message_generic,
    encode_message,
)
from kvstore.raft.membership import Configuration, encode_configuration_entry
from kvstore.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    MalformedMessage,
    Message,
    RequestVote,
)

# Integers on both sides of every bound: 0, small, 19 and 20 digits, 2**63.
_fields = st.one_of(
    st.integers(0, 20),
    st.integers(0, 2**63 - 1),
    st.integers(2**63 - 3, 2**63 + 3),
    st.integers(10**18 - 2, 10**19 + 2),
)
_payload_texts = st.one_of(
    st.text(max_size=12),
    st.text(alphabet='ab"\\\t\n\x00\x7f\u2028é𝄞', max_size=8),
    st.sampled_from(["P k v", "", "\x00"]),
)
_configuration_entry = encode_configuration_entry(Configuration({0: "127.0.0.1:1", 1: "127.0.0.1:2"}))


@st.composite
def _append(draw: st.DrawFn) -> AppendEntries:
    """An AppendEntries, mostly well formed, sometimes with a bad index,
    term or payload (the encoder does not check)."""
    prev_index, prev_term = draw(_fields), draw(st.integers(0, 50))
    entries, term = [], prev_term
    for n in range(draw(st.integers(0, 3))):
        term += draw(st.integers(0, 2))
        index = prev_index + 1 + n + draw(st.sampled_from([0, 0, 0, 0, 1, -1]))
        if draw(st.integers(0, 9)) == 0:
            payload = _configuration_entry if draw(st.booleans()) else _configuration_entry[:-1]
        else:
            payload = draw(_payload_texts).encode("utf-8", "surrogatepass")
        entries.append((index, term, payload))
    return AppendEntries(
        term + draw(st.sampled_from([0, 0, 1, 5])), prev_index, prev_term, tuple(entries), draw(_fields),
        draw(_fields),
    )


_bodies = st.one_of(
    _append(),
    st.builds(AppendEntriesResponse, _fields, st.booleans(), _fields, _fields, _fields, _fields),
    st.builds(RequestVote, _fields, _fields, _fields, st.booleans()),
)
_messages = st.builds(Message, st.sampled_from([1, 2, 7]), st.sampled_from([0, 3]), _bodies)

# Bytes that matter to JSON and to the fast path's patterns.
_interesting = st.sampled_from(
    [b"0", b"1", b"9", b"-", b".", b"e", b'"', b",", b":", b"[", b"]", b"{", b"}", b"\\", b" ", b"\n", b"\x00",
     b"\xff", b"\xed\xa0\x80", b"\xc3", b"t", b"true", b"false", b"null", b"1e3", b"00", b"\\u0000", b"\xef\xbb\xbf",
     b'"x":1,', b'],"x":[', b"[[", b"]]"]
)


@st.composite
def _mutated(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """A payload from L{_messages}, encoded, then changed by a few random
    edits; with the sender and receiver of the original."""
    message = draw(_messages)
    payload = bytearray(encode_message(message))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(payload)))
        kind = draw(st.integers(0, 4))
        if kind == 0:  # replace some bytes
            payload[at : at + draw(st.integers(1, 3))] = draw(_interesting)
        elif kind == 1:  # insert
            payload[at:at] = draw(_interesting)
        elif kind == 2:  # delete
            del payload[at : at + draw(st.integers(1, 4))]
        elif kind == 3:  # truncate
            del payload[at:]
        else:  # repeat a stretch
            end = draw(st.integers(at, len(payload)))
            payload[at:at] = payload[at:end]
    return bytes(payload), message.sender, message.receiver


def _outcome(decode: Callable[[bytes, int, Membership], Message], payload: bytes, sender: int, receiver: int) -> object:
    """What C{decode} makes of C{payload}: the message and the types of its
    entries, or the error's type and text."""
    membership = Membership(receiver, "c", frozenset({1, 2, 7}))
    try:
        message = decode(payload, sender, membership)
    except MalformedMessage as e:
        return ("error", type(e), str(e))
    return ("ok", message, [type(e) for e in getattr(message.body, "entries", ())])


class FastDecodingTests(SynchronousTestCase):
    @settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_messages)
    def test_encoded_messages_decode_as_the_generic_decoder_does(self, message: Message) -> None:
        """Every encoded message, valid or not, decodes to what the generic
        decoder makes of it."""
        payload = encode_message(message)
        self.assertEqual(
            _outcome(decode_message, payload, message.sender, message.receiver),
            _outcome(decode_message_generic, payload, message.sender, message.receiver),
        )

    @settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_mutated())
    def test_mutated_payloads_decode_as_the_generic_decoder_does(self, case: tuple[bytes, int, int]) -> None:
        """Payloads changed anywhere (bytes replaced, inserted, deleted,
        repeated, cut) get the generic decoder's result or its very error."""
        payload, sender, receiver = case
        self.assertEqual(
            _outcome(decode_message, payload, sender, receiver),
            _outcome(decode_message_generic, payload, sender, receiver),
        )
        fast = _decode_fast(payload)
        if fast is not None:
            self.assertEqual(_outcome(lambda *_: fast, payload, sender, receiver)[0], "ok")

    def test_the_fast_path_takes_the_messages_on_a_write_path(self) -> None:
        """AppendEntries with and without entries, and both kinds of
        response, as this release encodes them, are decoded by the fast
        path (so the tests above compare two decoders, not one)."""
        for body in (
            AppendEntries(5, 10, 4, ((11, 4, b'P k "v\\'), (12, 5, "é".encode())), 9, 3),
            AppendEntries(2**63 - 1, 0, 0, (), 2**63 - 1, 0),
            AppendEntriesResponse(5, True, 12, 0, 0, 3),
            AppendEntriesResponse(5, False, 12, 7, 2, 3),
        ):
            with self.subTest(body=body):
                message = Message(1, 0, body)
                self.assertEqual(_decode_fast(encode_message(message)), message)

    def test_the_fast_path_declines_what_it_does_not_know(self) -> None:
        """Fields at 2**63, spacing outside the entries, extra keys and
        trailing bytes are left to the generic decoder."""
        for payload in (
            encode_message(Message(1, 0, AppendEntriesResponse(2**63, True, 0, 0, 0, 0))),
            encode_message(Message(1, 0, AppendEntries(1, 0, 0, (), 2**63, 0))),
            encode_message(Message(1, 0, AppendEntries(1, 0, 0, ((1, 1, b"x"),), 0, 0))).replace(b'"entries":', b'"entries": '),
            encode_message(Message(1, 0, AppendEntries(1, 0, 0, ((1, 1, b"x"),), 0, 0)))[:-1] + b',"x":1}',
            encode_message(Message(1, 0, AppendEntries(1, 0, 0, ((1, 1, b"x"),), 0, 0)))[:-1] + b"] }",
            encode_message(Message(1, 0, AppendEntriesResponse(1, True, 0, 0, 0, 0))) + b" ",
        ):
            with self.subTest(payload=payload):
                self.assertIsNone(_decode_fast(payload))
