# -*- test-case-name: tests.test_storage_records -*-
"""
The on-disk record format of the write-ahead log: pure functions, no I/O.

Keeping the format here, apart from the file handling in L{kvstore.storage.wal},
means it can be tested (and fuzzed) on plain C{bytes}, and there is exactly one
place to change when the format changes: bump L{FORMAT_VERSION}.

Segment file layout (all integers big-endian)::

    segment header, SEGMENT_HEADER_SIZE = 24 bytes:
        magic           8 bytes   b"KVWAL\\r\\n\\x1a" (catches text-mode mangling)
        format version  u16
        flags           u16       (0; reserved)
        first index     u64       index of the first record this segment holds
        header crc      u32       CRC-32 of the 20 bytes above
    then zero or more records, back to back:
        payload length  u32
        crc             u32       CRC-32 of (length, index, term, synced, payload)
        index           u64
        term            u64
        synced          u64       bytes [0, synced) of this segment had been
                                  made durable by a completed fsync before
                                  this record was written (a lower bound)
        payload         <payload length> bytes

The C{synced} field (format version 2) is what lets recovery tell damage in
fsynced data from a torn, never-fsynced tail: see the recovery rule in
L{kvstore.storage.wal}.  Version 1 records had no such field (a 24-byte
header); they are still read (L{READABLE_VERSIONS}), as records claiming
C{synced = 0}, so that a node upgraded in place keeps its log.

Checksum choice: C{zlib.crc32} (CRC-32/ISO-HDLC).  CRC-32C has the same
error-detection strength for our purposes (every burst of up to 32 bits, every
odd number of flipped bits, random corruption with probability 2**-32) and is
faster in hardware, but the standard library has no CRC-32C and the pure-Python
ones are orders of magnitude slower than C{zlib.crc32}.  The CRC covers every
header field but itself (length and synced included), so no field of an intact
record can be damaged.

The decoder never raises on bad input: it stops and reports I{where} and I{why}
(L{StopReason}).  Whether a stop is a harmless torn tail or fatal corruption is
a policy decision that needs context (is this the last segment? is there valid
data after the damage?), so it lives in the WAL, which uses
L{find_next_record} to look past the damage.
"""

from __future__ import annotations

import enum
import re
import struct
import zlib
from typing import Iterator, NamedTuple

__all__ = [
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "SEGMENT_MAGIC",
    "SEGMENT_HEADER_SIZE",
    "RECORD_HEADER_SIZE",
    "MAX_PAYLOAD_BYTES",
    "MAX_U64",
    "LogEntry",
    "DecodedRecord",
    "StopReason",
    "RecordReader",
    "SegmentHeader",
    "encode_record",
    "decode_record",
    "find_record_with_index",
    "find_next_record",
    "encode_segment_header",
    "decode_segment_header",
]

#: Version of the segment and record layout.  Bump it whenever either changes;
#: a log written with another version is refused rather than misread.
FORMAT_VERSION = 2
#: Versions this build can read; it writes only L{FORMAT_VERSION}.
READABLE_VERSIONS = (1, 2)

SEGMENT_MAGIC = b"KVWAL\r\n\x1a"
_SEGMENT_HEADER_BODY = struct.Struct(">8sHHQ")
_U32 = struct.Struct(">I")
SEGMENT_HEADER_SIZE = _SEGMENT_HEADER_BODY.size + _U32.size  # 24

# length, crc, index, term, synced.  The CRC is computed over the record with
# its crc field excluded: bytes [0:4] (length) + [8:32] (index, term, synced)
# + payload.
_RECORD_HEADER = struct.Struct(">IIQQQ")
RECORD_HEADER_SIZE = _RECORD_HEADER.size  # 32
_RECORD_HEADER_V1 = struct.Struct(">IIQQ")  # no synced field
_LENGTH_AND_CRC = struct.Struct(">II")
_INDEX_TERM_SYNCED = struct.Struct(">QQQ")
_U64 = struct.Struct(">Q")
_INDEX_FIELD_OFFSET = 8
_NON_ZERO = re.compile(rb"[^\x00]")

MAX_PAYLOAD_BYTES = 2**32 - 1
MAX_U64 = 2**64 - 1


class LogEntry(NamedTuple):
    """
    One entry of the replicated log, as the Raft core sees it.

    A named tuple, not a dataclass: a node holds every entry of its log in
    memory, and tuples of plain values are untracked by Python's cyclic
    garbage collector, so a long log does not make every collection walk it.
    The Raft core's C{Entry} has the same fields, so the node hands its
    entries to the log without converting them.

    @ivar index: position in the log, starting at 1, contiguous.
    @ivar term: the leader term in which the entry was created (non-decreasing
        along the log).
    @ivar payload: opaque bytes (the encoded command); storage never looks
        inside.
    """

    index: int  # type: ignore[assignment]  # shadows tuple.index, deliberately
    term: int
    payload: bytes


