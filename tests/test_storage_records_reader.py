"""
Tests for L{kvstore.storage.records.RecordReader}'s loop for intact records
(the one a node's restart spends its log reading in): it yields exactly what
L{kvstore.storage.records.decode_record} decodes, record by record, and stops
at the same offset for the same reason, whatever the damage.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kvstore.storage.records import DecodedRecord, RecordReader, StopReason, decode_record, encode_record


def reference_walk(buffer: bytes, start: int, version: int) -> tuple[list[DecodedRecord], int, StopReason | None]:
    """Walk with decode_record alone, one call per record."""
    records = []
    offset = start
    while True:
        record, reason, following = decode_record(buffer, offset, True, version)
        if record is None:
            return records, offset, reason
        records.append(record)
        offset = following


def log_bytes(payloads: list[bytes]) -> bytes:
    return b"".join(encode_record(i + 1, 1 + i // 3, p, synced=i * 7) for i, p in enumerate(payloads))


class RecordReaderTests(SynchronousTestCase):
    """RecordReader against decode_record."""

    @settings(max_examples=300, deadline=None)
    @given(
        payloads=st.lists(st.binary(max_size=300), max_size=12),
        damage=st.one_of(
            st.none(),
            st.tuples(st.just("flip"), st.integers(min_value=0), st.integers(min_value=0, max_value=7)),
            st.tuples(st.just("cut"), st.integers(min_value=0), st.just(0)),
            st.tuples(st.just("append"), st.integers(min_value=1, max_value=40), st.just(0)),
        ),
    )
    def test_same_records_and_stop_as_decode_record(self, payloads: list[bytes], damage: tuple[str, int, int] | None) -> None:
        """Intact, bit-flipped, cut or trailing-garbage buffers: the same records, stop offset and reason."""
        data = bytearray(log_bytes(payloads))
        if damage is not None:
            kind, where, bit = damage
            if kind == "flip" and data:
                data[where % len(data)] ^= 1 << bit
            elif kind == "cut":
                del data[where % (len(data) + 1) :]
            elif kind == "append":
                data += bytes(range(where))
        buffer = bytes(data)
        reader = RecordReader(buffer, 0)
        records = list(reader)
        expected, stop, reason = reference_walk(buffer, 0, 2)
        self.assertEqual(records, expected)
        self.assertEqual((reader.stop_offset, reader.stop_reason), (stop, reason))

    def test_a_bad_checksum_stops_before_that_record(self) -> None:
        """A record whose checksum does not match is not yielded: the walk stops at it."""
        data = bytearray(log_bytes([b"a" * 10, b"b" * 10, b"c" * 10]))
        second = len(encode_record(1, 1, b"a" * 10, synced=0))
        data[second + 40] ^= 0x01  # inside the second record's payload
        reader = RecordReader(bytes(data), 0)
        self.assertEqual([r.payload for r in reader], [b"a" * 10])
        self.assertEqual((reader.stop_offset, reader.stop_reason), (second, StopReason.CHECKSUM_MISMATCH))
