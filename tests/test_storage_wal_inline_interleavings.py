# -*- test-case-name: tests.test_storage_wal_inline_interleavings -*-
"""
Random interleavings of a write-ahead log's mutations (append, sync,
truncate_suffix, reset_after, drop_prefix, segment roll-over, close) with
flushes that run inline at the end of a reactor turn or on a (manual)
storage thread, in any order the two can finish: each sync fires, in call
order, only when every byte written so far is fsynced and the log reopened
from disk holds every entry up to the durable index it reports.  The
simulator does not take the inline path (it opens its logs without an
L{InlineFlushPolicy}), so this is where those interleavings are checked.
"""

from __future__ import annotations

import random
import shutil
from typing import Any

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.storage import LogEntry, WriteAheadLog
from kvstore.storage.fs import FileSystem
from kvstore.storage.wal import InlineFlushPolicy
from kvstore.testing.runners import ManualRunner
from tests.test_storage_wal_inline_flush import _FakeTimer


class _DirtyTrackingFileSystem(FileSystem):
    """The real file system, noting which files hold writes not yet fsynced
    (a file unlinked or renamed over no longer counts: its bytes are gone)."""

    def __init__(self) -> None:
        self.paths: dict[int, str] = {}
        self.dirty: set[str] = set()

    def open_rw(self, path: str) -> int:
        fd = super().open_rw(path)
        self.paths[fd] = path
        return fd

    def create_truncate(self, path: str) -> int:
        fd = super().create_truncate(path)
        self.paths[fd] = path
        return fd

    def pwrite_all(self, fd: int, data: bytes, offset: int) -> None:
        super().pwrite_all(fd, data, offset)
        self.dirty.add(self.paths[fd])

    def fsync(self, fd: int) -> None:
        super().fsync(fd)
        self.dirty.discard(self.paths[fd])

    def close(self, fd: int) -> None:
        super().close(fd)
        del self.paths[fd]

    def replace(self, src: str, dst: str) -> None:
        super().replace(src, dst)
        self.dirty.discard(dst)
        if src in self.dirty:
            self.dirty.discard(src)
            self.dirty.add(dst)

    def unlink(self, path: str) -> None:
        super().unlink(path)
        self.dirty.discard(path)


#: Each step's kind and weight: mostly small appends, syncs and reactor
#: turns (so that many flushes run inline), sometimes a thread pass, a big
#: append (a thread flush, a roll-over), a truncation, a reset, a prefix
#: drop, or a disk that turns slow (the back-off) or fast again.
_WEIGHTS = {
    "append": 8, "big": 1, "sync": 6, "turn": 5, "thread": 3,
    "truncate": 1, "reset": 0.5, "drop": 1, "slow": 0.5, "fast": 0.5,
}


def _steps(rng: random.Random, count: int) -> list[str]:
    return rng.choices(list(_WEIGHTS), weights=list(_WEIGHTS.values()), k=count)


#: Random runs of the test (each 60 steps, deterministic per seed).
SEEDS = 150


class InlineInterleavingTests(SynchronousTestCase):
    def test_acknowledged_means_fsynced_and_recoverable(self) -> None:
        """Every sync fires in order, with nothing written left unsynced, and
        the log on disk holds every entry up to the index it reports."""
        inline = 0
        for seed in range(SEEDS):
            with self.subTest(seed=seed):
                inline += self._one_run(random.Random(seed))
        # The interleavings above are worth something only if many flushes
        # ran inline.
        self.assertGreater(inline, SEEDS * 2)

    def _one_run(self, rng: random.Random) -> int:
        steps = _steps(rng, 60)
        close_early = rng.random() < 0.2
        directory = self.mktemp()
        fs = _DirtyTrackingFileSystem()
        runner = ManualRunner()
        clock = Clock()
        timer = _FakeTimer()
        policy = InlineFlushPolicy(clock, timer=timer)
        log = WriteAheadLog.open(
            directory, segment_bytes=16384, preallocate_bytes=8192, run_in_thread=runner, fs=fs, inline_flush=policy
        )
        fired: list[int] = []
        problems: list[str] = []
        term = 1
        slow = False
        syncs = 0
        closed = None

        def sync() -> None:
            nonlocal syncs
            syncs += 1
            log.sync().addCallback(check, syncs)

        def check(durable: int, number: int) -> int:
            fired.append(number)
            if fs.dirty:
                problems.append(f"sync {number} fired with unsynced writes to {sorted(fs.dirty)}")
            copy = self.mktemp()
            shutil.copytree(directory, copy)
            reopened = WriteAheadLog.open(copy, run_in_thread=lambda f: succeed(f()), preallocate_bytes=8192)
            try:
                for index in range(max(log.first_index, reopened.first_index), durable + 1):
                    if index > reopened.last_index or reopened.entry(index) != log.entry(index):
                        problems.append(f"sync {number} reported {durable} but entry {index} is not on disk")
                        break
            finally:
                reopened.close()
            if closed is None and rng.random() < 0.3:
                # A waiter that appends and syncs again (as the node's
                # callbacks do): it joins the next flush, in order.
                first = log.last_index + 1
                log.append([LogEntry(first, term, b"%d.again" % first)])
                sync()
            return durable

        def slow_fsync(original: Any) -> Any:
            def fsync(fd: int) -> None:
                original(fd)
                if slow:
                    timer.now += 0.01
            return fsync

        fs.fsync = slow_fsync(fs.fsync)  # type: ignore[method-assign]
        # Warm up: the first flushes create and open the segment (thread
        # jobs); from then on small ones run inline.
        for index in (1, 2):
            log.append([LogEntry(index, term, b"warm")])
            warm = log.sync()
            clock.advance(0)
            runner.release_all()
            self.successResultOf(warm)
        for kind in steps:
            if kind in ("append", "big"):
                first = log.last_index + 1
                size = rng.choice([8, 40, 200] if kind == "append" else [900, 3000, 9000])
                count = rng.randint(1, 3)
                log.append([LogEntry(first + i, term, b"%d." % (first + i) + b"v" * size) for i in range(count)])
            elif kind == "sync":
                sync()
            elif kind == "turn":
                clock.advance(0)
            elif kind == "thread":
                runner.release_all()
            elif kind == "truncate":
                at = log.last_index - rng.randint(0, 6)
                if at >= log.first_index:
                    log.truncate_suffix(at)
                    term += 1
            elif kind == "reset":
                term += 1
                log.reset_after(log.last_index + rng.randint(0, 3), term)
            elif kind == "drop":
                log.drop_prefix(log.first_index + rng.randint(0, 6) - 1)
            elif kind == "slow":
                slow = True
            else:
                slow = False
                timer.now += 100  # past any back-off
            if close_early and closed is None and syncs >= 2:
                closed = log.close()
                break
        if closed is None:
            sync()
            closed = log.close()
        for _ in range(100):
            if closed.called:
                break
            clock.advance(0)
            runner.release_all()
        self.successResultOf(closed)
        self.assertEqual(problems, [])
        self.assertEqual(fired, list(range(1, syncs + 1)))
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertFalse(fs.dirty)
        return policy.inline_flushes - 2  # beyond the warm-up
