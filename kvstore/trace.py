# -*- test-case-name: tests.test_trace_stages -*-
"""
Per-stage timestamps of replicated writes, for C{kvstore-bench --trace}.

Why: one write crosses three processes, two threads per process and several
reactor iterations; a profiler shows where CPU goes, not where a
microsecond of wall-clock latency is spent waiting.  With tracing on, each
node records C{(time.monotonic_ns(), stage, index)} at every hand-off of a
write (client bytes received, proposed, WAL enqueued, flush started and
ended on the storage thread, AppendEntries sent and received, acknowledgement
sent and received, committed, applied, reply written) and writes them to a
file when it exits.  C{CLOCK_MONOTONIC} is one clock for every process on the
machine, so the bench can line the stages of all nodes up against the
client's own send and receive times (L{kvstore.tools.bench.stage_breakdown}).

Off by default and then free but for one module-global test at each stage:
call sites are written C{if trace.ENABLED: trace.record(...)}.  It is
switched on by the environment variable C{KVSTORE_TRACE_DIR} (a directory;
the file is C{trace-<pid>.jsonl}, written by L{save} when the node stops),
which C{kvstore-bench --trace} sets for the nodes it starts.  It is a diagnostic, not a log: at most
L{MAX_EVENTS} events are kept.
"""

from __future__ import annotations

import atexit
import json
import os
import time

from twisted.logger import Logger

__all__ = ["ENABLED", "ENVIRONMENT_VARIABLE", "MAX_EVENTS", "record", "events", "dump", "enable", "save"]

#: Names the directory trace files go to; unset means tracing is off.
ENVIRONMENT_VARIABLE = "KVSTORE_TRACE_DIR"

#: Events kept at most (about 100 MB of tuples); later ones are dropped.
MAX_EVENTS = 1_000_000

ENABLED = False

_events: list[tuple[int, str, int | None]] = []
_directory: str | None = None

_log = Logger()


def record(stage: str, index: int | None = None) -> None:
    """Note that the write with log C{index} (None: not known here) passed
    C{stage} now.  Safe from any thread (a list append)."""
    if len(_events) < MAX_EVENTS:
        _events.append((time.monotonic_ns(), stage, index))


def events() -> list[tuple[int, str, int | None]]:
    """The events recorded so far (the live list)."""
    return _events


def dump(path: str) -> None:
    """Write the events to C{path}, one JSON array C{[ns, stage, index]} a line."""
    with open(path, "w") as f:
        for event in list(_events):
            f.write(json.dumps(event) + "\n")


def enable(directory: str | None) -> None:
    """
    Switch tracing on, dumping to C{directory} at exit, if C{directory} is
    given; called at import with the environment's setting.
    """
    global ENABLED, _directory
    if not directory or ENABLED:
        return
    ENABLED = True
    _directory = directory
    atexit.register(save)


def save() -> None:
    """
    Write the events to the directory tracing was enabled with (no-op when
    off).  Called when the node stops: twistd ends a process stopped by a
    signal by re-raising the signal, so C{atexit} handlers do not run then.
    """
    if _directory is None:
        return
    path = os.path.join(_directory, f"trace-{os.getpid()}.jsonl")
    try:
        dump(path)
    except OSError:
        # A diagnostic must not break the node's stop: it is called from
        # Node.stop, and an exception there would skip the rest of the
        # service's shutdown (closing the log, releasing the data lock).
        _log.failure("could not write the trace file {path}", path=path)


enable(os.environ.get(ENVIRONMENT_VARIABLE))
