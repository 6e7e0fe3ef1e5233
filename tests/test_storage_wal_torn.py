# -*- test-case-name: tests.test_storage_wal_torn -*-
"""
Recovery of the write-ahead log after a crash tore its last, unsynced flush
(issue 9, part 2): whatever a crash does to the sectors and pages of that
flush, the log opens, keeps every record a completed fsync covered, and
invents none; damage inside fsynced data, however many records it covers,
still refuses to start, naming the file and offset.

The log runs on the simulator's file system (L{kvstore.testing.sim.fs}), which knows
what is durable; a test holds the last flush's fsyncs, applies some of them,
and then crashes with an explicit L{TearPlan} for the unsynced extension.
"""

from __future__ import annotations

import copy
import itertools
import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.sim.fs import PAGE, SECTOR, Fate, SimulatedFileSystem, TearPlan
from kvstore.storage import CorruptLogError, LogEntry, WriteAheadLog
from kvstore.storage.records import SEGMENT_HEADER_SIZE, encode_record
from kvstore.testing.runners import run_now

from tests.support import slow

T = TypeVar("T")

DIRECTORY = "/d/wal"


class HoldingRunner:
    """
    Runs each job at once.  While C{holding}, the job's fsyncs are captured
    in C{effects} instead of taking effect (the flush never finishes), and
    its Deferred never fires.
    """

    def __init__(self, fs: SimulatedFileSystem) -> None:
        self.fs = fs
        self.holding = False
        self.effects: list[Callable[[], None]] = []

    def __call__(self, f: Callable[[], T]) -> "Deferred[T]":
        if not self.holding:
            return succeed(f())
        self.fs.durability_sink = self.effects.append
        try:
            f()
        finally:
            self.fs.durability_sink = None
        return Deferred()


@dataclass
class Step:
    """One flush: optionally truncate the log from C{truncate_from}, then
    append records with these payload sizes."""

    payloads: Sequence[int]
    truncate_from: int | None = None


@dataclass
class Crashed:
    """A log whose last flush was interrupted, before the crash."""

    fs: SimulatedFileSystem
    completed: list[LogEntry]  # the log after the last completed flush
    truncated: list[LogEntry]  # ... after the last flush's truncation, if any
    new: list[LogEntry]  # what the last flush appended
    segment_bytes: int
    fsyncs: int  # how many fsyncs (files and directory) the last flush made


def run_steps(completed: Sequence[Step], last: Step, segment_bytes: int, effects_applied: int) -> Crashed:
    """Run the C{completed} flushes, then C{last} without letting more than
    C{effects_applied} of its fsyncs take effect."""
    fs = SimulatedFileSystem()
    fs.makedirs_durable("/d")
    runner = HoldingRunner(fs)
    log = WriteAheadLog.open(DIRECTORY, segment_bytes=segment_bytes, run_in_thread=runner, fs=fs)
    term = 1

    def apply(step: Step) -> list[LogEntry]:
        nonlocal term
        if step.truncate_from is not None and step.truncate_from <= log.last_index:
            log.truncate_suffix(max(step.truncate_from, log.first_index))
            term += 1
        first = log.last_index + 1
        new = [
            LogEntry(first + i, term, bytes([65 + (first + i) % 26]) * size)
            for i, size in enumerate(step.payloads)
        ]
        log.append(new)
        return new

    for step in completed:
        apply(step)
        log.sync()
    before = log.entries
    runner.holding = True
    new = apply(last)
    truncated = log.entries[: len(log.entries) - len(new)]
    log.sync()
    for effect in runner.effects[:effects_applied]:
        effect()
    return Crashed(fs, before, truncated, new, segment_bytes, len(runner.effects))


def extension(fs: SimulatedFileSystem) -> tuple[str, int, int] | None:
    """The WAL file whose written content extends its durable content, with
    both lengths (at most one such file exists when a flush is cut short)."""
    found = []
    for path, inode in fs._durable_names.items():
        written, durable = bytes(inode.data), inode.durable
        if path.endswith(".log") and len(written) > len(durable) and written.startswith(durable):
            found.append((path, len(durable), len(written)))
    assert len(found) <= 1, found
    return found[0] if found else None


