# -*- test-case-name: tests.test_storage_snapshots_crash -*-
"""
Crash safety of snapshot writes on the simulated file system: a crash
before any file-system call of writing (or receiving) a new snapshot and
pruning the old ones, with or without torn unsynced data, leaves the store
holding the old snapshot or the new one, intact, never a mixture, and no
temporary file once reopened.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from twisted.trial.unittest import SynchronousTestCase

from kvstore.storage.snapshots import SnapshotStore

from tests.snapshot_support import (
    DIRECTORY,
    ReadableSimulatedFileSystem,
    content_for,
    read_content,
    write_snapshot,
)

_MUTATING = ("create_truncate", "pwrite_all", "fsync", "close", "replace", "unlink", "fsync_dir")


class Crash(Exception):
    """The process died here."""


class CrashingFileSystem(ReadableSimulatedFileSystem):
    """Counts the mutating calls and dies before call number C{crash_at}."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.crash_at: int | None = None

    def __getattribute__(self, name: str) -> Any:
        attribute = super().__getattribute__(name)
        if name in _MUTATING:
            def counted(*args: Any) -> Any:
                if self.crash_at is not None:
                    self.calls += 1
                    if self.calls >= self.crash_at:
                        raise Crash(name)
                return attribute(*args)
            return counted
        return attribute


OLD = content_for(10, 3000)
NEW = content_for(20, 3000)


def write_new_locally(store: SnapshotStore) -> None:
    write_snapshot(store, 20, 2, NEW, chunk=500)
    store.prune(keep=1)


def receive_new(store: SnapshotStore) -> None:
    sender_fs = ReadableSimulatedFileSystem()
    sender_fs.makedirs_durable("/data")
    sender = SnapshotStore.open(DIRECTORY, sender_fs)
    info = write_snapshot(sender, 20, 2, NEW)
    assert info.size is not None
    writer = store.begin_receive(20, 2, info.size)
    for offset, chunk in sender.read_chunks(info, chunk_size=700):
        writer.write(offset, chunk)
    writer.finish()
    store.prune(keep=1)


class CrashDuringSnapshotTests(SynchronousTestCase):
    """A crash at any step of replacing one snapshot with the next leaves one of them, whole."""

    def check_every_crash_point(self, replace: Callable[[SnapshotStore], None], tear: bool) -> None:
        outcomes = set()
        crash_at = 1
        while True:
            fs = CrashingFileSystem()
            fs.makedirs_durable("/data")
            store = SnapshotStore.open(DIRECTORY, fs)
            write_snapshot(store, 10, 1, OLD)
            fs.crash_at = crash_at
            fs.calls = 0
            try:
                replace(store)
                finished = True
            except Crash:
                finished = False
            fs.crash_at = None
            fs.crash(random.Random(crash_at), tear=tear)
            store = SnapshotStore.open(DIRECTORY, fs)
            with self.subTest(crash_at=crash_at, finished=finished):
                scanned = store.scan()
                self.assertEqual([error for _, error in scanned], [None] * len(scanned))
                self.assertTrue(all(not name.endswith(".tmp") for name in fs.listdir(DIRECTORY)))
                newest, damaged = store.newest_intact()
                assert newest is not None
                self.assertEqual(damaged, [])
                content = read_content(store, newest)
                self.assertEqual(content, {10: OLD, 20: NEW}[newest.index])
                if finished:
                    self.assertEqual([i.index for i in store.list()], [20])
                outcomes.add(newest.index)
            if finished:
                break
            crash_at += 1
        # Both outcomes happen: the crash points cover the whole write.
        self.assertEqual(outcomes, {10, 20})

    def test_local_write(self) -> None:
        """Writing this node's own new snapshot and pruning the old one: old or new, never a mix."""
        self.check_every_crash_point(write_new_locally, tear=False)

    def test_local_write_torn(self) -> None:
        """The same when the crash tears unsynced data in pages or sectors."""
        self.check_every_crash_point(write_new_locally, tear=True)

    def test_received_snapshot(self) -> None:
        """Receiving a snapshot in chunks and installing it: old or new, never a mix."""
        self.check_every_crash_point(receive_new, tear=False)

    def test_received_snapshot_torn(self) -> None:
        """The same when the crash tears unsynced data."""
        self.check_every_crash_point(receive_new, tear=True)
