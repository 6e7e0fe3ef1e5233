# -*- test-case-name: tests.test_statemachine -*-
"""
The replicated key-value state machine and the encoding of its commands.

Raft treats commands as opaque bytes; this module owns their meaning.  A
command is UTF-8 text whose first byte names the operation:

    P<key> <value>              put
    D<key>                      delete
    I<key> <delta>              incr (delta: signed 64-bit, decimal)
    C<key> <expected> <new>     compare-and-set (new is the rest)
    S<stamp>                    open a client session
    T<session> <seq> <stamp> <command>
                                a put, delete, incr or cas tagged with a
                                session and a sequence number

Keys (and a CAS's expected value) never contain whitespace (the client
protocol rejects them), so the first space separates key and value, and the
value may contain anything but a line break.  The format is deliberately
tiny: every write is encoded once on the leader, stored in every node's WAL
and shipped in every AppendEntries message, so its size and parse cost are
on the hot path.

Applying must be deterministic: every node applies the same committed
commands in the same order and must reach the same state.  The result of
applying (L{ApplyResult}) is computed here, at apply time, so that an INCR's
new value or a CAS's verdict is the one every node agrees on.

Exactly-once sessions (Ongaro's thesis, section 6.3; issue 14).  C{S}
registers a session whose id is the index of its entry (as in LogCabin).  A
tagged command C{T} is applied only if its sequence number is above the
highest the session has applied; the session then records that number and
the result.  The same number again (a client's retry after an unknown
outcome) gets the recorded result without being applied again; a lower
number was overtaken, and its result is gone (L{Refusal.STALE_SEQUENCE}).
Sessions expire by I{log time}: C{S} and C{T} entries carry a stamp in
milliseconds (the log time the leader has seen plus the time elapsed since
on its clock: L{kvstore.node.node.Node._stamp}), and the machine's clock is the largest
stamp applied so far, so it never goes backwards even when a new leader's
clock is behind, and every node expires the same sessions at the same
index, never by its own clock.  A session idle for longer than
C{session_timeout} of log time is dropped at the next stamped entry; when
C{max_sessions} are open, registering one drops the least recently used.
A tagged command for a session that is gone is refused
(L{Refusal.SESSION_EXPIRED}) and certainly not applied.  Memory is bounded:
at most C{max_sessions} sessions, each with only its last result.

Snapshots (issue 12).  L{KeyValueStateMachine.begin_snapshot} freezes the
map as of the applied index in O(1): from then on, writes go to an
I{overlay} dict (deletes as tombstones) while the frozen map is serialised a
slice at a time (L{StateSnapshot.next_chunk}), so the reactor never stalls
for long; L{KeyValueStateMachine.merge_overlay} then folds the overlay back,
also a slice at a time.  docs/performance.md ("Snapshots") has the
measurements that chose this over fork() and over a persistent map.  The
session table is frozen too, also in O(1): the snapshot keeps the table
itself, and the first session change while the snapshot is open copies it
(at most C{max_sessions} small records) before changing the copy.

Snapshot content format C{kv/2} (all lengths and numbers are unsigned LEB128
varints; strings are UTF-8 with a varint length before them)::

    b"KVSM" 0x02 varint(number of keys)
    then per key:  varint(len(key)) key  varint(len(value)) value
    then varint(log time, ms) varint(number of sessions)
    then per session, least recently used first:
        varint(id) varint(last active, ms) varint(highest sequence applied)
        0x00 (no write applied yet) or 0x01 and the last result:
            byte found (0/1), byte refusal (0 none, 1 not an integer,
            2 overflow, 3 CAS failed), byte value (0 none, 1 integer as
            decimal string, 2 string), [varint(len) value]

C{kv/1} is the same without the part after the keys (and magic byte 0x01);
it is still read, as a state with no session and log time 0.

Length prefixes, not separators or JSON, so that any value round-trips and
the size stays close to the raw bytes (1 byte of overhead per short string).
Keys are written in the dict's order.  That order follows the applied
commands, but also where an overlay merge interleaved with later writes, so
two nodes at one index hold the same map yet need not produce the same
bytes: compare decoded maps (L{KeyValueStateMachine.items}), not digests.
Sessions are written in their eviction order, which is part of the state
(it decides which session a full table drops next).
"""

