# -*- test-case-name: tests.test_review_latency2_adversarial -*-
"""
Review of issue 16's fast peer decoding and framing against a hostile peer:
a fixed table of payloads and byte streams chosen at the edges of the fast
path's patterns (signs, leading zeros, 2**63, duplicate keys, whitespace,
bytes that are not UTF-8, lengths Twisted refuses), each of which must be
accepted or refused exactly as the generic decoder and Twisted's netstring
parser do.  The random differential tests may miss any one of them; these
cannot.
"""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.peer import (
    Decoder,
    Membership,
    PeerServerProtocol,
    decode_message,
    decode_message_generic,
    encode_hello,
    encode_message,
)
from kvstore.raft.messages import AppendEntries, AppendEntriesResponse, MalformedMessage, Message

MEMBERSHIP = Membership(node_id=2, cluster_id="c", peer_ids=frozenset({1, 3}))

_APPEND = (
    b'{"type":"append","from":%s,"to":2,"term":%s,"prev_index":%s,"prev_term":0,"commit":0,"round":0,'
    b'"entries":%s}'
)
_RESPONSE = (
    b'{"type":"append_resp","from":1,"to":2,"term":%s,"success":%s,"index":%s,"conflict_index":0,'
    b'"conflict_term":0,"round":0}'
)

# Numbers as a hostile peer may spell them.
_NUMBERS = [
    b"1", b"0", b"-0", b"-1", b"01", b"00", b"+1", b" 1", b"1 ", b"1.0", b"1e0", b"true", b"false", b"null",
    b'"1"', b"9223372036854775807", b"9223372036854775808", b"18446744073709551616", b"9" * 20, b"1" * 5000,
]
_ENTRIES = [
    b"[]", b"[ ]", b" []", b"[] ", b"[]\n", b"{}", b"null", b'[[1,1,"x"]]', b'[ [1,1,"x"] ]', b'[[1,1]]',
    b'[[1,1,"x",1]]', b'[[1,true,"x"]]', b'[[true,1,"x"]]', b'[[1,1,1]]', b'[[1,-0,"x"]]', b'[[1,1.0,"x"]]',
    b'[[1,1,"\\ud800"]]', b'[[1,1,"\xff"]]', b'[[1,1,"\xed\xa0\x80"]]', b'[[1,1,"\xc3"]]', b'[[1,1,"\x00"]]',
    b'[[1,1,"x"],[3,1,"y"]]', b'[[1,2,"x"],[2,1,"y"]]', b'[[1,1,"x"]],"entries":[]', b'[[1,1,"x"]],"term":9',
    b"[" * 10000 + b"]" * 10000, b'[[1,9223372036854775807,"x"]]', b'[[1,9223372036854775808,"x"]]',
]
_SUCCESS = [b"true", b"false", b"1", b"0", b"True", b'"true"', b"null"]


def _outcome(decode: Decoder, payload: bytes) -> object:
    try:
        return ("ok", decode(payload, 1, MEMBERSHIP))
    except MalformedMessage as e:
        return ("error", type(e), str(e))


def _payloads() -> list[bytes]:
    payloads = []
    for number in _NUMBERS:
        payloads.append(_APPEND % (b"1", number, b"0", b"[]"))
        payloads.append(_APPEND % (number, b"1", b"0", b"[]"))
        payloads.append(_APPEND % (b"1", b"5", number, b"[]"))
        payloads.append(_RESPONSE % (number, b"true", b"0"))
        payloads.append(_RESPONSE % (b"1", b"true", number))
    for entries in _ENTRIES:
        payloads.append(_APPEND % (b"1", b"5", b"0", entries))
    for success in _SUCCESS:
        payloads.append(_RESPONSE % (b"1", success, b"0"))
    good_append, good_response = _APPEND % (b"1", b"1", b"0", b"[]"), _RESPONSE % (b"1", b"true", b"0")
    for good in (good_append, good_response):
        payloads += [good + tail for tail in (b" ", b"\n", b"x", b"}", b"\x00")]
        payloads += [b" " + good, b"\xef\xbb\xbf" + good, good[:-1], good[:-1] + b',"term":7}']
        payloads.append(good.replace(b'"from":1', b'"from":3'))  # another sender
        payloads.append(good.replace(b'"to":2', b'"to":3'))  # another receiver
        payloads.append(good.replace(b":", b": "))  # JSON spacing
        payloads.append(good.replace(b'"term":1', b'"term":1,"term":7'))  # a duplicate key (the last wins)
        payloads.append(good.replace(b'"term":1', b'"term":\\u0031'))  # an escape where a number goes
    return payloads


