"""
Property tests of the two decoders that face the network, complementing
the example and property tests in test_protocols_commands.py,
test_protocols_peer.py and test_raft_messages.py:

  - the client line parser: whatever it accepts re-encodes to a line that
    parses to the same command, and the line limit is exactly the length
    check;
  - the peer decoder on raw bytes (not only on decoded JSON), through the
    pure functions and through the receiving protocol under arbitrary
    chunking, including integers too large for the log format.

tests/fuzz/peer_decoder.py fuzzes the same peer invariants with coverage
guidance (atheris).
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.commands import (
    DEFAULT_LIMITS,
    CommandError,
    LineTooLong,
    Limits,
    encode_command,
    parse_command,
)
from kvstore.protocols.peer import (
    Membership,
    PeerServerFactory,
    decode_hello,
    decode_message,
    encode_hello,
    encode_message,
)
from kvstore.raft.messages import (
    MAX_FIELD_VALUE,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    MalformedMessage,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    from_dict,
    to_dict,
)

from tests.support import parametrize, slow

MEMBERSHIP = Membership(node_id=0, cluster_id="c1", peer_ids=frozenset({1, 2}))

# ---------------------------------------------------------------------------
# The client line parser

_TOKENS = [b"PUT", b"put", b"GET", b"Get", b"DELETE", b"STALE", b"stale", b"PING", b"STATUS", b"EXIT", b" ", b"  ",
           b"\t", b"\r", b"k", b"key", b"v a l", b"\xff", b"\x00", b"\x7f", "é".encode(), "\u2028".encode(),
           "\u00a0".encode(), "𝄞".encode()]
_SMALL = Limits.for_sizes(4, 8)


# ---------------------------------------------------------------------------
# The peer decoder

ints = st.integers(0, 2**40)
def _append_entries(prev_index: int, prev_term: int, steps: list[tuple[int, str]], extra: int, commit: int,
                    round_: int) -> AppendEntries:
    """A well-formed AppendEntries: consecutive indexes after prev_index,
    terms never decreasing from prev_term and never above the message's."""
    term, items = prev_term, []
    for n, (step, data) in enumerate(steps):
        term += step
        items.append(Entry(prev_index + 1 + n, term, data.encode("utf-8", "surrogatepass")))
    return AppendEntries(term + extra, prev_index, prev_term, tuple(items), commit, round_)


append_entries = st.builds(
    _append_entries,
    st.integers(0, 50),
    ints,
    st.lists(st.tuples(st.integers(0, 3), st.text(max_size=20)), max_size=4),
    st.integers(0, 5),
    ints,
    ints,
)
bodies = st.one_of(
    append_entries,
    st.builds(AppendEntriesResponse, ints, st.booleans(), ints, ints, ints, ints),
    st.builds(RequestVote, ints, ints, ints, st.booleans()),
    st.builds(RequestVoteResponse, ints, st.booleans(), st.booleans()),
    st.builds(ReadIndexRequest, ints, ints),
    st.builds(ReadIndexResponse, ints, ints, st.none() | ints),
)
valid_messages = st.builds(Message, st.sampled_from([1, 2]), st.just(0), bodies).filter(
    lambda m: all(not any(0xD800 <= ord(c) <= 0xDFFF for c in e.payload.decode("utf-8", "surrogatepass"))
                  # a payload starting 0x00 is Raft's own and must be a valid configuration (kvstore.raft.membership)
                  and not e.payload.startswith(b"\x00")
                  for e in getattr(m.body, "entries", ()))
)


