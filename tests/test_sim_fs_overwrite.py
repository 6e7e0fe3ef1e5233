# -*- test-case-name: tests.test_sim_fs_overwrite -*-
"""
The simulated file system's crash tears unsynced writes over durable zeros
(issue 16): the write-ahead log now writes its records over a zero-filled,
preallocated segment instead of extending the file, and the simulator must
keep tearing those writes as a disk would (each unit kept, lost -- showing
the zeros -- zeroed or garbled), never touching bytes that did not change.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.sim.fs import SimulatedFileSystem

HEADER = b"H" * 20 + b"\x00" * 4  # durable content whose last bytes are zeros
RECORDS = b"\x00\x00" + b"R" * 1500  # new bytes, starting with zeros like a length field


def crashed_content(seed: int) -> tuple[bytes, list[str]]:
    fs = SimulatedFileSystem()
    fs.makedirs("/d")
    fd = fs.create_truncate("/d/seg")
    fs.pwrite_all(fd, HEADER + bytes(4096), 0)
    fs.fsync(fd)
    fs.fsync_dir("/d")
    fs.fsync_dir("/")
    fs.pwrite_all(fd, RECORDS, len(HEADER))
    torn = fs.crash(random.Random(seed), tear=True)
    return fs.read_file("/d/seg"), torn


class OverwriteOfZerosTests(SynchronousTestCase):
    def test_unsynced_writes_over_zeros_are_torn(self) -> None:
        """Across seeds, a crash keeps some, all or none of the bytes written over durable zeros, unit by unit."""
        outcomes = set()
        for seed in range(60):
            content, torn = crashed_content(seed)
            self.assertEqual(content[: len(HEADER)], HEADER, seed)
            self.assertGreaterEqual(len(content), len(HEADER) + 4096, seed)
            region = content[len(HEADER) : len(HEADER) + len(RECORDS)]
            if region == RECORDS:
                outcomes.add("kept")
            elif region == bytes(len(RECORDS)):
                outcomes.add("lost")
            else:
                outcomes.add("torn")
                self.assertTrue(torn, seed)
            self.assertEqual(content[len(HEADER) + len(RECORDS) :], bytes(len(content) - len(HEADER) - len(RECORDS)), seed)
        self.assertIn("torn", outcomes)
        self.assertIn("kept", outcomes)

    def test_rewritten_non_zero_bytes_keep_their_durable_content(self) -> None:
        """Unsynced changes to durable non-zero bytes are not torn: the durable content survives whole."""
        fs = SimulatedFileSystem()
        fs.makedirs("/d")
        fd = fs.create_truncate("/d/seg")
        fs.pwrite_all(fd, b"A" * 2048, 0)
        fs.fsync(fd)
        fs.fsync_dir("/d")
        fs.fsync_dir("/")
        fs.pwrite_all(fd, b"B" * 1024, 512)
        for seed in range(20):
            self.assertEqual(fs.crash(random.Random(seed), tear=True), [])
        self.assertEqual(fs.read_file("/d/seg"), b"A" * 2048)
