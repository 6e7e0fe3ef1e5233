# -*- test-case-name: tests.test_storage_wal_upgrade -*-
"""
A log upgraded in place from format version 1 keeps every record it
fsyncs: version-2 records never go into a version-1 segment (a Raft
conflict can truncate back into one), opening alone writes nothing (so
C{kvstore-inspect} leaves an old build's data directory openable by that
build), and a power cut during the first open cannot leave an unsynced
version-1 segment behind a newer one.
"""

from __future__ import annotations

import os
import struct
import zlib

from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.sim.fs import SECTOR, Fate, SimulatedFileSystem, TearPlan
from kvstore.storage import CorruptLogError, LogEntry, WriteAheadLog
from kvstore.storage.records import SEGMENT_HEADER_SIZE, decode_segment_header, encode_segment_header
from kvstore.storage.wal import segment_name
from kvstore.testing.runners import run_now


def v1_record(index: int, term: int, payload: bytes) -> bytes:
    """A record as format version 1 wrote it (24-byte header, no synced)."""
    length = struct.pack(">I", len(payload))
    index_term = struct.pack(">QQ", index, term)
    crc = zlib.crc32(payload, zlib.crc32(index_term, zlib.crc32(length)))
    return length + struct.pack(">I", crc) + index_term + payload


def v1_segment(first: int, entries: list[LogEntry]) -> bytes:
    return encode_segment_header(first, version=1) + b"".join(v1_record(*e) for e in entries)


def write_v1_log(directory: str, entries: list[LogEntry]) -> None:
    os.makedirs(directory)
    with open(os.path.join(directory, segment_name(entries[0].index)), "wb") as f:
        f.write(v1_segment(entries[0].index, entries))


def versions(directory: str) -> dict[str, int]:
    found = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            header, _ = decode_segment_header(f.read(SEGMENT_HEADER_SIZE))
        assert header is not None
        found[name] = header.version
    return found


class TruncateIntoVersionOneTests(SynchronousTestCase):
    """Entries appended after a truncation into a version-1 segment survive."""

    def test_conflict_truncation_into_a_version_one_segment(self) -> None:
        """A follower upgraded with uncommitted old-term entries truncates
        them on a conflict and appends the new leader's entries; once
        fsynced (and acknowledged) they are all there after a restart,
        whether or not a later segment followed."""
        old = [LogEntry(i, 1, b"old %d" % i) for i in range(1, 6)]
        new = [LogEntry(i, 2, b"new %d" % i) for i in range(4, 8)]
        for roll_over in (False, True):
            with self.subTest(roll_over=roll_over):
                directory = self.mktemp()
                write_v1_log(directory, old)
                log = WriteAheadLog.open(directory, segment_bytes=4096, run_in_thread=run_now)
                log.truncate_suffix(4)
                log.append(new)
                durable: list[int] = []
                log.sync().addCallback(durable.append)
                self.assertEqual(durable, [7])
                expected = old[:3] + new
                if roll_over:
                    expected += [LogEntry(8, 2, b"x" * 5000), LogEntry(9, 2, b"y")]
                    log.append(expected[-2:-1])
                    log.sync()
                    log.append(expected[-1:])
                    log.sync()
                log.close()
                reopened = WriteAheadLog.open(directory, segment_bytes=4096, run_in_thread=run_now)
                self.assertEqual(reopened.entries, expected)
                self.assertEqual(versions(directory)[segment_name(1)], 1)
                self.assertEqual(set(versions(directory).values()) - {1}, {2})

    def test_truncation_of_a_whole_version_one_segment(self) -> None:
        """Truncating every entry of the last version-1 segment and
        appending replaces it by a version-2 segment of the same name."""
        directory = self.mktemp()
        write_v1_log(directory, [LogEntry(i, 1, b"old") for i in range(1, 4)])
        log = WriteAheadLog.open(directory, run_in_thread=run_now)
        log.truncate_suffix(1)
        log.append([LogEntry(1, 2, b"new")])
        log.sync()
        log.close()
        self.assertEqual(versions(directory), {segment_name(1): 2})
        self.assertEqual(
            WriteAheadLog.open(directory, run_in_thread=run_now).entries, [LogEntry(1, 2, b"new")]
        )


class OpenWritesNothingTests(SynchronousTestCase):
    """Opening a version-1 log changes no file (only an append does)."""

    def test_open_and_close_leave_a_version_one_log_as_it_was(self) -> None:
        """An intact version-1 log opened and closed (as kvstore-inspect
        does) stays a version-1 log, which the old build can still open."""
        directory = self.mktemp()
        write_v1_log(directory, [LogEntry(i, 1, b"old") for i in range(1, 4)])
        before = versions(directory)
        WriteAheadLog.open(directory, run_in_thread=run_now).close()
        self.assertEqual(versions(directory), before)


class _PowerCut(Exception):
    pass


class _CutAtSegmentFsync(SimulatedFileSystem):
    """Loses power at the first fsync of C{victim} while C{armed}."""

    victim = ""
    armed = False

    def fsync(self, fd: int) -> None:
        if self.armed and self._fd(fd) is self._inode(self.victim):
            raise _PowerCut()
        super().fsync(fd)


class UpgradePowerCutTests(SynchronousTestCase):
    """A power cut during the first open of an upgraded log is survivable."""

    def test_unsynced_version_one_tail_never_ends_up_behind_a_new_segment(self) -> None:
        """An old build killed before its fsync leaves records in the page
        cache only; if the new build's first open is cut short by a power
        cut, the torn version-1 segment is still the last one, and its torn
        tail is cut as such rather than refused as damage in a segment that
        is not the last."""
        fs = _CutAtSegmentFsync()
        fs.makedirs_durable("/d/wal")
        fs.victim = "/d/wal/" + segment_name(1)
        fd = fs.create_truncate(fs.victim)
        durable = v1_segment(1, [LogEntry(i, 1, b"a" * 100) for i in range(1, 4)])
        fs.pwrite_all(fd, durable, 0)
        fs.fsync(fd)
        fs.fsync_dir("/d/wal")
        tail = b"".join(v1_record(i, 1, b"b" * 100) for i in range(4, 10))
        fs.pwrite_all(fd, tail, len(durable))
        fs.close(fd)
        fs.armed = True  # the new build's open() fsyncs what it recovered: cut there
        try:
            WriteAheadLog.open("/d/wal", run_in_thread=run_now, fs=fs)
        except _PowerCut:
            pass
        fs.armed = False
        fs.crash(plans={fs.victim: TearPlan(len(durable) + len(tail), SECTOR, (Fate.KEEP, Fate.GARBLE))})
        try:
            log = WriteAheadLog.open("/d/wal", run_in_thread=run_now, fs=fs)
        except CorruptLogError as e:
            self.fail(f"refused to start after an ordinary torn write: {e}")
        self.assertGreaterEqual(log.last_index, 3)
