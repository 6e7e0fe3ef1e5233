# -*- test-case-name: tests.test_storage_snapshots -*-
"""
Snapshot files: the state machine as of a log index, stored so that a crash
at any moment leaves the old snapshot or the new one, never a mixture.

A snapshot replaces the log prefix it covers, so it is written like the
metadata file (L{kvstore.storage.metadata}): to a temporary name, fsynced,
renamed, and the directory fsynced; it is verified whenever it is opened.
Unlike the metadata file it can be large (about 110 MB for a million
100-byte values), so it is never held in memory: L{LocalSnapshotWriter}
takes the state machine's content in chunks as it is produced,
L{SnapshotWriter} takes a snapshot file's raw bytes in chunks as
InstallSnapshot delivers them, and L{SnapshotStore.read_chunks} /
L{SnapshotStore.read_content} read one back in chunks.

File layout (format version 1; integers big-endian)::

    header   8 bytes  magic b"\\x89KVSNAP\\n"
             4 bytes  format version (1)
             4 bytes  length M of the metadata
    meta     M bytes  UTF-8 JSON: {"index", "term", "cluster_id",
                      "membership", "content_format"}
    content  N bytes  the state machine's serialised content (opaque here)
    trailer  8 bytes  magic b"KVSNEND\\n"
             8 bytes  N
            32 bytes  SHA-256 of every byte of the file before these 32

Why a trailer: both writers only ever append, so the digest is computed in
the same pass that writes (or receives) the bytes, and a file cut short
anywhere lacks a valid trailer.  Why SHA-256 rather than the WAL's CRC32:
a WAL record is small and checked where it was written; a snapshot is one
100 MB unit that replaces a node's whole state, travels between nodes and
into operators' backups, and its digest is shown by C{kvstore-inspect} as
the file's identity (is this backup that snapshot?).  A 32-bit check over a
file that size is an integrity hint, not an identity (a 1 in 4 billion
miss per damaged file, and no protection against a deliberately altered
file); 256 bits are both.  The cost was measured (docs/performance.md,
"Snapshots"): 475 MB/s for SHA-256 against 1,517 MB/s for zlib.crc32 on the
reference machine, so about 0.23 s for a 110 MB snapshot, spent in the
storage thread with the GIL released (hashlib drops it for large buffers),
never on the reactor.

Files are named C{snapshot-<index>-<term>.snap} (zero-padded, so names sort
by index); a temporary file is the final name plus C{.tmp}.  Everything
here is blocking and goes through a L{FileSystem}: call it from the storage
thread (through a thread runner) or at start-up, as the WAL does, so that
the simulated disk runs exactly this code.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from kvstore.storage.errors import StorageError
from kvstore.storage.fs import FileSystem

__all__ = [
    "SNAPSHOT_FORMAT_VERSION",
    "CHUNK_SIZE",
    "CorruptSnapshotError",
    "SnapshotMeta",
    "SnapshotInfo",
    "SnapshotStore",
    "SnapshotWriter",
    "LocalSnapshotWriter",
    "SnapshotRejected",
    "snapshot_name",
]

SNAPSHOT_FORMAT_VERSION = 1
#: The chunk size for reading, sending and receiving (about 1 MiB).
CHUNK_SIZE = 1 << 20
KEEP = 2

_MAGIC = b"\x89KVSNAP\n"
_HEADER = struct.Struct(">8sII")
_TRAILER_MAGIC = b"KVSNEND\n"
_TRAILER = struct.Struct(">8sQ32s")
_DIGEST = 32
#: Metadata is a few hundred bytes; anything much larger is not ours.
_MAX_META = 1 << 20
_TMP = ".tmp"
_NAME = re.compile(r"^snapshot-(\d{20})-(\d{20})\.snap$")


class CorruptSnapshotError(StorageError):
    """
    A snapshot file is damaged, cut short or not a snapshot.

    @ivar path: the file.
    @ivar reason: what is wrong.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: corrupt snapshot: {reason}")
        self.path = path
        self.reason = reason


