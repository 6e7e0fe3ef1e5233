# -*- test-case-name: tests.test_storage_metadata_commit -*-
"""
The commit index in the metadata file (format version 2), and reading the
version 1 files written before it existed.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from kvstore.storage import CorruptMetadataError, MetadataRecord, MetadataStore
from kvstore.storage.metadata import METADATA_FORMAT_VERSION, decode_metadata, encode_metadata


def _sync(f):  # type: ignore[no-untyped-def]
    return succeed(f())


def _open(path: Path) -> MetadataStore:
    return MetadataStore.open(str(path), run_in_thread=_sync)


def _file(version: int, fields: dict[str, object]) -> bytes:
    body = json.dumps(fields).encode()
    return b"kvstore-metadata %d %08x\n" % (version, zlib.crc32(body)) + body


class CommitIndexTests(SynchronousTestCase):
    """The stored commit index round-trips, validates and upgrades."""

    def test_round_trip(self) -> None:
        """A saved commit index is what the next open reads."""
        path = Path(self.mktemp())
        saved: list[object] = []
        d: Deferred[None] = _open(path).save(MetadataRecord(4, 1, "c", commit_index=1234))
        d.addCallback(saved.append)
        self.assertEqual(saved, [None])
        self.assertEqual(_open(path).state, MetadataRecord(4, 1, "c", 1234))

    def test_writes_the_current_version(self) -> None:
        """Saves write version 2 with the commit_index field."""
        data = encode_metadata(MetadataRecord(1, None, "c", 9))
        self.assertEqual(METADATA_FORMAT_VERSION, 2)
        self.assertTrue(data.startswith(b"kvstore-metadata 2 "))
        self.assertEqual(json.loads(data.partition(b"\n")[2])["commit_index"], 9)

    def test_reads_version_1(self) -> None:
        """A version 1 file (term, vote, cluster id only) reads with commit index 0."""
        data = _file(1, {"term": 3, "voted_for": 2, "cluster_id": "c"})
        self.assertEqual(decode_metadata("m", data), MetadataRecord(3, 2, "c", 0))

    def test_version_fields_must_match(self) -> None:
        """A version 1 file with a commit index, or a version 2 file without one, is refused."""
        for version, fields in (
            (1, {"term": 3, "voted_for": 2, "cluster_id": "c", "commit_index": 5}),
            (2, {"term": 3, "voted_for": 2, "cluster_id": "c"}),
        ):
            with self.subTest(version=version), self.assertRaises(CorruptMetadataError):
                decode_metadata("m", _file(version, fields))

    def test_commit_index_validates(self) -> None:
        """A negative, boolean or non-integer commit index is refused."""
        for bad in (-1, True, "5", 1.5):
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                MetadataRecord(commit_index=bad)  # type: ignore[arg-type]
        with self.assertRaises(CorruptMetadataError):
            decode_metadata("m", _file(2, {"term": 3, "voted_for": 2, "cluster_id": "c", "commit_index": -4}))
