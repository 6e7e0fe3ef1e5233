# -*- test-case-name: tests.test_storage_snapshots_transfer -*-
"""
Tests for sending a snapshot in chunks (L{SnapshotStore.read_chunks}) and
receiving it (L{SnapshotWriter}), the two halves InstallSnapshot will use:
a good transfer installs an identical, verified file; every refusal leaves
nothing installed and no temporary file.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.storage.snapshots import SnapshotRejected, SnapshotStore, SnapshotWriter

from tests.snapshot_support import (
    DIRECTORY,
    ReadableSimulatedFileSystem,
    content_for,
    read_content,
    write_snapshot,
)


class TransferTests(SynchronousTestCase):
    """A leader's snapshot file, read in chunks, received by a follower's store."""

    def setUp(self) -> None:
        self.leader_fs = ReadableSimulatedFileSystem()
        self.leader_fs.makedirs_durable("/data")
        self.leader = SnapshotStore.open(DIRECTORY, self.leader_fs)
        self.info = write_snapshot(self.leader, 50, 4, content_for(50, 2000))
        self.chunks = list(self.leader.read_chunks(self.info, chunk_size=256))
        self.follower_fs = ReadableSimulatedFileSystem()
        self.follower_fs.makedirs_durable("/data")
        self.follower = SnapshotStore.open(DIRECTORY, self.follower_fs)

    def receiver(self, index: int = 50, term: int = 4, size: int | None = None) -> SnapshotWriter:
        assert self.info.size is not None
        return self.follower.begin_receive(index, term, self.info.size if size is None else size)

    def assertNothingInstalled(self) -> None:
        self.assertEqual(self.follower.list(), [])
        self.assertEqual(self.follower_fs.listdir(DIRECTORY), [])

    def test_good_transfer_installs_identical_file(self) -> None:
        """All chunks in order install a snapshot identical to the leader's, durably."""
        writer = self.receiver()
        for offset, chunk in self.chunks:
            writer.write(offset, chunk)
        installed = writer.finish()
        self.assertEqual(installed.digest, self.info.digest)
        self.follower_fs.crash()
        follower = SnapshotStore.open(DIRECTORY, self.follower_fs)
        self.assertEqual(follower.verify(follower.list()[0]), installed)
        self.assertEqual(read_content(follower, installed), content_for(50, 2000))

    def test_chunks_split_anywhere(self) -> None:
        """Chunk boundaries may fall anywhere, including inside the metadata and the digest."""
        whole = b"".join(chunk for _, chunk in self.chunks)
        for size in (1, 7, 15, 16, 17, 47, 48, 49, len(whole) - 1, len(whole)):
            with self.subTest(size=size):
                writer = self.receiver()
                for offset in range(0, len(whole), size):
                    writer.write(offset, whole[offset : offset + size])
                self.assertEqual(writer.finish().digest, self.info.digest)

    def test_wrong_checksum_rejected(self) -> None:
        """A corrupted byte anywhere is caught at finish; nothing is installed."""
        whole = b"".join(chunk for _, chunk in self.chunks)
        for position in (0, 20, 200, len(whole) // 2, len(whole) - 40, len(whole) - 1):
            with self.subTest(position=position):
                damaged = bytearray(whole)
                damaged[position] ^= 0x10
                writer = self.receiver()
                writer.write(0, bytes(damaged))
                self.assertRaises(SnapshotRejected, writer.finish)
                self.assertNothingInstalled()

    def test_chunk_past_announced_size_rejected(self) -> None:
        """A chunk that runs past the announced size is refused and aborts the transfer."""
        assert self.info.size is not None
        writer = self.receiver(size=self.info.size - 1)
        with self.assertRaises(SnapshotRejected):
            for offset, chunk in self.chunks:
                writer.write(offset, chunk)
        self.assertNothingInstalled()
        self.assertRaises(SnapshotRejected, writer.finish)
        self.assertNothingInstalled()

    def test_out_of_order_offsets_rejected(self) -> None:
        """A skipped, repeated or rewound chunk is refused and aborts the transfer."""
        for order in ([0, 2], [0, 1, 1], [0, 1, 0], [1]):
            with self.subTest(order=order):
                writer = self.receiver()
                with self.assertRaises(SnapshotRejected):
                    for position in order:
                        writer.write(*self.chunks[position])
                self.assertNothingInstalled()

    def test_incomplete_transfer_rejected(self) -> None:
        """Finishing before every announced byte has arrived is refused."""
        writer = self.receiver()
        for offset, chunk in self.chunks[:-1]:
            writer.write(offset, chunk)
        self.assertRaises(SnapshotRejected, writer.finish)
        self.assertNothingInstalled()

    def test_other_index_or_term_rejected(self) -> None:
        """A file whose metadata names another index or term than announced is refused."""
        for index, term in ((51, 4), (50, 5)):
            with self.subTest(index=index, term=term):
                writer = self.receiver(index, term)
                for offset, chunk in self.chunks:
                    writer.write(offset, chunk)
                self.assertRaises(SnapshotRejected, writer.finish)
                self.assertNothingInstalled()

    def test_abort_removes_temporary_file(self) -> None:
        """An aborted transfer leaves nothing, refuses later chunks, and the transfer can start over."""
        writer = self.receiver()
        writer.write(*self.chunks[0])
        writer.abort()
        self.assertNothingInstalled()
        self.assertRaises(SnapshotRejected, writer.write, *self.chunks[1])
        writer = self.receiver()
        for offset, chunk in self.chunks:
            writer.write(offset, chunk)
        self.assertEqual(writer.finish().digest, self.info.digest)

    def test_too_small_announcement_rejected(self) -> None:
        """An announced size too small for any snapshot is refused at once."""
        self.assertRaises(SnapshotRejected, self.receiver, size=10)
        self.assertNothingInstalled()
        self.receiver().abort()

    def test_resume_from_offset(self) -> None:
        """The sender can read from any offset, so an interrupted transfer can resume where the receiver is."""
        writer = self.receiver()
        writer.write(*self.chunks[0])
        for offset, chunk in self.leader.read_chunks(self.info, chunk_size=100, offset=writer.received):
            writer.write(offset, chunk)
        self.assertEqual(writer.finish().digest, self.info.digest)
