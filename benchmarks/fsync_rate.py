# -*- test-case-name: tests.test_storage_wal -*-
"""
Measure this machine's raw fsync rate and the WAL's throughput per batch size.

Why: a replicated write costs at least one fsync on the leader and one on a
majority of followers, so the disk's fsync rate bounds un-batched writes/s,
and group commit is what lifts that bound.  This script shows both numbers
so a client-level benchmark can be judged against them.

Usage::

    python benchmarks/fsync_rate.py --dir /tmp/x --seconds 3
    python benchmarks/fsync_rate.py --dir /tmp/x --sync-variants --rounds 8

C{--sync-variants} compares, in interleaved rounds of the same length, the
ways of making one 140-byte record durable (issue 16): appending to a
growing file and calling C{fsync} (what the WAL did) or C{fdatasync}, and
overwriting bytes of a file preallocated by writing zeros or by
C{fallocate}, then C{fdatasync}.  Appending changes the file's size, so
either call has to commit the inode to the file system's journal; an
overwrite of zero-filled bytes changes no metadata that reading the data
back needs, so C{fdatasync} can skip the journal.  (A C{fallocate}d range
is "unwritten": the first write to it converts the extent, which is again
a journal commit.)

The file work runs on the calling thread (a synchronous thread runner), so
the figures are the disk's, without reactor or thread-pool overhead.
L{measure_fsync_rate} and L{measure_wal_rate} are importable.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Callable, TypeVar

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.defer import Deferred, succeed  # noqa: E402

from kvstore.tools.bench import measure_fsync_rate  # noqa: E402
from kvstore.storage import LogEntry, WriteAheadLog  # noqa: E402

T = TypeVar("T")

RECORD = b"r" * 100


def _sync_runner(f: Callable[[], T]) -> "Deferred[T]":
    return succeed(f())


def measure_wal_rate(directory: str, seconds: float, batch: int) -> tuple[float, float]:
    """
    Append C{batch} 100-byte entries then sync, in a loop, for C{seconds}.

    @return: C{(records per second, fsyncs per second)}.
    """
    wal_dir = tempfile.mkdtemp(prefix=f"wal-batch{batch}-", dir=directory)
    try:
        log = WriteAheadLog.open(wal_dir, run_in_thread=_sync_runner)
        index = 0
        start = time.monotonic()
        deadline = start + seconds
        now = start
        while now < deadline:
            log.append([LogEntry(index + i, 1, RECORD) for i in range(1, batch + 1)])
            index += batch
            log.sync()
            now = time.monotonic()
        elapsed = now - start
        log.close()
        return index / elapsed, log.fsync_count / elapsed
    finally:
        shutil.rmtree(wal_dir, ignore_errors=True)


SYNC_VARIANTS = ("append+fsync", "append+fdatasync", "zeroed+fdatasync", "fallocated+fdatasync")
_SYNC_RECORD = b"s" * 140


def _one_variant(directory: str, variant: str, seconds: float) -> list[float]:
    """Latencies (s) of write + sync of one record, for C{seconds}, in a fresh file."""
    path = os.path.join(directory, f"sync-{variant}.bin")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        span = 16 * 1024 * 1024
        if variant.startswith("zeroed"):
            chunk = b"\0" * (1024 * 1024)
            for offset in range(0, span, len(chunk)):
                os.pwrite(fd, chunk, offset)
            os.fsync(fd)
        elif variant.startswith("fallocated"):
            os.posix_fallocate(fd, 0, span)
            os.fsync(fd)
        sync = os.fsync if variant.endswith("+fsync") else os.fdatasync
        samples: list[float] = []
        offset = 0
        deadline = time.monotonic() + seconds
        while True:
            start = time.monotonic()
            if start >= deadline or offset + len(_SYNC_RECORD) > span:
                return samples
            os.pwrite(fd, _SYNC_RECORD, offset)
            sync(fd)
            samples.append(time.monotonic() - start)
            offset += len(_SYNC_RECORD)
    finally:
        os.close(fd)
        os.unlink(path)


def measure_sync_variants(directory: str, seconds: float, rounds: int) -> dict[str, list[float]]:
    """
    For each of L{SYNC_VARIANTS}, the latencies of write + sync of one
    record, from C{rounds} rounds of C{seconds} each, the variants run in
    turn within a round (and the order reversed every other round), so that
    a change in the machine's background load hits all of them alike.
    """
    os.makedirs(directory, exist_ok=True)
    result: dict[str, list[float]] = {v: [] for v in SYNC_VARIANTS}
    for round_number in range(rounds):
        order = SYNC_VARIANTS if round_number % 2 == 0 else tuple(reversed(SYNC_VARIANTS))
        for variant in order:
            result[variant].extend(_one_variant(directory, variant, seconds))
    return result


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, help="directory on the disk to test")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each run")
    parser.add_argument(
        "--batches", default="1,10,100", help="comma-separated WAL batch sizes (default 1,10,100)"
    )
    parser.add_argument(
        "--sync-variants", action="store_true", help="compare fsync/fdatasync on growing and preallocated files"
    )
    parser.add_argument("--rounds", type=int, default=6, help="rounds of --sync-variants (default 6)")
    args = parser.parse_args(argv)
    if args.sync_variants:
        found = measure_sync_variants(args.dir, args.seconds, args.rounds)
        print(
            f"write+sync of one 140-byte record in {os.path.abspath(args.dir)}, "
            f"{args.rounds} rounds of {args.seconds:g} s per variant, ms"
        )
        print(f"{'variant':22} {'syncs/s':>8} {'p50':>7} {'p90':>7} {'p99':>7}")
        for variant, samples in found.items():
            rate = len(samples) / (args.rounds * args.seconds)
            cells = " ".join(f"{_quantile(samples, q) * 1000:7.3f}" for q in (0.5, 0.9, 0.99))
            print(f"{variant:22} {rate:8,.0f} {cells}")
        return 0
    batches = [int(b) for b in args.batches.split(",")]

    raw = measure_fsync_rate(args.dir, args.seconds)
    rows = [("raw write+fsync", "1", f"{raw:,.0f}", f"{raw:,.0f}")]
    for batch in batches:
        records, fsyncs = measure_wal_rate(args.dir, args.seconds, batch)
        rows.append(("WAL append+sync", str(batch), f"{records:,.0f}", f"{fsyncs:,.0f}"))

    header = ("test", "records/fsync", "records/s", "fsyncs/s")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
    print(f"fsync benchmark in {os.path.abspath(args.dir)}, {args.seconds:g} s per run")
    for row in [header] + rows:
        print("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
