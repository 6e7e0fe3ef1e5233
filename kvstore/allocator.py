# -*- test-case-name: tests.test_allocator_tuning -*-
"""
Keep glibc's malloc from letting a long-running node's memory creep up.

A node makes large short-lived buffers over and over: 1 MiB snapshot chunks
(made on the reactor, written and freed on the snapshot thread), peer
messages of up to a few MiB, the log's flush buffers.  glibc serves a block
of at least C{M_MMAP_THRESHOLD} bytes (128 KiB to begin with) with its own
C{mmap} and gives it back to the kernel when freed.  But the threshold is
I{dynamic}: each time such a block is freed, glibc raises the threshold to
its size (up to 32 MiB on 64-bit).  After the first snapshot every 1 MiB
chunk therefore comes from the heap instead; freed chunks leave holes
between the small objects allocated meanwhile, the heap cannot shrink past
the highest live block, and the node's RSS creeps up for the first million
writes or so before it settles (docs/performance.md, "Log compaction",
figure 1: 1.22x from 200,000 to 2,000,000 writes, against the issue's 1.2x).

L{tune_allocator} pins the threshold at 128 KiB with C{mallopt}, which
also turns off the dynamic adjustment, so large buffers always come from
C{mmap} and leave nothing behind; its cost is an C{mmap}/C{munmap} pair per
large buffer (a few microseconds per MiB).  L{release_free_memory} hands
the heaps' free pages back to the kernel (C{malloc_trim(0)}), for after a
large one-off release such as replacing the state machine with an
installed snapshot.

Only glibc has these knobs (C{mallopt} itself exists elsewhere but with
other constants): on any other C library, or if the operator already chose
the threshold through the environment (C{MALLOC_MMAP_THRESHOLD_} or
C{GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...}), nothing is changed and
the reason is logged.  Python's own small-object allocator is not affected
(it takes its arenas straight from C{mmap}).
"""

from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from twisted.logger import Logger

__all__ = [
    "DEFAULT_MMAP_THRESHOLD",
    "AllocatorTuning",
    "current_settings",
    "large_buffers_from_the_heap",
    "release_free_memory",
    "tune_allocator",
]

log = Logger()

#: glibc's initial threshold, kept fixed: blocks this large or larger are
#: mmapped one by one.
DEFAULT_MMAP_THRESHOLD = 128 * 1024

#: The threshold while recovering (L{large_buffers_from_the_heap}): above
#: the snapshot's 1 MiB chunks and the tables of a map of a million keys
#: as it grows (each resize frees the last one).
RECOVERY_MMAP_THRESHOLD = 64 * 1024 * 1024

#: mallopt parameter numbers (glibc's malloc.h).
M_MMAP_THRESHOLD = -3

#: The environment settings through which an operator may already have
#: chosen the threshold (glibc reads them at start-up).
_ENVIRONMENT_SETTINGS = ("MALLOC_MMAP_THRESHOLD_",)
_TUNABLE = "glibc.malloc.mmap_threshold"


@dataclass(frozen=True)
class AllocatorTuning:
    """
    What L{tune_allocator} did.

    @ivar applied: whether the threshold was set.
    @ivar mmap_threshold: the threshold set, or L{None}.
    @ivar reason: why not, if not applied; or what was done.
    """

    applied: bool
    mmap_threshold: int | None
    reason: str


_last: AllocatorTuning | None = None
#: The C library the threshold was pinned through, if it was.
_tuned_libc: Any = None


def _load_glibc() -> Any:
    """The running process's C library, if it is glibc; else L{None}."""
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    libc.glibc_version = version().decode("ascii", "replace")  # type: ignore[attr-defined]
    return libc


def _operator_choice(environ: Mapping[str, str]) -> str | None:
    for name in _ENVIRONMENT_SETTINGS:
        if name in environ:
            return f"{name}={environ[name]}"
    if _TUNABLE in environ.get("GLIBC_TUNABLES", ""):
        return f"GLIBC_TUNABLES={environ['GLIBC_TUNABLES']}"
    return None


def tune_allocator(
    mmap_threshold: int = DEFAULT_MMAP_THRESHOLD,
    *,
    environ: Mapping[str, str] = os.environ,
    load_libc: Callable[[], Any] = _load_glibc,
) -> AllocatorTuning:
    """
    Pin glibc's mmap threshold at C{mmap_threshold} bytes (see the module
    docstring); a logged no-op on another C library or when the operator
    chose a threshold in the environment.  Call it once at start-up, before
    the node allocates its large buffers.

    @param environ: the process environment (for tests).
    @param load_libc: returns the C library if it is glibc, else L{None}
        (for tests).
    """
    global _last, _tuned_libc
    chosen = _operator_choice(environ)
    libc = None if chosen is not None else load_libc()
    if chosen is not None:
        result = AllocatorTuning(False, None, f"the environment already sets it ({chosen})")
    elif libc is None:
        result = AllocatorTuning(False, None, "not glibc: its mallopt has other parameters")
    elif libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(mmap_threshold)) != 1:
        result = AllocatorTuning(False, None, f"mallopt(M_MMAP_THRESHOLD, {mmap_threshold}) refused it")
    else:
        version = getattr(libc, "glibc_version", "?")
        result = AllocatorTuning(True, mmap_threshold, f"glibc {version}: mmap threshold pinned at {mmap_threshold} bytes")
    _last = result
    _tuned_libc = libc if result.applied else None
    if result.applied:
        log.info("malloc: {reason}", reason=result.reason)
    else:
        log.info("malloc left as it is: {reason}", reason=result.reason)
    return result


@contextmanager
def large_buffers_from_the_heap(threshold: int = RECOVERY_MMAP_THRESHOLD) -> Iterator[None]:
    """
    While the block runs, let buffers below C{threshold} bytes come from the
    heap again, if L{tune_allocator} pinned the threshold; then pin it back
    and give the heap's free pages back to the kernel.

    For start-up's recovery: it reads a snapshot of 100 MB or more in 1 MiB
    chunks, one at a time, and with the threshold pinned every chunk would
    be a fresh C{mmap} whose 256 pages each fault in, and so would every
    table of the growing map (about 0.1 s of CPU for 1,000,000 keys,
    measured with C{benchmarks/restart_profile.py}).  From the heap, each
    chunk reuses the last one's memory; the trim at the end returns the
    heap's free pages, so what is left is the map itself.  A no-op if the
    threshold was not pinned.
    """
    libc = _tuned_libc
    if libc is None or _last is None or _last.mmap_threshold is None:
        yield
        return
    libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(threshold))
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(_last.mmap_threshold))
        libc.malloc_trim(ctypes.c_size_t(0))


def release_free_memory(load_libc: Callable[[], Any] = _load_glibc) -> bool:
    """
    Give the heaps' free pages back to the kernel (glibc's C{malloc_trim(0)});
    return whether any memory was released.  A no-op returning C{False} on
    another C library.  It walks every heap: call it after a large one-off
    release (a replaced state machine), not on a hot path.
    """
    libc = load_libc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(ctypes.c_size_t(0)))


def current_settings() -> dict[str, object]:
    """What the last L{tune_allocator} did, for diagnostics."""
    if _last is None:
        return {"tuned": False, "reason": "tune_allocator was not called"}
    return {"tuned": _last.applied, "mmap_threshold": _last.mmap_threshold, "reason": _last.reason}
