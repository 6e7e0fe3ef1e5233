# -*- test-case-name: tests.test_recovery -*-
"""
L{kvstore.node.recovery}: which snapshot a restarting node starts from, how the
log is reconciled with it, and when start-up is refused naming the file.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.recovery import Recovered, RecoveryError, recover, report_line
from kvstore.statemachine import KeyValueStateMachine, encode_put
from kvstore.storage import LogEntry, MemoryLog, WriteAheadLog
from kvstore.storage.snapshots import SnapshotInfo, SnapshotMeta, SnapshotStore
from kvstore.testing.runners import run_now

from tests.snapshot_support import DIRECTORY, ReadableSimulatedFileSystem

WAL = "/data/wal"


def put(index: int, term: int, key: str, value: str) -> LogEntry:
    return LogEntry(index, term, encode_put(key, value))


def history(last: int, term: int = 1) -> list[LogEntry]:
    """Entries 1..last, entry i setting key k<i % 7> to v<i>."""
    return [put(i, term, f"k{i % 7}", f"v{i}") for i in range(1, last + 1)]


def state_through(entries: list[LogEntry], index: int) -> dict[str, str]:
    machine = KeyValueStateMachine()
    for entry in entries[:index]:
        machine.apply(entry.index, entry.payload)
    return machine.items()


def take(store: SnapshotStore, entries: list[LogEntry], index: int, term: int = 1, cluster: str = "c",
         content: bytes | None = None) -> SnapshotInfo:
    """Write the snapshot of C{entries} through C{index}."""
    machine = KeyValueStateMachine()
    for entry in entries[:index]:
        machine.apply(entry.index, entry.payload)
    writer = store.begin(SnapshotMeta(index, term, cluster_id=cluster, membership={}))
    writer.write(machine.snapshot() if content is None else content)
    return writer.finish()


def damage(fs: ReadableSimulatedFileSystem, info: SnapshotInfo) -> None:
    """Flip a byte in the middle of the file."""
    data = bytearray(fs.read_file(info.path))
    data[len(data) // 2] ^= 0x40
    fd = fs.create_truncate(info.path)
    fs.pwrite_all(fd, bytes(data), 0)
    fs.close(fd)


class Disk:
    """A simulated disk with a snapshot store and a real WAL on it."""

    def __init__(self) -> None:
        self.fs = ReadableSimulatedFileSystem()
        self.fs.makedirs_durable("/data")
        self.store = SnapshotStore.open(DIRECTORY, self.fs)
        self.wal = self.open_wal()

    def open_wal(self) -> WriteAheadLog:
        return WriteAheadLog.open(WAL, segment_bytes=200, run_in_thread=run_now, fs=self.fs)

    def write(self, entries: list[LogEntry]) -> None:
        self.wal.append(entries)
        self.wal.sync()

    def recover(self, **kwargs: Any) -> tuple[Recovered, KeyValueStateMachine]:
        machine = KeyValueStateMachine()
        kwargs.setdefault("cluster_id", "c")
        return recover(self.wal, self.store, machine, **kwargs), machine


class ChoosingTests(SynchronousTestCase):
    """The newest usable snapshot is chosen and restored."""

    def test_no_snapshot(self) -> None:
        """Without snapshots the node starts empty at index 0, committed through the stored bound."""
        disk = Disk()
        disk.write(history(12))
        recovered, machine = disk.recover(commit_index=9)
        self.assertEqual((recovered.snapshot, recovered.index, recovered.commit_index), (None, 0, 9))
        self.assertEqual((len(machine), machine.applied_index, recovered.log_reset), (0, 0, False))

    def test_newest_snapshot_and_the_log_after_it(self) -> None:
        """The newest of two snapshots is restored; the log, tail included, is kept."""
        disk = Disk()
        entries = history(40)
        disk.write(entries)
        take(disk.store, entries, 20)
        newest = take(disk.store, entries, 30)
        disk.wal.drop_prefix(25)
        disk.wal.sync()
        first = disk.wal.first_index
        self.assertTrue(1 < first <= 26, first)
        recovered, machine = disk.recover(commit_index=33)
        self.assertEqual(recovered.snapshot, newest)
        self.assertEqual((recovered.index, recovered.term, recovered.commit_index), (30, 1, 33))
        self.assertEqual(machine.items(), state_through(entries, 30))
        self.assertEqual((machine.applied_index, recovered.snapshot_keys), (30, len(machine)))
        self.assertEqual((disk.wal.first_index, disk.wal.last_index, recovered.log_reset), (first, 40, False))

    def test_commit_index_is_at_least_the_snapshot(self) -> None:
        """A stored commit index below the snapshot (or none) starts at the snapshot's index."""
        disk = Disk()
        entries = history(10)
        disk.write(entries)
        take(disk.store, entries, 8)
        recovered, _ = disk.recover(commit_index=0)
        self.assertEqual(recovered.commit_index, 8)

    def test_commit_index_never_passes_the_log(self) -> None:
        """A stored commit index beyond the log's end is cut to the end."""
        disk = Disk()
        disk.write(history(10))
        recovered, _ = disk.recover(commit_index=50)
        self.assertEqual(recovered.commit_index, 10)

    def test_report_line(self) -> None:
        """The report names the keys, the snapshot index, the log entries applied and the time."""
        disk = Disk()
        entries = history(10)
        disk.write(entries)
        take(disk.store, entries, 6)
        recovered, _ = disk.recover(commit_index=9, started=100.0)
        self.assertEqual(
            report_line(recovered, 7, 101.25), "recovered 7 keys from snapshot at index 6 and 3 log entries in 1.250 s"
        )


