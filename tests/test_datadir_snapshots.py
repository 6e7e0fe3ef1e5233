# -*- test-case-name: tests.test_datadir_snapshots -*-
"""Tests for the snapshot listing of C{kvstore-inspect}."""

from __future__ import annotations

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from kvstore.tools.inspect import describe, main
from kvstore.storage.snapshots import SnapshotStore

from tests.snapshot_support import write_snapshot
from tests.support import captured_output, temporary_directory
from tests.test_datadir import make_node_dir


class InspectSnapshotsTests(SynchronousTestCase):
    """C{kvstore-inspect} lists a stopped node's snapshots, verified, newest first."""

    def test_lists_snapshots_with_index_term_size_checksum_age(self) -> None:
        """Each snapshot is shown with its index, term, size, SHA-256 and age; temporary files are not shown."""
        tmp_path = temporary_directory(self)
        make_node_dir(tmp_path, [(1, 1)], term=1)
        store = SnapshotStore.open(str(tmp_path / "snapshots"))
        older = write_snapshot(store, 10, 1)
        newer = write_snapshot(store, 20, 2)
        os.utime(older.path, (0, os.path.getmtime(older.path) - 3600))
        store.begin_receive(30, 2, 1000).write(0, b"partial")
        rows = describe(str(tmp_path))["snapshots"]
        assert isinstance(rows, list)
        self.assertEqual([(r["index"], r["term"], r["size"], r["sha256"]) for r in rows],
                         [(20, 2, newer.size, newer.digest), (10, 1, older.size, older.digest)])
        self.assertGreaterEqual(rows[1]["age_s"], 3600)
        self.assertLess(rows[0]["age_s"], 600)
        output = captured_output(self)
        self.assertEqual(main([str(tmp_path)]), 0)
        self.assertIn(f"  snapshot index=20 term=2 size={newer.size} sha256={newer.digest}", output.read().out)

    def test_damaged_snapshot_is_reported(self) -> None:
        """A damaged snapshot is listed with what is wrong, and the tool exits non-zero."""
        tmp_path = temporary_directory(self)
        make_node_dir(tmp_path, [(1, 1)], term=1)
        info = write_snapshot(SnapshotStore.open(str(tmp_path / "snapshots")), 10, 1)
        with open(info.path, "r+b") as f:
            f.seek(info.content_offset + 5)  # type: ignore[operator]
            f.write(b"\x00\x00")
        output = captured_output(self)
        self.assertEqual(main([str(tmp_path), "--json"]), 1)
        row = json.loads(output.read().out)[0]["snapshots"][0]
        self.assertEqual((row["index"], row["sha256"], row["damaged"]), (10, None, "checksum mismatch"))

    def test_no_snapshot_directory(self) -> None:
        """A node that never took a snapshot shows none, and inspecting creates no directory."""
        tmp_path = temporary_directory(self)
        make_node_dir(tmp_path, [(1, 1)], term=1)
        self.assertEqual(describe(str(tmp_path))["snapshots"], [])
        self.assertFalse((tmp_path / "snapshots").exists())