class AdversarialDecodingTests(SynchronousTestCase):
    def test_edge_payloads_decode_as_the_generic_decoder_does(self) -> None:
        """Every payload in the table is accepted, or refused with the same
        error, by the fast decoder exactly as by the generic one."""
        for payload in _payloads():
            with self.subTest(payload=payload[:100]):
                self.assertEqual(_outcome(decode_message, payload), _outcome(decode_message_generic, payload))

    def test_largest_field_is_accepted_and_the_next_refused(self) -> None:
        """2**63 - 1 is a valid term; 2**63 is refused, as the generic decoder does."""
        largest = decode_message(_RESPONSE % (b"9223372036854775807", b"true", b"0"), 1, MEMBERSHIP)
        self.assertEqual(largest.body.term, 2**63 - 1)
        self.assertRaises(
            MalformedMessage, decode_message, _RESPONSE % (b"9223372036854775808", b"true", b"0"), 1, MEMBERSHIP
        )


def _netstring(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


_HELLO = _netstring(encode_hello(1, "c"))
_GOOD = _netstring(encode_message(Message(1, 2, AppendEntriesResponse(1, True, 1, 0, 0, 0))))
_APPEND_GOOD = _netstring(encode_message(Message(1, 2, AppendEntries(1, 0, 0, ((1, 1, b"P k v"),), 0, 0))))
_FOREIGN = _netstring(encode_message(Message(3, 2, AppendEntriesResponse(1, True, 1, 0, 0, 0))))

# Streams a hostile peer may send: bad lengths before and after the hello,
# missing separators, many netstrings then a partial one.
_STREAMS = [
    _HELLO + _GOOD + _APPEND_GOOD + _GOOD,
    _HELLO + _GOOD + _FOREIGN + _GOOD,
    _HELLO + _GOOD * 5 + _GOOD[:9],
    _HELLO + b"0:," + _GOOD,
    _HELLO + _GOOD + b"01:x," + _GOOD,
    _HELLO + _GOOD + b"+1:x," + _GOOD,
    _HELLO + _GOOD + b" 1:x," + _GOOD,
    _HELLO + _GOOD + b"1 :x," + _GOOD,
    _HELLO + _GOOD + b"-1:x," + _GOOD,
    _HELLO + _GOOD + b"1x," + _GOOD,
    _HELLO + _GOOD + b"1:xy" + _GOOD,
    _HELLO + _GOOD + b"1:x" + _GOOD,
    _HELLO + _GOOD + b"5\n:hello,",
    _HELLO + b"16777217:",
    _HELLO + b"016777216:",
    _HELLO + b"999999999:",
    b"4097:" + b"x" * 4097 + b"," + _HELLO,
    b"4096:" + b"x" * 4096 + b"," + _HELLO,
    b"00004:" + _HELLO,
    _GOOD + _HELLO,
    _HELLO + _HELLO + _GOOD,
]


class _Recording(PeerServerProtocol):
    """Records deliveries and rejections; optionally Twisted's parser only."""

    def __init__(self, generic: bool, close_on_first: bool) -> None:
        self.delivered: list[Message] = []
        self.rejections: list[str] = []
        self._close_on_first = close_on_first
        super().__init__(MEMBERSHIP, self._record)
        if generic:
            self.dataReceived = self._data_received_generic  # type: ignore[method-assign]

    def _record(self, message: Message) -> None:
        self.delivered.append(message)
        if self._close_on_first and len(self.delivered) == 1:
            self.transport.loseConnection()

    def _log_rejection(self, reason: str) -> None:
        self.rejections.append(reason)
        super()._log_rejection(reason)


def _feed(generic: bool, close_on_first: bool, data: bytes, cuts: list[int]) -> object:
    protocol = _Recording(generic, close_on_first)
    transport = StringTransport()
    protocol.makeConnection(transport)
    points = [0, *cuts, len(data)]
    for a, b in zip(points, points[1:]):
        protocol.dataReceived(data[a:b])
    return (protocol.delivered, protocol.rejections, transport.value(), transport.disconnecting,
            protocol.brokenPeer, protocol.MAX_LENGTH)


class AdversarialFramingTests(SynchronousTestCase):
    def test_edge_streams_frame_as_twisteds_parser_does(self) -> None:
        """Each stream, whole, cut once at every byte, and cut at every byte,
        delivers, answers and rejects exactly as Twisted's parser alone,
        also when the first delivery closes the transport."""
        for data in _STREAMS:
            splits = [[], list(range(1, len(data)))] + [[i] for i in range(1, len(data))]
            for close_on_first in (False, True):
                for cuts in splits:
                    with self.subTest(data=data[:60], cuts=cuts[:3], close=close_on_first):
                        self.assertEqual(
                            _feed(False, close_on_first, data, cuts), _feed(True, close_on_first, data, cuts)
                        )