class GapTests(SynchronousTestCase):
    """A log that does not reach back to the snapshot refuses start-up, naming a file."""

    def test_log_starts_after_the_snapshot(self) -> None:
        """A gap between the snapshot and the log's first index is refused, naming the first segment."""
        disk = Disk()
        entries = history(40)
        disk.write(entries)
        take(disk.store, entries, 30)
        disk.wal.drop_prefix(35)
        disk.wal.sync()
        self.assertGreater(disk.wal.first_index, 31)
        for info in disk.store.list():
            disk.fs.unlink(info.path)
        take(disk.store, entries, 10)
        with self.assertRaises(RecoveryError) as caught:
            disk.recover()
        self.assertIn(f"{WAL}/wal-", caught.exception.path)
        self.assertIn("missing", str(caught.exception))

    def test_no_snapshot_and_a_compacted_log(self) -> None:
        """A log that starts past index 1 with no snapshot at all is refused."""
        disk = Disk()
        disk.write(history(40))
        disk.wal.drop_prefix(30)
        disk.wal.sync()
        with self.assertRaises(RecoveryError) as caught:
            disk.recover()
        self.assertIn("no intact snapshot", str(caught.exception))


class DamagedSnapshotTests(SynchronousTestCase):
    """A damaged newer snapshot is skipped only when what remains covers everything."""

    def test_older_snapshot_and_log_cover(self) -> None:
        """Warned about by name and skipped; the older snapshot and the log take its place."""
        disk = Disk()
        entries = history(40)
        disk.write(entries)
        older = take(disk.store, entries, 20)
        newer = take(disk.store, entries, 30)
        damage(disk.fs, newer)
        with capturedLogs() as events:
            recovered, machine = disk.recover(commit_index=35)
        self.assertEqual((recovered.snapshot, recovered.commit_index), (older, 35))
        self.assertEqual(machine.items(), state_through(entries, 20))
        self.assertEqual([e.path for e in recovered.skipped], [newer.path])
        warnings = [e for e in events if newer.path in str(e.get("path"))]
        self.assertEqual(len(warnings), 1)

    def test_only_snapshot_damaged_log_from_one(self) -> None:
        """With no older snapshot, a log from index 1 that reaches past the damaged one stands in for it."""
        disk = Disk()
        entries = history(20)
        disk.write(entries)
        damage(disk.fs, take(disk.store, entries, 15))
        with capturedLogs():
            recovered, machine = disk.recover()
        self.assertEqual((recovered.snapshot, recovered.index, len(machine)), (None, 0, 0))

    def test_older_snapshot_not_continued(self) -> None:
        """When the log starts after the older snapshot, start-up is refused naming the damaged file."""
        disk = Disk()
        entries = history(40)
        disk.write(entries)
        take(disk.store, entries, 10)
        newer = take(disk.store, entries, 35)
        disk.wal.drop_prefix(30)
        disk.wal.sync()
        damage(disk.fs, newer)
        with self.assertRaises(RecoveryError) as caught:
            disk.recover()
        self.assertEqual(caught.exception.path, newer.path)
        self.assertIn("damaged", str(caught.exception))

    def test_log_does_not_reach_the_damaged_snapshot(self) -> None:
        """A damaged snapshot beyond the log's end (it may be the only copy) is refused by name."""
        disk = Disk()
        entries = history(40)
        disk.write(entries[:20])
        newer = take(disk.store, entries, 30)
        damage(disk.fs, newer)
        with self.assertRaises(RecoveryError) as caught:
            disk.recover()
        self.assertEqual(caught.exception.path, newer.path)

    def test_valid_checksum_invalid_content(self) -> None:
        """A snapshot whose checksum passes but whose content is not kv/1 is refused by name."""
        disk = Disk()
        entries = history(10)
        disk.write(entries)
        info = take(disk.store, entries, 5, content=b"not kv/1 content")
        with self.assertRaises(RecoveryError) as caught:
            disk.recover()
        self.assertEqual(caught.exception.path, info.path)

    def test_other_cluster(self) -> None:
        """A snapshot of another cluster is refused by name."""
        disk = Disk()
        entries = history(10)
        disk.write(entries)
        info = take(disk.store, entries, 5, cluster="other")
        with self.assertRaises(RecoveryError) as caught:
            disk.recover()
        self.assertEqual(caught.exception.path, info.path)
        self.assertIn("other", str(caught.exception))


