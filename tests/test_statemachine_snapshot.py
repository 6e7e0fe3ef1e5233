# -*- test-case-name: tests.test_statemachine_snapshot -*-
"""
Tests of the state machine's snapshot side: the C{kv/1} encoding round
trip, its size, the O(1) freeze with writes going to an overlay while the
frozen map is serialised in bounded slices, the overlay merge, and the
refusal of invalid content.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kvstore.statemachine import (
    ContentDecoder,
    InvalidSnapshotContent,
    KeyValueStateMachine,
    SnapshotInProgress,
    encode_delete,
    encode_put,
)

keys = st.text(st.characters(exclude_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=4)
values = st.text(st.characters(exclude_categories=("Cs",)), max_size=6)
# Mostly a handful of keys, so that puts and deletes hit frozen and overlay keys alike.
model_keys = st.one_of(st.sampled_from("abcde"), keys)
operations = st.lists(
    st.one_of(st.tuples(st.just("put"), model_keys, values), st.tuples(st.just("delete"), model_keys, st.just(""))),
    max_size=40,
)


def machine_with(pairs: dict[str, str]) -> KeyValueStateMachine:
    sm = KeyValueStateMachine()
    for key, value in pairs.items():
        sm.apply(sm.applied_index + 1, encode_put(key, value))
    return sm


def apply_all(sm: KeyValueStateMachine, ops: list[tuple[str, str, str]], model: dict[str, str]) -> None:
    for op, key, value in ops:
        if op == "put":
            result = sm.apply(sm.applied_index + 1, encode_put(key, value))
            model[key] = value
            assert result.found
        else:
            result = sm.apply(sm.applied_index + 1, encode_delete(key))
            assert result.found == (key in model), (key, model)
            model.pop(key, None)


class SnapshotEncodingTests(SynchronousTestCase):
    """The C{kv/1} content: round trip, chunking, size, determinism and refusals."""

    def test_round_trip_any_chunking(self) -> None:
        """Content fed in chunks of any size restores the same map and the snapshot's index."""
        pairs = {"a": "", "ключ": "значение ✓", "long": "v" * 20000, "k": "line\nbreak is still data"}
        sm = machine_with(pairs)
        content = sm.snapshot()
        for size in (1, 2, 3, 5, 64, len(content)):
            with self.subTest(size=size):
                restored = KeyValueStateMachine()
                restored.restore(sm.applied_index, (content[i : i + size] for i in range(0, len(content), size)))
                self.assertEqual(restored.items(), pairs)
                self.assertEqual(restored.applied_index, 4)
                self.assertEqual(restored.get("long"), "v" * 20000)

    def test_multi_byte_key_count_split_anywhere(self) -> None:
        """A key count that needs two varint bytes survives a chunk boundary inside it."""
        pairs = {f"k{i}": "v" for i in range(300)}
        content = machine_with(pairs).snapshot()
        for size in (1, 2, 5, 6, 7):
            with self.subTest(size=size):
                restored = KeyValueStateMachine()
                restored.restore(300, (content[i : i + size] for i in range(0, len(content), size)))
                self.assertEqual(restored.items(), pairs)

    @settings(max_examples=100, deadline=None)
    @given(pairs=st.dictionaries(keys, values, max_size=30), size=st.integers(min_value=1, max_value=50))
    def test_round_trip_property(self, pairs: dict[str, str], size: int) -> None:
        """Any map round-trips through its content, whatever the chunk size."""
        content = machine_with(pairs).snapshot()
        restored = KeyValueStateMachine()
        restored.restore(len(pairs), (content[i : i + size] for i in range(0, len(content), size)))
        self.assertEqual(restored.items(), pairs)

    def test_size_close_to_raw_bytes(self) -> None:
        """With 100-byte values the content is the raw key and value bytes plus two length bytes per key
        (and, in kv/2, two bytes for a zero log time and no session)."""
        pairs = {f"key{i:07d}": "v" * 100 for i in range(1000)}
        content = machine_with(pairs).snapshot()
        raw = sum(len(k) + len(v) for k, v in pairs.items())
        self.assertEqual(len(content), raw + 2 * len(pairs) + 5 + 2 + 2)
        self.assertLessEqual(len(content), 1.3 * raw)

    def test_same_history_same_bytes(self) -> None:
        """Two machines that applied the same commands (with no snapshot in between) produce identical content."""
        pairs = {f"k{i}": str(i) for i in range(100)}
        self.assertEqual(machine_with(pairs).snapshot(), machine_with(pairs).snapshot())

    def test_invalid_content_refused_and_state_kept(self) -> None:
        """Cut-short, padded, miscounted, foreign or non-UTF-8 content is refused and the state is unchanged."""
        good = machine_with({"a": "1", "b": "2"}).snapshot()
        bad = {
            "empty": b"",
            "header only part": good[:3],
            "cut in entry": good[:-1],
            "extra byte": good + b"\x00",
            "bad magic": b"XVSM" + good[4:],
            "count too high": good[:5] + b"\x03" + good[6:],
            "count too low": good[:5] + b"\x01" + good[6:],
            "not utf-8": good[:5] + b"\x01\x01\xff\x00",
            "length runs past": good[:5] + b"\x01\x05ab",
        }
        for label, content in bad.items():
            with self.subTest(label=label):
                sm = machine_with({"keep": "me"})
                self.assertRaises(InvalidSnapshotContent, sm.restore, 9, [content])
                self.assertEqual(sm.items(), {"keep": "me"})
                self.assertEqual(sm.applied_index, 1)

    def test_decoder_never_hangs_on_garbage(self) -> None:
        """An over-long length varint is refused rather than read forever."""
        decoder = ContentDecoder()
        self.assertRaises(InvalidSnapshotContent, decoder.feed, b"KVSM\x01\x01" + b"\xff" * 20)


