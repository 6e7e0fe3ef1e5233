"""
The CPU cost of receiving the peer messages on a write's path, A/B in one
process: the generic decoder against the fast path, and (with
C{--framing}) a whole netstring through L{PeerServerProtocol.dataReceived}
with and without the fast framing.

Why: on a shared machine wall-clock latency is noise; the cost of one
decode, timed in alternating rounds in one process, is not.

Usage::

    python benchmarks/peer_decode.py [--rounds 7] [--number 20000]

Prints, per message, the best of C{--rounds} rounds of C{--number} calls,
in microseconds per call.
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.testing import StringTransport  # noqa: E402

from kvstore.protocols import peer  # noqa: E402
from kvstore.raft.messages import AppendEntries, AppendEntriesResponse, Message  # noqa: E402

MEMBERSHIP = peer.Membership(2, "c", frozenset({1, 3}))
PAYLOADS = {
    "append, one 100-byte PUT": peer.encode_message(
        Message(1, 2, AppendEntries(5, 1000, 5, ((1001, 5, b"P key00001 " + b"v" * 100),), 999, 42))
    ),
    "append, no entries": peer.encode_message(Message(1, 2, AppendEntries(5, 1001, 5, (), 1001, 43))),
    "append_resp": peer.encode_message(Message(1, 2, AppendEntriesResponse(5, True, 1001, 0, 0, 42))),
}


def _protocol(generic_framing: bool) -> peer.PeerServerProtocol:
    protocol = peer.PeerServerProtocol(MEMBERSHIP, lambda message: None)
    if generic_framing:
        protocol.dataReceived = protocol._data_received_generic  # type: ignore[method-assign]
    protocol.makeConnection(StringTransport())
    hello = peer.encode_hello(1, "c")
    protocol.dataReceived(b"%d:%s," % (len(hello), hello))
    return protocol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--framing", action="store_true", help="also time whole netstrings through the protocol")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    for name, payload in PAYLOADS.items():
        candidates = {
            "generic decode": lambda: peer.decode_message_generic(payload, 1, MEMBERSHIP),
            "decode_message": lambda: peer.decode_message(payload, 1, MEMBERSHIP),
        }
        if args.framing:
            frame = b"%d:%s," % (len(payload), payload)
            slow, fast = _protocol(True), _protocol(False)
            candidates["netstring, generic framing"] = lambda: slow.dataReceived(frame)
            candidates["netstring, fast framing"] = lambda: fast.dataReceived(frame)
        best = {label: float("inf") for label in candidates}
        for _ in range(args.rounds):
            for label, call in candidates.items():  # alternating: same background load
                best[label] = min(best[label], timeit.timeit(call, number=args.number) / args.number)
        print(f"{name} ({len(payload)} bytes): " + ", ".join(f"{label} {t * 1e6:.2f} µs" for label, t in best.items()))


if __name__ == "__main__":
    main()