from __future__ import annotations

import enum
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple, Union

from kvstore.errors import (
    CasFailed,
    IntegerOverflow,
    KeyNotFound,
    KeyValueError,
    NotAnInteger,
    SessionExpired,
    StaleSequence,
)

_PUT = 0x50  # "P"
_DELETE = 0x44  # "D"
_INCR = 0x49  # "I"
_CAS = 0x43  # "C"
_OPEN_SESSION = 0x53  # "S"
_TAGGED = 0x54  # "T"

#: The range of an INCR's delta and of the values INCR reads and writes.
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

#: How long (seconds of log time) a session may stay idle before it
#: expires.  Every node of a cluster must use the same value: it decides
#: which writes are applied.  LogCabin's default.
DEFAULT_SESSION_TIMEOUT = 3600.0
#: How many sessions the machine keeps; registering one more drops the
#: least recently used.  Each holds its last result only (a few hundred
#: bytes, up to a value's size for a failed CAS): about 1 MB in all
#: usually, 4096 x 64 KiB = 256 MiB at the very worst.  The same on every
#: node, like the timeout.
DEFAULT_MAX_SESSIONS = 4096

# A value INCR accepts: ASCII decimal digits with an optional minus sign.
_INTEGER = re.compile(r"-?[0-9]+\Z")

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


def encode_incr(key: str, delta: int) -> bytes:
    """The command that adds C{delta} (signed 64-bit) to the integer in C{key}."""
    return b"I" + key.encode("utf-8") + b" %d" % delta


def encode_cas(key: str, expected: str, new: str) -> bytes:
    """The command that sets C{key} to C{new} if its value is C{expected}
    (which, like the key, holds no whitespace)."""
    return b"C" + key.encode("utf-8") + b" " + expected.encode("utf-8") + b" " + new.encode("utf-8")


def encode_open_session(stamp_ms: int) -> bytes:
    """The command that registers a session at log time C{stamp_ms}; the
    session's id is the index the entry gets."""
    return b"S%d" % stamp_ms


@dataclass(frozen=True, slots=True)
class SessionTag:
    """The (session, sequence number) pair a client puts on a write."""

    session: int
    seq: int


def encode_tagged(tag: SessionTag, stamp_ms: int, command: bytes) -> bytes:
    """C{command} (a put, delete, incr or cas) as a write of C{tag}'s
    session, stamped with the leader's time C{stamp_ms}."""
    return b"T%d %d %d " % (tag.session, tag.seq, stamp_ms) + command


class Refusal(enum.Enum):
    """Why a command was not applied, though it was valid and committed.
    The numbers are part of the C{kv/2} snapshot format (the first three:
    only those are ever recorded as a session's last result)."""

    NOT_INTEGER = 1
    OVERFLOW = 2
    CAS_FAILED = 3
    SESSION_EXPIRED = 4
    STALE_SEQUENCE = 5


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """
    What applying one command did.

    @ivar found: False when the key was missing (a delete, or a CAS), which
        the client sees as C{Error: Key <k> not found}.
    @ivar refusal: why a valid command changed nothing (L{None}: it was
        applied, or found nothing to delete).
    @ivar value: INCR's new value (an int), a new session's id (an int),
        the actual value a failed CAS found (a str), the session a refusal
        for an expired session names (an int), or the highest sequence
        number of a session that refused a stale one (an int).
    """

    found: bool = True
    refusal: Refusal | None = None
    value: int | str | None = None

    def error(self, key: str) -> KeyValueError | None:
        """The error a client waiting on a write of C{key} gets, or L{None}
        if the write succeeded (and its Deferred fires with L{value})."""
        refusal = self.refusal
        if refusal is None:
            return None if self.found else KeyNotFound(key)
        if refusal is Refusal.NOT_INTEGER:
            return NotAnInteger(key)
        if refusal is Refusal.OVERFLOW:
            return IntegerOverflow(key)
        if refusal is Refusal.CAS_FAILED:
            return CasFailed(key, str(self.value))
        if refusal is Refusal.SESSION_EXPIRED:
            return SessionExpired(int(self.value or 0))
        return StaleSequence(int(self.value or 0))


