"""
Unit tests of the simulated disk (kvstore.testing.sim.fs): a crash keeps only what
was fsynced, directory entries need a directory fsync, unsynced tails can be
torn, fsyncs inside a disk job take simulated time and die with the process,
and the production WAL and metadata store recover correctly on top of it.
"""

from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.sim.fs import SimulatedDisk, SimulatedFileSystem
from kvstore.storage import MetadataRecord, LogEntry, MetadataStore, WriteAheadLog


def new_fs() -> SimulatedFileSystem:
    fs = SimulatedFileSystem()
    fs.makedirs_durable("/d")
    return fs


def write_file(fs: SimulatedFileSystem, path: str, data: bytes, sync: bool = True, sync_dir: bool = True) -> int:
    fd = fs.create_truncate(path)
    fs.pwrite_all(fd, data, 0)
    if sync:
        fs.fsync(fd)
    if sync_dir:
        fs.fsync_dir("/d")
    return fd


class SimulatedFileSystemTests(SynchronousTestCase):
    """
    The simulated file system and disk: what a crash keeps, loses or tears, and that the WAL and
    metadata store recover correctly on it.
    """

    def test_crash_loses_unsynced_data(self):
        """Written but not fsynced bytes are gone after a crash; fsynced ones stay."""
        fs = new_fs()
        fd = write_file(fs, "/d/f", b"durable")
        fs.pwrite_all(fd, b"-lost", 7)
        assert fs.read_file("/d/f") == b"durable-lost"
        fs.crash()
        assert fs.read_file("/d/f") == b"durable"

    def test_new_file_needs_directory_fsync(self):
        """A created file whose directory was not fsynced vanishes in a crash,
        even if the file itself was fsynced."""
        fs = new_fs()
        write_file(fs, "/d/f", b"x", sync=True, sync_dir=False)
        assert fs.exists("/d/f")
        fs.crash()
        assert not fs.exists("/d/f")

    def test_rename_and_unlink_need_directory_fsync(self):
        """A rename or unlink not followed by a directory fsync is undone by a crash."""
        fs = new_fs()
        fd = write_file(fs, "/d/a", b"a")
        fs.close(fd)
        fs.replace("/d/a", "/d/b")
        fs.crash()
        assert fs.listdir("/d") == ["a"]
        fs.replace("/d/a", "/d/b")
        fs.fsync_dir("/d")
        fs.unlink("/d/b")
        fs.crash()
        assert fs.listdir("/d") == ["b"] and fs.read_file("/d/b") == b"a"

    def test_crash_can_tear_the_unsynced_tail(self):
        """With tearing, the durable bytes always survive and the length is
        between the old and the new one; over many crashes every length occurs,
        and so do a whole prefix of the extension and a damaged one."""
        lengths = set()
        prefixes = damaged = 0
        for seed in range(300):
            fs = new_fs()
            fd = write_file(fs, "/d/f", b"head")
            fs.pwrite_all(fd, b"0123456789", 4)
            fs.crash(random.Random(seed), tear=True)
            data = fs.read_file("/d/f")
            assert data.startswith(b"head") and 4 <= len(data) <= 14
            lengths.add(len(data))
            if b"head0123456789".startswith(data):
                prefixes += 1
            else:
                damaged += 1
        assert lengths == set(range(4, 15)) and prefixes and damaged

    def test_fsync_in_a_disk_job_takes_simulated_time(self):
        """Inside a SimulatedDisk job the fsync is durable only after the
        simulated latency, and the Deferred fires only then."""
        clock = Clock()
        fs = new_fs()
        fd = write_file(fs, "/d/f", b"")
        disk = SimulatedDisk(clock, random.Random(1), fs, latency=lambda rng: 0.01)

        def job() -> str:
            fs.pwrite_all(fd, b"data", 0)
            fs.fsync(fd)
            return "done"

        results: list[str] = []
        disk(job).addCallback(results.append)
        assert fs.read_file("/d/f") == b"data" and fs.durable_content("/d/f") == b""
        clock.advance(0.005)
        assert results == [] and fs.durable_content("/d/f") == b""
        clock.advance(0.006)
        assert results == ["done"] and fs.durable_content("/d/f") == b"data"

    def test_killed_disk_makes_nothing_durable_and_never_answers(self):
        """A crash between a job's write and its fsync loses the write; the
        dead incarnation's Deferred never fires."""
        clock = Clock()
        fs = new_fs()
        fd = write_file(fs, "/d/f", b"")
        disk = SimulatedDisk(clock, random.Random(1), fs, latency=lambda rng: 0.01)
        results: list[object] = []
        disk(lambda: (fs.pwrite_all(fd, b"data", 0), fs.fsync(fd))).addBoth(results.append)
        disk.kill()
        fs.crash()
        clock.advance(1)
        assert results == [] and fs.read_file("/d/f") == b""

    def test_wal_recovers_synced_entries_only(self):
        """The production WAL over the simulated disk keeps synced entries
        across a crash and loses (or truncates a torn tail of) unsynced ones."""
        for seed in range(30):
            clock = Clock()
            fs = new_fs()
            disk = SimulatedDisk(clock, random.Random(seed), fs)
            wal = WriteAheadLog.open("/d/wal", segment_bytes=200, run_in_thread=disk, fs=fs)
            wal.append([LogEntry(i, 1, b"x" * 40) for i in range(1, 6)])
            synced: list[int] = []
            wal.sync().addCallback(synced.append)
            clock.advance(1)
            assert synced == [5]
            wal.append([LogEntry(i, 1, b"y" * 40) for i in range(6, 9)])
            wal.sync()
            clock.advance(random.Random(seed).uniform(0, 0.004))  # maybe mid-fsync
            disk.kill()
            fs.crash(random.Random(seed), tear=True)
            recovered = WriteAheadLog.open("/d/wal", segment_bytes=200, run_in_thread=disk, fs=fs)
            assert 5 <= recovered.last_index <= 8
            assert [e.index for e in recovered.entries] == list(range(1, recovered.last_index + 1))
            assert recovered.entries[:5] == [LogEntry(i, 1, b"x" * 40) for i in range(1, 6)]

    def test_metadata_save_is_atomic_across_crashes(self):
        """A crash during a metadata save leaves the old or the new state, and
        after the save's Deferred fired, always the new one."""
        seen = set()
        for seed in range(40):
            clock = Clock()
            fs = new_fs()
            disk = SimulatedDisk(clock, random.Random(seed), fs)
            store = MetadataStore.open("/d/meta", run_in_thread=disk, fs=fs)
            done: list[object] = []
            store.save(MetadataRecord(1, 0, "c")).addCallback(done.append)
            clock.advance(1)
            assert done
            store.save(MetadataRecord(2, 1, "c")).addCallback(done.append)
            clock.advance(random.Random(seed).uniform(0, 0.01))
            disk.kill()
            fs.crash(random.Random(seed), tear=True)
            state = MetadataStore.open("/d/meta", run_in_thread=disk, fs=fs).state
            assert state in (MetadataRecord(1, 0, "c"), MetadataRecord(2, 1, "c"))
            if len(done) == 2:
                assert state == MetadataRecord(2, 1, "c")
            seen.add(state.term)
        assert seen == {1, 2}