class ReconcileTests(SynchronousTestCase):
    """A log that does not continue the snapshot (a crash while installing it) is reset after it."""

    def test_log_ends_before_the_snapshot(self) -> None:
        """A log wholly behind an installed snapshot is reset to continue after it, durably."""
        disk = Disk()
        leader = history(30, term=2)
        disk.write(history(12))
        take(disk.store, leader, 25, term=2)
        with capturedLogs():
            recovered, machine = disk.recover(commit_index=10)
        self.assertTrue(recovered.log_reset)
        self.assertEqual((disk.wal.first_index, disk.wal.last_index, disk.wal.last_term), (26, 25, 2))
        self.assertEqual((recovered.commit_index, machine.items()), (25, state_through(leader, 25)))
        disk.wal.sync()
        disk.fs.crash()
        self.assertEqual(disk.open_wal().first_index, 26)

    def test_log_conflicts_at_the_snapshot(self) -> None:
        """A log holding the snapshot's index with another term is reset: its suffix is another history."""
        disk = Disk()
        disk.write(history(30, term=1))
        take(disk.store, history(20, term=3), 20, term=3)
        with capturedLogs():
            recovered, _ = disk.recover(commit_index=5)
        self.assertTrue(recovered.log_reset)
        self.assertEqual((disk.wal.first_index, disk.wal.last_index), (21, 20))

    def test_log_matching_at_the_snapshot_is_kept(self) -> None:
        """A log holding the snapshot's index with its term continues it: nothing is reset."""
        disk = Disk()
        entries = history(30)
        disk.write(entries)
        take(disk.store, entries, 20)
        recovered, _ = disk.recover()
        self.assertFalse(recovered.log_reset)
        self.assertEqual((disk.wal.first_index, disk.wal.last_index), (1, 30))

    def test_memory_log(self) -> None:
        """The in-memory log and no snapshot store work too (tests and tools)."""
        machine = KeyValueStateMachine()
        recovered = recover(MemoryLog(history(5)), None, machine, commit_index=3)
        self.assertEqual((recovered.index, recovered.commit_index), (0, 3))