def unit_count(old_end: int, new_end: int, unit: int) -> int:
    return -(-new_end // unit) - old_end // unit


def recover(fs: SimulatedFileSystem, segment_bytes: int) -> list[LogEntry]:
    return WriteAheadLog.open(DIRECTORY, segment_bytes=segment_bytes, run_in_thread=run_now, fs=fs).entries


class TornLastFlushMixin:
    """The check every torn-flush test makes."""

    def check_recovery(self: Any, crashed: Crashed, plan: TearPlan | None) -> list[LogEntry]:
        """
        Crash C{crashed} (tearing its unsynced extension as C{plan} says)
        and assert: the log opens; it holds every record a completed fsync
        covered; every other record it holds is one the last flush wrote, in
        order, with no gap.
        """
        clean = copy.deepcopy(crashed.fs)
        clean.crash()
        durable = recover(clean, crashed.segment_bytes)
        # What a crash that lost every unsynced byte leaves: the completed
        # log, cut back no further than the last flush's truncation, then
        # possibly some of the new records (an fsync inside the flush).
        kept = len(durable) - len(crashed.new)
        self.assertTrue(
            crashed.completed[: len(durable)] == durable
            and len(crashed.truncated) <= len(durable) <= len(crashed.completed)
            or durable[: len(crashed.truncated)] == crashed.truncated
            and durable[len(crashed.truncated) :] == crashed.new[: len(durable) - len(crashed.truncated)],
            f"durable log {[(e.index, e.term) for e in durable]} (kept {kept})",
        )
        fs = crashed.fs
        target = extension(fs)
        fs.crash(plans={target[0]: plan} if plan is not None and target is not None else None)
        try:
            recovered = recover(fs, crashed.segment_bytes)
        except CorruptLogError as e:
            self.fail(f"refused to open after a torn unsynced flush ({plan}): {e}")
        self.assertEqual(recovered[: len(durable)], durable, "a record covered by a completed fsync was lost")
        extra = recovered[len(durable) :]
        if extra:
            start = len(durable) - len(crashed.truncated)
            self.assertEqual(extra, crashed.new[start : start + len(extra)], "a record was invented")
        return recovered


fates = st.sampled_from(list(Fate))


@slow
class TornLastFlushPropertyTests(TornLastFlushMixin, SynchronousTestCase):
    """Random flush sequences, random tears of the last one."""

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        segment_bytes=st.sampled_from((700, 5000, 1 << 20, 1 << 20)),
        completed=st.lists(
            st.builds(
                Step,
                st.lists(st.integers(0, 900), min_size=1, max_size=12),
                st.one_of(st.none(), st.integers(1, 40)),
            ),
            min_size=1,
            max_size=5,
        ),
        last=st.builds(
            Step,
            st.lists(st.integers(0, 1500), min_size=2, max_size=14),
            st.one_of(st.none(), st.none(), st.integers(1, 60)),
        ),
        data=st.data(),
    )
    def test_any_tear_of_the_last_flush_recovers(
        self, segment_bytes: int, completed: list[Step], last: Step, data: st.DataObject
    ) -> None:
        """For any flushes and any keep/drop/zero/garble of the sectors or
        pages of the last, unfinished one (after any number of its inner
        fsyncs), the log opens with every fsynced record and no invented
        one, and accepts appends afterwards."""
        probe = run_steps(completed, last, segment_bytes, effects_applied=0)
        applied = data.draw(st.integers(0, max(0, probe.fsyncs - 1)), label="fsyncs applied")
        crashed = run_steps(completed, last, segment_bytes, applied) if applied else probe
        target = extension(crashed.fs)
        plan = None
        if target is not None:
            _, old_end, new_end = target
            unit = data.draw(st.sampled_from((SECTOR, PAGE)), label="unit")
            count = unit_count(old_end, new_end, unit)
            plan = TearPlan(
                data.draw(st.one_of(st.just(new_end), st.integers(old_end, new_end)), label="length"),
                unit,
                tuple(data.draw(st.lists(fates, min_size=count, max_size=count), label="fates")),
                data.draw(st.integers(0, 2**32), label="seed"),
            )
        recovered = self.check_recovery(crashed, plan)
        # And the recovered log is a working one.
        log = WriteAheadLog.open(DIRECTORY, segment_bytes=segment_bytes, run_in_thread=run_now, fs=crashed.fs)
        after = LogEntry(log.last_index + 1, 99, b"after recovery")
        log.append([after])
        log.sync()
        self.assertEqual(recover(crashed.fs, segment_bytes), recovered + [after])