_OK = ApplyResult(True)
_MISSING = ApplyResult(False)
_NOT_INTEGER = ApplyResult(refusal=Refusal.NOT_INTEGER)
_OVERFLOW = ApplyResult(refusal=Refusal.OVERFLOW)


class _Session(NamedTuple):
    """One session's record.  Immutable: an open snapshot may share it."""

    seq: int  # the highest sequence number applied (0: none yet)
    result: ApplyResult | None  # what that write returned
    last_active: int  # log time (ms) of its last use


# A decoded command: (operation, key, first argument, second argument).
_Decoded = tuple[int, str, Union[str, int, None], Union[str, None]]


CONTENT_FORMAT = "kv/2"
"""The name of the snapshot content format this module writes."""

CONTENT_FORMATS = ("kv/1", "kv/2")
"""The snapshot content formats this module reads (the magic byte tells
which: content says what it is, whatever the snapshot's metadata says)."""

_MAGIC_PREFIX = b"KVSM"
_CONTENT_MAGIC = b"KVSM\x02"
_KV1_MAGIC = b"KVSM\x01"
#: Keys (or sessions) per slice.  Measured with benchmarks/snapshot_stall.py
#: on the 2-core reference machine (1M keys of 100-byte values): 2048 keys
#: took 0.43 ms of CPU per slice on average, 2.5 ms at most; the driver
#: (L{kvstore.node.snapshotting}) ends a turn after about 1 ms, which a slice
#: of 2048 keys could overshoot by more than the turn itself, so a slice is
#: a quarter of that (docs/performance.md, "Snapshots").
DEFAULT_SLICE_ENTRIES = 512
_TOMBSTONE = object()
_ABSENT = object()


class InvalidSnapshotContent(ValueError):
    """Snapshot content that is not (complete) C{kv/1} or C{kv/2} data.  The
    snapshot file's checksum passed, so this means a bug or a foreign
    format."""


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


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return _varint(len(data)) + data


def _encode_result(result: ApplyResult | None) -> bytes:
    if result is None:
        return b"\x00"
    refusal = 0 if result.refusal is None else result.refusal.value
    value = result.value
    if value is None:
        tail = b"\x00"
    elif isinstance(value, int):
        tail = b"\x01" + _string(str(value))
    else:
        tail = b"\x02" + _string(value)
    return bytes((1, int(result.found), refusal)) + tail


def encode_sessions(sessions: Iterable[tuple[int, _Session]]) -> bytes:
    """The C{kv/2} encoding of session records (the part after the session
    count)."""
    return b"".join(
        _varint(session_id) + _varint(record.last_active) + _varint(record.seq) + _encode_result(record.result)
        for session_id, record in sessions
    )


