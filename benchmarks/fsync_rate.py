# -*- test-case-name: tests.test_storage_wal -*-
"""
Measure this machine's raw fsync rate and the WAL's throughput per batch size.

Why: a replicated write costs at least one fsync on the leader and one on a
majority of followers, so the disk's fsync rate bounds un-batched writes/s,
and group commit is what lifts that bound.  This script shows both numbers
so a client-level benchmark can be judged against them.

Usage::

    python benchmarks/fsync_rate.py --dir /tmp/x --seconds 3

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, help="directory on the disk to test")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each run")
    parser.add_argument(
        "--batches", default="1,10,100", help="comma-separated WAL batch sizes (default 1,10,100)"
    )
    args = parser.parse_args(argv)
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
