# -*- test-case-name: tests.test_storage_metadata -*-
"""
Tests for L{kvstore.storage.metadata}: atomic, serialized, checksummed saves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.runners import ManualRunner
from kvstore.storage import (
    CorruptMetadataError,
    MetadataRecord,
    MetadataStore,
    StorageFailedError,
)
from kvstore.storage.fs import FileSystem

from tests.support import parametrize, temporary_directory

T = TypeVar("T")


def sync_runner(f: Callable[[], T]) -> "Deferred[T]":
    """Run the file work at once, on the calling thread."""
    return succeed(f())


class RecordingFileSystem(FileSystem):
    """The real file system, recording the durable operations in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail_fsync = False

    def create_truncate(self, path: str) -> int:
        self.calls.append(f"create {Path(path).name}")
        return super().create_truncate(path)

    def fsync(self, fd: int) -> None:
        self.calls.append("fsync")
        if self.fail_fsync:
            raise OSError(5, "Input/output error (simulated)")
        super().fsync(fd)

    def replace(self, src: str, dst: str) -> None:
        self.calls.append(f"rename {Path(src).name} {Path(dst).name}")
        super().replace(src, dst)

    def fsync_dir(self, path: str) -> None:
        self.calls.append("fsync dir")
        super().fsync_dir(path)


def open_store(path: Path, **kwargs: Any) -> MetadataStore:
    kwargs.setdefault("run_in_thread", sync_runner)
    return MetadataStore.open(str(path), **kwargs)


class MetadataStoreTests(SynchronousTestCase):
    """
    The term/vote metadata file: atomic saves (tmp, fsync, rename, fsync dir), recovery, corruption
    and fail-stop errors.
    """

    def test_missing_file_gives_initial_state(self) -> None:
        """Opening a path with no file gives MetadataRecord() and creates the parent directory."""
        tmp_path = temporary_directory(self)
        store = open_store(tmp_path / "data" / "meta")
        assert store.state == MetadataRecord() == MetadataRecord(term=0, voted_for=None, cluster_id=None)
        assert (tmp_path / "data").is_dir()

    def test_save_and_reopen(self) -> None:
        """A saved state, including the cluster id, is what the next open loads."""
        tmp_path = temporary_directory(self)
        path = tmp_path / "meta"
        store = open_store(path)
        state = MetadataRecord(term=7, voted_for=2, cluster_id="c-123")
        fired: list[None] = []
        store.save(state).addCallback(fired.append)
        assert fired == [None]
        assert store.state == store.durable_state == state
        assert open_store(path).state == state
        store.save(MetadataRecord(term=8))
        assert open_store(path).state == MetadataRecord(term=8)

    def test_save_is_tmp_fsync_rename_fsync_dir(self) -> None:
        """A save writes a tmp file, fsyncs it, renames it over the file, then fsyncs the directory."""
        tmp_path = temporary_directory(self)
        fs = RecordingFileSystem()
        store = open_store(tmp_path / "meta", fs=fs)
        store.save(MetadataRecord(term=1))
        assert fs.calls == ["create meta.tmp", "fsync", "rename meta.tmp meta", "fsync dir"]
        assert not (tmp_path / "meta.tmp").exists()

    def test_leftover_tmp_file_is_ignored(self) -> None:
        """A garbage .tmp left by a crash mid-save is ignored and the old state loads."""
        tmp_path = temporary_directory(self)
        path = tmp_path / "meta"
        open_store(path).save(MetadataRecord(term=3, voted_for=1))
        (tmp_path / "meta.tmp").write_bytes(b"half a fi")
        store = open_store(path)
        assert store.state == MetadataRecord(term=3, voted_for=1)
        store.save(MetadataRecord(term=4))
        assert open_store(path).state == MetadataRecord(term=4)

    @parametrize(
        "damage",
        [
            lambda data: data[:-1],  # truncated body
            lambda data: data.replace(b'"term": 3', b'"term": 4'),  # body changed, checksum not
            lambda data: b"X" + data[1:],  # bad magic
            lambda data: data.split(b"\n", 1)[0],  # no body
            lambda data: b"",  # empty file
            lambda data: data.replace(b"metadata 2 ", b"metadata 9 "),  # unknown version
        ],
    )
    def test_corrupt_file_refuses_to_open(self, damage: Callable[[bytes], bytes]) -> None:
        """Any damaged metadata file raises CorruptMetadataError naming its path."""
        tmp_path = temporary_directory(self)
        path = tmp_path / "meta"
        open_store(path).save(MetadataRecord(term=3, voted_for=1))
        path.write_bytes(damage(path.read_bytes()))
        with self.assertRaises(CorruptMetadataError) as caught:
            open_store(path)
        assert caught.exception.path == str(path)
        assert str(path) in str(caught.exception)

    def test_valid_checksum_but_bad_fields_refuses(self) -> None:
        """A checksummed body with wrong field names or types is still refused."""
        tmp_path = temporary_directory(self)
        import zlib

        path = tmp_path / "meta"
        for body in (b'{"term": -1, "voted_for": null, "cluster_id": null}', b'{"term": 1}', b"[]"):
            path.write_bytes(b"kvstore-metadata 1 %08x\n" % zlib.crc32(body) + body)
            with self.assertRaises(CorruptMetadataError):
                open_store(path)

    def test_saves_are_serialized_in_order(self) -> None:
        """Saves run one at a time in call order, and state reflects the latest request at once."""
        tmp_path = temporary_directory(self)
        runner = ManualRunner()
        path = tmp_path / "meta"
        store = open_store(path, run_in_thread=runner)
        fired: list[int] = []
        for term in (1, 2, 3):
            store.save(MetadataRecord(term=term)).addCallback(lambda _, t=term: fired.append(t))
        assert store.state == MetadataRecord(term=3) and store.durable_state == MetadataRecord()
        assert len(runner.jobs) == 1
        runner.release()
        assert fired == [1] and open_store(path).state == MetadataRecord(term=1)
        assert len(runner.jobs) == 1
        runner.release()
        runner.release()
        assert fired == [1, 2, 3] and open_store(path).state == MetadataRecord(term=3)
        assert store.save_count == 3

    def test_failed_save_is_fail_stop(self) -> None:
        """A failed fsync errbacks that save and those queued behind it, and refuses later saves."""
        tmp_path = temporary_directory(self)
        fs = RecordingFileSystem()
        runner = ManualRunner()
        path = tmp_path / "meta"
        store = open_store(path, run_in_thread=runner, fs=fs)
        failed: list[Failure] = []
        store.save(MetadataRecord(term=1)).addErrback(failed.append)
        store.save(MetadataRecord(term=2)).addErrback(failed.append)
        fs.fail_fsync = True
        with capturedLogs():
            runner.release()
        assert failed[0].check(OSError) and failed[1].check(StorageFailedError)
        self.flushLoggedErrors(OSError)
        later: list[Failure] = []
        store.save(MetadataRecord(term=3)).addErrback(later.append)
        assert later[0].check(StorageFailedError)
        assert not path.exists()

    def test_hard_state_validates(self) -> None:
        """MetadataRecord rejects negative or non-int terms and votes and non-str cluster ids."""
        for bad in ({"term": -1}, {"term": True}, {"voted_for": -2}, {"voted_for": "1"}, {"cluster_id": 5}):
            with self.assertRaises(ValueError):
                MetadataRecord(**bad)  # type: ignore[arg-type]