class StateSnapshot:
    """
    A consistent view of the state machine at L{index}, serialised
    incrementally: each L{next_chunk} call encodes a bounded slice, so that
    a caller on the reactor can yield between slices (for example with
    C{twisted.internet.task.cooperate}) and hand each chunk to the storage
    thread.  The frozen map and session table are never written while the
    snapshot is open (writes go to the overlay, session changes to a copy),
    so their iterators stay valid across turns.

    Drive it with a L{twisted.internet.task.Cooperator} whose turns are
    shorter than the default 10 ms (L{kvstore.node.snapshotting.take_snapshot}
    uses 4 ms: with 10 ms turns, stalls crossed 20 ms even at moderate
    load), and keep at most one ~1 MiB chunk in flight to the storage
    thread.

    @ivar index: the applied index the snapshot captures.
    @ivar keys: the number of keys it holds.
    @ivar sessions: the number of sessions it holds.
    """

    def __init__(
        self,
        machine: "KeyValueStateMachine",
        frozen: dict[str, str],
        index: int,
        sessions: "OrderedDict[int, _Session] | None" = None,
        log_time: int = 0,
    ) -> None:
        self._machine = machine
        self._items: Iterator[tuple[str, str]] | None = iter(frozen.items())
        sessions = sessions if sessions is not None else OrderedDict()
        self._trailer = _varint(log_time) + _varint(len(sessions))
        self._sessions: Iterator[tuple[int, _Session]] | None = iter(sessions.items()) if sessions else None
        self.index = index
        self.keys = len(frozen)
        self.sessions = len(sessions)
        self._header: bytes | None = _CONTENT_MAGIC + _varint(self.keys)
        self.closed = False

    def next_chunk(self, max_entries: int = DEFAULT_SLICE_ENTRIES) -> bytes | None:
        """
        The next slice of the content (at most C{max_entries} keys, or
        sessions once the keys are done), or L{None} once everything has
        been returned.  Concatenated, the chunks are the C{kv/2} content.
        """
        items = self._items
        if items is not None:
            header, self._header = self._header, None
            batch = []
            for _ in range(max_entries):
                item = next(items, None)
                if item is None:
                    self._items = None
                    break
                batch.append(item)
            body = encode_entries(batch)
            if self._items is None:
                body += self._trailer
            return header + body if header else body
        sessions = self._sessions
        if sessions is None:
            return None
        records = []
        for _ in range(max_entries):
            record = next(sessions, None)
            if record is None:
                self._sessions = None
                break
            records.append(record)
        return encode_sessions(records)

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
            self._sessions = None
            self._machine._snapshot_closed(self)