class DecodedRecord(NamedTuple):
    """
    A record found by the decoder, with its byte offset in the buffer.

    @ivar synced: the writer's claim that bytes C{[0, synced)} of the segment
        were durable (fsynced) before this record was written.
    """

    offset: int
    index: int  # type: ignore[assignment]  # shadows tuple.index, deliberately
    term: int
    payload: bytes
    synced: int = 0


class StopReason(enum.Enum):
    """Why the decoder stopped walking a buffer."""

    #: The buffer ended exactly at a record boundary.
    CLEAN_END = "clean end"
    #: Fewer bytes remain than a record header, or than the header's declared
    #: payload length: the typical shape of a write cut short by a crash.
    TRUNCATED = "short record (torn write)"
    #: A complete record whose checksum does not match its contents.
    CHECKSUM_MISMATCH = "checksum mismatch"


def _record_crc(
    length_bytes: bytes | memoryview,
    index_term_synced: bytes | memoryview,
    payload: bytes | memoryview,
) -> int:
    crc = zlib.crc32(length_bytes)
    crc = zlib.crc32(index_term_synced, crc)
    return zlib.crc32(payload, crc)


def encode_record(index: int, term: int, payload: bytes, synced: int = 0) -> bytes:
    """
    Frame one log entry as bytes.

    @param synced: how many leading bytes of the segment this record goes
        into are known durable (fsynced) before it is written; 0 claims
        nothing.  Recovery relies on it never being too high.
    @raise ValueError: if index, term or synced does not fit in an unsigned
        64-bit integer, or the payload exceeds L{MAX_PAYLOAD_BYTES}.
    @raise TypeError: if payload is not C{bytes}.
    """
    if not isinstance(payload, bytes):
        raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
    if not (0 <= index <= MAX_U64) or not (0 <= term <= MAX_U64) or not (0 <= synced <= MAX_U64):
        raise ValueError(f"index {index!r} / term {term!r} / synced {synced!r} out of range")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes is too large")
    length_bytes = _U32.pack(len(payload))
    index_term_synced = _INDEX_TERM_SYNCED.pack(index, term, synced)
    crc = _record_crc(length_bytes, index_term_synced, payload)
    return b"".join((length_bytes, _U32.pack(crc), index_term_synced, payload))


def decode_record(
    buffer: bytes | memoryview, offset: int, verify_checksum: bool = True, version: int = FORMAT_VERSION
) -> tuple[DecodedRecord | None, StopReason | None, int]:
    """
    Decode the single record starting at C{offset}.

    @param verify_checksum: only the simulator's planted bug
        C{skip-checksum-on-recovery} turns this off.
    @param version: the segment's format version (1: no C{synced} field).
    @return: C{(record, None, next_offset)} on success;
        C{(None, StopReason.CLEAN_END, offset)} when C{offset} is exactly the
        end of the buffer; C{(None, reason, offset)} when there is a bad or
        incomplete record at C{offset}.  Never raises for any buffer content.
    """
    view = memoryview(buffer)
    end = len(view)
    if offset == end:
        return None, StopReason.CLEAN_END, offset
    header = _RECORD_HEADER if version != 1 else _RECORD_HEADER_V1
    if end - offset < header.size:
        return None, StopReason.TRUNCATED, offset
    if version == 1:
        length, crc, index, term = header.unpack_from(view, offset)
        synced = 0
    else:
        length, crc, index, term, synced = header.unpack_from(view, offset)
    payload_start = offset + header.size
    payload_end = payload_start + length
    if payload_end > end:
        return None, StopReason.TRUNCATED, offset
    payload = view[payload_start:payload_end]
    if verify_checksum:
        actual = _record_crc(
            view[offset : offset + 4], view[offset + 8 : payload_start], payload
        )
        if actual != crc:
            return None, StopReason.CHECKSUM_MISMATCH, offset
    return DecodedRecord(offset, index, term, bytes(payload), synced), None, payload_end


class RecordReader:
    """
    Walk a buffer of back-to-back records, yielding L{DecodedRecord}s.

    Iteration stops at the end of the buffer or at the first record that is
    incomplete or fails its checksum.  Afterwards L{stop_offset} is the offset
    of the first byte not consumed (the end of the last good record) and
    L{stop_reason} says why.  Iterating never raises for any buffer content.

    @ivar stop_offset: valid once iteration has finished.
    @ivar stop_reason: valid once iteration has finished; L{None} before.
    """

    def __init__(
        self,
        buffer: bytes | memoryview,
        start: int = 0,
        verify_checksums: bool = True,
        version: int = FORMAT_VERSION,
    ) -> None:
        self._buffer = buffer
        self._start = start
        self._verify = verify_checksums
        self._version = version
        self.stop_offset = start
        self.stop_reason: StopReason | None = None

    def __iter__(self) -> Iterator[DecodedRecord]:
        offset = self._start
        if offset > len(self._buffer):
            self.stop_offset, self.stop_reason = offset, StopReason.TRUNCATED
            return
        if self._verify and self._version != 1:
            # A node's restart reads every record of its log's segments (up
            # to a whole segment's worth, about 470,000 records of 100-byte
            # writes): the intact ones take this loop, decode_record inlined.
            # At the first record it would not yield, decode_record below
            # takes over and reports why.
            view = memoryview(self._buffer)
            end = len(view)
            unpack = _RECORD_HEADER.unpack_from
            size = _RECORD_HEADER.size
            crc32 = zlib.crc32
            while end - offset >= size:
                length, crc, index, term, synced = unpack(view, offset)
                payload_start = offset + size
                payload_end = payload_start + length
                if payload_end > end or crc32(view[offset + 8 : payload_end], crc32(view[offset : offset + 4])) != crc:
                    break
                self.stop_offset = payload_end
                yield DecodedRecord(offset, index, term, bytes(view[payload_start:payload_end]), synced)
                offset = payload_end
        while True:
            record, reason, next_offset = decode_record(self._buffer, offset, self._verify, self._version)
            if record is None:
                self.stop_offset, self.stop_reason = offset, reason
                return
            self.stop_offset = next_offset
            yield record
            offset = next_offset


