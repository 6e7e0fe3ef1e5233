# -*- test-case-name: tests.test_statemachine_sessions -*-
"""
Exactly-once sessions in the state machine (issue 14; Ongaro's thesis,
section 6.3): registration, duplicates answered with the recorded result
without applying, stale sequence numbers, expiry by log time (the stamps in
the log, never a clock), the LRU cap, and sessions in the C{kv/2} snapshot
content, including session changes made while a snapshot is open.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kvstore.errors import SessionExpired, StaleSequence
from kvstore.statemachine import (
    ApplyResult,
    ContentDecoder,
    InvalidCommand,
    InvalidSnapshotContent,
    KeyValueStateMachine,
    Refusal,
    SessionTag,
    encode_cas,
    encode_delete,
    encode_incr,
    encode_open_session,
    encode_put,
    encode_tagged,
)


def apply(sm: KeyValueStateMachine, command: bytes) -> ApplyResult:
    return sm.apply(sm.applied_index + 1, command)


def tagged(session: int, seq: int, stamp: int, command: bytes) -> bytes:
    return encode_tagged(SessionTag(session, seq), stamp, command)


def open_session(sm: KeyValueStateMachine, stamp: int) -> int:
    result = apply(sm, encode_open_session(stamp))
    assert isinstance(result.value, int)
    return result.value


class SessionTests(SynchronousTestCase):
    """Registration, duplicates and stale sequence numbers."""

    def test_session_id_is_the_index_of_its_entry(self) -> None:
        """A session's id is the log index of the entry that registered it."""
        sm = KeyValueStateMachine()
        apply(sm, encode_put("a", "1"))
        apply(sm, b"")
        self.assertEqual(apply(sm, encode_open_session(1000)), ApplyResult(value=3))
        self.assertEqual(open_session(sm, 1000), 4)
        self.assertEqual([s[0] for s in sm.sessions()], [3, 4])

    def test_duplicate_gets_the_recorded_result_without_applying(self) -> None:
        """A second entry with the same session and sequence number returns the first one's result and
        changes nothing, however the state changed in between."""
        sm = KeyValueStateMachine()
        s = open_session(sm, 1000)
        self.assertEqual(apply(sm, tagged(s, 1, 1001, encode_incr("n", 5))).value, 5)
        apply(sm, encode_incr("n", 100))  # another client
        self.assertEqual(apply(sm, tagged(s, 1, 1002, encode_incr("n", 5))).value, 5)
        self.assertEqual(sm.get("n"), "105")
        self.assertEqual(apply(sm, tagged(s, 2, 1003, encode_put("k", "v"))), ApplyResult())
        apply(sm, encode_put("k", "other"))
        self.assertEqual(apply(sm, tagged(s, 2, 1004, encode_put("k", "v"))), ApplyResult())
        self.assertEqual(sm.get("k"), "other")

    def test_recorded_refusals_are_replayed_too(self) -> None:
        """The recorded result is whatever the write returned: a failed CAS, a missing key, a
        non-integer; its duplicate says the same even once the state would now allow it."""
        sm = KeyValueStateMachine()
        s = open_session(sm, 0)
        apply(sm, encode_put("k", "a"))
        failed = apply(sm, tagged(s, 1, 0, encode_cas("k", "b", "c")))
        self.assertEqual(failed, ApplyResult(refusal=Refusal.CAS_FAILED, value="a"))
        apply(sm, encode_put("k", "b"))
        self.assertEqual(apply(sm, tagged(s, 1, 0, encode_cas("k", "b", "c"))), failed)
        self.assertEqual(sm.get("k"), "b")
        self.assertEqual(apply(sm, tagged(s, 2, 0, encode_delete("gone"))), ApplyResult(False))
        apply(sm, encode_put("gone", "back"))
        self.assertEqual(apply(sm, tagged(s, 2, 0, encode_delete("gone"))), ApplyResult(False))
        self.assertEqual(sm.get("gone"), "back")

    def test_stale_sequence_is_refused_and_not_applied(self) -> None:
        """A sequence number below the highest applied is refused (its result is gone) and changes
        nothing; the session keeps its highest number and result."""
        sm = KeyValueStateMachine()
        s = open_session(sm, 0)
        apply(sm, tagged(s, 1, 0, encode_incr("n", 1)))
        apply(sm, tagged(s, 5, 0, encode_incr("n", 1)))
        result = apply(sm, tagged(s, 3, 0, encode_incr("n", 1)))
        self.assertEqual(result, ApplyResult(refusal=Refusal.STALE_SEQUENCE, value=5))
        error = result.error("n")
        assert isinstance(error, StaleSequence)
        self.assertEqual(error.highest, 5)
        self.assertEqual(sm.get("n"), "2")
        self.assertEqual(apply(sm, tagged(s, 5, 0, encode_incr("n", 1))).value, 2)

    def test_unknown_session_is_refused_and_not_applied(self) -> None:
        """A write tagged with a session that was never registered is refused as expired and not applied."""
        sm = KeyValueStateMachine()
        result = apply(sm, tagged(42, 1, 0, encode_put("k", "v")))
        self.assertEqual(result, ApplyResult(refusal=Refusal.SESSION_EXPIRED, value=42))
        error = result.error("k")
        assert isinstance(error, SessionExpired)
        self.assertEqual(error.session, 42)
        self.assertEqual(sm.items(), {})

    def test_malformed_session_entries_change_nothing(self) -> None:
        """An invalid session entry (bad numbers, sequence 0, a tagged non-write, a bad inner command)
        raises InvalidCommand and changes neither the data, the sessions nor the log time."""
        bad = [b"S", b"Sx", b"S-1", b"T1 1 5", b"T1 1 5 ", b"T1 x 5 Pk v", b"T1 0 5 Pk v", b"T1 1 5 Gk",
               b"T1 1 5 S5", b"T1 1 5 T1 2 5 Pk v", b"T1 1 99999 Ik x", b"T1 1 5 Pk", b"T1 -1 5 Pk v"]
        for data in bad:
            with self.subTest(data=data):
                sm = KeyValueStateMachine(session_timeout=1.0)
                s = open_session(sm, 10)
                before = (sm.items(), sm.sessions(), sm.log_time)
                self.assertRaises(InvalidCommand, apply, sm, data)
                self.assertEqual((sm.items(), sm.sessions(), sm.log_time), before)
                self.assertEqual(s, 1)