class KeyValueStateMachine:
    """
    The key-value data and the client sessions of one node.

    @param session_timeout: seconds of log time after which an idle session
        expires (see the module docstring).
    @param max_sessions: how many sessions are kept at most.
    @param plants: planted bugs, for the simulator's own tests only
        (L{kvstore.testing.sim.plants}); empty in production.

    @ivar applied_index: the log index of the last command applied.
    @ivar log_time: the log time in milliseconds: the largest stamp applied.
    """

    def __init__(
        self,
        *,
        session_timeout: float = DEFAULT_SESSION_TIMEOUT,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        plants: frozenset[str] = frozenset(),
    ) -> None:
        if not session_timeout > 0:
            raise ValueError(f"session_timeout must be positive, not {session_timeout!r}")
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, not {max_sessions!r}")
        self._data: dict[str, str] = {}
        self.applied_index = 0
        # While a snapshot is open (and until the overlay has been merged
        # back), writes land here; a deleted key maps to _TOMBSTONE.
        self._overlay: dict[str, object] | None = None
        self._snapshot: StateSnapshot | None = None
        self._size = 0  # number of keys while an overlay exists
        # Sessions in eviction order: least recently used first.  Log time
        # never decreases, so this is also the order of last_active.
        self._sessions: OrderedDict[int, _Session] = OrderedDict()
        self._sessions_shared = False  # an open snapshot holds this very table
        self.log_time = 0
        self._timeout_ms = max(1, round(session_timeout * 1000))
        self._max_sessions = max_sessions
        self._dedup = "session-dedup-off" not in plants

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

    def sessions(self) -> list[tuple[int, int, int, ApplyResult | None]]:
        """Every session as C{(id, highest sequence, last active ms, last
        result)}, least recently used first (for tests and checkers: two
        nodes at one index must agree on this exactly)."""
        return [(sid, r.seq, r.last_active, r.result) for sid, r in self._sessions.items()]

    # -- snapshots -------------------------------------------------------

    @property
    def snapshot_busy(self) -> bool:
        """True while a snapshot is open or its overlay is not yet merged."""
        return self._overlay is not None

    def begin_snapshot(self) -> StateSnapshot:
        """
        Freeze the map and the sessions as of L{applied_index}, in O(1), and
        return the snapshot that serialises them; writes from now on go to
        the overlay, and session changes to a copy of the table.

        @raise SnapshotInProgress: if the previous snapshot is still open or
            its overlay is not merged yet.
        """
        if self._overlay is not None:
            raise SnapshotInProgress("a snapshot is already in progress")
        self._size = len(self._data)
        self._overlay = {}
        self._sessions_shared = True
        self._snapshot = StateSnapshot(self, self._data, self.applied_index, self._sessions, self.log_time)
        return self._snapshot

    def _snapshot_closed(self, snapshot: StateSnapshot) -> None:
        if snapshot is self._snapshot:
            self._snapshot = None
            self._sessions_shared = False

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
        """The whole C{kv/2} content at once (blocking, O(n): for tests, tools
        and the simulator; a node uses L{begin_snapshot})."""
        snapshot = self.begin_snapshot()
        try:
            return b"".join(snapshot.chunks())
        finally:
            snapshot.close()
            self.merge_overlay(max_entries=len(self._overlay or ()) + 1)

    def restore(self, index: int, chunks: Iterable[bytes]) -> None:
        """
        Replace the whole state with the C{kv/2} (or C{kv/1}) content in
        C{chunks} (fed one chunk at a time, so the file never has to be in
        memory at once), as of log C{index}.  Nothing changes if the content
        is invalid.

        @raise InvalidSnapshotContent: if the content is not complete
            C{kv/2} or C{kv/1} content.
        @raise SnapshotInProgress: if a snapshot is open.
        """
        if self._overlay is not None:
            raise SnapshotInProgress("cannot restore while a snapshot is in progress")
        decoder = ContentDecoder()
        for chunk in chunks:
            decoder.feed(chunk)
        data = decoder.finish()
        self._data = data
        self._sessions = decoder.sessions
        self._sessions_shared = False
        self.log_time = decoder.log_time
        self.applied_index = index

    def restore_decoded(self, index: int, decoder: "ContentDecoder") -> dict[str, str]:
        """
        L{restore} from content already fed to C{decoder} (InstallSnapshot
        feeds it one chunk per reactor turn, so that replacing a large state
        never stalls the node): replace the whole state with the decoded
        map, as of log C{index}.  Nothing changes if the content is invalid.

        @return: the replaced map, so that the caller can free it a slice at
            a time (dropping the last reference to a map of a million keys
            frees every key and value at once: tens of milliseconds).
        @raise InvalidSnapshotContent: if the content is not complete C{kv/2} or C{kv/1}.
        @raise SnapshotInProgress: if a snapshot is open.
        """
        if self._overlay is not None:
            raise SnapshotInProgress("cannot restore while a snapshot is in progress")
        data = decoder.finish()
        replaced, self._data = self._data, data
        self._sessions = decoder.sessions
        self._sessions_shared = False
        self.log_time = decoder.log_time
        self.applied_index = index
        return replaced

    # -- applying --------------------------------------------------------

    def apply(self, index: int, data: bytes) -> ApplyResult:
        """
        Apply the committed command at log C{index}.  An empty command is the
        leader's no-op entry and changes nothing.

        @raises InvalidCommand: if C{data} is not a command; the index still
            counts as applied (and nothing else changes) so that one bad
            entry cannot wedge the node.
        """
        if index != self.applied_index + 1:
            raise AssertionError(f"apply out of order: {index} after {self.applied_index}")
        self.applied_index = index
        if not data or data[0] == 0:  # the no-op, or Raft's own entry (0x00: kvstore.raft.membership)
            return _OK
        op = data[0]
        if op == _PUT:
            # The hot path, inline.
            try:
                text = data[1:].decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidCommand(f"entry {index} is not UTF-8") from None
            key, sep, value = text.partition(" ")
            if not sep or not key:
                raise InvalidCommand(f"entry {index} is a malformed put")
            if self._overlay is None:
                self._data[key] = value
            else:
                self._overlay_put(key, value)
            return _OK
        if op == _TAGGED:
            return self._apply_tagged(index, data)
        if op == _OPEN_SESSION:
            return self._open_session(index, data)
        return self._run(_decode(index, data))

    def _run(self, command: _Decoded) -> ApplyResult:
        """Apply a decoded put, delete, incr or cas."""
        op, key, arg, new = command
        if op == _PUT:
            self._set(key, arg)  # type: ignore[arg-type]  # a put's argument is its value, a str
            return _OK
        if op == _DELETE:
            if self._overlay is None:
                return _OK if self._data.pop(key, None) is not None else _MISSING
            return self._overlay_delete(key)
        current = self.get(key)
        if op == _INCR:
            if current is None:
                number = 0
            elif _INTEGER.match(current) is None:
                return _NOT_INTEGER
            elif len(current.lstrip("-").lstrip("0")) > 19:
                return _OVERFLOW  # beyond 64 bits, and int() would refuse a huge one
            else:
                number = int(current)
            number += arg  # type: ignore[operator]  # an incr's argument is its delta, an int
            if not INT64_MIN <= number <= INT64_MAX:
                return _OVERFLOW
            self._set(key, str(number))
            return ApplyResult(value=number)
        # CAS
        if current is None:
            return _MISSING
        if current != arg:
            return ApplyResult(refusal=Refusal.CAS_FAILED, value=current)
        self._set(key, new)  # type: ignore[arg-type]  # a cas's second argument is the new value, a str
        return _OK

    def _set(self, key: str, value: str) -> None:
        if self._overlay is None:
            self._data[key] = value
        else:
            self._overlay_put(key, value)

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

    # -- sessions --------------------------------------------------------

    def _writable_sessions(self) -> OrderedDict[int, _Session]:
        """The session table, copied first if an open snapshot holds it."""
        if self._sessions_shared:
            self._sessions = OrderedDict(self._sessions)
            self._sessions_shared = False
        return self._sessions

    def _advance(self, stamp: int) -> None:
        """Move log time to C{stamp} (never back) and drop the sessions
        idle for longer than the timeout since."""
        if stamp > self.log_time:
            self.log_time = stamp
        horizon = self.log_time - self._timeout_ms
        sessions = self._sessions
        if sessions and next(iter(sessions.values())).last_active < horizon:
            sessions = self._writable_sessions()
            while sessions and next(iter(sessions.values())).last_active < horizon:
                sessions.popitem(last=False)

    def _open_session(self, index: int, data: bytes) -> ApplyResult:
        stamp = _number(index, data[1:], "session registration")
        self._advance(stamp)
        sessions = self._writable_sessions()
        while len(sessions) >= self._max_sessions:
            sessions.popitem(last=False)
        sessions[index] = _Session(0, None, self.log_time)
        return ApplyResult(value=index)

    def _apply_tagged(self, index: int, data: bytes) -> ApplyResult:
        header = data[1:].split(b" ", 3)
        if len(header) != 4 or not header[3]:
            raise InvalidCommand(f"entry {index} is a malformed session write")
        session = _number(index, header[0], "session write")
        seq = _number(index, header[1], "session write")
        if seq == 0:
            raise InvalidCommand(f"entry {index} is a session write with sequence number 0")
        stamp = _number(index, header[2], "session write")
        inner = header[3]
        if inner[0] not in (_PUT, _DELETE, _INCR, _CAS):
            raise InvalidCommand(f"entry {index} tags an operation that is not a write: {inner[:1]!r}")
        command = _decode(index, inner)  # before any change: an invalid entry changes nothing
        self._advance(stamp)
        record = self._sessions.get(session)
        if record is None:
            return ApplyResult(refusal=Refusal.SESSION_EXPIRED, value=session)
        sessions = self._writable_sessions()
        if seq <= record.seq and (self._dedup or seq < record.seq):
            # A retry of the last write: its recorded result; an older one:
            # overtaken, and its result is gone.  Either way, not applied,
            # but the session was used.
            sessions[session] = _Session(record.seq, record.result, self.log_time)
            sessions.move_to_end(session)
            if seq == record.seq:
                return record.result or _OK
            return ApplyResult(refusal=Refusal.STALE_SEQUENCE, value=record.seq)
        result = self._run(command)
        sessions[session] = _Session(seq, result, self.log_time)
        sessions.move_to_end(session)
        return result