class SnapshotRejected(StorageError):
    """A chunk or a finished transfer that a L{SnapshotWriter} refuses (out
    of order, past the announced size, wrong digest, or a metadata index or
    term other than announced).  The writer is aborted: nothing is
    installed and its temporary file is gone."""


def snapshot_name(index: int, term: int) -> str:
    """The file name of the snapshot at C{index} in C{term}."""
    return f"snapshot-{index:020d}-{term:020d}.snap"


def _non_negative_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, not {value!r}")
    return value


@dataclass(frozen=True)
class SnapshotMeta:
    """
    What a snapshot says about itself.

    @ivar index: the last log index the snapshot includes.
    @ivar term: the term of that entry.
    @ivar cluster_id: the cluster the data belongs to (a node refuses
        another cluster's snapshot); L{None} before it is assigned.
    @ivar membership: the configuration as of C{index}, as JSON-able data
        (for example C{{"voters": [[1, "127.0.0.1:7001"], ...],
        "learners": []}}); storage does not interpret it.
    @ivar content_format: names the state machine's encoding (C{"kv/1"}),
        so a restore can refuse content it does not understand.
    """

    index: int
    term: int
    cluster_id: str | None = None
    membership: Any = field(default_factory=dict)
    content_format: str = "kv/1"

    def __post_init__(self) -> None:
        _non_negative_int("index", self.index)
        _non_negative_int("term", self.term)
        if self.cluster_id is not None and not isinstance(self.cluster_id, str):
            raise ValueError(f"cluster_id must be None or a str, not {self.cluster_id!r}")
        if not isinstance(self.content_format, str):
            raise ValueError(f"content_format must be a str, not {self.content_format!r}")

    def encode(self) -> bytes:
        return json.dumps(
            {
                "index": self.index,
                "term": self.term,
                "cluster_id": self.cluster_id,
                "membership": self.membership,
                "content_format": self.content_format,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes) -> "SnapshotMeta":
        """@raise ValueError: if C{data} is not valid metadata."""
        fields = json.loads(data.decode("utf-8"))
        expected = {"index", "term", "cluster_id", "membership", "content_format"}
        if not isinstance(fields, dict) or set(fields) != expected:
            raise ValueError(f"unexpected metadata fields {fields!r:.200}")
        return cls(**fields)


@dataclass(frozen=True)
class SnapshotInfo:
    """
    One snapshot file, as listed (from its name) or as verified (then with
    its metadata, size and digest).
    """

    path: str
    index: int
    term: int
    meta: SnapshotMeta | None = None
    size: int | None = None
    digest: str | None = None
    content_offset: int | None = None
    content_length: int | None = None

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def encode_header(meta: SnapshotMeta) -> bytes:
    """The header and metadata that start a snapshot file."""
    body = meta.encode()
    return _HEADER.pack(_MAGIC, SNAPSHOT_FORMAT_VERSION, len(body)) + body


def _parse_header(path: str, head: bytes) -> tuple[SnapshotMeta, int]:
    """The metadata and the content offset, from the first bytes of a file."""
    if len(head) < _HEADER.size:
        raise CorruptSnapshotError(path, f"file too short for a header ({len(head)} bytes)")
    magic, version, meta_len = _HEADER.unpack_from(head)
    if magic != _MAGIC:
        raise CorruptSnapshotError(path, "not a kvstore snapshot (bad magic)")
    if version != SNAPSHOT_FORMAT_VERSION:
        raise CorruptSnapshotError(
            path, f"unsupported format version {version} (this build reads {SNAPSHOT_FORMAT_VERSION})"
        )
    if meta_len > _MAX_META or _HEADER.size + meta_len > len(head):
        raise CorruptSnapshotError(path, f"metadata length {meta_len} runs past the file")
    try:
        meta = SnapshotMeta.decode(head[_HEADER.size : _HEADER.size + meta_len])
    except (ValueError, TypeError) as e:
        raise CorruptSnapshotError(path, f"invalid metadata: {e}") from None
    return meta, _HEADER.size + meta_len


class _AppendFile:
    """A temporary file being appended to, hashing what is written."""

    def __init__(self, fs: FileSystem, tmp: str) -> None:
        self.fs = fs
        self.tmp = tmp
        self.fd: int | None = fs.create_truncate(tmp)
        self.size = 0

    def append(self, data: bytes) -> None:
        assert self.fd is not None
        self.fs.pwrite_all(self.fd, data, self.size)
        self.size += len(data)

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            self.fs.close(fd)

    def discard(self) -> None:
        self.close()
        try:
            self.fs.unlink(self.tmp)
        except FileNotFoundError:
            pass


class SnapshotWriter:
    """
    Receives a snapshot file's raw bytes (as InstallSnapshot chunks bring
    them) into a temporary file, then verifies and installs it atomically.

    Chunks must arrive in order: each C{write(offset, data)} must start
    where the previous one ended and may not pass the announced size.  The
    digest is computed as the bytes arrive, so L{finish} needs no second
    pass.  Any refusal aborts the writer (the temporary file is removed) and
    raises L{SnapshotRejected}; the sender starts the transfer over.
    """

    def __init__(self, store: "SnapshotStore", index: int, term: int, size: int) -> None:
        """Use L{SnapshotStore.begin_receive}."""
        _non_negative_int("size", size)
        if size < _HEADER.size + _TRAILER.size:
            raise SnapshotRejected(f"announced size {size} is too small for a snapshot")
        self._store = store
        self.index = index
        self.term = term
        self.size = size
        self.path = os.path.join(store.directory, snapshot_name(index, term))
        self._hash = hashlib.sha256()
        self._head = b""  # the first bytes, until the metadata is complete
        self._file: _AppendFile | None = _AppendFile(store.fs, self.path + _TMP)

    @property
    def received(self) -> int:
        """How many bytes have been received (the next expected offset)."""
        return self._file.size if self._file is not None else 0

    def _reject(self, reason: str) -> SnapshotRejected:
        self.abort()
        return SnapshotRejected(f"snapshot {snapshot_name(self.index, self.term)}: {reason}")

    def write(self, offset: int, data: bytes) -> None:
        """
        Append the chunk C{data}, which starts at byte C{offset} of the file.

        @raise SnapshotRejected: if C{offset} is not the next expected one,
            the chunk runs past the announced size, or the writer is closed.
        """
        file = self._file
        if file is None:
            raise SnapshotRejected(f"snapshot {snapshot_name(self.index, self.term)}: writer is closed")
        if offset != file.size:
            raise self._reject(f"chunk at offset {offset}, expected {file.size}")
        end = offset + len(data)
        if end > self.size:
            raise self._reject(f"chunk ends at {end}, past the announced size {self.size}")
        hashed_end = self.size - _DIGEST
        if offset < hashed_end:
            self._hash.update(data[: hashed_end - offset] if end > hashed_end else data)
        if len(self._head) < _HEADER.size + _MAX_META:
            self._head += data[: _HEADER.size + _MAX_META - len(self._head)]
        file.append(data)

    def finish(self) -> SnapshotInfo:
        """
        Verify the received file (complete, digest, metadata naming the
        announced index and term), make it durable and install it under its
        final name.

        @raise SnapshotRejected: if anything is wrong; nothing is installed.
        """
        file = self._file
        if file is None:
            raise SnapshotRejected(f"snapshot {snapshot_name(self.index, self.term)}: writer is closed")
        if file.size != self.size:
            raise self._reject(f"received {file.size} of {self.size} bytes")
        try:
            meta, content_offset = _parse_header(self.path, self._head)
        except CorruptSnapshotError as e:
            raise self._reject(e.reason) from None
        if (meta.index, meta.term) != (self.index, self.term):
            raise self._reject(f"metadata says index {meta.index} term {meta.term}")
        trailer = self._store.fs.pread(file.fd, _TRAILER.size, self.size - _TRAILER.size)  # type: ignore[arg-type]  # the file is open while it is verified, so fd is set
        magic, content_length, digest = _TRAILER.unpack(trailer)
        if magic != _TRAILER_MAGIC or content_offset + content_length + _TRAILER.size != self.size:
            raise self._reject("bad trailer")
        if digest != self._hash.digest():
            raise self._reject("checksum mismatch")
        self._store._install(file)
        self._file = None
        return SnapshotInfo(
            self.path, self.index, self.term, meta, self.size, digest.hex(), content_offset, content_length
        )

    def abort(self) -> None:
        """Give up: remove the temporary file (idempotent)."""
        file, self._file = self._file, None
        if file is not None:
            file.discard()
            self._store._writer_done(self.path)


class LocalSnapshotWriter:
    """
    Writes a snapshot of this node's own state machine: the header at
    L{SnapshotStore.begin}, then content chunks as the state machine
    produces them, then the trailer at L{finish}, with fsync, rename and
    directory fsync.
    """

    def __init__(self, store: "SnapshotStore", meta: SnapshotMeta) -> None:
        """Use L{SnapshotStore.begin}."""
        self._store = store
        self.meta = meta
        self.path = os.path.join(store.directory, snapshot_name(meta.index, meta.term))
        self._hash = hashlib.sha256()
        header = encode_header(meta)
        self._content_offset = len(header)
        self._file: _AppendFile | None = _AppendFile(store.fs, self.path + _TMP)
        self._append(header)

    def _append(self, data: bytes) -> None:
        assert self._file is not None
        self._hash.update(data)
        self._file.append(data)

    def write(self, content: bytes) -> None:
        """Append the next chunk of the state machine's content."""
        if self._file is None:
            raise StorageError(f"{self.path}: snapshot writer is closed")
        self._append(content)

    def finish(self) -> SnapshotInfo:
        """Append the trailer, fsync, rename into place, fsync the directory."""
        file = self._file
        if file is None:
            raise StorageError(f"{self.path}: snapshot writer is closed")
        content_length = file.size - self._content_offset
        self._append(_TRAILER_MAGIC + struct.pack(">Q", content_length))
        digest = self._hash.digest()
        file.append(digest)
        self._store._install(file)
        self._file = None
        return SnapshotInfo(
            self.path,
            self.meta.index,
            self.meta.term,
            self.meta,
            file.size,
            digest.hex(),
            self._content_offset,
            content_length,
        )

    def abort(self) -> None:
        """Give up: remove the temporary file (idempotent)."""
        file, self._file = self._file, None
        if file is not None:
            file.discard()
            self._store._writer_done(self.path)


class SnapshotStore:
    """
    The snapshots in one directory: list, verify, read, write, prune.

    @ivar directory: the snapshot directory.
    """

    def __init__(self, directory: str, fs: FileSystem) -> None:
        """Use L{SnapshotStore.open}."""
        self.directory = directory
        self.fs = fs
        self._writing: set[str] = set()

    @classmethod
    def open(cls, directory: str, fs: FileSystem | None = None) -> "SnapshotStore":
        """
        Open (creating durably if needed) the snapshot directory, and remove
        the temporary files an interrupted write left behind: they were
        never installed, so nothing depends on them.
        """
        fs = fs if fs is not None else FileSystem()
        directory = os.path.abspath(directory)
        if fs.makedirs(directory):
            fs.fsync_dir(os.path.dirname(directory))
        store = cls(directory, fs)
        leftovers = [n for n in fs.listdir(directory) if n.endswith(_TMP)]
        for name in leftovers:
            fs.unlink(os.path.join(directory, name))
        if leftovers:
            fs.fsync_dir(directory)
        return store

    # -- reading ---------------------------------------------------------

    def list(self) -> list[SnapshotInfo]:
        """The installed snapshots, newest (highest index, then term) first,
        from their names alone: nothing is read or verified."""
        found = []
        for name in self.fs.listdir(self.directory):
            match = _NAME.match(name)
            if match:
                found.append(
                    SnapshotInfo(os.path.join(self.directory, name), int(match.group(1)), int(match.group(2)))
                )
        found.sort(key=lambda info: (info.index, info.term), reverse=True)
        return found

    def verify(self, info: SnapshotInfo, content_sink: Callable[[bytes], None] | None = None) -> SnapshotInfo:
        """
        Read the whole file in chunks, check its structure and digest, and
        return its info with metadata, size and digest filled in.

        @param content_sink: if given, called with each chunk of the content
            (in order, concatenated the whole content) as it is hashed, so
            that a restore reads the file once rather than verifying it and
            then reading it again.  The chunks are unverified until this
            returns: use what the sink built only then.  An exception the
            sink raises ends the verification and propagates.
        @raise CorruptSnapshotError: naming the file, if anything is wrong.
        """
        path = info.path
        fs = self.fs
        fd = fs.open_rw(path)
        try:
            size = fs.file_size(fd)
            head = fs.pread(fd, min(size, _HEADER.size + _MAX_META), 0)
            meta, content_offset = _parse_header(path, head)
            if size < content_offset + _TRAILER.size:
                raise CorruptSnapshotError(path, f"file too short ({size} bytes) for its trailer")
            if (meta.index, meta.term) != (info.index, info.term):
                raise CorruptSnapshotError(
                    path, f"metadata says index {meta.index} term {meta.term}, unlike its name"
                )
            magic, content_length, digest = _TRAILER.unpack(fs.pread(fd, _TRAILER.size, size - _TRAILER.size))
            if magic != _TRAILER_MAGIC:
                raise CorruptSnapshotError(path, "bad trailer (cut short or overwritten?)")
            if content_offset + content_length + _TRAILER.size != size:
                raise CorruptSnapshotError(
                    path, f"trailer says {content_length} content bytes; the file size ({size}) disagrees"
                )
            hasher = hashlib.sha256()
            content_end = content_offset + content_length
            # The header, the content (chunks aligned to it, for the sink),
            # then the trailer's hashed part.
            for offset, end, sink in (
                (0, content_offset, None),
                (content_offset, content_end, content_sink),
                (content_end, size - _DIGEST, None),
            ):
                while offset < end:
                    chunk = fs.pread(fd, min(CHUNK_SIZE, end - offset), offset)
                    if not chunk:
                        raise CorruptSnapshotError(path, f"short read at offset {offset}")
                    hasher.update(chunk)
                    if sink is not None:
                        sink(chunk)
                    offset += len(chunk)
            if hasher.digest() != digest:
                raise CorruptSnapshotError(path, "checksum mismatch")
        finally:
            fs.close(fd)
        return SnapshotInfo(path, meta.index, meta.term, meta, size, digest.hex(), content_offset, content_length)

    def read_meta(self, index: int, term: int) -> SnapshotMeta:
        """
        The metadata of the installed snapshot C{(index, term)}, from its
        header alone (a few hundred bytes; the file is verified elsewhere).

        @raise CorruptSnapshotError: if its header is not valid.
        @raise OSError: if there is no such file.
        """
        path = os.path.join(self.directory, snapshot_name(index, term))
        fd = self.fs.open_rw(path)
        try:
            head = self.fs.pread(fd, min(self.fs.file_size(fd), _HEADER.size + _MAX_META), 0)
        finally:
            self.fs.close(fd)
        return _parse_header(path, head)[0]

    def verify_file(self, path: str) -> SnapshotInfo:
        """
        L{verify} a snapshot file under any name (a backup, outside a
        node's snapshot directory): its metadata, not its name, gives the
        index and term.

        @raise CorruptSnapshotError: naming the file, if anything is wrong.
        """
        fd = self.fs.open_rw(path)
        try:
            head = self.fs.pread(fd, min(self.fs.file_size(fd), _HEADER.size + _MAX_META), 0)
        finally:
            self.fs.close(fd)
        meta, _ = _parse_header(path, head)
        return self.verify(SnapshotInfo(path, meta.index, meta.term))

    def scan(self) -> builtins.list[tuple[SnapshotInfo, CorruptSnapshotError | None]]:
        """
        Every installed snapshot, newest first, each verified: the info
        (complete when intact) and the error if it is damaged.  A caller at
        start-up uses the newest intact one if it and the log after it cover
        everything; it must refuse to start with the error naming the file
        when a damaged newer snapshot leaves a gap the log cannot fill.
        """
        results: builtins.list[tuple[SnapshotInfo, CorruptSnapshotError | None]] = []
        for info in self.list():
            try:
                results.append((self.verify(info), None))
            except CorruptSnapshotError as e:
                results.append((info, e))
        return results

    def newest_intact(self) -> tuple[SnapshotInfo | None, builtins.list[CorruptSnapshotError]]:
        """
        The newest snapshot that verifies (or L{None}) and the errors of the
        damaged snapshots newer than it (the caller decides whether an older
        snapshot plus the log may stand in for them).
        """
        damaged: builtins.list[CorruptSnapshotError] = []
        for info, error in self.scan():
            if error is None:
                return info, damaged
            damaged.append(error)
        return None, damaged

    def read_chunks(self, info: SnapshotInfo, chunk_size: int = CHUNK_SIZE, offset: int = 0) -> Iterator[tuple[int, bytes]]:
        """
        The file's raw bytes as C{(offset, chunk)} pairs from C{offset} on
        (what InstallSnapshot sends; the receiver verifies the digest).
        """
        fs = self.fs
        fd = fs.open_rw(info.path)
        try:
            size = fs.file_size(fd)
            while offset < size:
                chunk = fs.pread(fd, min(chunk_size, size - offset), offset)
                if not chunk:
                    raise CorruptSnapshotError(info.path, f"short read at offset {offset}")
                yield offset, chunk
                offset += len(chunk)
        finally:
            fs.close(fd)

    def read_content(self, info: SnapshotInfo, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """
        The state machine content of a snapshot in chunks, after verifying
        the whole file (so a restore never starts from damaged data).
        """
        verified = self.verify(info) if info.content_offset is None else info
        assert verified.content_offset is not None and verified.content_length is not None
        start, end = verified.content_offset, verified.content_offset + verified.content_length
        fs = self.fs
        fd = fs.open_rw(verified.path)
        try:
            offset = start
            while offset < end:
                chunk = fs.pread(fd, min(chunk_size, end - offset), offset)
                if not chunk:
                    raise CorruptSnapshotError(verified.path, f"short read at offset {offset}")
                yield chunk
                offset += len(chunk)
        finally:
            fs.close(fd)

    # -- writing ---------------------------------------------------------

    def _claim(self, path: str) -> None:
        if path in self._writing:
            raise StorageError(f"{path}: a snapshot with this index and term is already being written")
        self._writing.add(path)

    def _writer_done(self, path: str) -> None:
        self._writing.discard(path)

    def begin(self, meta: SnapshotMeta) -> LocalSnapshotWriter:
        """Start writing this node's own snapshot described by C{meta}."""
        path = os.path.join(self.directory, snapshot_name(meta.index, meta.term))
        self._claim(path)
        try:
            return LocalSnapshotWriter(self, meta)
        except BaseException:
            self._writer_done(path)
            raise

    def begin_receive(self, index: int, term: int, size: int) -> SnapshotWriter:
        """Start receiving a C{size}-byte snapshot file at C{index}/C{term}."""
        path = os.path.join(self.directory, snapshot_name(index, term))
        self._claim(path)
        try:
            return SnapshotWriter(self, index, term, size)
        except BaseException:
            self._writer_done(path)
            raise

    def _install(self, file: _AppendFile) -> None:
        """fsync the temporary file, rename it into place, fsync the directory."""
        try:
            assert file.fd is not None
            self.fs.fsync(file.fd)
        except BaseException:
            file.discard()
            self._writer_done(file.tmp[: -len(_TMP)])
            raise
        file.close()
        final = file.tmp[: -len(_TMP)]
        self._writer_done(final)
        self.fs.replace(file.tmp, final)
        self.fs.fsync_dir(self.directory)

    def prune(self, keep: int = KEEP, protect: frozenset[str] = frozenset()) -> builtins.list[str]:
        """
        Delete all but the newest C{keep} snapshots, durably (one directory
        fsync after the unlinks), except the names in C{protect} (a
        snapshot being sent to a follower).  Returns the deleted names.
        """
        if keep < 1:
            raise ValueError("keep at least one snapshot")
        doomed = [info for info in self.list()[keep:] if info.name not in protect]
        for info in doomed:
            self.fs.unlink(info.path)
        if doomed:
            self.fs.fsync_dir(self.directory)
        return [info.name for info in doomed]
