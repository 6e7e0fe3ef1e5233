# -*- test-case-name: tests.fault.test_faults -*-
"""
What the fault suite records of every client operation: a L{Record} per
request, the thread-safe L{History} of them, L{classify}, which reads a
reply line into the operation's outcome (known, failed, or unknown), and
L{settle}, which does the same from what the client library returned or
raised.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from kvstore.client.errors import KeyNotFound, NotApplied, ProtocolError

__all__ = ["FAILED", "History", "OK_STATUS", "Record", "UNEXPECTED", "UNKNOWN", "classify", "settle"]


OK_STATUS = "ok"  # the outcome is known (a value, OK, or not-found)
FAILED = "failed"  # definitely had no effect (Not leader, a read refused)
UNKNOWN = "unknown"  # may or may not have taken effect
UNEXPECTED = "unexpected"  # a reply that answers another request (a bug); outcome unknown


@dataclass
class Record:
    """
    One client operation, in the shape of
    L{kvstore.testing.sim.linearizability.Operation} plus its C{status}.
    C{kind} is C{"put"}, C{"get"} or C{"delete"}; C{result} is the value
    read (None: missing) for a get, C{"ok"} for a put, C{"ok"} or
    C{"not-found"} for a delete.  Times are C{time.monotonic()}.
    """

    client: object
    kind: str
    key: str
    value: str | None
    invoke: float
    node: int
    status: str = UNKNOWN
    result: str | None = None
    complete: float | None = None
    reply: str | None = None


class History:
    """A thread-safe list of L{Record}s."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: list[Record] = []

    def add(self, record: Record) -> Record:
        with self._lock:
            self.records.append(record)
        return record

    def snapshot(self) -> list[Record]:
        with self._lock:
            return list(self.records)

    def operations(self) -> list:
        """
        The history for C{kvstore.testing.sim.linearizability.check_history}:
        known outcomes with their completion, unknown ones with
        C{complete=None}; operations that certainly had no effect are left
        out.
        """
        from kvstore.testing.sim.linearizability import Operation

        ops = []
        for r in self.snapshot():
            if r.status == FAILED:
                continue
            known = r.status == OK_STATUS
            ops.append(Operation(r.client, r.kind, r.key, r.value, r.result if known else None, r.invoke,
                                 r.complete if known else None))
        return ops


def classify(record: Record, reply: str, complete: float) -> None:
    """
    Set C{record}'s outcome from the node's reply line.

    A reply that is neither this request's success line nor an error line
    (the reply of another request: replies crossed on a pipelined
    connection) is L{UNEXPECTED}, never taken for a refusal; see
    L{check_replies}.
    """
    record.reply = reply
    key = record.key
    # An error about the key names this key; any other error is a refusal.
    refusal = reply.startswith("Error: ") and not reply.startswith("Error: Key ")
    if record.kind == "get":
        prefix = f"value of {key}: "
        if reply.startswith(prefix):
            record.status, record.result = OK_STATUS, reply[len(prefix):]
        elif reply == f"Error: Key {key} not found":
            record.status, record.result = OK_STATUS, None
        elif refusal:
            record.status = FAILED  # a refused read changes nothing
        else:
            record.status = UNEXPECTED
    elif record.kind == "put":
        if reply == f"{key} added successfully.":
            record.status, record.result = OK_STATUS, "ok"
        elif reply.startswith("Error: Not leader."):
            record.status = FAILED
        elif refusal:
            record.status = UNKNOWN
        else:
            record.status = UNEXPECTED
    else:
        if reply == f"{key} deleted successfully.":
            record.status, record.result = OK_STATUS, "ok"
        elif reply == f"Error: Key {key} not found":
            record.status, record.result = OK_STATUS, "not-found"
        elif reply.startswith("Error: Not leader."):
            record.status = FAILED
        elif refusal:
            record.status = UNKNOWN
        else:
            record.status = UNEXPECTED
    if record.status == OK_STATUS:
        record.complete = complete


def settle(record: Record, complete: float, result: str | None = None, error: BaseException | None = None) -> None:
    """
    Set C{record}'s outcome from one call of the client library: its
    C{result} (a get's value), or the C{error} it raised.  C{complete} is
    when the call returned; it is kept only for a known outcome.

    The library's exceptions carry exactly the distinctions the checkers
    need: L{KeyNotFound} is a known outcome (a get of nothing, a delete that
    found nothing); L{NotApplied} certainly changed nothing; a
    L{ProtocolError} is a reply that answers another request (a bug, see
    L{check_replies}); anything else (L{kvstore.client.errors.OutcomeUnknown}
    above all) leaves a write's outcome unknown.  A read that failed changed
    nothing, whatever the reason.
    """
    if error is None:
        record.status, record.result = OK_STATUS, (result if record.kind == "get" else "ok")
        record.reply = "ok" if record.kind != "get" else f"value {result!r}"
    else:
        record.reply = f"{type(error).__name__}: {error}"
        if isinstance(error, ProtocolError) or (isinstance(error, KeyNotFound) and record.kind == "put"):
            record.status = UNEXPECTED
        elif isinstance(error, KeyNotFound):
            record.status, record.result = OK_STATUS, (None if record.kind == "get" else "not-found")
        elif isinstance(error, NotApplied) or record.kind == "get":
            record.status = FAILED
        else:
            record.status = UNKNOWN
    if record.status == OK_STATUS:
        record.complete = complete