def find_record_with_index(
    buffer: bytes | memoryview, start: int, indexes: range
) -> DecodedRecord | None:
    """
    Look for any valid record carrying one of C{indexes} at or after C{start}.

    The WAL uses this after the decoder stops on damage in the last segment: if
    an intact record that should come I{after} the damaged one exists, the
    damage is not a torn tail but corruption in the middle of the log, and
    truncating would throw away acknowledged entries.  The search is a
    C{bytes.find} for each candidate index field, so it costs a few linear
    scans of the remainder, not a Python loop per byte.
    """
    data = bytes(buffer)
    for wanted in indexes:
        if not (0 <= wanted <= MAX_U64):
            continue
        needle = _U64.pack(wanted)
        position = data.find(needle, start + _INDEX_FIELD_OFFSET)
        while position != -1:
            candidate = position - _INDEX_FIELD_OFFSET
            record, _, _ = decode_record(data, candidate)
            if record is not None and record.index == wanted:
                return record
            position = data.find(needle, position + 1)
    return None


def find_next_record(buffer: bytes, start: int, min_index: int) -> DecodedRecord | None:
    """
    The first intact record starting at or after C{start} whose index is at
    least C{min_index}, or L{None}.

    Every byte offset is a candidate, with no limit on how far past C{start}
    or how many indexes ahead the record may be: a damaged region of any
    size (a garbled page holding a hundred small records) is skipped.  A
    candidate's index field is checked before its checksum, and runs of
    zeros are skipped with one search, so garbled bytes cost one
    C{unpack_from} each (about 0.5 s per MiB, paid only when recovery has
    found damage, over the damaged region).  An index must also be
    plausible: no more records fit between C{start} and the candidate than
    its distance from C{min_index}.
    """
    end = len(buffer)
    unpack = _U64.unpack_from
    field = _INDEX_FIELD_OFFSET
    offset = max(start, 0)
    last = end - RECORD_HEADER_SIZE
    while offset <= last:
        (index,) = unpack(buffer, offset + field)
        if index == 0:
            # Skip to the first offset whose index field holds the next
            # non-zero byte.
            found = _NON_ZERO.search(buffer, offset + field)
            if found is None:
                return None
            offset = max(offset + 1, found.start() - field - 7)
            continue
        if min_index <= index <= min_index + (offset - start) // RECORD_HEADER_SIZE + 1:
            record, _, _ = decode_record(buffer, offset)
            if record is not None:
                return record
        offset += 1
    return None


class SegmentHeader(NamedTuple):
    """The decoded header of a segment file."""

    version: int
    first_index: int


def encode_segment_header(first_index: int, version: int = FORMAT_VERSION) -> bytes:
    """Build the fixed-size header that opens every segment file."""
    body = _SEGMENT_HEADER_BODY.pack(SEGMENT_MAGIC, version, 0, first_index)
    return body + _U32.pack(zlib.crc32(body))


def decode_segment_header(buffer: bytes | memoryview) -> tuple[SegmentHeader | None, str]:
    """
    Parse a segment header from the start of C{buffer}.

    @return: C{(header, "")} if the header is intact (its version may still be
        one this code does not support; the caller checks), otherwise
        C{(None, reason)}.  Never raises for any buffer content.
    """
    view = memoryview(buffer)
    if len(view) < SEGMENT_HEADER_SIZE:
        return None, f"segment header is short ({len(view)} of {SEGMENT_HEADER_SIZE} bytes)"
    magic, version, _flags, first_index = _SEGMENT_HEADER_BODY.unpack_from(view, 0)
    if magic != SEGMENT_MAGIC:
        return None, "bad segment magic (not a kvstore WAL segment)"
    (crc,) = _U32.unpack_from(view, _SEGMENT_HEADER_BODY.size)
    if zlib.crc32(view[: _SEGMENT_HEADER_BODY.size]) != crc:
        return None, "segment header checksum mismatch"
    return SegmentHeader(version, first_index), ""