def _number(index: int, digits: bytes, what: str) -> int:
    """An unsigned decimal number from a command, or L{InvalidCommand}
    (C{bytes.isdigit} is ASCII only)."""
    if not digits.isdigit() or len(digits) > 20:
        raise InvalidCommand(f"entry {index} is a malformed {what}")
    return int(digits)


def _decode(index: int, data: bytes) -> _Decoded:
    """Decode a put, delete, incr or cas command without applying it."""
    op = data[0]
    try:
        text = data[1:].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidCommand(f"entry {index} is not UTF-8") from None
    if op == _PUT:
        key, sep, value = text.partition(" ")
        if not sep or not key:
            raise InvalidCommand(f"entry {index} is a malformed put")
        return op, key, value, None
    if op == _DELETE:
        if not text:
            raise InvalidCommand(f"entry {index} is a malformed delete")
        return op, text, None, None
    if op == _INCR:
        key, sep, delta = text.partition(" ")
        if not sep or not key or _INTEGER.match(delta) is None or len(delta) > 20:
            raise InvalidCommand(f"entry {index} is a malformed incr")
        number = int(delta)
        if not INT64_MIN <= number <= INT64_MAX:
            raise InvalidCommand(f"entry {index} is an incr with a delta beyond 64 bits")
        return op, key, number, None
    if op == _CAS:
        parts = text.split(" ", 2)
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise InvalidCommand(f"entry {index} is a malformed cas")
        return op, parts[0], parts[1], parts[2]
    raise InvalidCommand(f"entry {index} has unknown operation {data[:1]!r}")


