# -*- test-case-name: tests.test_statemachine -*-
"""
The replicated key-value state machine and the encoding of its commands.

Raft treats commands as opaque bytes; this module owns their meaning.  A
command is C{b"P" + key + b" " + value} (put) or C{b"D" + key} (delete),
UTF-8 encoded.  Keys never contain whitespace (the client protocol rejects
them), so the first space separates key and value, and the value may contain
anything but a line break.  The format is deliberately tiny: every write is
encoded once on the leader, stored in every node's WAL and shipped in every
AppendEntries message, so its size and parse cost are on the hot path.

Applying must be deterministic: every node applies the same committed
commands in the same order and must reach the same state.

Snapshots (issue 12).  L{KeyValueStateMachine.begin_snapshot} freezes the
map as of the applied index in O(1): from then on, writes go to an
I{overlay} dict (deletes as tombstones) while the frozen map is serialised a
slice at a time (L{StateSnapshot.next_chunk}), so the reactor never stalls
for long; L{KeyValueStateMachine.merge_overlay} then folds the overlay back,
also a slice at a time.  docs/performance.md ("Snapshots") has the
measurements that chose this over fork() and over a persistent map.

Snapshot content format C{kv/1} (all lengths are unsigned LEB128 varints)::

    b"KVSM" 0x01 varint(number of keys)
    then per key:  varint(len(key)) key  varint(len(value)) value   (UTF-8)

Length prefixes, not separators or JSON, so that any value round-trips and
the size stays close to the raw bytes (1 byte of overhead per short string).
Keys are written in the dict's order.  That order follows the applied
commands, but also where an overlay merge interleaved with later writes, so
two nodes at one index hold the same map yet need not produce the same
bytes: compare decoded maps (L{KeyValueStateMachine.items}), not digests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

_PUT = 0x50  # "P"
_DELETE = 0x44  # "D"


class InvalidCommand(ValueError):
    """Committed data that is not a command of this state machine.  It means
    a bug or foreign data, never bad client input (the protocol validates
    that before proposing)."""


def encode_put(key: str, value: str) -> bytes:
    """The command that sets C{key} to C{value}."""
    return b"P" + key.encode("utf-8") + b" " + value.encode("utf-8")


def encode_delete(key: str) -> bytes:
    """The command that removes C{key}."""
    return b"D" + key.encode("utf-8")


@dataclass(frozen=True)
class ApplyResult:
    """What applying one command did.  C{found} is False for the delete of
    a missing key, which the client sees as C{Error: Key <k> not found}."""

    found: bool = True


_OK = ApplyResult(True)
_MISSING = ApplyResult(False)


CONTENT_FORMAT = "kv/1"
"""The name of the snapshot content format this module writes and reads."""

_CONTENT_MAGIC = b"KVSM\x01"
#: Keys per slice.  Measured with benchmarks/snapshot_stall.py on the 2-core
#: reference machine (1M keys of 100-byte values): 0.43 ms of CPU per slice
#: on average, 2.5 ms at most, so the work itself stays far inside the 20 ms
#: stall budget when the driver yields every few milliseconds (a Cooperator
#: allowed 4 ms per turn); OS preemption on a heavily loaded machine is what
#: still pushed some stalls past it (docs/performance.md, "Snapshots").
DEFAULT_SLICE_ENTRIES = 2048
_TOMBSTONE = object()
_ABSENT = object()


class InvalidSnapshotContent(ValueError):
    """Snapshot content that is not (complete) C{kv/1} data.  The snapshot
    file's checksum passed, so this means a bug or a foreign format."""


