"""Tests for C{kvstore-inspect}: describing stopped nodes' data directories."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import succeed
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.datadir import DataDirectoryLock
from kvstore.tools.inspect import describe, main
from kvstore.storage import MetadataRecord, LogEntry, MetadataStore, WriteAheadLog

from tests.support import captured_output, temporary_directory


def make_node_dir(path: Path, entries: list[tuple[int, int]], term: int) -> None:
    run_now = lambda f: succeed(f())  # noqa: E731
    wal = WriteAheadLog.open(str(path / "wal"), run_in_thread=run_now)
    wal.append([LogEntry(i, t, b"") for i, t in entries])
    wal.sync()
    wal.close()
    MetadataStore.open(str(path / "metadata.json"), run_in_thread=run_now).save(MetadataRecord(term, 1, "c"))
    (path / "LOCK").write_text("")  # a node that ran here left its lock file


class DataDirectoryToolTests(SynchronousTestCase):
    """
    C{kvstore-inspect} (L{kvstore.tools.inspect}) on data directories written by the real WAL and metadata
    store.
    """

    def test_describe_reports_log_extent_and_metadata(self) -> None:
        """The description names cluster, term, vote and the log's last index and term."""
        tmp_path = temporary_directory(self)
        make_node_dir(tmp_path, [(1, 1), (2, 1), (3, 2)], term=3)
        info = describe(str(tmp_path))
        assert (info["cluster"], info["term"], info["voted_for"]) == ("c", 3, 1)
        assert (info["first_index"], info["last_index"], info["last_term"]) == (1, 3, 2)

    def test_most_up_to_date_log_is_named(self) -> None:
        """Given several directories, the one with the highest (last term, last
        index) is named: a longer log of an older term loses."""
        tmp_path = temporary_directory(self)
        output = captured_output(self)
        make_node_dir(tmp_path / "a", [(1, 1), (2, 1), (3, 1), (4, 1)], term=2)
        make_node_dir(tmp_path / "b", [(1, 1), (2, 2)], term=2)
        assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
        assert f"most up-to-date log: {tmp_path / 'b'}" in output.read().out

    def test_running_node_directory_is_refused(self) -> None:
        """A data directory locked by a running node is not opened."""
        tmp_path = temporary_directory(self)
        output = captured_output(self)
        make_node_dir(tmp_path, [(1, 1)], term=1)
        assert main([str(tmp_path)]) == 0
        lock = DataDirectoryLock(str(tmp_path))
        lock.acquire()
        try:
            assert main([str(tmp_path)]) == 1
            assert "in use by another process" in output.read().err
        finally:
            lock.release()

    def test_inspect_creates_nothing_in_a_directory_that_is_not_a_node_s(self) -> None:
        """kvstore-inspect refuses a directory without a node's files and leaves
        it as it was (no lock file, no log directory)."""
        tmp_path = temporary_directory(self)
        assert main([str(tmp_path)]) == 1
        assert list(tmp_path.iterdir()) == []
