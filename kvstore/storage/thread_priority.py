# -*- test-case-name: tests.test_storage_thread_priority -*-
"""
Lowering the CPU priority of the calling thread: for background file work
(the snapshots' thread) that must not take a CPU from the reactor.

Why per thread: on Linux a thread is a task of its own, and
C{setpriority(PRIO_PROCESS, tid, ...)} changes only that task's nice value,
so a node's snapshot thread can yield to the node's reactor without
touching the write-ahead log's thread (whose fsyncs are on every write's
path) or the reactor itself.  On other systems the "process" of
C{setpriority} is the whole process and a thread id is not a pid, so
nothing is done there.

Raising one's own nice value needs no privilege, but a sandbox may still
refuse it (seccomp, a read-only C{/proc}); it is an optimisation, so any
refusal leaves the thread as it was, silently.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Callable

__all__ = ["lower_thread_priority", "BACKGROUND_NICE_INCREMENT", "MAX_NICE"]

#: Nice levels added to a background thread's: each level is about 1.25x
#: less CPU weight, so 10 levels give it about a tenth of its previous
#: share when the CPU is contended (and all of it when it is not).
BACKGROUND_NICE_INCREMENT = 10
#: The highest (least favoured) nice value Linux allows.
MAX_NICE = 19


def lower_thread_priority(
    increment: int = BACKGROUND_NICE_INCREMENT,
    *,
    platform: str = sys.platform,
    native_id: Callable[[], int] = threading.get_native_id,
    getpriority: Callable[[int, int], int] | None = None,
    setpriority: Callable[[int, int, int], None] | None = None,
) -> int | None:
    """
    Add C{increment} to the calling thread's nice value (at most
    L{MAX_NICE}).

    @return: the thread's nice value afterwards, or C{None} if it could not
        be changed (not Linux, no C{setpriority}, or refused); never raises.
    """
    if not platform.startswith("linux"):
        return None
    get = getpriority if getpriority is not None else getattr(os, "getpriority", None)
    set_ = setpriority if setpriority is not None else getattr(os, "setpriority", None)
    which = getattr(os, "PRIO_PROCESS", 0)
    if get is None or set_ is None:
        return None
    try:
        tid = native_id()
        wanted = min(MAX_NICE, get(which, tid) + increment)
        set_(which, tid, wanted)
    except OSError:
        return None
    return wanted