class ExpiryTests(SynchronousTestCase):
    """Sessions expire by log time, the largest stamp applied, and by the cap."""

    def test_idle_session_expires_at_the_next_stamped_entry(self) -> None:
        """A session idle for longer than the timeout in log time is dropped when a later stamp shows
        it; up to the timeout exactly it lives; using it keeps it alive."""
        sm = KeyValueStateMachine(session_timeout=2.0)
        a = open_session(sm, 1000)
        b = open_session(sm, 1000)
        apply(sm, tagged(a, 1, 2500, encode_put("k", "1")))  # a active at 2500
        self.assertEqual(apply(sm, tagged(b, 1, 3000, encode_put("k", "2"))).refusal, None)  # idle 2000: alive
        apply(sm, encode_put("x", "plain writes carry no stamp"))
        self.assertEqual([s[0] for s in sm.sessions()], [a, b])
        open_session(sm, 4501)  # a idle 2001 ms: expired; b idle 1501: alive
        self.assertEqual([s[0] for s in sm.sessions()][:1], [b])
        result = apply(sm, tagged(a, 2, 4501, encode_put("k", "3")))
        self.assertEqual(result.refusal, Refusal.SESSION_EXPIRED)
        self.assertEqual(sm.get("k"), "2")

    def test_log_time_never_goes_backwards(self) -> None:
        """A stamp below the log time (a new leader whose clock is behind) does not move it back, so it
        neither revives nor keeps alive anything by the old clock."""
        sm = KeyValueStateMachine(session_timeout=1.0)
        a = open_session(sm, 10_000)
        open_session(sm, 5_000)  # a leader far behind
        self.assertEqual(sm.log_time, 10_000)
        self.assertEqual(sm.sessions()[-1][2], 10_000)  # registered at log time, not at its stamp
        open_session(sm, 11_001)
        self.assertNotIn(a, [s[0] for s in sm.sessions()])

    def test_expiry_depends_only_on_the_log(self) -> None:
        """Two machines applying the same entries hold the same sessions in the same order at every
        index (they have no clock of their own), including one restored from a snapshot midway."""
        entries = [encode_open_session(0), encode_open_session(100), tagged(1, 1, 200, encode_incr("n", 1)),
                   encode_open_session(900), tagged(2, 1, 1150, encode_put("k", "v")), encode_open_session(1300),
                   tagged(1, 2, 1500, encode_incr("n", 1)), tagged(4, 1, 2600, encode_incr("n", 1)),
                   encode_open_session(2601)]
        one, two = KeyValueStateMachine(session_timeout=1.0), KeyValueStateMachine(session_timeout=1.0)
        refused = []
        for position, entry in enumerate(entries):
            result = apply(one, entry)
            self.assertEqual(result, apply(two, entry))
            self.assertEqual(one.sessions(), two.sessions())
            if result.refusal is Refusal.SESSION_EXPIRED:
                refused.append(position + 1)
            if position == 4:
                restored = KeyValueStateMachine(session_timeout=1.0)
                restored.restore(two.applied_index, [two.snapshot()])
                two = restored
        # 5: session 2 idle 1050 ms; 7: session 1 dropped at 6 (idle 1100 ms); 8: session 4 idle 1700 ms.
        self.assertEqual(refused, [5, 7, 8])
        self.assertEqual(one.sessions(), two.sessions())
        self.assertEqual([s[0] for s in one.sessions()], [9])
        self.assertEqual(one.get("n"), "1")

    def test_cap_evicts_the_least_recently_used(self) -> None:
        """With the table full, registering a session drops the least recently used one (use, not age,
        decides), whose writes are then refused."""
        sm = KeyValueStateMachine(max_sessions=3)
        a, b, c = open_session(sm, 0), open_session(sm, 0), open_session(sm, 0)
        apply(sm, tagged(a, 1, 0, encode_put("k", "a")))  # a is now the most recently used
        d = open_session(sm, 0)
        self.assertEqual([s[0] for s in sm.sessions()], [c, a, d])
        self.assertEqual(apply(sm, tagged(b, 1, 0, encode_put("k", "b"))).refusal, Refusal.SESSION_EXPIRED)
        apply(sm, tagged(c, 1, 0, encode_put("k", "c")))  # a duplicate or any use also counts
        open_session(sm, 0)
        self.assertEqual([s[0] for s in sm.sessions()][:2], [d, c])

    def test_duplicate_and_stale_uses_count_as_activity(self) -> None:
        """A duplicate or stale write still uses its session: it refreshes the session's last activity."""
        sm = KeyValueStateMachine(session_timeout=1.0)
        a = open_session(sm, 0)
        apply(sm, tagged(a, 2, 0, encode_put("k", "v")))
        apply(sm, tagged(a, 2, 900, encode_put("k", "v")))
        apply(sm, tagged(a, 1, 1800, encode_put("k", "v")))
        open_session(sm, 2700)
        self.assertEqual(sm.sessions()[0][:3], (a, 2, 1800))

    def test_limits_refused(self) -> None:
        """A non-positive timeout or cap is refused."""
        self.assertRaises(ValueError, KeyValueStateMachine, session_timeout=0)
        self.assertRaises(ValueError, KeyValueStateMachine, max_sessions=0)