class SnapshotInProgress(RuntimeError):
    """A snapshot was begun while another one (or its overlay merge) is
    still running: there is only one overlay."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


#: Precomputed varints for the lengths almost every key and value has.
_VARINTS = [_varint(n) for n in range(1 << 14)]


def encode_entries(items: Iterable[tuple[str, str]]) -> bytes:
    """The C{kv/1} encoding of C{items} (the part after the header)."""
    parts: list[bytes] = []
    append = parts.append
    table = _VARINTS
    limit = len(table)
    for key, value in items:
        k = key.encode("utf-8")
        v = value.encode("utf-8")
        n = len(k)
        append(table[n] if n < limit else _varint(n))
        append(k)
        n = len(v)
        append(table[n] if n < limit else _varint(n))
        append(v)
    return b"".join(parts)


class StateSnapshot:
    """
    A consistent view of the state machine at L{index}, serialised
    incrementally: each L{next_chunk} call encodes a bounded slice, so that
    a caller on the reactor can yield between slices (for example with
    C{twisted.internet.task.cooperate}) and hand each chunk to the storage
    thread.  The frozen map is never written while the snapshot is open
    (writes go to the overlay), so its iterator stays valid across turns.

    Drive it with a L{twisted.internet.task.Cooperator} whose turns are
    shorter than the default 10 ms (L{kvstore.snapshotting.take_snapshot}
    uses 4 ms: with 10 ms turns, stalls crossed 20 ms even at moderate
    load), and keep at most one ~1 MiB chunk in flight to the storage
    thread.

    @ivar index: the applied index the snapshot captures.
    @ivar keys: the number of keys it holds.
    """

    def __init__(self, machine: "KeyValueStateMachine", frozen: dict[str, str], index: int) -> None:
        self._machine = machine
        self._items: Iterator[tuple[str, str]] | None = iter(frozen.items())
        self.index = index
        self.keys = len(frozen)
        self._header: bytes | None = _CONTENT_MAGIC + _varint(self.keys)
        self.closed = False

    def next_chunk(self, max_entries: int = DEFAULT_SLICE_ENTRIES) -> bytes | None:
        """
        The next slice of the content (at most C{max_entries} keys), or
        L{None} once everything has been returned.  Concatenated, the chunks
        are the C{kv/1} content.
        """
        if self._items is None:
            return None
        header, self._header = self._header, None
        batch = []
        items = self._items
        for _ in range(max_entries):
            item = next(items, None)
            if item is None:
                self._items = None
                break
            batch.append(item)
        body = encode_entries(batch)
        return header + body if header else body

    def chunks(self, max_entries: int = DEFAULT_SLICE_ENTRIES) -> Iterator[bytes]:
        """Every remaining chunk, in order (blocking; for tests and tools)."""
        while (chunk := self.next_chunk(max_entries)) is not None:
            yield chunk

    def close(self) -> None:
        """
        The caller is done with the snapshot (written or abandoned): the
        machine may start folding the overlay back into the map
        (L{KeyValueStateMachine.merge_overlay}).
        """
        if not self.closed:
            self.closed = True
            self._items = None
            self._machine._snapshot_closed(self)


class KeyValueStateMachine:
    """
    The key-value data of one node.

    @ivar applied_index: the log index of the last command applied.
    """

    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self.applied_index = 0
        # While a snapshot is open (and until the overlay has been merged
        # back), writes land here; a deleted key maps to _TOMBSTONE.
        self._overlay: dict[str, object] | None = None
        self._snapshot: StateSnapshot | None = None
        self._size = 0  # number of keys while an overlay exists

    def __len__(self) -> int:
        if self._overlay is None:
            return len(self._data)
        return self._size

    def get(self, key: str) -> str | None:
        """The value of C{key}, or L{None} if it has none."""
        overlay = self._overlay
        if overlay is not None:
            value = overlay.get(key, _ABSENT)
            if value is not _ABSENT:
                return None if value is _TOMBSTONE else value  # type: ignore[return-value]  # overlay values are str or the _TOMBSTONE sentinel, checked here
        return self._data.get(key)

    def items(self) -> dict[str, str]:
        """A copy of the whole map (O(n): for tests and checkers, never on
        the serving path)."""
        merged = dict(self._data)
        for key, value in (self._overlay or {}).items():
            if value is _TOMBSTONE:
                merged.pop(key, None)
            else:
                merged[key] = value  # type: ignore[assignment]  # not the _TOMBSTONE sentinel, so a str
        return merged

    # -- snapshots -------------------------------------------------------

    @property
    def snapshot_busy(self) -> bool:
        """True while a snapshot is open or its overlay is not yet merged."""
        return self._overlay is not None

    def begin_snapshot(self) -> StateSnapshot:
        """
        Freeze the map as of L{applied_index}, in O(1), and return the
        snapshot that serialises it; writes from now on go to the overlay.

        @raise SnapshotInProgress: if the previous snapshot is still open or
            its overlay is not merged yet.
        """
        if self._overlay is not None:
            raise SnapshotInProgress("a snapshot is already in progress")
        self._size = len(self._data)
        self._overlay = {}
        self._snapshot = StateSnapshot(self, self._data, self.applied_index)
        return self._snapshot

    def _snapshot_closed(self, snapshot: StateSnapshot) -> None:
        if snapshot is self._snapshot:
            self._snapshot = None

    def merge_overlay(self, max_entries: int = DEFAULT_SLICE_ENTRIES) -> bool:
        """
        Fold up to C{max_entries} overlay writes back into the map; return
        True once the overlay is gone (and a new snapshot may begin).  Call
        it only after L{StateSnapshot.close}; reads stay correct throughout
        (a key is in the overlay or already merged).
        """
        overlay = self._overlay
        if overlay is None:
            return True
        if self._snapshot is not None:
            raise SnapshotInProgress("close the snapshot before merging its overlay")
        data = self._data
        for _ in range(min(max_entries, len(overlay))):
            key, value = overlay.popitem()
            if value is _TOMBSTONE:
                data.pop(key, None)
            else:
                data[key] = value  # type: ignore[assignment]  # not the _TOMBSTONE sentinel, so a str
        if overlay:
            return False
        self._overlay = None
        return True

    def snapshot(self) -> bytes:
        """The whole C{kv/1} content at once (blocking, O(n): for tests, tools
        and the simulator; a node uses L{begin_snapshot})."""
        snapshot = self.begin_snapshot()
        try:
            return b"".join(snapshot.chunks())
        finally:
            snapshot.close()
            self.merge_overlay(max_entries=len(self._overlay or ()) + 1)

    def restore(self, index: int, chunks: Iterable[bytes]) -> None:
        """
        Replace the whole state with the C{kv/1} content in C{chunks} (fed
        one chunk at a time, so the file never has to be in memory at once),
        as of log C{index}.  Nothing changes if the content is invalid.

        @raise InvalidSnapshotContent: if the content is not complete C{kv/1}.
        @raise SnapshotInProgress: if a snapshot is open.
        """
        if self._overlay is not None:
            raise SnapshotInProgress("cannot restore while a snapshot is in progress")
        decoder = ContentDecoder()
        for chunk in chunks:
            decoder.feed(chunk)
        self._data = decoder.finish()
        self.applied_index = index

    def restore_decoded(self, index: int, decoder: "ContentDecoder") -> None:
        """
        L{restore} from content already fed to C{decoder} (InstallSnapshot
        feeds it one chunk per reactor turn, so that replacing a large state
        never stalls the node): replace the whole state with the decoded
        map, as of log C{index}.  Nothing changes if the content is invalid.

        @raise InvalidSnapshotContent: if the content is not complete C{kv/1}.
        @raise SnapshotInProgress: if a snapshot is open.
        """
        if self._overlay is not None:
            raise SnapshotInProgress("cannot restore while a snapshot is in progress")
        self._data = decoder.finish()
        self.applied_index = index

    def apply(self, index: int, data: bytes) -> ApplyResult:
        """
        Apply the committed command at log C{index}.  An empty command is the
        leader's no-op entry and changes nothing.

        @raises InvalidCommand: if C{data} is not a command; the index still
            counts as applied so that one bad entry cannot wedge the node.
        """
        if index != self.applied_index + 1:
            raise AssertionError(f"apply out of order: {index} after {self.applied_index}")
        self.applied_index = index
        if not data or data[0] == 0:  # the no-op, or Raft's own entry (0x00: kvstore.raft.membership)
            return _OK
        op = data[0]
        try:
            text = data[1:].decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidCommand(f"entry {index} is not UTF-8") from None
        if op == _PUT:
            key, sep, value = text.partition(" ")
            if not sep or not key:
                raise InvalidCommand(f"entry {index} is a malformed put")
            if self._overlay is None:
                self._data[key] = value
            else:
                self._overlay_put(key, value)
            return _OK
        if op == _DELETE:
            if not text:
                raise InvalidCommand(f"entry {index} is a malformed delete")
            if self._overlay is None:
                return _OK if self._data.pop(text, None) is not None else _MISSING
            return self._overlay_delete(text)
        raise InvalidCommand(f"entry {index} has unknown operation {data[:1]!r}")

    def _overlay_put(self, key: str, value: str) -> None:
        if self.get(key) is None:
            self._size += 1
        self._overlay[key] = value  # type: ignore[index]  # only called while a snapshot's overlay is open

    def _overlay_delete(self, key: str) -> ApplyResult:
        if self.get(key) is None:
            return _MISSING
        self._size -= 1
        self._overlay[key] = _TOMBSTONE  # type: ignore[index]  # only called while a snapshot's overlay is open
        return _OK


class ContentDecoder:
    """
    Decodes C{kv/1} content fed in chunks of any size (a key or value may
    straddle two chunks), into a new dict.
    """

    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self._pending = b""
        self._expected: int | None = None

    @staticmethod
    def _read_varint(buf: bytes, pos: int) -> tuple[int, int] | None:
        shift = result = 0
        while pos < len(buf):
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result, pos
            shift += 7
            if shift > 63:
                raise InvalidSnapshotContent("varint too long")
        return None

    def feed(self, chunk: bytes) -> None:
        buf = self._pending + chunk if self._pending else bytes(chunk)
        pos = 0
        if self._expected is None:
            if len(buf) < len(_CONTENT_MAGIC) + 1:
                self._pending = buf
                return
            if not buf.startswith(_CONTENT_MAGIC):
                raise InvalidSnapshotContent(f"not {CONTENT_FORMAT} content (bad magic {buf[:5]!r})")
            header = self._read_varint(buf, len(_CONTENT_MAGIC))
            if header is None:
                self._pending = buf
                return
            self._expected, pos = header
        data = self._data
        end = len(buf)
        read_varint = self._read_varint
        try:
            while pos < end:
                start = pos
                n = buf[pos]
                if n < 0x80:
                    pos += 1
                else:
                    got = read_varint(buf, pos)
                    if got is None:
                        pos = start
                        break
                    n, pos = got
                key_end = pos + n
                if key_end >= end:
                    pos = start
                    break
                m = buf[key_end]
                value_start = key_end + 1
                if m >= 0x80:
                    got = read_varint(buf, key_end)
                    if got is None:
                        pos = start
                        break
                    m, value_start = got
                value_end = value_start + m
                if value_end > end:
                    pos = start
                    break
                data[buf[pos:key_end].decode("utf-8")] = buf[value_start:value_end].decode("utf-8")
                pos = value_end
        except UnicodeDecodeError as e:
            raise InvalidSnapshotContent(f"key or value is not UTF-8: {e}") from None
        self._pending = buf[pos:]

    def finish(self) -> dict[str, str]:
        """The decoded map.

        @raise InvalidSnapshotContent: if the content was cut short, had
            bytes after the last key, or its key count disagrees.
        """
        if self._expected is None:
            raise InvalidSnapshotContent("content is empty or cut short in its header")
        if self._pending:
            raise InvalidSnapshotContent(f"content ends inside an entry ({len(self._pending)} bytes left over)")
        if len(self._data) != self._expected:
            raise InvalidSnapshotContent(
                f"content holds {len(self._data)} keys but its header says {self._expected}"
            )
        return self._data
