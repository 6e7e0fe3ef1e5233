# -*- test-case-name: tests.test_storage_records -*-
"""
Tests for L{kvstore.storage.records}: record framing and the decoder.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kvstore.storage.records import (
    FORMAT_VERSION,
    RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    DecodedRecord,
    RecordReader,
    StopReason,
    decode_record,
    decode_segment_header,
    encode_record,
    encode_segment_header,
    find_record_with_index,
)


def _records(*specs: tuple[int, int, bytes]) -> bytes:
    return b"".join(encode_record(i, t, p) for i, t, p in specs)


class RecordFormatTests(SynchronousTestCase):
    """
    The WAL record and segment-header encoding: round trips, layout, and detection of every
    truncation and flipped bit.
    """

    def test_round_trip(self) -> None:
        """Encoded records decode back to the same index, term, payload and offsets."""
        specs = [(1, 1, b"hello"), (2, 1, b""), (3, 7, bytes(range(256)) * 3)]
        buffer = _records(*specs)
        reader = RecordReader(buffer)
        decoded = list(reader)
        assert [(r.index, r.term, r.payload) for r in decoded] == specs
        assert [r.offset for r in decoded] == [0, 37, 69]
        assert reader.stop_reason is StopReason.CLEAN_END
        assert reader.stop_offset == len(buffer)

    def test_record_layout(self) -> None:
        """A record is a 32-byte header (length, crc, index, term, synced) followed by the payload."""
        record = encode_record(0x0102, 0x0304, b"abc", 0x0506)
        assert len(record) == RECORD_HEADER_SIZE + 3 == 35
        assert record[:4] == b"\x00\x00\x00\x03"
        assert record[8:32] == b"".join(n.to_bytes(8, "big") for n in (0x0102, 0x0304, 0x0506))
        assert record[32:] == b"abc"
        assert decode_record(record, 0)[0] == DecodedRecord(0, 0x0102, 0x0304, b"abc", 0x0506)

    def test_decoder_starts_at_offset(self) -> None:
        """The reader starts at the given offset (after a segment header)."""
        buffer = encode_segment_header(5) + _records((5, 2, b"x"))
        decoded = list(RecordReader(buffer, SEGMENT_HEADER_SIZE))
        assert decoded == [DecodedRecord(SEGMENT_HEADER_SIZE, 5, 2, b"x")]

    def test_every_short_tail_is_reported_as_truncated(self) -> None:
        """Cutting the last record at any byte yields the earlier records and TRUNCATED at its start."""
        first = encode_record(1, 1, b"first")
        second = encode_record(2, 1, b"second payload")
        for cut in range(1, len(second)):
            reader = RecordReader(first + second[:cut])
            assert [r.index for r in reader] == [1]
            assert reader.stop_reason is StopReason.TRUNCATED, cut
            assert reader.stop_offset == len(first)

    def test_every_flipped_bit_is_detected(self) -> None:
        """Flipping any single bit of a record stops the decoder before yielding it."""
        record = encode_record(9, 4, b"payload!")
        for bit in range(len(record) * 8):
            damaged = bytearray(record)
            damaged[bit // 8] ^= 1 << (bit % 8)
            reader = RecordReader(bytes(damaged))
            assert list(reader) == [], bit
            assert reader.stop_reason in (StopReason.CHECKSUM_MISMATCH, StopReason.TRUNCATED)
            assert reader.stop_offset == 0

    def test_encode_rejects_bad_input(self) -> None:
        """Out-of-range index/term and non-bytes payloads are refused at encode time."""
        with self.assertRaises(ValueError):
            encode_record(-1, 1, b"")
        with self.assertRaises(ValueError):
            encode_record(1, 2**64, b"")
        with self.assertRaises(TypeError):
            encode_record(1, 1, "text")  # type: ignore[arg-type]

    def test_segment_header_round_trip_and_damage(self) -> None:
        """A segment header decodes to its version and first index, and damage is reported, not raised."""
        header = encode_segment_header(42)
        assert len(header) == SEGMENT_HEADER_SIZE
        decoded, why = decode_segment_header(header)
        assert decoded is not None and (decoded.version, decoded.first_index) == (FORMAT_VERSION, 42)
        assert decode_segment_header(header[:-1]) == (None, "segment header is short (23 of 24 bytes)")
        assert "magic" in decode_segment_header(b"X" + header[1:])[1]
        flipped = bytearray(header)
        flipped[17] ^= 1
        assert decode_segment_header(bytes(flipped)) == (None, "segment header checksum mismatch")

    def test_find_record_with_index_looks_past_damage(self) -> None:
        """An intact later record is found behind a damaged one; a missing index is not found."""
        buffer = bytearray(_records((1, 1, b"a" * 10), (2, 1, b"b" * 10), (3, 1, b"c" * 10)))
        buffer[46] ^= 0xFF  # record 2 (at offset 42): its crc field
        found = find_record_with_index(bytes(buffer), 42, range(2, 5))
        assert found is not None and (found.index, found.offset) == (3, 84)
        assert find_record_with_index(bytes(buffer), 42, range(4, 10)) is None

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=400), st.integers(min_value=0, max_value=420))
    def test_decoder_never_raises_on_arbitrary_bytes(self, data: bytes, start: int) -> None:
        """On any input the decoder yields in-bounds records and stops with a documented reason."""
        reader = RecordReader(data, start)
        records = list(reader)
        assert isinstance(reader.stop_reason, StopReason)
        position = start
        for record in records:
            assert record.offset == position
            position += RECORD_HEADER_SIZE + len(record.payload)
        assert reader.stop_offset == position
        if reader.stop_reason is StopReason.CLEAN_END:
            assert position == len(data)
        else:
            assert position <= len(data) or start > len(data)
        decode_segment_header(data)
        find_record_with_index(data, min(start, len(data)), range(0, 3))

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=2**64 - 1),
                st.integers(min_value=0, max_value=2**64 - 1),
                st.binary(max_size=64),
            ),
            max_size=8,
        ),
        st.binary(max_size=30),
    )
    def test_valid_records_survive_any_trailing_garbage(self, specs: list[tuple[int, int, bytes]], garbage: bytes) -> None:
        """Valid records are all decoded before whatever bytes follow them."""
        buffer = _records(*specs)
        decoded = list(RecordReader(buffer + garbage))
        assert [(r.index, r.term, r.payload) for r in decoded[: len(specs)]] == specs