def machine_with_sessions() -> KeyValueStateMachine:
    sm = KeyValueStateMachine(max_sessions=10)
    apply(sm, encode_put("k", "a"))
    s1 = open_session(sm, 1000)
    s2 = open_session(sm, 1001)
    s3 = open_session(sm, 1002)
    open_session(sm, 1003)  # no write yet
    apply(sm, tagged(s1, 1, 1004, encode_incr("n", -7)))
    apply(sm, tagged(s2, 3, 1005, encode_cas("k", "x", "y")))  # failed: actual value kept
    apply(sm, tagged(s3, 9, 1006, encode_delete("missing")))
    apply(sm, tagged(s1, 2, 1007, encode_put("k", "ünïcode value")))
    return sm


class SessionSnapshotTests(SynchronousTestCase):
    """Sessions in the kv/2 content, and the kv/1 content still read."""

    def test_round_trip_with_sessions(self) -> None:
        """Sessions, their order, sequence numbers, results of every kind and the log time round-trip
        through the content whatever the chunking, and behave the same after it."""
        sm = machine_with_sessions()
        content = sm.snapshot()
        self.assertTrue(content.startswith(b"KVSM\x02"))
        for size in (1, 2, 7, len(content)):
            with self.subTest(size=size):
                restored = KeyValueStateMachine(max_sessions=10)
                restored.restore(sm.applied_index, (content[i:i + size] for i in range(0, len(content), size)))
                self.assertEqual(restored.items(), sm.items())
                self.assertEqual(restored.sessions(), sm.sessions())
                self.assertEqual(restored.log_time, 1007)
                # The duplicate of s2's failed CAS is answered from the restored record.
                self.assertEqual(apply(restored, tagged(3, 3, 1008, encode_cas("k", "x", "y"))),
                                 ApplyResult(refusal=Refusal.CAS_FAILED, value="a"))

    def test_reads_kv1_content(self) -> None:
        """kv/1 content (no sessions) restores the map, with no session and log time 0."""
        kv1 = b"KVSM\x01\x02\x01a\x011\x01b\x00"
        sm = machine_with_sessions()
        sm.restore(7, [kv1])
        self.assertEqual(sm.items(), {"a": "1", "b": ""})
        self.assertEqual((sm.sessions(), sm.log_time, sm.applied_index), ([], 0, 7))
        self.assertEqual(apply(sm, tagged(2, 1, 0, encode_put("k", "v"))).refusal, Refusal.SESSION_EXPIRED)
        self.assertRaises(InvalidSnapshotContent, sm.restore, 1, [kv1 + b"\x00\x00"])

    def test_invalid_session_content_refused(self) -> None:
        """Cut-short, padded, reordered, duplicated or malformed session records are refused and the
        state is kept."""
        good = machine_with_sessions().snapshot()
        one = KeyValueStateMachine()
        apply(one, encode_open_session(5))
        apply(one, tagged(1, 1, 6, encode_incr("n", 1)))
        small = one.snapshot()  # n=1, log time 6, session 1 at 6, seq 1, result 1
        self.assertEqual(small, b"KVSM\x02\x01\x01n\x011" + b"\x06\x01" + b"\x01\x06\x01" + b"\x01\x01\x00\x01\x011")
        bad = {
            "cut in sessions": good[:-1],
            "cut before sessions header": good[: good.index(b"\x01n") - 1],
            "extra byte": good + b"\x00",
            "count too high": small[:10] + b"\x06\x02" + small[12:],
            "duplicate id": small[:11] + b"\x02" + small[12:] + small[12:],
            "out of order": small[:11] + b"\x02" + small[12:] + b"\x02\x05\x00\x00",
            "bad marker": small[:15] + b"\x02" + small[16:],
            "bad refusal": small[:17] + b"\x04" + small[18:],
            "bad integer": small[:-1] + b"x",
        }
        for label, content in bad.items():
            with self.subTest(label=label):
                sm = machine_with_sessions()
                before = (sm.items(), sm.sessions(), sm.log_time)
                self.assertRaises(InvalidSnapshotContent, sm.restore, 99, [content])
                self.assertEqual((sm.items(), sm.sessions(), sm.log_time), before)

    def test_sessions_are_sliced(self) -> None:
        """Sessions are serialised in bounded slices after the keys, like keys."""
        sm = KeyValueStateMachine()
        for _ in range(7):
            open_session(sm, 0)
        chunks = list(sm.begin_snapshot().chunks(max_entries=3))
        self.assertEqual(len(chunks), 1 + 3)  # header, no keys and the trailer; then 3 + 3 + 1 sessions
        decoder = ContentDecoder()
        for chunk in chunks:
            decoder.feed(chunk)
        self.assertEqual(decoder.finish(), {})
        self.assertEqual(list(decoder.sessions), list(range(1, 8)))

    def test_session_changes_during_a_snapshot_are_not_in_it(self) -> None:
        """Registrations, writes, duplicates, expiry and eviction applied while a snapshot is open change
        the live sessions but not the snapshot, which holds the sessions as of its index."""
        sm = KeyValueStateMachine(session_timeout=1.0, max_sessions=3)
        a, b = open_session(sm, 0), open_session(sm, 0)
        apply(sm, tagged(a, 1, 10, encode_incr("n", 1)))
        frozen = sm.sessions()
        snapshot = sm.begin_snapshot()
        first = snapshot.next_chunk(1)
        apply(sm, tagged(b, 1, 20, encode_incr("n", 1)))  # b changes and moves
        c = open_session(sm, 30)
        d = open_session(sm, 40)  # full: a is evicted
        apply(sm, tagged(b, 1, 1019, encode_incr("n", 1)))  # a duplicate moves b again
        e = open_session(sm, 1035)  # log time expires c
        live = sm.sessions()
        self.assertEqual([s[0] for s in live], [d, b, e])
        content = (first or b"") + b"".join(snapshot.chunks(1))
        snapshot.close()
        restored = KeyValueStateMachine(session_timeout=1.0, max_sessions=3)
        restored.restore(snapshot.index, [content])
        self.assertEqual(restored.sessions(), frozen)
        self.assertEqual(restored.log_time, 10)
        self.assertEqual(sm.sessions(), live)

    @settings(max_examples=150, deadline=None)
    @given(
        before=st.lists(st.tuples(st.integers(0, 4), st.integers(1, 3), st.integers(0, 400)), max_size=15),
        during=st.lists(st.tuples(st.integers(0, 4), st.integers(1, 3), st.integers(0, 400)), max_size=15),
        slice_entries=st.integers(1, 3),
    )
    def test_model_of_sessions_during_a_snapshot(
        self, before: list[tuple[int, int, int]], during: list[tuple[int, int, int]], slice_entries: int
    ) -> None:
        """Whatever session traffic is applied while a snapshot is serialised, the snapshot restores to
        the sessions and data at its index, and the live machine matches one that never snapshotted."""
        sm = KeyValueStateMachine(session_timeout=0.5, max_sessions=3)
        twin = KeyValueStateMachine(session_timeout=0.5, max_sessions=3)
        clock = 0

        def step(op: tuple[int, int, int]) -> None:
            nonlocal clock
            which, seq, advance = op
            clock += advance
            if which == 0:
                entry = encode_open_session(clock)
            else:
                entry = tagged(which, seq, clock, encode_incr("n", which))
            for machine in (sm, twin):
                apply(machine, entry)

        for op in before:
            step(op)
        frozen = (sm.items(), sm.sessions(), sm.log_time)
        snapshot = sm.begin_snapshot()
        chunks = []
        for position, op in enumerate(during):
            if position % 2 == 0 and (chunk := snapshot.next_chunk(slice_entries)) is not None:
                chunks.append(chunk)
            step(op)
            self.assertEqual((sm.items(), sm.sessions()), (twin.items(), twin.sessions()))
        chunks.extend(snapshot.chunks(slice_entries))
        snapshot.close()
        restored = KeyValueStateMachine(session_timeout=0.5, max_sessions=3)
        restored.restore(snapshot.index, chunks)
        self.assertEqual((restored.items(), restored.sessions(), restored.log_time), frozen)
        self.assertEqual(sm.sessions(), twin.sessions())


class DedupPlantTests(SynchronousTestCase):
    """The simulator's planted bug C{session-dedup-off}, switched on only through C{plants}."""

    def test_plant_applies_duplicates_again(self) -> None:
        """With session-dedup-off a duplicate is applied a second time (the bug the simulator must
        catch); without it, never."""
        for plants, expected in ((frozenset(), "1"), (frozenset({"session-dedup-off"}), "2")):
            with self.subTest(plants=plants):
                sm = KeyValueStateMachine(plants=plants)
                s = open_session(sm, 0)
                apply(sm, tagged(s, 1, 0, encode_incr("n", 1)))
                apply(sm, tagged(s, 1, 0, encode_incr("n", 1)))
                self.assertEqual(sm.get("n"), expected)
