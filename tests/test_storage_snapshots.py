# -*- test-case-name: tests.test_storage_snapshots -*-
"""
Tests for L{kvstore.storage.snapshots}: the file format (round trip, every
truncation point, bit flips), the store (listing, keep-last-two, leftover
temporary files, choosing the newest intact snapshot), on the simulated and
the real file system.
"""

from __future__ import annotations

import hashlib
import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kvstore.storage import StorageError
from kvstore.storage.snapshots import (
    CorruptSnapshotError,
    SnapshotMeta,
    SnapshotStore,
    snapshot_name,
)

from tests.snapshot_support import (
    DIRECTORY,
    content_for,
    meta,
    read_content,
    simulated_store,
    write_snapshot,
)
from tests.support import temporary_directory


class SnapshotFileTests(SynchronousTestCase):
    """The snapshot file: what is written is what is read, and any damage refuses."""

    def test_round_trip(self) -> None:
        """A written snapshot verifies with its metadata, size and digest, and reads back its content."""
        fs, store = simulated_store()
        content = content_for(7, 5000)
        written = write_snapshot(store, 7, 3, content, chunk=333)
        verified = store.verify(store.list()[0])
        self.assertEqual(verified, written)
        self.assertEqual(verified.meta, meta(7, 3))
        self.assertEqual(verified.meta.membership["voters"][0], [1, "127.0.0.1:7001"])
        self.assertEqual(verified.size, len(fs.read_file(verified.path)))
        self.assertEqual(read_content(store, verified), content)
        self.assertEqual(verified.name, snapshot_name(7, 3))

    def test_round_trip_real_file_system(self) -> None:
        """The same holds on the real file system, with an empty content and a large one in 1 MiB chunks."""
        store = SnapshotStore.open(str(temporary_directory(self) / "snapshots"))
        empty = write_snapshot(store, 1, 1, b"")
        big = os.urandom(3 * (1 << 20) + 17)
        info = write_snapshot(store, 2, 1, big, chunk=1 << 20)
        self.assertEqual(read_content(store, store.verify(empty)), b"")
        self.assertEqual(read_content(store, store.verify(store.list()[0])), big)
        self.assertEqual([c for _, c in store.read_chunks(info)][0][:8], b"\x89KVSNAP\n")
        self.assertEqual(sum(len(c) for _, c in store.read_chunks(info)), info.size)

    def test_overhead_is_small(self) -> None:
        """The file is the content plus a few hundred bytes of header, metadata and trailer."""
        _, store = simulated_store()
        info = write_snapshot(store, 5, 1, b"x" * 100_000)
        self.assertLess(info.size - 100_000, 300)

    def test_every_truncation_refuses(self) -> None:
        """A file cut short at any byte refuses to verify, with an error naming the file."""
        fs, store = simulated_store()
        info = write_snapshot(store, 9, 2)
        whole = fs.read_file(info.path)
        for length in range(len(whole)):
            with self.subTest(length=length):
                fd = fs.create_truncate(info.path)
                fs.pwrite_all(fd, whole[:length], 0)
                fs.close(fd)
                error = self.assertRaises(CorruptSnapshotError, store.verify, store.list()[0])
                self.assertIn(info.path, str(error))

    def test_every_byte_flip_refuses(self) -> None:
        """Flipping one bit in any byte of the file makes it refuse to verify."""
        fs, store = simulated_store()
        info = write_snapshot(store, 9, 2)
        whole = fs.read_file(info.path)
        for position in range(len(whole)):
            with self.subTest(position=position):
                damaged = bytearray(whole)
                damaged[position] ^= 1 << (position % 8)
                fd = fs.create_truncate(info.path)
                fs.pwrite_all(fd, bytes(damaged), 0)
                fs.close(fd)
                self.assertRaises(CorruptSnapshotError, store.verify, store.list()[0])

    @settings(max_examples=50, deadline=None)
    @given(content=st.binary(max_size=2000), flips=st.lists(st.integers(min_value=0), min_size=1, max_size=4))
    def test_random_damage_refuses(self, content: bytes, flips: list[int]) -> None:
        """Any set of bit flips in any snapshot refuses to verify (checksum or structure)."""
        fs, store = simulated_store()
        info = write_snapshot(store, 4, 1, content)
        damaged = bytearray(fs.read_file(info.path))
        bits = {flip % (len(damaged) * 8) for flip in flips}
        for bit in bits:
            damaged[bit // 8] ^= 1 << (bit % 8)
        fd = fs.create_truncate(info.path)
        fs.pwrite_all(fd, bytes(damaged), 0)
        fs.close(fd)
        self.assertRaises(CorruptSnapshotError, store.verify, store.list()[0])

    def test_name_and_metadata_must_agree(self) -> None:
        """A valid snapshot file renamed to another index refuses: its name is how it is found."""
        fs, store = simulated_store()
        info = write_snapshot(store, 9, 2)
        fs.replace(info.path, os.path.join(DIRECTORY, snapshot_name(10, 2)))
        error = self.assertRaises(CorruptSnapshotError, store.verify, store.list()[0])
        self.assertIn("unlike its name", str(error))

    def test_trailer_length_must_match(self) -> None:
        """A trailer whose content length disagrees with the file size refuses even when its digest is right
        (a writer bug, not disk damage, so the digest alone cannot catch it)."""
        fs, store = simulated_store()
        info = write_snapshot(store, 3)
        data = bytearray(fs.read_file(info.path))
        assert info.content_length is not None
        data[-40:-32] = struct.pack(">Q", info.content_length + 1)
        data[-32:] = hashlib.sha256(bytes(data[:-32])).digest()
        fd = fs.create_truncate(info.path)
        fs.pwrite_all(fd, bytes(data), 0)
        fs.close(fd)
        error = self.assertRaises(CorruptSnapshotError, store.verify, store.list()[0])
        self.assertIn("disagrees", str(error))

    def test_other_version_refuses(self) -> None:
        """A file of another format version refuses with the version in the message (and is not misread)."""
        fs, store = simulated_store()
        info = write_snapshot(store, 3)
        data = bytearray(fs.read_file(info.path))
        data[8:12] = struct.pack(">I", 2)
        fd = fs.create_truncate(info.path)
        fs.pwrite_all(fd, bytes(data), 0)
        fs.close(fd)
        error = self.assertRaises(CorruptSnapshotError, store.verify, store.list()[0])
        self.assertIn("unsupported format version 2", str(error))

    def test_metadata_validation(self) -> None:
        """Metadata refuses negative or boolean indexes and terms, and a non-string cluster id."""
        for bad in ({"index": -1, "term": 1}, {"index": True, "term": 1}, {"index": 1, "term": 1, "cluster_id": 5}):
            with self.subTest(bad=bad):
                self.assertRaises(ValueError, SnapshotMeta, **bad)


class SnapshotStoreTests(SynchronousTestCase):
    """The snapshot directory: listing, pruning, leftovers, and the newest intact snapshot."""

    def test_list_newest_first(self) -> None:
        """Snapshots are listed by index (then term), newest first, whatever the write order."""
        _, store = simulated_store()
        for index, term in ((20, 2), (5, 1), (300, 4), (20, 3)):
            write_snapshot(store, index, term)
        self.assertEqual([(i.index, i.term) for i in store.list()], [(300, 4), (20, 3), (20, 2), (5, 1)])

    def test_prune_keeps_last_two_durably(self) -> None:
        """Pruning keeps the two newest; the deletions survive a crash."""
        fs, store = simulated_store()
        for index in (10, 20, 30, 40):
            write_snapshot(store, index)
        self.assertEqual(store.prune(), [snapshot_name(20, 1), snapshot_name(10, 1)])
        fs.crash()
        store = SnapshotStore.open(DIRECTORY, fs)
        self.assertEqual([i.index for i in store.list()], [40, 30])

    def test_prune_spares_protected(self) -> None:
        """A snapshot being sent to a follower is not pruned."""
        _, store = simulated_store()
        for index in (10, 20, 30):
            write_snapshot(store, index)
        store.prune(protect=frozenset({snapshot_name(10, 1)}))
        self.assertEqual([i.index for i in store.list()], [30, 20, 10])

    def test_leftover_temporary_files_are_removed(self) -> None:
        """Temporary files of interrupted writes are never listed, and opening the store removes them durably."""
        fs, store = simulated_store()
        write_snapshot(store, 10)
        writer = store.begin(meta(20))
        writer.write(b"partial")
        receiver = store.begin_receive(30, 1, 1000)
        receiver.write(0, b"\x89KVSNAP\n")
        self.assertEqual([i.index for i in store.list()], [10])
        fs.fsync_dir(DIRECTORY)  # even if the leftovers' names were durable
        fs.crash()
        store = SnapshotStore.open(DIRECTORY, fs)
        self.assertEqual(fs.listdir(DIRECTORY), [snapshot_name(10, 1)])
        fs.crash()
        self.assertEqual(fs.listdir(DIRECTORY), [snapshot_name(10, 1)])

    def test_newest_intact_skips_damaged(self) -> None:
        """A damaged newest snapshot is reported (naming its file) and the older intact one is offered."""
        fs, store = simulated_store()
        older = write_snapshot(store, 10)
        newer = write_snapshot(store, 20)
        fd = fs.open_rw(newer.path)
        fs.pwrite_all(fd, b"\x00", 40)
        fs.close(fd)
        intact, damaged = store.newest_intact()
        self.assertEqual(intact, older)
        self.assertEqual([e.path for e in damaged], [newer.path])
        self.assertEqual([error is None for _, error in store.scan()], [False, True])

    def test_newest_intact_when_all_fine_or_none(self) -> None:
        """With no snapshot there is none to use; with intact ones the newest is used and nothing is reported."""
        _, store = simulated_store()
        self.assertEqual(store.newest_intact(), (None, []))
        write_snapshot(store, 10)
        newest = write_snapshot(store, 20)
        self.assertEqual(store.newest_intact(), (newest, []))

    def test_one_writer_per_name(self) -> None:
        """Two writers for the same index and term are refused (they would share a temporary file)."""
        _, store = simulated_store()
        writer = store.begin(meta(10))
        self.assertRaises(StorageError, store.begin, meta(10))
        self.assertRaises(StorageError, store.begin_receive, 10, 1, 1000)
        writer.abort()
        store.begin(meta(10)).abort()

    def test_reading_content_verifies_first(self) -> None:
        """Reading a damaged snapshot's content refuses before yielding anything."""
        fs, store = simulated_store()
        info = write_snapshot(store, 10)
        fd = fs.open_rw(info.path)
        fs.pwrite_all(fd, b"\xff", info.size - 40)
        fs.close(fd)
        self.assertRaises(CorruptSnapshotError, list, store.read_content(store.list()[0]))
