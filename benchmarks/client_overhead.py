"""
What the client library costs per call compared with a raw socket, against
a one-node cluster.

Why: the library parses every reply, keeps a retry loop and, for threads,
locks; this measures that cost so that harnesses and benchmarks can switch
to it knowing the price.  On a shared machine the background load moves
from second to second, so every variant is measured in alternating rounds
within one run and the medians of the rounds are compared.

Variants (each round sends C{--requests} requests of one kind, GET or PUT):

  - C{raw-seq}: one blocking socket, one request at a time;
  - C{lib-seq}: L{kvstore.client.Client}, one call at a time;
  - C{raw-pipe}: one socket, all requests written (by a helper thread)
    before the replies are read;
  - C{lib-threads}: one L{Client} shared by C{--threads} threads, whose
    calls are pipelined on its one connection;
  - C{twisted-pipe}: L{kvstore.client.deferred.DeferredClient}, all calls
    made at once on a running reactor (in a thread of its own);
  - C{raw-asyncio-seq}: asyncio streams, one request at a time (what any
    asyncio program pays per round trip, library or not);
  - C{asyncio-seq}: L{kvstore.client.asyncio.AsyncClient}, one call at a
    time;
  - C{asyncio-pipe}: L{kvstore.client.asyncio.AsyncClient}, all calls made
    at once (C{asyncio.gather}), pipelined on its one connection.

Usage::

    python benchmarks/client_overhead.py --requests 2000 --rounds 5 [--no-fsync]

Prints one line per variant and kind: median wall-clock microseconds per
request over the rounds and the difference from the raw socket (sequential
variants against C{raw-seq}, pipelined ones against C{raw-pipe}), and the
same for the CPU time this process spent per request (the library's own
cost, which the machine's load disturbs far less than wall time).  The node is
started on a free port in a temporary directory and stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Awaitable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kvstore.client import Client  # noqa: E402
from kvstore.client.asyncio import AsyncClient  # noqa: E402
from kvstore.testing.processes import FAST_ELECTIONS, NodeProcess, allocate_port  # noqa: E402


def lines_for(kind: str, n: int) -> list[str]:
    if kind == "PUT":
        return [f"PUT k{i % 100} value-{i}" for i in range(n)]
    return [f"GET k{i % 100}" for i in range(n)]


def read_lines(sock: socket.socket, count: int) -> list[bytes]:
    buffer, lines = b"", []
    while len(lines) < count:
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk
        *done, buffer = buffer.split(b"\n")
        lines += done
    return lines


def raw_seq(port: int, kind: str, n: int) -> float:
    requests = [line.encode() + b"\n" for line in lines_for(kind, n)]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        for request in requests:
            sock.sendall(request)
            buffer = b""
            while not buffer.endswith(b"\n"):
                buffer += sock.recv(65536)
            if buffer.startswith(b"Error"):
                raise RuntimeError(buffer)
        return time.perf_counter() - start


def raw_pipe(port: int, kind: str, n: int) -> float:
    data = b"".join(line.encode() + b"\n" for line in lines_for(kind, n))
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        writer = threading.Thread(target=sock.sendall, args=(data,))
        writer.start()
        replies = read_lines(sock, n)
        writer.join()
        elapsed = time.perf_counter() - start
    if any(r.startswith(b"Error") for r in replies):
        raise RuntimeError(replies[0])
    return elapsed


def _call(client: Client, line: str) -> None:
    word, key, *rest = line.split(" ", 2)
    if word == "PUT":
        client.put(key, rest[0])
    else:
        client.get(key)


def lib_seq(address: str, kind: str, n: int) -> float:
    with Client([address], timeout=30) as client:
        client.ping()  # connected before the clock starts, as for the raw socket
        requests = lines_for(kind, n)
        start = time.perf_counter()
        for line in requests:
            _call(client, line)
        return time.perf_counter() - start


def lib_threads(address: str, kind: str, n: int, threads: int) -> float:
    with Client([address], timeout=60) as client:
        client.ping()
        requests = lines_for(kind, n)
        shares = [requests[i::threads] for i in range(threads)]
        barrier = threading.Barrier(threads + 1)
        errors: list[BaseException] = []

        def work(share: list[str]) -> None:
            barrier.wait()
            try:
                for line in share:
                    _call(client, line)
            except BaseException as e:
                errors.append(e)

        workers = [threading.Thread(target=work, args=(share,)) for share in shares]
        for worker in workers:
            worker.start()
        barrier.wait()
        start = time.perf_counter()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed


def _async_call(client: AsyncClient, line: str) -> Awaitable[object]:
    word, key, *rest = line.split(" ", 2)
    return client.put(key, rest[0]) if word == "PUT" else client.get(key)


def raw_asyncio_seq(port: int, kind: str, n: int) -> float:
    async def run() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        requests = [line.encode() + b"\n" for line in lines_for(kind, n)]
        start = time.perf_counter()
        for request in requests:
            writer.write(request)
            if (await reader.readline()).startswith(b"Error"):
                raise RuntimeError(request)
        elapsed = time.perf_counter() - start
        writer.close()
        return elapsed

    return asyncio.run(run())


def asyncio_seq(address: str, kind: str, n: int) -> float:
    async def run() -> float:
        async with AsyncClient([address], timeout=30) as client:
            await client.ping()  # connected before the clock starts
            requests = lines_for(kind, n)
            start = time.perf_counter()
            for line in requests:
                await _async_call(client, line)
            return time.perf_counter() - start

    return asyncio.run(run())


def asyncio_pipe(address: str, kind: str, n: int) -> float:
    async def run() -> float:
        async with AsyncClient([address], timeout=60) as client:
            await client.ping()
            requests = lines_for(kind, n)
            start = time.perf_counter()
            await asyncio.gather(*(_async_call(client, line) for line in requests))
            return time.perf_counter() - start

    return asyncio.run(run())


class TwistedRunner:
    """A reactor in a thread of its own, to run the Deferred client from the benchmark's main thread."""

    def __init__(self, address: str) -> None:
        from twisted.internet import reactor

        from kvstore.client.deferred import DeferredClient

        self.reactor = reactor
        self.thread = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True)
        self.thread.start()
        self.client = DeferredClient(reactor, [address], timeout=60)
        self._run(lambda: self.client.ping())

    def _run(self, make):  # type: ignore[no-untyped-def]
        done = threading.Event()
        result: list[object] = []

        def start() -> None:
            d = make()
            d.addBoth(lambda r: (result.append(r), done.set()))

        self.reactor.callFromThread(start)
        done.wait(120)
        from twisted.python.failure import Failure

        if result and isinstance(result[0], Failure):
            result[0].raiseException()
        return result[0]

    def pipe(self, kind: str, n: int) -> float:
        from twisted.internet.defer import gatherResults

        requests = lines_for(kind, n)
        stamps: list[float] = []

        def make():  # type: ignore[no-untyped-def]
            stamps.append(time.perf_counter())
            calls = []
            for line in requests:
                word, key, *rest = line.split(" ", 2)
                calls.append(self.client.put(key, rest[0]) if word == "PUT" else self.client.get(key))
            return gatherResults(calls, consumeErrors=True).addCallback(
                lambda r: stamps.append(time.perf_counter()))

        self._run(make)
        return stamps[1] - stamps[0]

    def stop(self) -> None:
        self.reactor.callFromThread(self.client.close)
        self.reactor.callFromThread(self.reactor.stop)
        self.thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--kinds", default="GET,PUT")
    parser.add_argument("--no-fsync", action="store_true", help="run the node with --unsafe-no-fsync")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="client-overhead-"))
    extra = [*FAST_ELECTIONS, *(["--unsafe-no-fsync"] if args.no_fsync else [])]
    node = NodeProcess(0, allocate_port(), root / "data", root / "logs", extra_args=extra)
    twisted_runner = None
    try:
        node.start()
        node.wait_ready()
        address = node.address
        with Client([address], timeout=30) as client:
            for i in range(100):  # GETs then find every key
                client.put(f"k{i}", "initial")
        twisted_runner = TwistedRunner(address)
        variants = {
            "raw-seq": lambda kind: raw_seq(node.port, kind, args.requests),
            "lib-seq": lambda kind: lib_seq(address, kind, args.requests),
            "raw-pipe": lambda kind: raw_pipe(node.port, kind, args.requests),
            "lib-threads": lambda kind: lib_threads(address, kind, args.requests, args.threads),
            "twisted-pipe": lambda kind: twisted_runner.pipe(kind, args.requests),
            "raw-asyncio-seq": lambda kind: raw_asyncio_seq(node.port, kind, args.requests),
            "asyncio-seq": lambda kind: asyncio_seq(address, kind, args.requests),
            "asyncio-pipe": lambda kind: asyncio_pipe(address, kind, args.requests),
        }
        results: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for kind in args.kinds.split(","):
                for name, run in variants.items():
                    cpu_before = time.process_time()
                    results.setdefault((kind, name), []).append(run(kind) / args.requests * 1e6)
                    cpu.setdefault((kind, name), []).append(
                        (time.process_time() - cpu_before) / args.requests * 1e6)
        print(f"# {args.requests} requests x {args.rounds} rounds, fsync={'off' if args.no_fsync else 'on'}, "
              f"threads={args.threads}; median wall us/request (min-max over rounds), "
              f"and this process's CPU us/request (median), which background load disturbs less")
        for kind in args.kinds.split(","):
            for name in variants:
                values = results[(kind, name)]
                base = statistics.median(results[(kind, "raw-pipe" if "pipe" in name or "threads" in name
                                                  else "raw-seq")])
                median = statistics.median(values)
                base_cpu = statistics.median(cpu[(kind, "raw-pipe" if "pipe" in name or "threads" in name
                                                  else "raw-seq")])
                median_cpu = statistics.median(cpu[(kind, name)])
                print(f"{kind:4} {name:15} wall {median:8.1f} us ({min(values):.1f}-{max(values):.1f}) "
                      f"vs raw {median - base:+8.1f} us | client CPU {median_cpu:6.1f} us vs raw "
                      f"{median_cpu - base_cpu:+6.1f} us")
    finally:
        if twisted_runner is not None:
            twisted_runner.stop()
        node.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
