# -*- test-case-name: tests.test_sim_fs_tear -*-
"""
The simulated disk's torn writes (L{kvstore.testing.sim.fs}): a crash tears an
unsynced extension per 512-byte sector or 4 KiB page -- kept, dropped,
zero-filled or garbled -- and never touches fsynced bytes.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.sim.fs import PAGE, SECTOR, Fate, SimulatedFileSystem, TearPlan, torn_content


def fs_with_extension(durable: bytes, extension: bytes) -> SimulatedFileSystem:
    """A file C{/d/f} whose C{durable} bytes are fsynced and whose
    C{extension} is written after them but not fsynced."""
    fs = SimulatedFileSystem()
    fs.makedirs_durable("/d")
    fd = fs.create_truncate("/d/f")
    fs.pwrite_all(fd, durable, 0)
    fs.fsync(fd)
    fs.fsync_dir("/d")
    fs.pwrite_all(fd, extension, len(durable))
    return fs


class TearPlanTests(SynchronousTestCase):
    """L{torn_content} applies one fate per unit to the extension only."""

    def test_each_sector_gets_its_own_fate(self) -> None:
        """Keep, drop, zero and garble act on exactly their own sector's
        unsynced bytes; the fsynced bytes sharing the first sector survive."""
        durable = b"D" * 700
        written = durable + b"N" * (5 * SECTOR + 100 - 700)
        plan = TearPlan(len(written), SECTOR, (Fate.GARBLE, Fate.KEEP, Fate.DROP, Fate.ZERO, Fate.GARBLE), 3)
        torn = torn_content(durable, written, plan)
        self.assertEqual(len(torn), len(written))
        self.assertEqual(torn[:700], durable)
        self.assertNotEqual(torn[700:1024], written[700:1024])  # garbled
        self.assertEqual(torn[1024:1536], written[1024:1536])  # kept
        self.assertEqual(torn[1536:2048], bytes(512))  # dropped: a hole
        self.assertEqual(torn[2048:2560], bytes(512))  # zero-filled
        self.assertNotEqual(torn[2560:], written[2560:])  # garbled

    def test_pages_and_length(self) -> None:
        """A page fate covers all eight sectors of its page; the length cuts
        the extension; no fates at all leaves a plain prefix."""
        durable = b"D" * 100
        written = durable + b"N" * (3 * PAGE)
        torn = torn_content(durable, written, TearPlan(2 * PAGE + 50, PAGE, (Fate.KEEP, Fate.ZERO, Fate.KEEP)))
        self.assertEqual(torn, written[:PAGE] + bytes(PAGE) + written[2 * PAGE : 2 * PAGE + 50])
        self.assertEqual(torn_content(durable, written, TearPlan(333)), written[:333])

    def test_only_an_extension_can_be_torn(self) -> None:
        """A plan for content that does not extend the durable content, or
        a length outside the old and new ends, is refused."""
        with self.assertRaises(ValueError):
            torn_content(b"abc", b"abX", TearPlan(3))
        with self.assertRaises(ValueError):
            torn_content(b"abc", b"abcdef", TearPlan(2))


class CrashTearTests(SynchronousTestCase):
    """L{SimulatedFileSystem.crash} with C{tear} and with C{plans}."""

    def test_random_tears_cover_every_fate_and_unit(self) -> None:
        """Over many seeded crashes the durable bytes always survive, the
        length stays between the old and new ends, and the tail is
        sometimes intact, sometimes zeroed and sometimes garbled in the
        middle with intact bytes after it (not only a prefix)."""
        durable = b"D" * 1000
        extension = bytes(range(1, 251)) * 40  # no zero bytes
        seen = set()
        for seed in range(300):
            fs = fs_with_extension(durable, extension)
            fs.crash(random.Random(seed), tear=True)
            data = fs.read_file("/d/f")
            self.assertTrue(data.startswith(durable) and len(durable) <= len(data) <= len(durable) + len(extension))
            tail, new = data[1000:], extension[: len(data) - 1000]
            for unit_start in range(1024, len(data) - SECTOR, SECTOR):
                chunk = data[unit_start : unit_start + SECTOR]
                expected = (durable + extension)[unit_start : unit_start + SECTOR]
                seen.add("keep" if chunk == expected else "zero" if chunk == bytes(SECTOR) else "garble")
            if tail != new and data[-SECTOR:] == (durable + extension)[len(data) - SECTOR : len(data)]:
                seen.add("damage before intact")
        self.assertEqual(seen, {"keep", "zero", "garble", "damage before intact"})

    def test_plans_choose_the_tear(self) -> None:
        """An explicit plan decides the tear of its file; other files lose
        their unsynced bytes."""
        fs = fs_with_extension(b"D" * 10, b"N" * 2000)
        fd = fs.create_truncate("/d/g")
        fs.pwrite_all(fd, b"unsynced", 0)
        fs.fsync_dir("/d")
        torn = fs.crash(plans={"/d/f": TearPlan(2010, SECTOR, (Fate.KEEP, Fate.GARBLE, Fate.KEEP, Fate.KEEP), 1)})
        data = fs.read_file("/d/f")
        self.assertEqual(data[:512], b"D" * 10 + b"N" * 502)
        self.assertNotEqual(data[512:1024], b"N" * 512)
        self.assertEqual(data[1024:], b"N" * 986)
        self.assertEqual(fs.read_file("/d/g"), b"")
        self.assertEqual(len(torn), 1)

    def test_a_rewrite_below_the_durable_end_is_never_torn(self) -> None:
        """Bytes rewritten below the durable end (a truncation whose fsync
        did not finish, then new bytes) are not an extension: the crash keeps
        the durable content whole."""
        fs = fs_with_extension(b"D" * 3000, b"")
        fd = fs.open_rw("/d/f")
        fs.ftruncate(fd, 1000)
        fs.pwrite_all(fd, b"N" * 5000, 1000)
        for seed in range(50):
            copy = fs_with_extension(b"D" * 3000, b"")
            copy_fd = copy.open_rw("/d/f")
            copy.ftruncate(copy_fd, 1000)
            copy.pwrite_all(copy_fd, b"N" * 5000, 1000)
            copy.crash(random.Random(seed), tear=True)
            self.assertEqual(copy.read_file("/d/f"), b"D" * 3000)
