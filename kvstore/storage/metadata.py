# -*- test-case-name: tests.test_storage_metadata -*-
"""
The metadata file: Raft's hard state (current term, vote) and the cluster id.

Raft's safety depends on never forgetting a term or a vote once acted on, so
each save replaces the whole file atomically: write C{<path>.tmp}, fsync it,
rename it over C{<path>}, fsync the directory.  After a crash the file is
either the old version or the new one, never a mixture; a leftover C{.tmp}
is simply ignored (and overwritten by the next save).

File format (version 2)::

    kvstore-metadata 2 <crc32 of the body, 8 lowercase hex digits>\\n
    <body: UTF-8 JSON object {"term": int, "voted_for": int|null,
                              "cluster_id": str|null, "commit_index": int}>

Version 1 files (no C{commit_index}) are still read, as C{commit_index 0};
this build writes version 2 only, so an older build refuses the file with
"unsupported format version" rather than misreading it.

The checksum is over the exact body bytes, so the JSON need not be
canonical.  A file that fails any check refuses to load with
L{CorruptMetadataError} naming the path: starting with a forgotten vote could
let this node vote twice in one term.

Why the commit index is here, and why it costs no fsync on the write path:
a restarted node that cannot reach a leader must still serve (stale reads)
at least what it knew to be committed, so it applies its log through the
stored commit index before it hears from anyone.  The value is only ever a
I{lower bound} on what is committed, which is all that recovery needs, so
it need not be saved when the commit index moves: the node writes it along
with every term/vote save it makes anyway, and otherwise at most once per
interval from a timer, a save no client and no acknowledgement waits for
(L{kvstore.node.node.Node}).  Writing it into every WAL flush would need a new
record type in the log format; fsyncing it whenever it moves would put a
second fsync on every write's path.  The node saves only a commit index
whose entries are already durable in its log (see L{kvstore.node.node}), so a
crash can never leave this file claiming entries the log lacks or holds
with other content.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from functools import partial
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from kvstore.storage.errors import CorruptMetadataError, StorageFailedError
from kvstore.storage.fs import FileSystem
from kvstore.storage.wal import ThreadRunner, default_thread_runner

__all__ = ["MetadataRecord", "MetadataStore", "METADATA_FORMAT_VERSION", "READABLE_METADATA_VERSIONS"]

METADATA_FORMAT_VERSION = 2
#: The versions this build reads (version 1 had no commit index).
READABLE_METADATA_VERSIONS = (1, 2)
_FIELDS = {1: {"term", "voted_for", "cluster_id"}, 2: {"term", "voted_for", "cluster_id", "commit_index"}}
_MAGIC = b"kvstore-metadata"
_TMP_SUFFIX = ".tmp"
#: A metadata file larger than this is certainly not ours.
_MAX_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class MetadataRecord:
    """
    What the metadata file holds: Raft's hard state (the term and vote, which
    must be durable before the node acts on them; the Raft core's
    C{HardState}, here as plain values because storage knows no Raft) and
    the cluster id recorded at bootstrap.

    @ivar term: the latest term this node has seen (0 when fresh).
    @ivar voted_for: the node id voted for in C{term}, or L{None}.
    @ivar cluster_id: identifies the cluster this data directory belongs to,
        so a node pointed at another cluster's data can refuse to start;
        L{None} until assigned.
    @ivar commit_index: a lower bound on the Raft commit index whose
        entries were durable in the log when it was saved (module
        docstring); 0 when unknown.
    """

    term: int = 0
    voted_for: int | None = None
    cluster_id: str | None = None
    commit_index: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.term, int) or isinstance(self.term, bool) or self.term < 0:
            raise ValueError(f"term must be a non-negative int, not {self.term!r}")
        if self.voted_for is not None and (
            not isinstance(self.voted_for, int)
            or isinstance(self.voted_for, bool)
            or self.voted_for < 0
        ):
            raise ValueError(f"voted_for must be None or a non-negative int, not {self.voted_for!r}")
        if self.cluster_id is not None and not isinstance(self.cluster_id, str):
            raise ValueError(f"cluster_id must be None or a str, not {self.cluster_id!r}")
        if not isinstance(self.commit_index, int) or isinstance(self.commit_index, bool) or self.commit_index < 0:
            raise ValueError(f"commit_index must be a non-negative int, not {self.commit_index!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "term": self.term,
            "voted_for": self.voted_for,
            "cluster_id": self.cluster_id,
            "commit_index": self.commit_index,
        }


def encode_metadata(state: MetadataRecord) -> bytes:
    """The complete file content for C{state}."""
    body = json.dumps(state.to_dict(), sort_keys=True).encode("utf-8")
    header = b"%s %d %08x\n" % (_MAGIC, METADATA_FORMAT_VERSION, zlib.crc32(body))
    return header + body


def decode_metadata(path: str, data: bytes) -> MetadataRecord:
    """
    Parse and verify file content read from C{path}.

    @raise CorruptMetadataError: if anything about it is wrong.
    """
    header, newline, body = data.partition(b"\n")
    if not newline:
        raise CorruptMetadataError(path, "missing header line")
    parts = header.split(b" ")
    if len(parts) != 3 or parts[0] != _MAGIC:
        raise CorruptMetadataError(path, "not a kvstore metadata file (bad header)")
    version = next((v for v in READABLE_METADATA_VERSIONS if parts[1] == str(v).encode()), None)
    if version is None:
        raise CorruptMetadataError(
            path,
            f"unsupported format version {parts[1]!r} "
            f"(this build reads versions {', '.join(map(str, READABLE_METADATA_VERSIONS))})",
        )
    try:
        expected = int(parts[2], 16)
    except ValueError:
        raise CorruptMetadataError(path, "bad checksum field") from None
    if len(parts[2]) != 8 or zlib.crc32(body) != expected:
        raise CorruptMetadataError(path, "checksum mismatch")
    try:
        fields = json.loads(body.decode("utf-8"))
        if not isinstance(fields, dict) or set(fields) != _FIELDS[version]:
            raise ValueError(f"unexpected fields {sorted(fields) if isinstance(fields, dict) else fields!r}")
        return MetadataRecord(**fields)
    except (ValueError, TypeError) as e:
        raise CorruptMetadataError(path, f"invalid content: {e}") from None


class _Save:
    def __init__(self, content: bytes, state: MetadataRecord) -> None:
        self.content = content
        self.state = state
        self.deferred: Deferred[None] = Deferred()


class MetadataStore:
    """
    The durable L{MetadataRecord}, saved atomically through a thread runner.

    @ivar path: the metadata file.
    """

    log = Logger()

    def __init__(
        self, path: str, state: MetadataRecord, *, run_in_thread: ThreadRunner, fs: FileSystem
    ) -> None:
        """Use L{MetadataStore.open}."""
        self.path = path
        self._state = state
        self._durable_state = state
        self._run_in_thread = run_in_thread
        self._fs = fs
        self._queue: list[_Save] = []
        self._running = False
        self._kicking = False
        self._failure: BaseException | None = None
        self._save_count = 0

    @classmethod
    def open(
        cls,
        path: str,
        *,
        run_in_thread: ThreadRunner | None = None,
        fs: FileSystem | None = None,
    ) -> "MetadataStore":
        """
        Load the metadata at C{path} (blocking; call at start-up).

        A missing file gives C{MetadataRecord()}; the parent directory is created
        if needed.  A leftover C{<path>.tmp} from an interrupted save is
        ignored.

        @raise CorruptMetadataError: if the file exists but fails validation.
        """
        fs = fs if fs is not None else FileSystem()
        runner = run_in_thread if run_in_thread is not None else default_thread_runner
        path = os.path.abspath(path)
        directory = os.path.dirname(path)
        if fs.makedirs(directory):
            fs.fsync_dir(os.path.dirname(directory))
        if fs.exists(path):
            data = fs.read_file(path)
            if len(data) > _MAX_FILE_BYTES:
                raise CorruptMetadataError(path, f"file is too large ({len(data)} bytes)")
            state = decode_metadata(path, data)
            # What was read may be a save whose fsync never ran (the process
            # died): make it durable before the term and vote are relied on.
            fd = fs.open_rw(path)
            try:
                fs.fsync(fd)
            finally:
                fs.close(fd)
            fs.fsync_dir(directory)
        else:
            state = MetadataRecord()
        return cls(path, state, run_in_thread=runner, fs=fs)

    @property
    def state(self) -> MetadataRecord:
        """The most recently requested state (saved, or being saved)."""
        return self._state

    @property
    def durable_state(self) -> MetadataRecord:
        """The most recent state known to be on disk."""
        return self._durable_state

    @property
    def save_count(self) -> int:
        """Number of completed saves since open."""
        return self._save_count

    def save(self, state: MetadataRecord) -> "Deferred[None]":
        """
        Replace the stored state with C{state}, atomically and durably.

        L{state} changes at once; the Deferred fires once C{state} is on disk.
        Saves are written one at a time in call order, so a later save never
        overtakes an earlier one.  If a save fails, its Deferred and those of
        all saves queued behind it errback and the store refuses further
        saves (fail-stop).

        @raise TypeError: if C{state} is not a L{MetadataRecord}.
        """
        if not isinstance(state, MetadataRecord):
            raise TypeError(f"expected MetadataRecord, not {type(state).__name__}")
        if self._failure is not None:
            return fail(StorageFailedError(f"metadata store {self.path} failed earlier"))
        save = _Save(encode_metadata(state), state)
        self._state = state
        self._queue.append(save)
        self._kick()
        return save.deferred

    def _kick(self) -> None:
        if self._kicking:
            return
        self._kicking = True
        try:
            while not self._running and self._queue and self._failure is None:
                save = self._queue.pop(0)
                self._running = True
                try:
                    d = self._run_in_thread(partial(self._write, save.content))
                except BaseException:
                    d = fail()
                d.addCallbacks(
                    self._saved, self._save_failed, callbackArgs=(save,), errbackArgs=(save,)
                )
        finally:
            self._kicking = False

    def _write(self, content: bytes) -> None:
        """Blocking: tmp file, fsync, rename, fsync directory."""
        fs = self._fs
        tmp = self.path + _TMP_SUFFIX
        fd = fs.create_truncate(tmp)
        try:
            fs.pwrite_all(fd, content, 0)
            fs.fsync(fd)
        finally:
            fs.close(fd)
        fs.replace(tmp, self.path)
        fs.fsync_dir(os.path.dirname(self.path))

    def _saved(self, _: object, save: _Save) -> None:
        self._durable_state = save.state
        self._save_count += 1
        self._running = False
        save.deferred.callback(None)
        self._kick()

    def _save_failed(self, failure: Failure, save: _Save) -> None:
        self._failure = failure.value
        self._running = False
        self.log.failure(
            "Saving metadata {path} failed; refusing further saves", failure, path=self.path
        )
        behind, self._queue = self._queue, []
        save.deferred.errback(failure)
        for other in behind:
            other.deferred.errback(StorageFailedError(f"metadata store {self.path} failed earlier"))