@slow
class TornLastFlushExhaustiveTests(TornLastFlushMixin, SynchronousTestCase):
    """Every combination of fates and lengths, for small unsynced flushes."""

    def exhaust(self, old_end: int, unsynced: int, unit: int) -> int:
        """
        Make the completed flushes end at byte C{old_end} of the segment,
        append C{unsynced} bytes of records in a flush that never finishes,
        and check every combination of one fate per C{unit} and of the
        file's length (old end, new end, each unit boundary between).
        Returns the number of combinations checked.
        """
        record = len(encode_record(1, 1, b""))
        first = old_end - SEGMENT_HEADER_SIZE - record
        self.assertGreaterEqual(first, 0)
        sizes, left = [], unsynced
        while left > 0:
            size = min(left, 150 + 37 * len(sizes))
            sizes.append(max(0, size - record))
            left -= size
        base = run_steps([Step([first])], Step(sizes), 1 << 20, effects_applied=0)
        _, start, end = extension(base.fs)  # type: ignore[misc]
        self.assertEqual(start, old_end)
        lengths = sorted({start, end} | {b for b in range(-(-start // unit) * unit, end, unit)})
        checked = 0
        for length in lengths:
            for combination in itertools.product(list(Fate), repeat=unit_count(start, end, unit)):
                with self.subTest(length=length, fates=[f.value for f in combination]):
                    self.check_recovery(copy.deepcopy(base), TearPlan(length, unit, combination, checked))
                checked += 1
        return checked

    def test_sectors_when_the_old_end_is_late_in_its_page(self) -> None:
        """The case of the issue: the old end lies in the last 511 bytes of
        its page, and every sector of the next 1,000 bytes is kept, dropped,
        zeroed or garbled independently."""
        self.assertGreater(self.exhaust(PAGE - 100, 1000, SECTOR), 200)

    def test_sectors_from_a_sector_boundary(self) -> None:
        """An unsynced flush of four whole sectors, torn sector by sector."""
        self.exhaust(3 * SECTOR, 4 * SECTOR, SECTOR)

    def test_sectors_from_mid_sector(self) -> None:
        """An unsynced flush starting mid-sector and spanning four sectors."""
        self.exhaust(SECTOR + 7, 3 * SECTOR + 100, SECTOR)

    def test_pages(self) -> None:
        """An unsynced flush from near a page's end across three more pages,
        torn page by page."""
        self.exhaust(2 * PAGE - 20, 3 * PAGE, PAGE)

    def test_the_issue_example_refused_before(self) -> None:
        """The page holding the old end is lost (zeros from the old end to the
        page boundary) while the later pages of the same flush reached the
        disk: a torn tail, not corruption."""
        old_end = PAGE - 300
        base = run_steps([Step([old_end - SEGMENT_HEADER_SIZE - len(encode_record(1, 1, b""))])],
                         Step([200] * 30), 1 << 20, effects_applied=0)
        _, start, end = extension(base.fs)  # type: ignore[misc]
        fates = (Fate.DROP,) + (Fate.KEEP,) * (unit_count(start, end, PAGE) - 1)
        recovered = self.check_recovery(base, TearPlan(end, PAGE, fates))
        self.assertEqual(recovered, base.completed)


class DurableDamageTests(SynchronousTestCase):
    """Damage inside fsynced data refuses, however many records it covers."""

    def write(self, first_flush: int, second_flush: int, payload: int = 0) -> tuple[SimulatedFileSystem, str, list[int]]:
        """Two completed flushes of small records; return the file system,
        the segment path, and every record's offset."""
        base = run_steps([Step([payload] * first_flush)], Step([payload] * second_flush), 1 << 20, effects_applied=99)
        fs = base.fs
        fs.crash()
        path = next(p for p in fs.listdir(DIRECTORY) if p.endswith(".log"))
        record = len(encode_record(1, 1, b"x" * payload))
        offsets = [SEGMENT_HEADER_SIZE + i * record for i in range(first_flush + second_flush)]
        self.assertEqual(len(fs.read_file(f"{DIRECTORY}/{path}")), offsets[-1] + record)
        return fs, f"{DIRECTORY}/{path}", offsets

    def damage_and_open(self, fs: SimulatedFileSystem, path: str, start: int, end: int, garble: bool) -> CorruptLogError:
        data = bytearray(fs.read_file(path))
        data[start:end] = random.Random(start).randbytes(end - start) if garble else bytes(end - start)
        fd = fs.open_rw(path)
        fs.pwrite_all(fd, bytes(data), 0)
        fs.close(fd)
        return self.assertRaises(
            CorruptLogError, WriteAheadLog.open, DIRECTORY, run_in_thread=run_now, fs=fs
        )

    def test_garbled_sector_over_more_than_sixteen_records_refuses(self) -> None:
        """A garbled (or zeroed) sector or page covering far more than 16
        small records of fsynced data, followed by a later flush, is never
        taken for a torn tail: recovery refuses at the first damaged record
        (the old 16-index lookahead truncated here)."""
        for unit, garble in itertools.product((SECTOR, PAGE), (True, False)):
            fs, path, offsets = self.write(first_flush=400, second_flush=300)
            flush_end = offsets[400]
            for start in range(SECTOR, flush_end - unit, 3 * unit + SECTOR):
                with self.subTest(unit=unit, garble=garble, start=start):
                    copy_fs = copy.deepcopy(fs)
                    caught = self.damage_and_open(copy_fs, path, start, start + unit, garble)
                    first_damaged = max(o for o in offsets if o <= start)
                    self.assertEqual((caught.path, caught.offset), (path, first_damaged))
                    self.assertIn(f"offset {first_damaged}", str(caught))
                    record = offsets[1] - offsets[0]
                    damaged = sum(o < start + unit and start < o + record for o in offsets)
                    self.assertGreater(damaged, 16)

    def test_bit_flip_in_an_earlier_flush_refuses(self) -> None:
        """A single flipped bit in any record of a completed flush followed
        by a later flush refuses, naming the file and the record's offset."""
        fs, path, offsets = self.write(first_flush=40, second_flush=5, payload=20)
        for position in range(0, 40, 3):
            with self.subTest(record=position):
                copy_fs = copy.deepcopy(fs)
                data = bytearray(copy_fs.read_file(path))
                data[offsets[position] + 11] ^= 0x04
                fd = copy_fs.open_rw(path)
                copy_fs.pwrite_all(fd, bytes(data), 0)
                caught = self.assertRaises(
                    CorruptLogError, WriteAheadLog.open, DIRECTORY, run_in_thread=run_now, fs=copy_fs
                )
                self.assertEqual((caught.path, caught.offset), (path, offsets[position]))

    def test_damage_in_the_last_flush_is_a_torn_tail(self) -> None:
        """Damage inside the last flush, with no later flush after it, cannot
        be told from that flush's own torn write: it is truncated there
        (the documented limit of the rule), never refused."""
        fs, path, offsets = self.write(first_flush=10, second_flush=30, payload=20)
        data = bytearray(fs.read_file(path))
        data[offsets[20] + 40] ^= 0x01
        fd = fs.open_rw(path)
        fs.pwrite_all(fd, bytes(data), 0)
        recovered = WriteAheadLog.open(DIRECTORY, run_in_thread=run_now, fs=fs)
        self.assertEqual(recovered.last_index, 20)


class PlantedSkipChecksumTests(SynchronousTestCase):
    """The planted bug the simulator must catch."""

    def test_skipping_checksums_invents_a_record(self) -> None:
        """With C{skip-checksum-on-recovery}, a garbled payload in the torn
        tail comes back as a record; without it, recovery drops it."""
        results = {}
        for plants in (frozenset(), frozenset({"skip-checksum-on-recovery"})):
            base = run_steps([Step([100] * 3)], Step([600]), 1 << 20, effects_applied=0)
            _, start, end = extension(base.fs)  # type: ignore[misc]
            fates = (Fate.KEEP,) + (Fate.GARBLE,) * (unit_count(start, end, SECTOR) - 1)
            base.fs.crash(plans={f"{DIRECTORY}/wal-00000000000000000001.log": TearPlan(end, SECTOR, fates, 7)})
            results[plants] = WriteAheadLog.open(
                DIRECTORY, run_in_thread=run_now, fs=base.fs, plants=plants
            ).entries
        self.assertEqual(results[frozenset()], base.completed)
        planted = results[frozenset({"skip-checksum-on-recovery"})]
        self.assertEqual(len(planted), 4)
        self.assertNotEqual(planted[3].payload, base.new[0].payload)
