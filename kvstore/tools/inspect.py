# -*- test-case-name: tests.test_datadir -*-
"""
C{kvstore-inspect DATA_DIR...}: describe the data directory of a stopped
node (cluster, term, vote, log extent, snapshots).

Operators need to compare nodes' logs without starting them (starting a
node may append to its log): the node holding the most up-to-date log (the
highest last term, then the highest last index) is the one to copy when a
node's data must be rebuilt (docs/operations.md).  Opening the log runs the
same recovery a starting node would, so a torn tail is reported (and
truncated) and any other damage is reported with its file and offset.  The
directory's lock (L{kvstore.daemon.datadir.DataDirectoryLock}) keeps it from
reading a directory a node is running on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

from twisted.internet.defer import succeed
from twisted.python.usage import UsageError

from kvstore.daemon.datadir import DataDirectoryLock
from kvstore.storage import CorruptLogError, CorruptMetadataError, MetadataStore, WriteAheadLog
from kvstore.storage.fs import FileSystem
from kvstore.storage.wal import PREALLOCATE_BYTES
from kvstore.storage.snapshots import SnapshotStore

__all__ = ["describe", "describe_snapshots", "main"]


def describe(data_dir: str) -> dict[str, object]:
    """
    The data directory's metadata and log extent.  Nothing is created: a
    directory without a node's files is refused.  (Recovery may still
    truncate a torn last record, as the node itself would at start-up.)
    """
    for name in ("LOCK", "metadata.json", "wal"):
        if not os.path.exists(os.path.join(data_dir, name)):
            raise UsageError(f"{data_dir} is not a kvstore data directory (no {name})")
    lock = DataDirectoryLock(data_dir)
    lock.acquire(create=False)  # refuses if a node is running on it
    try:
        run_now = lambda f: succeed(f())  # noqa: E731 - blocking is fine in a command-line tool
        metadata = MetadataStore.open(os.path.join(data_dir, "metadata.json"), run_in_thread=run_now)
        # As the node opens it: its zero-filled segment ends are not torn tails.
        wal = WriteAheadLog.open(
            os.path.join(data_dir, "wal"), run_in_thread=run_now, preallocate_bytes=PREALLOCATE_BYTES
        )
        state = metadata.state
        result: dict[str, object] = {
            "data_dir": os.path.abspath(data_dir),
            "cluster": state.cluster_id,
            "term": state.term,
            "voted_for": state.voted_for,
            "first_index": wal.first_index,
            "last_index": wal.last_index,
            "last_term": wal.last_term,
        }
        wal.close()
        result["snapshots"] = describe_snapshots(os.path.join(data_dir, "snapshots"), time.time())
        return result
    finally:
        lock.release()


def describe_snapshots(directory: str, now: float) -> list[dict[str, object]]:
    """
    Each snapshot in C{directory}, newest first, verified: index, term,
    size, SHA-256 and age in seconds (from the file's mtime), or the error
    that makes it unusable.  No directory means no snapshots.
    """
    if not os.path.isdir(directory):
        return []
    rows: list[dict[str, object]] = []
    for info, error in SnapshotStore(os.path.abspath(directory), FileSystem()).scan():
        row: dict[str, object] = {"index": info.index, "term": info.term}
        row["size"] = os.path.getsize(info.path)
        row["sha256"] = info.digest if error is None else None
        row["age_s"] = round(now - os.path.getmtime(info.path), 1)
        if error is not None:
            row["damaged"] = error.reason
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kvstore-inspect",
        description="Describe the data directory of a STOPPED kvstore node: cluster, term, vote, log extent, snapshots.",
    )
    parser.add_argument("data_dir", nargs="+", help="one or more node data directories")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    status = 0
    rows = []
    for data_dir in args.data_dir:
        try:
            rows.append(describe(data_dir))
        except (CorruptLogError, CorruptMetadataError) as e:
            print(f"{data_dir}: damaged: {e}", file=sys.stderr)
            status = 1
        except Exception as e:  # an operator tool: say what went wrong, in one line
            print(f"{data_dir}: {e}", file=sys.stderr)
            status = 1
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(" ".join(f"{k}={v}" for k, v in row.items() if k != "snapshots"))
            for snap in row.get("snapshots", ()):  # type: ignore[attr-defined]  # rows are dict[str, object]; snapshots is a list of dicts
                print("  snapshot " + " ".join(f"{k}={v}" for k, v in snap.items()))
    if any("damaged" in snap for row in rows for snap in row.get("snapshots", ())):  # type: ignore[attr-defined]  # rows are dict[str, object]; snapshots is a list of dicts
        status = 1
    if len(rows) > 1:
        best = max(rows, key=lambda r: (r["last_term"], r["last_index"]))
        print(f"most up-to-date log: {best['data_dir']}", file=sys.stderr if args.json else sys.stdout)
    return status


if __name__ == "__main__":
    sys.exit(main())