class SnapshotOverlayTests(SynchronousTestCase):
    """Freezing the map for a snapshot while writes continue."""

    def test_snapshot_is_the_state_at_its_index(self) -> None:
        """Writes applied while a snapshot is open are visible to reads but not in the snapshot."""
        sm = machine_with({"a": "1", "b": "2", "c": "3"})
        snapshot = sm.begin_snapshot()
        self.assertEqual((snapshot.index, snapshot.keys), (3, 3))
        sm.apply(4, encode_put("a", "changed"))
        sm.apply(5, encode_delete("b"))
        sm.apply(6, encode_put("d", "new"))
        self.assertEqual((sm.get("a"), sm.get("b"), sm.get("d"), len(sm)), ("changed", None, "new", 3))
        content = b"".join(snapshot.chunks(max_entries=1))
        restored = KeyValueStateMachine()
        restored.restore(snapshot.index, [content])
        self.assertEqual(restored.items(), {"a": "1", "b": "2", "c": "3"})
        snapshot.close()
        while not sm.merge_overlay(max_entries=1):
            self.assertTrue(sm.snapshot_busy)
        self.assertEqual(sm.items(), {"a": "changed", "c": "3", "d": "new"})
        self.assertEqual(sm._overlay, None)
        self.assertEqual(sm._data, {"a": "changed", "c": "3", "d": "new"})

    def test_slices_are_bounded(self) -> None:
        """Each slice encodes at most the requested number of keys (what bounds the reactor stall)."""
        sm = machine_with({f"k{i}": "v" for i in range(10)})
        snapshot = sm.begin_snapshot()
        chunks = list(snapshot.chunks(max_entries=3))
        self.assertEqual(len(chunks), 4)
        self.assertEqual([c.count(b"\x01v") for c in chunks], [3, 3, 3, 1])

    def test_deletes_in_overlay_report_what_they_found(self) -> None:
        """During a snapshot, deleting a missing, a frozen or an overlay key reports found exactly as without one."""
        sm = machine_with({"a": "1"})
        sm.begin_snapshot()
        self.assertFalse(sm.apply(2, encode_delete("zz")).found)
        self.assertTrue(sm.apply(3, encode_delete("a")).found)
        self.assertFalse(sm.apply(4, encode_delete("a")).found)
        sm.apply(5, encode_put("a", "again"))
        self.assertEqual((sm.get("a"), len(sm)), ("again", 1))
        self.assertTrue(sm.apply(6, encode_delete("a")).found)
        self.assertEqual(len(sm), 0)

    def test_one_snapshot_at_a_time(self) -> None:
        """A second snapshot, a restore, or a merge before close is refused while one is open."""
        sm = machine_with({"a": "1"})
        snapshot = sm.begin_snapshot()
        self.assertRaises(SnapshotInProgress, sm.begin_snapshot)
        self.assertRaises(SnapshotInProgress, sm.restore, 5, [KeyValueStateMachine().snapshot()])
        self.assertRaises(SnapshotInProgress, sm.merge_overlay)
        snapshot.close()
        self.assertRaises(SnapshotInProgress, sm.begin_snapshot)  # overlay not merged yet
        self.assertTrue(sm.merge_overlay())
        sm.begin_snapshot().close()

    @settings(max_examples=100, deadline=None)
    @given(
        before=operations,
        during=operations,
        after=operations,
        slice_entries=st.integers(min_value=1, max_value=5),
        merge_entries=st.integers(min_value=1, max_value=5),
    )
    def test_model(
        self,
        before: list[tuple[str, str, str]],
        during: list[tuple[str, str, str]],
        after: list[tuple[str, str, str]],
        slice_entries: int,
        merge_entries: int,
    ) -> None:
        """Against a plain dict: reads, lengths and results are unchanged by a snapshot, which holds the
        state at its index, whatever is applied while it is serialised and while the overlay merges."""
        sm, model = KeyValueStateMachine(), {}
        apply_all(sm, before, model)
        frozen = dict(model)
        snapshot = sm.begin_snapshot()
        chunks = []
        for position, operation in enumerate(during):
            if position % 2 == 0:
                chunk = snapshot.next_chunk(slice_entries)
                if chunk is not None:
                    chunks.append(chunk)
            apply_all(sm, [operation], model)
            self.assertEqual((sm.items(), len(sm)), (model, len(model)))
        chunks.extend(snapshot.chunks(slice_entries))
        snapshot.close()
        restored = KeyValueStateMachine()
        restored.restore(snapshot.index, chunks)
        self.assertEqual(restored.items(), frozen)
        for operation in after:
            sm.merge_overlay(merge_entries)
            apply_all(sm, [operation], model)
            for key in model:
                self.assertEqual(sm.get(key), model[key])
        while not sm.merge_overlay(merge_entries):
            pass
        self.assertEqual((sm._data, len(sm)), (model, len(model)))
