# -*- test-case-name: tests.test_sim_fs -*-
"""
An in-memory L{FileSystem} that remembers what is durable, and a disk that
makes fsyncs take simulated time.

The production L{WriteAheadLog} and L{MetadataStore} run unchanged on top of
it, so the simulator exercises their real fsync ordering.  The model:

  - Every file (an inode) has the bytes I{written} (what reads return, the
    page cache) and the bytes I{durable} (what survives a crash).  C{fsync}
    makes the written bytes durable.
  - Directory entries (create, rename, unlink) are likewise only I{written}
    until C{fsync_dir} of their directory makes that directory's entries
    durable.  Directories created by C{makedirs} become durable with an
    C{fsync_dir} of their parent.  The root C{/} always exists.
  - L{SimulatedFileSystem.crash} keeps only durable directory entries and
    durable file content.  With C{tear}, a file whose written content
    extends its durable content (the unsynced appends of an unfinished
    flush) keeps some of that extension, as a disk that writes dirty pages
    back in any order would leave it (a L{TearPlan}): the file's length is
    the old one, the new one, or anything between (the size update may or
    may not have reached the disk), and each 4 KiB page, or each 512-byte
    sector, of the extension is independently I{kept} (the new bytes),
    I{dropped} (never written: the old bytes, which past the old end are a
    hole of zeros), I{zero-filled} or I{garbled} (random bytes).  Bytes below
    the old end are never touched, even in a sector the extension shares:
    they were fsynced, and the disk rewrites a sector atomically with the
    same bytes there.  Unsynced writes over durable zeros (the WAL's
    preallocated segments) are torn the same way, from the first byte that
    changed.  A file whose unsynced change is anything else (a
    truncation, or non-zero bytes rewritten below its durable end) keeps
    its durable content: the production code fsyncs a truncation before
    writing over it, so such a change is always one whose fsync did not
    finish.
  - While a L{SimulatedDisk} job runs, fsyncs do not take effect at once:
    each is queued and takes effect after a simulated latency, in order, so
    a crash can land between a write and its fsync, or between two fsyncs
    of one job.  Outside jobs (recovery at start-up) they are immediate.
"""

from __future__ import annotations

import enum
import posixpath
import random
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from kvstore.storage.fs import FileSystem

__all__ = ["SimulatedFileSystem", "SimulatedDisk", "Fate", "TearPlan", "SECTOR", "PAGE", "torn_content"]

T = TypeVar("T")

SECTOR = 512
PAGE = 4096
_NON_ZERO = re.compile(rb"[^\x00]")


class Fate(enum.Enum):
    """What a crash does to one unsynced sector or page."""

    KEEP = "keep"  # the new bytes reached the disk
    DROP = "drop"  # they never did: the old bytes (a hole of zeros past the old end)
    ZERO = "zero"  # the disk wrote zeros
    GARBLE = "garble"  # the disk wrote random bytes


@dataclass(frozen=True)
class TearPlan:
    """
    How a crash tears one file's unsynced extension (module docstring).

    @ivar length: the file's length after the crash, between its durable
        and its written length.
    @ivar unit: L{SECTOR} or L{PAGE}: the granularity of C{fates}.
    @ivar fates: one per aligned unit overlapping the extension, from the
        one holding the old end on; missing ones are L{Fate.KEEP}.
    @ivar seed: for the random bytes of garbled units.
    """

    length: int
    unit: int = SECTOR
    fates: tuple[Fate, ...] = ()
    seed: int = 0

    def describe(self) -> str:
        letters = "".join(f.value[0] for f in self.fates)
        return f"{self.length}/{'page' if self.unit == PAGE else 'sector'}:{letters}"


def torn_content(durable: bytes, written: bytes, plan: TearPlan) -> bytes:
    """
    What a file whose C{written} content extends its C{durable} content
    holds after a crash torn as C{plan} says.
    """
    old_end = len(durable)
    if not (old_end <= plan.length <= len(written)) or not written.startswith(durable):
        raise ValueError("a tear plan applies to an unsynced extension only")
    content = bytearray(written[: plan.length])
    garbage = random.Random(plan.seed)
    first_unit = old_end // plan.unit
    for position, fate in enumerate(plan.fates):
        unit_start = (first_unit + position) * plan.unit
        start, end = max(unit_start, old_end), min(unit_start + plan.unit, plan.length)
        if start >= end:
            continue
        if fate in (Fate.DROP, Fate.ZERO):
            content[start:end] = bytes(end - start)
        elif fate is Fate.GARBLE:
            content[start:end] = garbage.randbytes(end - start)
    return bytes(content)


