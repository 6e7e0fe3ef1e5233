"""
Tests for L{kvstore.daemon.service}: refusing to start on a locked, corrupt or
foreign data directory, with a one-line message naming the problem.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.options import Options
from kvstore.daemon.service import build_service, makeService
from kvstore.storage import LogEntry, WriteAheadLog
from twisted.internet.defer import succeed


def options(tmp_path: Path, *extra: str) -> Options:
    o = Options()
    o.parseOptions(["--data-dir", str(tmp_path / "data"), "--port", "24999", *extra])
    return o


def write_log(directory: Path, count: int) -> None:
    """Write C{count} entries in two flushes (damage in the first is then
    provably in fsynced data: see the WAL's recovery rule)."""
    log = WriteAheadLog.open(str(directory), run_in_thread=lambda f: succeed(f()))
    half = count // 2
    log.append([LogEntry(i, 1, b"Pk%d v" % i) for i in range(1, half + 1)])
    log.sync()
    log.append([LogEntry(i, 1, b"Pk%d v" % i) for i in range(half + 1, count + 1)])
    log.sync()
    log.close()


class ServiceStartupTests(SynchronousTestCase):
    """
    L{build_service} and L{makeService}: start-up refusals, log recovery and
    durable creation of the data directory.
    """

    def setUp(self) -> None:
        self.tmp_path = Path(self.mktemp())
        self.tmp_path.mkdir()

    def test_locked_data_directory_is_refused(self) -> None:
        """A second node on a data directory in use exits with a clear message."""
        first = build_service(options(self.tmp_path).config, MemoryReactorClock())
        with self.assertRaises(SystemExit) as e:
            makeService(options(self.tmp_path))
        assert "in use by another process" in str(e.exception)
        first._lock.release()  # type: ignore[attr-defined]

    def test_corrupt_log_is_refused_naming_file_and_offset(self) -> None:
        """Damage in the middle of the log stops start-up with the file and offset."""
        wal = self.tmp_path / "data" / "wal"
        write_log(wal, 10)
        segment = next(wal.iterdir())
        data = bytearray(segment.read_bytes())
        data[len(data) // 4] ^= 0x01  # inside the first flush
        segment.write_bytes(bytes(data))
        with self.assertRaises(SystemExit) as e:
            makeService(options(self.tmp_path))
        message = str(e.exception)
        assert message.startswith("twistd kvstore: refusing to start")
        assert str(segment) in message and "offset" in message

    def test_data_directory_of_another_cluster_is_refused(self) -> None:
        """A data directory written by another cluster is never mixed in."""
        service = build_service(options(self.tmp_path, "--cluster-id", "one").config, MemoryReactorClock())
        service.node.core.start()
        service.node.stop()
        # Save metadata naming cluster "one", as a running node would.
        from kvstore.storage import MetadataRecord, MetadataStore

        store = MetadataStore.open(str(self.tmp_path / "data" / "metadata.json"), run_in_thread=lambda f: succeed(f()))
        store.save(MetadataRecord(1, 0, "one"))
        service._lock.release()  # type: ignore[attr-defined]
        with self.assertRaises(SystemExit) as e:
            makeService(options(self.tmp_path, "--cluster-id", "two"))
        assert "belongs to cluster 'one'" in str(e.exception)

    def test_service_starts_and_recovers_log(self) -> None:
        """A service built on an existing log hands every entry to the core."""
        write_log(self.tmp_path / "data" / "wal", 5)
        service = build_service(options(self.tmp_path).config, MemoryReactorClock())
        assert service.node.core.last_index == 5
        service._lock.release()  # type: ignore[attr-defined]

    def test_new_data_directory_parents_are_fsynced(self) -> None:
        """Creating a nested data directory fsyncs the parent of every directory
        it creates, so the directory survives a power cut after first start."""
        import kvstore.daemon.datadir as service_module

        synced: list[int] = []
        real_fsync = service_module.os.fsync
        self.patch(service_module.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
        target = self.tmp_path / "a" / "b" / "c"
        service_module.make_directory_durably(str(target))
        assert target.is_dir()
        assert len(synced) == 3
