# -*- test-case-name: tests.test_tools_inspect_prealloc -*-
"""
C{kvstore-inspect} on a node's preallocated write-ahead log (issue 16): the
zeros after the last record are the segment's end, as the node reads them,
so inspecting a healthy data directory warns of nothing and changes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet.defer import succeed
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from kvstore.storage import LogEntry, MetadataRecord, MetadataStore, WriteAheadLog
from kvstore.storage.wal import PREALLOCATE_BYTES, segment_name
from kvstore.tools.inspect import describe

from tests.support import temporary_directory


def make_node_dir(path: Path) -> Path:
    """A stopped node's data directory whose log was written as the node writes it; returns its segment."""
    run_now = lambda f: succeed(f())  # noqa: E731
    wal = WriteAheadLog.open(str(path / "wal"), run_in_thread=run_now, preallocate_bytes=PREALLOCATE_BYTES)
    wal.append([LogEntry(i, 1, b"v%d" % i) for i in range(1, 4)])
    wal.sync()
    wal.close()
    MetadataStore.open(str(path / "metadata.json"), run_in_thread=run_now).save(MetadataRecord(1, 1, "c"))
    (path / "LOCK").write_text("")
    return path / "wal" / segment_name(1)


class InspectPreallocatedLogTests(SynchronousTestCase):
    def test_inspect_reads_the_zeros_as_the_end_and_leaves_them(self) -> None:
        """describe() reports the log, logs no torn-tail warning, and leaves the segment's zeros in place."""
        tmp_path = temporary_directory(self)
        segment = make_node_dir(tmp_path)
        before = segment.read_bytes()
        with capturedLogs() as events:
            info = describe(str(tmp_path))
        self.assertEqual((info["first_index"], info["last_index"], info["last_term"]), (1, 3, 1))
        self.assertEqual([e for e in events if e["log_level"] >= LogLevel.warn], [])
        self.assertEqual(segment.read_bytes(), before)
        self.assertGreater(os.path.getsize(segment), PREALLOCATE_BYTES)
