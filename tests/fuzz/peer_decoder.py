"""
A coverage-guided fuzz target (atheris / libFuzzer) for the peer decoder:
the bytes a remote node can send, fed through the real receiving protocol
(netstring framing, hello check, JSON, message validation).

The invariants checked for every input:
  - nothing but L{MalformedMessage} ever escapes the pure decoders;
  - the protocol never raises, whatever the bytes and however they are
    chunked; it delivers only messages from the sender its hello named,
    addressed to this node, whose integers fit the log format, and which
    re-encode to an equal message.

Run it (a corpus directory keeps what it found between runs)::

    PYTHONPATH=. python tests/fuzz/peer_decoder.py --write-seeds -max_total_time=600 fuzz-corpus/peer

The test suite runs it briefly (tests/test_fuzz_peer_decoder.py).
"""

from __future__ import annotations

import sys

import atheris

# Twisted is not ours to fuzz: import it before instrumenting.
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

with atheris.instrument_imports(include=["kvstore.protocols.peer", "kvstore.raft.messages"]):
    from kvstore.protocols.peer import Membership, PeerServerFactory, decode_hello, decode_message, encode_message
    from kvstore.raft.messages import MAX_FIELD_VALUE, AppendEntries, MalformedMessage, Message

MEMBERSHIP = Membership(node_id=0, cluster_id="c1", peer_ids=frozenset({1, 2}))
_HELLO = b'{"type":"hello","version":1,"cluster":"c1","from":1}'


def _check(message: Message, sender: int) -> None:
    assert message.sender == sender and message.receiver == 0, message
    body = message.body
    values = [v for v in vars_of(body) if type(v) is int]
    if isinstance(body, AppendEntries):
        values += [x for e in body.entries for x in (e.index, e.term)]
    assert all(0 <= v < MAX_FIELD_VALUE for v in values), message
    again = decode_message(encode_message(message), sender, MEMBERSHIP)
    assert again == message, (message, again)


def vars_of(body: object) -> list[object]:
    return [getattr(body, name) for name in body.__slots__]  # type: ignore[attr-defined]


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 4, data[1:]
    # The pure decoders.
    for decode in (lambda p: decode_hello(p, MEMBERSHIP), lambda p: decode_message(p, 1, MEMBERSHIP)):
        try:
            result = decode(rest)
        except MalformedMessage:
            pass
        else:
            if isinstance(result, Message):
                _check(result, 1)
            else:
                assert result in MEMBERSHIP.peer_ids
    # The protocol, fed raw bytes (mode 0), or a valid hello and then the
    # input as one netstring (mode 1), or as raw framing (mode 2), in
    # chunks of a size taken from the input (mode 3).
    delivered: list[Message] = []
    protocol = PeerServerFactory(MEMBERSHIP, delivered.append).buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    protocol.makeConnection(StringTransport())
    hello = b"%d:%s," % (len(_HELLO), _HELLO)
    if mode == 0:
        stream = rest
    elif mode == 1:
        stream = hello + b"%d:%s," % (len(rest), rest)
    else:
        stream = hello + rest
    step = 1 + (rest[0] % 7 if rest and mode == 3 else len(stream))
    for i in range(0, len(stream), step):
        protocol.dataReceived(stream[i : i + step])
    sender = protocol._sender
    for message in delivered:
        assert sender is not None
        _check(message, sender)


def seeds() -> list[bytes]:
    """Valid inputs of every message type, for a starting corpus."""
    from kvstore.raft.messages import (
        AppendEntriesResponse,
        Entry,
        ReadIndexRequest,
        ReadIndexResponse,
        RequestVote,
        RequestVoteResponse,
    )

    bodies = [
        AppendEntries(3, 1, 1, (Entry(2, 3, b"Pk v"), Entry(3, 3, b"")), 1, 4),
        AppendEntries(1, 0, 0, (), 0, 0),
        AppendEntriesResponse(3, False, 2, 1, 1, 7),
        RequestVote(5, 10, 4, True),
        RequestVoteResponse(5, True, False),
        ReadIndexRequest(2, 99),
        ReadIndexResponse(2, 99, None),
        ReadIndexResponse(2, 99, 17),
    ]
    out = [b"\x00" + _HELLO]
    for body in bodies:
        payload = encode_message(Message(1, 0, body))
        out.append(b"\x01" + payload)
        out.append(b"\x02" + b"%d:%s," % (len(payload), payload))
    return out


def main() -> None:
    args = list(sys.argv)
    if "--write-seeds" in args:
        import pathlib

        args.remove("--write-seeds")
        corpus = pathlib.Path(args[-1])
        corpus.mkdir(parents=True, exist_ok=True)
        for n, seed in enumerate(seeds()):
            (corpus / f"seed-{n}").write_bytes(seed)
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