def _netstring(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


def _connect() -> tuple[list[Message], object, StringTransport]:
    delivered: list[Message] = []
    protocol = PeerServerFactory(MEMBERSHIP, delivered.append).buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    transport = StringTransport()
    protocol.makeConnection(transport)
    return delivered, protocol, transport


def _feed(protocol: object, data: bytes, cuts: list[int]) -> None:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for a, b in zip(points, points[1:]):
        protocol.dataReceived(data[a:b])  # type: ignore[attr-defined]


def _check_decoders(payload: bytes) -> None:
    try:
        assert decode_hello(payload, MEMBERSHIP) in MEMBERSHIP.peer_ids
    except MalformedMessage:
        pass
    try:
        message = decode_message(payload, 1, MEMBERSHIP)
    except MalformedMessage:
        pass
    else:
        assert (message.sender, message.receiver) == (1, 0)


json_leaf = st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats() | st.text(max_size=6)
json_docs = st.recursive(json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(
    st.sampled_from(["type", "from", "to", "term", "id", "index", "entries", "version", "cluster", "x"]), c,
    max_size=6), max_leaves=15)


@slow
class DecoderPropertyTests(SynchronousTestCase):
    """
    Properties of the client line parser and of the peer decoder on raw bytes.
    """

    @settings(max_examples=1000)
    @given(st.lists(st.sampled_from(_TOKENS), max_size=10), st.sampled_from([DEFAULT_LIMITS, _SMALL]))
    def test_accepted_lines_re_encode_to_the_same_command(self, tokens: list[bytes], limits: Limits) -> None:
        """Whatever parse_command accepts, encode_command writes back as a line
        that parses (under the same limits) to an equal command."""
        line = b"".join(tokens)
        try:
            command = parse_command(line, limits)
        except CommandError as e:
            assert "\n" not in str(e) and "\r" not in str(e)
            assert isinstance(e, LineTooLong) == (len(line) > limits.max_line_bytes)
            return
        again = encode_command(command)
        assert again.endswith(b"\n")
        assert parse_command(again[:-1], limits) == command

    @given(st.binary(max_size=64), st.integers(0, 40))
    def test_line_limit_is_exactly_the_length(self, line: bytes, extra: int) -> None:
        """LineTooLong is raised exactly when the line exceeds the limit."""
        limits = Limits.for_sizes(1, 8)
        padded = line + b"x" * extra
        try:
            parse_command(padded, limits)
        except LineTooLong:
            assert len(padded) > limits.max_line_bytes
        except CommandError:
            assert len(padded) <= limits.max_line_bytes

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=400))
    def test_decoders_on_arbitrary_bytes_raise_only_malformed_message(self, payload: bytes) -> None:
        """decode_hello and decode_message, given any bytes, return a member id
        or a message addressed correctly, or raise MalformedMessage."""
        _check_decoders(payload)

    @settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(json_docs)
    def test_decoders_on_arbitrary_json_raise_only_malformed_message(self, doc: object) -> None:
        """The same for any JSON document, serialized as a peer would."""
        payload = json.dumps(doc).encode()
        _check_decoders(payload)

    @given(valid_messages)
    def test_valid_messages_round_trip_through_bytes(self, message: Message) -> None:
        """Every valid message survives encode_message / decode_message."""
        assert decode_message(encode_message(message), message.sender, MEMBERSHIP) == message

    @parametrize(
        "field, value",
        [(field, value) for value in (MAX_FIELD_VALUE, 2**64, 10**400) for field in ("term", "from", "to", "id")],
        ids=[f"{field}_{index}" for index in range(3) for field in ("term", "from", "to", "id")],
    )
    def test_integers_beyond_the_log_format_are_malformed(self, field: str, value: int) -> None:
        """A term (or any integer) the WAL's u64 fields could not store, or that
        leaves no room for more elections, is malformed: accepting a term of
        10**400 made the node crash on its next log append."""
        raw = to_dict(Message(1, 0, ReadIndexRequest(1, 1)))
        raw[field] = value
        with self.assertRaises(MalformedMessage):
            from_dict(raw)
        raw[field] = MAX_FIELD_VALUE - 1
        if field in ("term", "id"):
            assert from_dict(raw)

    def test_entry_terms_beyond_the_log_format_are_malformed(self) -> None:
        """An entry whose term the WAL's u64 field could not store is malformed."""
        raw = to_dict(Message(1, 0, AppendEntries(1, 0, 0, (Entry(1, 1, b"x"),), 0)))
        raw["entries"][0][1] = 2**64
        with self.assertRaises(MalformedMessage):
            from_dict(raw)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(valid_messages, max_size=5), st.lists(st.integers(0, 10**6), max_size=8))
    def test_protocol_delivery_is_independent_of_chunking(self, messages: list[Message], cuts: list[int]) -> None:
        """A hello and valid messages, split at arbitrary points, deliver exactly
        those messages, in order, with the connection kept open."""
        sender = 1
        messages = [Message(sender, 0, m.body) for m in messages]
        data = _netstring(encode_hello(sender, "c1")) + b"".join(_netstring(encode_message(m)) for m in messages)
        delivered, protocol, transport = _connect()
        _feed(protocol, data, cuts)
        assert delivered == messages
        assert not transport.disconnecting

    @settings(max_examples=500, deadline=None)
    @given(st.sampled_from([b"", b"hello"]), st.binary(max_size=300), st.lists(st.integers(0, 10**6), max_size=6))
    def test_protocol_never_raises_and_delivers_only_valid_messages(self, prefix: bytes, garbage: bytes,
                                                                     cuts: list[int]) -> None:
        """Any byte stream (optionally after a valid hello), in any chunking:
        no exception escapes, and whatever is delivered comes from the sender
        the hello named, addressed to this node, and round-trips."""
        data = (_netstring(encode_hello(2, "c1")) if prefix else b"") + garbage
        delivered, protocol, transport = _connect()
        _feed(protocol, data, cuts)
        for message in delivered:
            assert (message.sender, message.receiver) == (2, 0)
            assert decode_message(encode_message(message), 2, MEMBERSHIP) == message
