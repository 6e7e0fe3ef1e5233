# -*- test-case-name: tests.test_storage_wal_prealloc_crash -*-
"""
Crashes of a preallocating write-ahead log (issue 16) on the simulated
disk: random appends (many of zero bytes, which look like the zeros a
segment ends in), suffix truncations at conflicts, prefix drops and syncs,
cut by a power loss at a random moment of a flush and torn as the
simulator tears writes, then recovered with preallocation, over several
incarnations of one data directory.  After every crash the recovered log
holds every entry the log had reported durable, and is a prefix of a state
the log actually passed through: no torn record accepted, no record that a
truncation removed brought back from behind a shorter new tail.
"""

from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.storage import LogEntry, WriteAheadLog
from kvstore.storage.wal import PREALLOCATE_BYTES
from kvstore.testing.runners import run_now
from kvstore.testing.sim.fs import SimulatedDisk, SimulatedFileSystem

DIRECTORY = "/d/wal"
SEEDS = 500


def _payload(rng: random.Random) -> bytes:
    size = rng.choice((0, 1, 5, 31, 32, 33, 100, 500, 1500, 5000))
    roll = rng.random()
    if roll < 0.4:
        return bytes(size)  # a value of zeros
    if roll < 0.5:
        return bytes(size) + b"x"
    return rng.randbytes(size)


def _consistent(recovered: list[LogEntry], state: tuple[LogEntry, ...]) -> bool:
    held = {e.index: e for e in state}
    return all(held.get(e.index) == e for e in recovered)


def crash_run(seed: int) -> str | None:
    """One data directory through a few crashes; a description of the first violation, or None."""
    rng = random.Random(seed)
    fs = SimulatedFileSystem()
    fs.makedirs_durable("/d")
    segment_bytes = rng.choice((300, 2048, 8192, 1 << 20))
    preallocate = rng.choice((PREALLOCATE_BYTES, 4096, 1000, 64))
    # Every state the log went through, with the entries a prefix drop
    # forgot in memory but may still be on disk.
    history: list[tuple[LogEntry, ...]] = [()]
    term = 0
    for incarnation in range(rng.randint(1, 4)):
        clock = Clock()
        disk = SimulatedDisk(clock, random.Random(rng.getrandbits(64)), fs)
        log = WriteAheadLog.open(
            DIRECTORY, segment_bytes=segment_bytes, preallocate_bytes=preallocate, run_in_thread=disk, fs=fs
        )
        shadow = list(log.entries)
        history.append(tuple(shadow))
        for _ in range(rng.randint(1, 40)):
            roll = rng.random()
            if roll < 0.45:
                term = max(term, log.last_term) + (rng.random() < 0.1)
                new = [LogEntry(log.last_index + 1 + k, term, _payload(rng)) for k in range(rng.randint(1, 6))]
                log.append(new)
                shadow += new
            elif roll < 0.6 and log.last_index >= log.first_index:
                start = rng.randint(log.first_index, log.last_index)
                log.truncate_suffix(start)
                shadow = [e for e in shadow if e.index < start]
                history.append(tuple(shadow))
                if rng.random() < 0.8:
                    term = max(term, log.last_term) + 1
                    new = [LogEntry(log.last_index + 1 + k, term, _payload(rng)) for k in range(rng.randint(1, 4))]
                    log.append(new)
                    shadow += new
            elif roll < 0.63 and log.last_index > log.first_index:
                log.drop_prefix(rng.randint(log.first_index, log.last_index - 1))
            elif roll < 0.85:
                log.sync()
            else:
                clock.advance(rng.uniform(0, 0.01))
            history.append(tuple(shadow))
        clock.advance(rng.choice((0.0, rng.uniform(0, 0.001), rng.uniform(0, 0.01))))
        durable = [e for e in log.entries if e.index <= log.durable_index]
        disk.kill()
        torn = fs.crash(rng, tear=True)
        where = f"seed {seed} incarnation {incarnation} (segment_bytes={segment_bytes}, preallocate={preallocate}, torn={torn})"
        try:
            recovered = WriteAheadLog.open(
                DIRECTORY, segment_bytes=segment_bytes, preallocate_bytes=preallocate, run_in_thread=run_now, fs=fs
            )
        except Exception as e:
            return f"{where}: recovery failed: {e}"
        entries = recovered.entries
        by_index = {e.index: e for e in entries}
        lost = [e.index for e in durable if by_index.get(e.index) != e]
        if lost:
            return f"{where}: durable entries {lost} lost or changed"
        if not any(_consistent(entries, state) for state in history):
            return f"{where}: the recovered log {[(e.index, e.term) for e in entries]} is no state the log passed through"
        recovered.close()
    return None


class PreallocatedCrashTests(SynchronousTestCase):
    def test_crashes_keep_durable_entries_and_resurrect_nothing(self) -> None:
        """Across seeds, every crash recovers every durable entry and only a prefix of a state the log was in."""
        failures = [f for f in map(crash_run, range(SEEDS)) if f is not None]
        self.assertEqual(failures, [])