class ContentDecoder:
    """
    Decodes C{kv/2} or C{kv/1} content fed in chunks of any size (a key,
    value or session may straddle two chunks): L{finish} returns the map,
    after which L{sessions} and L{log_time} hold the rest of the state.
    """

    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self._pending = b""
        self._expected: int | None = None
        self._count = 0  # keys decoded so far
        self._version = 0
        # kv/2's part after the keys: None until its header has been read.
        self._expected_sessions: int | None = None
        self.sessions: OrderedDict[int, _Session] = OrderedDict()
        self.log_time = 0

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
            if buf.startswith(_CONTENT_MAGIC):
                self._version = 2
            elif buf.startswith(_KV1_MAGIC):
                self._version = 1
            else:
                raise InvalidSnapshotContent(f"not {' or '.join(CONTENT_FORMATS)} content (bad magic {buf[:5]!r})")
            header = self._read_varint(buf, len(_CONTENT_MAGIC))
            if header is None:
                self._pending = buf
                return
            self._expected, pos = header
        if self._count < self._expected:
            pos = self._feed_keys(buf, pos)
        if self._count == self._expected and self._version == 2:
            pos = self._feed_sessions(buf, pos)
        self._pending = buf[pos:]

    def _feed_keys(self, buf: bytes, pos: int) -> int:
        """Decode whole keys from C{buf} at C{pos}; return where it stopped."""
        data = self._data
        end = len(buf)
        read_varint = self._read_varint
        remaining = self._expected - self._count  # type: ignore[operator]  # feed has read the header
        done = 0
        try:
            while pos < end and done < remaining:
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
                done += 1
        except UnicodeDecodeError as e:
            raise InvalidSnapshotContent(f"key or value is not UTF-8: {e}") from None
        self._count += done
        return pos

    def _feed_sessions(self, buf: bytes, pos: int) -> int:
        """Decode the session part from C{buf} at C{pos} as far as whole
        records go; return where it stopped."""
        read = self._read_varint
        if self._expected_sessions is None:
            got = read(buf, pos)
            if got is None:
                return pos
            log_time, after = got
            got = read(buf, after)
            if got is None:
                return pos
            self.log_time = log_time
            self._expected_sessions, pos = got
        sessions = self.sessions
        while len(sessions) < self._expected_sessions and pos < len(buf):
            record = self._read_session(buf, pos)
            if record is None:
                break
            session_id, session, pos = record
            if session_id in sessions:
                raise InvalidSnapshotContent(f"session {session_id} appears twice")
            if sessions and session.last_active < next(reversed(sessions.values())).last_active:
                raise InvalidSnapshotContent(f"session {session_id} is out of order")
            sessions[session_id] = session
        return pos

    def _read_session(self, buf: bytes, pos: int) -> tuple[int, _Session, int] | None:
        """One session record at C{pos}, or L{None} if it is cut short."""
        numbers = []
        for _ in range(3):
            got = self._read_varint(buf, pos)
            if got is None:
                return None
            number, pos = got
            numbers.append(number)
        session_id, last_active, seq = numbers
        if pos >= len(buf):
            return None
        if buf[pos] == 0:
            return session_id, _Session(seq, None, last_active), pos + 1
        if buf[pos] != 1:
            raise InvalidSnapshotContent(f"session {session_id}: bad result marker {buf[pos]}")
        if pos + 4 > len(buf):
            return None
        found, refusal_code, value_kind = buf[pos + 1], buf[pos + 2], buf[pos + 3]
        pos += 4
        if found > 1 or refusal_code > Refusal.CAS_FAILED.value or value_kind > 2:
            raise InvalidSnapshotContent(f"session {session_id}: bad result {found}/{refusal_code}/{value_kind}")
        value: int | str | None = None
        if value_kind:
            got = self._read_varint(buf, pos)
            if got is None:
                return None
            length, pos = got
            if pos + length > len(buf):
                return None
            try:
                text = buf[pos:pos + length].decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidSnapshotContent(f"session {session_id}: result is not UTF-8") from None
            pos += length
            if value_kind == 1:
                if _INTEGER.match(text) is None or len(text) > 20:
                    raise InvalidSnapshotContent(f"session {session_id}: bad integer result {text[:30]!r}")
                value = int(text)
            else:
                value = text
        refusal = Refusal(refusal_code) if refusal_code else None
        return session_id, _Session(seq, ApplyResult(bool(found), refusal, value), last_active), pos

    def finish(self) -> dict[str, str]:
        """The decoded map (and L{sessions}, L{log_time} for C{kv/2}).

        @raise InvalidSnapshotContent: if the content was cut short, had
            bytes after its end, or a count disagrees.
        """
        if self._expected is None:
            raise InvalidSnapshotContent("content is empty or cut short in its header")
        if self._count < self._expected:
            if self._pending:
                raise InvalidSnapshotContent(f"content ends inside an entry ({len(self._pending)} bytes left over)")
            raise InvalidSnapshotContent(f"content holds {self._count} keys but its header says {self._expected}")
        if self._version == 2:
            if self._expected_sessions is None or len(self.sessions) < self._expected_sessions:
                raise InvalidSnapshotContent("content ends inside its sessions")
        if self._pending:
            raise InvalidSnapshotContent(f"{len(self._pending)} bytes after the end of the content")
        if len(self._data) != self._expected:
            raise InvalidSnapshotContent(
                f"content holds {len(self._data)} distinct keys but its header says {self._expected}"
            )
        return self._data
