# -*- test-case-name: tests.test_recovery_single_pass -*-
"""
L{kvstore.node.recovery.recover} reads the snapshot it starts from once,
decoding the content as it is hashed, and still never starts from a damaged
file: a decoded state is used only once the digest matched.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.recovery import RecoveryError
from kvstore.storage.snapshots import SnapshotInfo

from tests.test_recovery import Disk, history, put, state_through, take


def count_reads(test: SynchronousTestCase, disk: Disk) -> list[int]:
    """Make C{disk}'s file system count the bytes every pread returns."""
    read = [0]
    original = disk.fs.pread

    def pread(fd: int, length: int, offset: int) -> bytes:
        data = original(fd, length, offset)
        read[0] += len(data)
        return data

    test.patch(disk.fs, "pread", pread)
    return read


def set_byte(disk: Disk, info: SnapshotInfo, offset: int, value: int) -> None:
    data = bytearray(disk.fs.read_file(info.path))
    data[offset] = value
    fd = disk.fs.create_truncate(info.path)
    disk.fs.pwrite_all(fd, bytes(data), 0)
    disk.fs.close(fd)


class SinglePassTests(SynchronousTestCase):
    """The chosen snapshot is read once and restored only once verified."""

    def test_snapshot_read_once(self) -> None:
        """Recovering from a large snapshot reads about its size, not twice its size."""
        disk = Disk()
        # 300 distinct keys of 10 kB: a 3 MB file dwarfs the header read.
        # (The log is left empty: recovery resets it to follow the snapshot.)
        entries = [put(i, 1, f"k{i}", "x" * 10_000) for i in range(1, 301)]
        info = take(disk.store, entries, 300)
        assert info.size is not None and info.size > 2_500_000
        read = count_reads(self, disk)
        recovered, machine = disk.recover()
        self.assertEqual(recovered.index, 300)
        self.assertEqual(machine.items(), state_through(entries, 300))
        # The whole file once, plus the header and trailer reads (at most
        # 1 MiB of header look-ahead and 48 bytes of trailer).
        self.assertLessEqual(read[0], info.size + (1 << 20) + 16 + 48)

    def test_damaged_content_that_decodes_is_not_used(self) -> None:
        """A newer snapshot whose damaged content still decodes is skipped for the older one and the log."""
        disk = Disk()
        entries = history(40)
        disk.write(entries)
        take(disk.store, entries, 10)
        newer = take(disk.store, entries, 30)
        assert newer.size is not None
        # A value byte ("v1..." -> "w1..."): valid kv/1 content, wrong digest.
        data = disk.fs.read_file(newer.path)
        offset = data.index(b"v", len(data) // 2)
        set_byte(disk, newer, offset, ord("w"))
        recovered, machine = disk.recover()
        self.assertEqual(recovered.index, 10)
        self.assertEqual([e.path for e in recovered.skipped], [newer.path])
        self.assertEqual(machine.items(), state_through(entries, 10))

    def test_damaged_content_that_does_not_decode_is_skipped(self) -> None:
        """A newer snapshot whose damage breaks decoding is skipped as damaged, not refused as invalid content."""
        disk = Disk()
        entries = history(40)
        disk.write(entries)
        take(disk.store, entries, 10)
        newer = take(disk.store, entries, 30)
        data = disk.fs.read_file(newer.path)
        set_byte(disk, newer, data.index(b"v", len(data) // 2), 0xFF)  # not UTF-8
        recovered, machine = disk.recover()
        self.assertEqual(recovered.index, 10)
        self.assertEqual([e.path for e in recovered.skipped], [newer.path])
        self.assertEqual(machine.items(), state_through(entries, 10))

    def test_intact_invalid_content_is_refused(self) -> None:
        """An intact snapshot whose content does not decode refuses start-up, naming it, even with an older one."""
        disk = Disk()
        entries = history(40)
        disk.write(entries)
        take(disk.store, entries, 10)
        newer = take(disk.store, entries, 30, content=b"KVSM\x01\x05\x02k1\xff\xff")
        with self.assertRaises(RecoveryError) as caught:
            disk.recover()
        self.assertEqual(caught.exception.path, newer.path)
        self.assertIn("content is not valid", caught.exception.reason)