def _overwrite_of_zeros(durable: bytes, written: bytes) -> tuple[int, int] | None:
    """
    C{(start, end)} if C{written} differs from C{durable} only in bytes
    written over durable zeros (or past the durable end): C{start} is the
    first byte that differs, C{end} is just past the last non-zero byte
    written; else L{None}.
    """
    durable_end = len(durable.rstrip(b"\0"))
    end = len(written.rstrip(b"\0"))
    if end <= durable_end or written[:durable_end] != durable[:durable_end]:
        return None
    first = _NON_ZERO.search(written, durable_end)
    assert first is not None  # end > durable_end: some byte there is not zero
    return first.start(), end


def random_tear_plan(rng: random.Random, old_end: int, new_end: int) -> TearPlan:
    """A random L{TearPlan} for an extension from C{old_end} to C{new_end}."""
    # Biased towards damage that recovery must recognise (a garbled or
    # zeroed unit before intact ones, bytes after the last record): a
    # tail that is merely shorter is the easy case.
    roll = rng.random()
    if roll < 0.7:
        length = new_end
    elif roll < 0.75:
        length = old_end
    else:
        length = rng.randint(old_end, new_end)
    unit = rng.choice((SECTOR, PAGE))
    count = -(-new_end // unit) - old_end // unit
    fates: Sequence[Fate]
    roll = rng.random()
    if roll < 0.1:
        fates = ()  # only the length: a prefix of the extension
    elif roll < 0.15:
        fates = (Fate.KEEP,) * count  # it all reached the disk
    else:
        weights = rng.choice(((3, 1, 1, 1), (1, 1, 1, 1), (1, 0, 0, 1), (1, 1, 1, 0), (1, 0, 0, 3)))
        fates = rng.choices(list(Fate), weights=weights, k=count)
        if Fate.KEEP not in fates[1:] and count > 1 and rng.random() < 0.5:
            fates[rng.randrange(1, count)] = Fate.KEEP  # damage before intact units
        if all(f is Fate.KEEP for f in fates):
            fates[rng.randrange(count)] = rng.choice((Fate.DROP, Fate.ZERO, Fate.GARBLE))
    return TearPlan(length, unit, tuple(fates), rng.getrandbits(32))


class _Inode:
    __slots__ = ("data", "durable")

    def __init__(self) -> None:
        self.data = bytearray()
        self.durable = b""


def _parent(path: str) -> str:
    return posixpath.dirname(path) or "/"


class SimulatedFileSystem(FileSystem):
    """
    The L{FileSystem} API over memory, with crash semantics (module
    docstring).  Paths are POSIX paths; missing files raise
    L{FileNotFoundError} like C{os} would.

    @ivar durability_sink: when set (by L{SimulatedDisk} during a job),
        fsync and fsync_dir hand it a callable that applies their effect,
        instead of applying it at once.
    """

    def __init__(self) -> None:
        self._names: dict[str, _Inode] = {}  # written directory entries
        self._durable_names: dict[str, _Inode] = {}
        self._dirs: set[str] = {"/"}
        self._durable_dirs: set[str] = {"/"}
        self._fds: dict[int, _Inode] = {}
        self._next_fd = 3
        self._dead_below = 0  # descriptors below this belonged to a crashed process
        self.durability_sink: Callable[[Callable[[], None]], None] | None = None
        self.fsyncs = 0

    # -- helpers -------------------------------------------------------

    def _norm(self, path: str) -> str:
        return posixpath.normpath(path)

    def _check_dir(self, path: str) -> None:
        if _parent(path) not in self._dirs:
            raise FileNotFoundError(2, "No such file or directory", path)

    def _inode(self, path: str) -> _Inode:
        inode = self._names.get(self._norm(path))
        if inode is None:
            raise FileNotFoundError(2, "No such file or directory", path)
        return inode

    def _fd(self, fd: int) -> _Inode:
        inode = self._fds.get(fd)
        if inode is None:
            raise OSError(9, "Bad file descriptor")
        return inode

    def _durably(self, effect: Callable[[], None]) -> None:
        self.fsyncs += 1
        if self.durability_sink is None:
            effect()
        else:
            self.durability_sink(effect)

    # -- FileSystem API ------------------------------------------------

    def makedirs(self, path: str) -> bool:
        path = self._norm(path)
        if path in self._dirs:
            return False
        while path not in self._dirs:
            self._dirs.add(path)
            path = _parent(path)
        return True

    def listdir(self, path: str) -> list[str]:
        path = self._norm(path)
        if path not in self._dirs:
            raise FileNotFoundError(2, "No such file or directory", path)
        names = [posixpath.basename(p) for p in self._names if _parent(p) == path]
        names += [posixpath.basename(d) for d in self._dirs if d != "/" and _parent(d) == path]
        return sorted(names)

    def exists(self, path: str) -> bool:
        path = self._norm(path)
        return path in self._names or path in self._dirs

    def read_file(self, path: str) -> bytes:
        return bytes(self._inode(path).data)

    def _open(self, inode: _Inode) -> int:
        fd = self._next_fd
        self._next_fd += 1
        self._fds[fd] = inode
        return fd

    def open_rw(self, path: str) -> int:
        return self._open(self._inode(path))

    def create_truncate(self, path: str) -> int:
        path = self._norm(path)
        self._check_dir(path)
        inode = self._names.get(path)
        if inode is None:
            inode = self._names[path] = _Inode()
        else:
            del inode.data[:]
        return self._open(inode)

    def pwrite_all(self, fd: int, data: bytes, offset: int) -> None:
        inode = self._fd(fd)
        if offset > len(inode.data):
            inode.data.extend(bytes(offset - len(inode.data)))
        inode.data[offset : offset + len(data)] = data

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        return bytes(self._fd(fd).data[offset : offset + length])

    def file_size(self, fd: int) -> int:
        return len(self._fd(fd).data)

    def fsync(self, fd: int) -> None:
        inode = self._fd(fd)
        snapshot = bytes(inode.data)

        def effect() -> None:
            inode.durable = snapshot

        self._durably(effect)

    def ftruncate(self, fd: int, length: int) -> None:
        inode = self._fd(fd)
        if length < len(inode.data):
            del inode.data[length:]
        else:
            inode.data.extend(bytes(length - len(inode.data)))

    def close(self, fd: int) -> None:
        if fd < self._dead_below and fd not in self._fds:
            # A descriptor of the process that crashed: that process never
            # ran again, but its objects (a reader generator garbage-
            # collected later) may still try to close it.
            return
        self._fd(fd)
        del self._fds[fd]

    def replace(self, src: str, dst: str) -> None:
        src, dst = self._norm(src), self._norm(dst)
        inode = self._inode(src)
        self._check_dir(dst)
        del self._names[src]
        self._names[dst] = inode

    def unlink(self, path: str) -> None:
        path = self._norm(path)
        self._inode(path)
        del self._names[path]

    def fsync_dir(self, path: str) -> None:
        path = self._norm(path)
        if path not in self._dirs:
            raise FileNotFoundError(2, "No such file or directory", path)
        entries = {p: i for p, i in self._names.items() if _parent(p) == path}
        subdirs = {d for d in self._dirs if d != "/" and _parent(d) == path}

        def effect() -> None:
            for p in [p for p in self._durable_names if _parent(p) == path]:
                del self._durable_names[p]
            self._durable_names.update(entries)
            self._durable_dirs.difference_update({d for d in self._durable_dirs if d != "/" and _parent(d) == path})
            self._durable_dirs.update(subdirs)

        self._durably(effect)

    # -- simulation ----------------------------------------------------

    def makedirs_durable(self, path: str) -> None:
        """Create C{path} and its parents, durably (as an installer that
        prepared the data directory would have)."""
        self.makedirs(path)
        path = self._norm(path)
        self._durable_dirs.add(path)
        self._durable_dirs.update(_ancestors(path))

    def crash(
        self,
        rng: random.Random | None = None,
        tear: bool = False,
        plans: dict[str, TearPlan] | None = None,
    ) -> list[str]:
        """
        Lose everything not durable, as a power cut would; close every file
        descriptor.  With C{tear} (and C{rng}), each file whose unsynced
        content merely extends its durable content keeps part of that
        extension, torn by a random L{TearPlan}; C{plans} gives the plan for
        some paths instead (tests).  Returns a description of what was torn.
        """
        torn = []
        plans = {self._norm(p): plan for p, plan in (plans or {}).items()}
        # A directory survives only if it and all its ancestors are durable.
        dirs = {d for d in self._durable_dirs if all(a in self._durable_dirs for a in _ancestors(d))}
        names = {p: i for p, i in self._durable_names.items() if _parent(p) in dirs}
        for path in sorted(names):
            inode = names[path]
            written = bytes(inode.data)
            durable = inode.durable
            content = durable
            extends = len(written) > len(durable) and written.startswith(durable)
            plan = plans.get(path)
            if plan is None and extends and tear and rng is not None:
                plan = random_tear_plan(rng, len(durable), len(written))
            if plan is not None and extends:
                content = torn_content(durable, written, plan)
                if content != durable:
                    torn.append(f"{path}+{len(written) - len(durable)}:{plan.describe()}")
            elif plan is None and tear and rng is not None and written != durable:
                over = _overwrite_of_zeros(durable, written)
                if over is not None:
                    # Unsynced writes over durable zeros (a preallocated WAL
                    # segment): torn like an extension from the first byte
                    # that differs; a lost unit shows the zeros it hid.
                    start, end = over
                    plan = random_tear_plan(rng, start, end)
                    kept = torn_content(durable[:start], written[:end], plan)
                    size = len(written) if plan.length == end else len(durable)
                    content = kept + bytes(max(0, size - len(kept)))
                    if content != durable:
                        torn.append(f"{path}@{start}+{end - start}:{plan.describe()}")
            inode.data = bytearray(content)
            inode.durable = content
        self._names = dict(names)
        self._durable_names = dict(names)
        self._dirs = set(dirs)
        self._durable_dirs = set(dirs)
        self._fds.clear()
        self._dead_below = self._next_fd
        self.durability_sink = None
        return torn

    def durable_listdir(self, path: str) -> list[str]:
        """The names in directory C{path} that a crash now would keep (not
        counting tearing, which only touches content): durable entries of a
        directory that is durable with all its ancestors."""
        path = self._norm(path)
        if not all(d in self._durable_dirs for d in [path, *_ancestors(path)]):
            return []
        return sorted(posixpath.basename(p) for p in self._durable_names if _parent(p) == path)

    def durable_content(self, path: str) -> bytes | None:
        """What C{path} would hold after a crash without tearing (for tests)."""
        inode = self._durable_names.get(self._norm(path))
        return None if inode is None else inode.durable


def _ancestors(path: str) -> list[str]:
    result = []
    while path != "/":
        path = _parent(path)
        result.append(path)
    return result


class SimulatedDisk:
    """
    The thread runner for one incarnation of a node: runs the blocking job at
    once against the L{SimulatedFileSystem} (its writes land in the page
    cache), applies each of its fsyncs after a simulated latency on a
    single-queue disk, and fires the Deferred when the last one is done.
    After L{kill} (the process crashed) nothing more takes effect and no
    Deferred fires.
    """

    def __init__(
        self,
        clock: IReactorTime,
        rng: random.Random,
        fs: SimulatedFileSystem,
        latency: Callable[[random.Random], float] = lambda rng: rng.uniform(0.0002, 0.003),
    ) -> None:
        self._clock = clock
        self._rng = rng
        self._fs = fs
        self._latency = latency
        self._busy_until = 0.0
        self.alive = True
        self.jobs = 0

    @property
    def filesystem(self) -> SimulatedFileSystem:
        """The file system whose fsyncs this disk delays."""
        return self._fs

    def kill(self) -> None:
        self.alive = False

    def __call__(self, f: Callable[[], T]) -> "Deferred[T]":
        self.jobs += 1
        d: Deferred[T] = Deferred()
        effects: list[Callable[[], None]] = []
        fs = self._fs
        fs.durability_sink = effects.append
        outcome: Any
        try:
            outcome = f()
        except BaseException:
            outcome = Failure()
        finally:
            fs.durability_sink = None
        now = self._clock.seconds()
        at = max(now, self._busy_until)
        for effect in effects:
            at += self._latency(self._rng)
            self._clock.callLater(at - now, self._apply, effect)
        at += 0.00001
        self._busy_until = at
        self._clock.callLater(at - now, self._finish, d, outcome)
        return d

    def _apply(self, effect: Callable[[], None]) -> None:
        if self.alive:
            effect()

    def _finish(self, d: "Deferred[Any]", outcome: Any) -> None:
        if not self.alive:
            return
        if isinstance(outcome, Failure):
            d.errback(outcome)
        else:
            d.callback(outcome)
