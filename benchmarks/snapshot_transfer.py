"""
How fast does InstallSnapshot move a snapshot file between two nodes, and
how long does it stall either reactor?

Two processes on this machine, joined by real loopback TCP with the
production peer protocol (PeerLinks, PeerServerFactory, binary frames at
version 3): the leader sends a snapshot file of --mb MiB (random content,
so nothing compresses) with a TransferRouter, the follower receives it
with its own (file work on a StorageThread in each process, as a node
would).  Reported: the time from the offer to the leader's "done" (the
follower has written, verified, fsynced and renamed the file and answered
done), MB/s, and for each process the longest reactor stall seen by a lag
probe (a LoopingCall every 5 ms; a stall is the gap between two calls minus
5 ms), its p99, and the process's CPU time.

    nice python benchmarks/snapshot_transfer.py --mb 100

With --decode it measures instead, in one process and without sockets, the
receiving end's cost per 1 MiB chunk: --mb chunk frames fed to a
PeerServerProtocol in pieces of 64 KiB (what one TCP read gives) and of
4 KiB (many small reads, where a quadratic buffer would show), and the
sending end's encoding of a chunk into its netstring.

Run it as a script from the checkout root; it starts the follower itself.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, succeed

from kvstore.protocols.peer import SNAPSHOT_TRANSFER_SINCE, Membership, PeerServerFactory
from kvstore.protocols.peer_links import PeerLinks
from kvstore.raft.messages import Message
from kvstore.node.snapshot_transfer import TransferRouter
from kvstore.storage.snapshots import SnapshotMeta, SnapshotStore
from kvstore.storage.wal import StorageThread
from kvstore.tools.ports import allocate_port_range

CLUSTER = "bench"
LEADER, FOLLOWER = 1, 2
INDEX, TERM = 1000, 1
PROBE = 0.005


class LagProbe:
    """Gaps between ticks of a 5 ms LoopingCall, minus 5 ms."""

    def __init__(self) -> None:
        self.stalls: list[float] = []
        self._last = time.monotonic()
        self._call = task.LoopingCall(self._tick)

    def start(self) -> None:
        self._last = time.monotonic()
        self._call.start(PROBE, now=False)

    def _tick(self) -> None:
        now = time.monotonic()
        self.stalls.append(max(0.0, now - self._last - PROBE))
        self._last = now

    def report(self) -> dict[str, float]:
        s = sorted(self.stalls) or [0.0]
        return {"max_ms": round(s[-1] * 1000, 2), "p99_ms": round(s[int(len(s) * 0.99) - 1 if len(s) > 1 else 0] * 1000, 2),
                "ticks": len(s)}


def make_snapshot(store: SnapshotStore, mb: int) -> int:
    writer = store.begin(SnapshotMeta(INDEX, TERM, CLUSTER))
    for _ in range(mb):
        writer.write(os.urandom(1 << 20))
    return writer.finish().size or 0


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_node(role: str, directory: str, my_port: int, other_port: int, mb: int, window: int) -> None:
    node_id, other = (LEADER, FOLLOWER) if role == "leader" else (FOLLOWER, LEADER)
    store = SnapshotStore.open(os.path.join(directory, role))
    size = make_snapshot(store, mb) if role == "leader" else 0
    links = PeerLinks(reactor, node_id, CLUSTER, {other: ("127.0.0.1", other_port)})
    runner = StorageThread(reactor)
    probe = LagProbe()
    result: dict[str, Any] = {"role": role}
    finished: Deferred[None] = Deferred()
    sender_stats: list[dict[str, int]] = []

    def installed(leader: int, term: int, index: int, snapshot_term: int) -> "Deferred[None]":
        result["installed_at"] = time.monotonic()
        return succeed(None)

    def report(follower: int, ok: bool) -> None:
        result["ok"] = ok
        result["done_at"] = time.monotonic()
        finished.callback(None)

    spent = {"receive_ms": 0.0, "send_ms": 0.0}

    def send(message: Message) -> None:
        start = time.perf_counter()
        links.send(message)
        spent["send_ms"] = max(spent["send_ms"], (time.perf_counter() - start) * 1000)

    router = TransferRouter(
        store, node_id=node_id, send=send, clock=reactor, current_leader=lambda: (LEADER, TERM),
        installed=installed, report=report, run_in_thread=runner, window=window,
    )
    links.unsendable.append(router.unsendable)

    def deliver(message: Message) -> None:
        router.receive(message)

    membership = Membership(node_id, CLUSTER, frozenset({other}))
    factory = PeerServerFactory(membership, deliver)
    inbound: list[Any] = []
    build = factory.buildProtocol

    def build_and_keep(addr: Any) -> Any:
        protocol = build(addr)
        inbound.append(protocol)
        received = protocol.dataReceived

        def timed(data: bytes) -> None:
            start = time.perf_counter()
            received(data)
            spent["receive_ms"] = max(spent["receive_ms"], (time.perf_counter() - start) * 1000)

        protocol.dataReceived = timed  # type: ignore[method-assign]
        return protocol

    factory.buildProtocol = build_and_keep  # type: ignore[method-assign]
    reactor.listenTCP(my_port, factory, interface="127.0.0.1")
    links.startService()
    probe.start()

    def negotiated() -> bool:
        # Both directions: the follower's answers travel on its own link,
        # and a link drops them until its welcome has arrived.
        link = links.links[other]
        outbound = link.protocol is not None and link.protocol.answered and link.version == SNAPSHOT_TRANSFER_SINCE
        return outbound and any(p.version == SNAPSHOT_TRANSFER_SINCE for p in inbound)

    def start_transfer() -> None:
        if not negotiated():
            reactor.callLater(0.01, start_transfer)
            return
        if "settled" not in result:
            spent.update(receive_ms=0.0, send_ms=0.0)
            result["settled"] = True  # let the follower's welcome arrive too
            probe.stalls.clear()  # and measure the idle stalls meanwhile
            reactor.callLater(1.0, start_transfer)
            return
        del result["settled"]
        result["idle_stall"] = probe.report()
        result["size"] = size
        result["cpu_before"] = cpu()
        result["started_at"] = time.monotonic()
        probe.stalls.clear()
        router.send_snapshot(FOLLOWER, TERM, INDEX, TERM)
        sender_stats.append(router.senders[FOLLOWER].stats)

    def finish(_: object) -> None:
        result["cpu_s"] = round(cpu() - result.pop("cpu_before"), 2)
        seconds = result["done_at"] - result["started_at"]
        result["seconds"] = round(seconds, 3)
        result["mb_per_s"] = round(size / seconds / 1e6, 1)
        result["stall"] = probe.report()
        result["longest_callback_ms"] = {k: round(v, 2) for k, v in spent.items()}
        result["sender"] = sender_stats[0] if sender_stats else None
        reactor.callLater(0.2, reactor.stop)

    if role == "leader":
        reactor.callLater(0.05, start_transfer)
        finished.addCallback(finish)
    else:
        cpu_start = [0.0]

        def follower_stats() -> None:
            # The follower runs until its installed file is seen, then
            # reports its own stalls and CPU time over the transfer.
            if "installed_at" in result:
                result["cpu_s"] = round(cpu() - cpu_start[0], 2)
                result["receive_and_install_s"] = round(result["installed_at"] - result.pop("first_chunk_at"), 3)
                result["stall"] = probe.report()
                result["longest_callback_ms"] = {k: round(v, 2) for k, v in spent.items()}
                result["received"] = router.receiver.stats
                print(json.dumps(result), flush=True)
                reactor.callLater(1.0, reactor.stop)
                return
            reactor.callLater(0.05, follower_stats)

        idle: list[float] = []

        def first_chunk_clock() -> None:
            if router.receiver.in_progress is None and "installed_at" not in result:
                idle.extend(probe.stalls)
                probe.stalls.clear()
                cpu_start[0] = cpu()
                result["first_chunk_at"] = time.monotonic()
                reactor.callLater(0.001, first_chunk_clock)
                return
            idle_probe = LagProbe()
            idle_probe.stalls = idle[-200:]  # the last second before the transfer
            result["idle_stall"] = idle_probe.report()

        reactor.callWhenRunning(first_chunk_clock)
        reactor.callWhenRunning(follower_stats)
    reactor.run()
    runner.stop()
    if role == "leader":
        print(json.dumps(result), flush=True)


def measure_decode(mb: int) -> dict[str, Any]:
    """Feed C{mb} 1 MiB chunk frames to a receiving protocol; time it."""
    from twisted.internet.testing import StringTransport
    from twisted.protocols.basic import NetstringReceiver

    from kvstore.protocols.peer import encode_hello, encode_message
    from kvstore.raft.messages import SnapshotChunk

    class Sink(NetstringReceiver):
        def __init__(self) -> None:
            self.strings: list[bytes] = []

        def stringReceived(self, string: bytes) -> None:
            self.strings.append(string)

    data = os.urandom(1 << 20)
    size = mb << 20
    frames = [
        encode_message(Message(LEADER, FOLLOWER, SnapshotChunk(TERM, INDEX, TERM, size, i << 20, data)))
        for i in range(mb)
    ]
    encode_times = []
    for i in range(mb):
        message = Message(LEADER, FOLLOWER, SnapshotChunk(TERM, INDEX, TERM, size, i << 20, data))
        start = time.perf_counter()
        sink = Sink()
        sink.makeConnection(StringTransport())
        sink.sendString(encode_message(message))
        encode_times.append(time.perf_counter() - start)
    stream = b"".join(b"%d:%s," % (len(f), f) for f in frames)
    hello = encode_hello(LEADER, CLUSTER)
    result: dict[str, Any] = {
        "chunks": mb,
        "encode_and_frame_ms": {"mean": round(sum(encode_times) / mb * 1000, 3), "max": round(max(encode_times) * 1000, 3)},
    }
    for piece in (64 << 10, 4 << 10):
        delivered: list[Message] = []
        protocol = PeerServerFactory(Membership(FOLLOWER, CLUSTER, frozenset({LEADER})), delivered.append).buildProtocol(None)
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"%d:%s," % (len(hello), hello))
        longest = 0.0
        start = time.perf_counter()
        for offset in range(0, len(stream), piece):
            t = time.perf_counter()
            protocol.dataReceived(stream[offset : offset + piece])
            longest = max(longest, time.perf_counter() - t)
        total = time.perf_counter() - start
        assert len(delivered) == mb and delivered[-1].body.data == data  # type: ignore[union-attr]
        result[f"decode_{piece >> 10}KiB_reads"] = {
            "ms_per_chunk": round(total / mb * 1000, 3),
            "MB_per_s": round(len(stream) / total / 1e6, 1),
            "longest_read_ms": round(longest * 1000, 3),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=100, help="snapshot size in MiB")
    parser.add_argument("--window", type=int, default=4, help="chunks in flight")
    parser.add_argument("--decode", action="store_true", help="measure frame decoding only (see above)")
    parser.add_argument("--role", choices=["leader", "follower"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.decode:
        print(json.dumps(measure_decode(args.mb), indent=2))
        return
    if args.role:
        mine, other = (int(p) for p in args.ports.split(","))
        run_node(args.role, args.dir, mine, other, args.mb, args.window)
        return
    directory = tempfile.mkdtemp(prefix="kvstore-transfer-bench-", dir=os.environ.get("BENCH_DIR"))
    try:
        leader_port = allocate_port_range(2)
        follower_port = leader_port + 1
        follower = subprocess.Popen(
            [sys.executable, __file__, "--role", "follower", "--dir", directory, "--mb", str(args.mb),
             "--window", str(args.window), "--ports", f"{follower_port},{leader_port}"],
            stdout=subprocess.PIPE, text=True,
        )
        leader = subprocess.run(
            [sys.executable, __file__, "--role", "leader", "--dir", directory, "--mb", str(args.mb),
             "--window", str(args.window), "--ports", f"{leader_port},{follower_port}"],
            stdout=subprocess.PIPE, text=True, timeout=600,
        )
        follower_out, _ = follower.communicate(timeout=60)
        report = {
            "leader": json.loads(leader.stdout.strip().splitlines()[-1]),
            "follower": json.loads(follower_out.strip().splitlines()[-1]),
        }
        for side in report.values():
            for key in ("started_at", "done_at", "installed_at"):
                side.pop(key, None)
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
