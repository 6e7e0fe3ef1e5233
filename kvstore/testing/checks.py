# -*- test-case-name: tests.fault.test_faults -*-
"""
Checks and figures over a fault scenario's history: no acknowledged write
lost (L{check_no_lost_writes}, independent of the linearizability checker in
L{kvstore.testing.sim.linearizability}), the longest stretch without a
successful write, and the scenario's summary.
"""

from __future__ import annotations

import math
from typing import Sequence

from kvstore.testing.history import FAILED, OK_STATUS, UNEXPECTED, UNKNOWN, Record
from kvstore.testing.workload import TermMonitor

__all__ = ["check_no_lost_writes", "check_replies", "longest_write_gap", "summarize"]


def check_no_lost_writes(records: Sequence[Record], final: dict[str, str | None]) -> list[str]:
    """
    Check each key's final value (read linearizably after the faults)
    against the history, independently of the linearizability checker:
    it must have been written by some put, and no acknowledged write may
    have been certainly ordered after the write that produced it (that
    write would be lost).  A key with an acknowledged write but no final
    read cannot be checked, and is reported too.  Return the violations.
    """
    problems = []
    by_key: dict[str, list[Record]] = {}
    for r in records:
        if r.kind != "get" and r.status != FAILED:
            by_key.setdefault(r.key, []).append(r)
    for key in sorted(set(by_key) - set(final)):
        if any(w.status == OK_STATUS for w in by_key[key]):
            problems.append(f"{key}: acknowledged writes but no final read, so they were not checked")
    for key, value in final.items():
        writes = by_key.get(key, [])
        acked = [w for w in writes if w.status == OK_STATUS and not (w.kind == "delete" and w.result == "not-found")]
        if value is None:
            # Deletes that may have removed a value: not those that found none.
            deletes = [w for w in writes if w.kind == "delete" and not (w.status == OK_STATUS and w.result == "not-found")]
            for a in acked:
                if a.kind == "put" and not any((math.inf if d.complete is None else d.complete) > a.invoke
                                               for d in deletes):
                    problems.append(f"{key}: acknowledged {a.kind} of {a.value!r} (reply at {a.complete:.3f}) "
                                    f"lost: the key is missing and no delete could follow it")
            continue
        producers = [w for w in writes if w.kind == "put" and w.value == value]
        if not producers:
            problems.append(f"{key}: final value {value!r} was never written")
            continue
        p = producers[0]
        if p.complete is None:
            continue  # an unknown write may take effect at any time
        for a in acked:
            if a is not p and a.invoke > p.complete:
                problems.append(f"{key}: acknowledged {a.kind} {a.value!r} (invoked {a.invoke:.3f}) lost: the final "
                                f"value {value!r} was written by an operation complete at {p.complete:.3f}")
    return problems


def check_replies(records: Sequence[Record]) -> list[str]:
    """Every L{UNEXPECTED} reply (one that answers another request), as a
    problem to report: the other checks can only treat it as unknown."""
    return [f"{r.kind} {r.key} on node {r.node} (client {r.client}) got the reply {r.reply!r}"
            for r in records if r.status == UNEXPECTED]


def longest_write_gap(records: Sequence[Record], start: float, end: float) -> float:
    """The longest interval in C{[start, end]} with no write acknowledged."""
    times = sorted(r.complete for r in records
                   if r.kind != "get" and r.status == OK_STATUS and r.complete is not None and start <= r.complete <= end)
    points = [start, *times, end]
    return max(b - a for a, b in zip(points, points[1:]))


def summarize(name: str, records: Sequence[Record], monitor: TermMonitor, start: float, end: float) -> dict:
    counts = {OK_STATUS: 0, FAILED: 0, UNKNOWN: 0, UNEXPECTED: 0}
    writes = {OK_STATUS: 0, FAILED: 0, UNKNOWN: 0, UNEXPECTED: 0}
    for r in records:
        counts[r.status] += 1
        if r.kind != "get":
            writes[r.status] += 1
    figures = {
        "scenario": name,
        "ops": len(records),
        "ok": counts[OK_STATUS],
        "failed": counts[FAILED],
        "unknown": counts[UNKNOWN],
        "writes_ok": writes[OK_STATUS],
        "writes_unknown": writes[UNKNOWN],
        "elections": monitor.elections,
        "longest_no_write_s": round(longest_write_gap(records, start, end), 2),
        "seconds": round(end - start, 1),
    }
    return figures
