# -*- test-case-name: tests.test_sim_linearizability -*-
"""
A linearizability checker for key-value histories (Wing and Gong's search,
with Lowe's memoization of visited states, as in Porcupine and Knossos).

A history is a list of L{Operation}s, each with the time it was invoked and
the time it completed, or C{complete=None} when its outcome is unknown (a
timeout, C{OutcomeUnknown}, the serving node crashed).  The history is
linearizable if every operation can be given a point in time between its
invocation and completion such that the results are those of a single
register per key executed in that order.  An operation with an unknown
outcome may take effect at any time after its invocation, or never; an
unknown read constrains nothing and is ignored.  Besides put, get and
delete, the register has the two writes whose result depends on its value
(issue 14): INCR (a missing key counts as 0; a value that is not a signed
64-bit decimal integer, or a sum outside that range, is refused and
changes nothing) and CAS (sets the new value only over the expected one).

Keys are independent (P-compositionality): each key's sub-history is
checked alone, which keeps the search small.  Unknown writes that no
completed operation could have observed are dropped before the search (see
L{_unobservable}): choosing "never took effect" for them loses no
linearization, and each one would double the states to explore.  The search
is bounded by C{max_states} per key; when the bound is hit the result is
I{inconclusive} (C{ok} is True, C{inconclusive} names the key, C{passed} is
False) rather than a wrong answer or a hang.  An inconclusive result is not
a pass: callers count and report it (C{kvstore-sim} fails a soak with too
many).

The API is deliberately small so that the real-process fault tests can use
it too::

    result = check_history([Operation(...), ...])
    assert result.ok, result.details
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

__all__ = ["Operation", "Result", "check_history", "check_key", "PUT", "GET", "DELETE", "INCR", "CAS", "OK",
           "NOT_FOUND", "NOT_INTEGER", "OVERFLOW", "MISMATCH", "mismatch"]

PUT = "put"
GET = "get"
DELETE = "delete"
INCR = "incr"
CAS = "cas"

#: The result of a successful put or CAS, or of a delete that removed a value.
OK = "ok"
#: The result of a delete or CAS of a missing key; a get of a missing key
#: has result L{None}.
NOT_FOUND = "not-found"
#: The results of an INCR that changed nothing; a successful one has the
#: new value (a decimal string) as its result.
NOT_INTEGER = "not-integer"
OVERFLOW = "overflow"
#: How the result of a CAS that found another value starts (L{mismatch}).
MISMATCH = "mismatch:"

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_INTEGER = re.compile(r"-?[0-9]+\Z")


def mismatch(actual: str) -> str:
    """The result of a CAS that found C{actual} instead of the expected value."""
    return MISMATCH + actual


@dataclass(frozen=True)
class Operation:
    """
    One client operation.

    @ivar client: who issued it (for messages only).
    @ivar kind: L{PUT}, L{GET}, L{DELETE}, L{INCR} or L{CAS}.
    @ivar value: the value a put or a CAS writes, an INCR's delta as a
        decimal string (None otherwise).
    @ivar result: for a get, the value read (None: the key was missing); for
        a put, L{OK}; for a delete, L{OK} or L{NOT_FOUND}; for an INCR, the
        new value, L{NOT_INTEGER} or L{OVERFLOW}; for a CAS, L{OK},
        L{NOT_FOUND} or C{mismatch(actual)}.  Ignored when the outcome is
        unknown.
    @ivar invoke: when the client sent it.
    @ivar complete: when the client got the result; None if unknown.
    @ivar expected: the value a CAS expects (None otherwise).
    """

    client: object
    kind: str
    key: str
    value: Optional[str]
    result: Optional[str]
    invoke: float
    complete: Optional[float]
    expected: Optional[str] = None

    def __str__(self) -> str:
        end = "?" if self.complete is None else f"{self.complete:.6f}"
        arg = (f"({self.value!r})" if self.kind in (PUT, INCR) else
               f"({self.expected!r}->{self.value!r})" if self.kind == CAS else "")
        res = "unknown" if self.complete is None else repr(self.result)
        return f"[{self.invoke:.6f}..{end}] client {self.client}: {self.kind} {self.key}{arg} -> {res}"


@dataclass
class Result:
    """
    @ivar ok: False only if a key's history is certainly not linearizable.
    @ivar key: the first key found not linearizable (None if ok).
    @ivar details: a human-readable explanation.
    @ivar inconclusive: keys whose search hit the state bound.
    """

    ok: bool
    key: Optional[str] = None
    details: str = ""
    inconclusive: list[str] = field(default_factory=list)
    states: int = 0

    @property
    def passed(self) -> bool:
        """Whether the history was shown linearizable for every key."""
        return self.ok and not self.inconclusive


def _unobservable(ops: Sequence[Operation]) -> set[int]:
    """
    The positions of unknown writes that no completed operation can have
    observed, so that leaving them out ("it never took effect") loses no
    linearization: an unknown put whose value no read returned, unless a
    delete that reported removing a value completed after the put began;
    an unknown delete, unless a read of a missing key or a delete of a
    missing key completed after it began.  (Removing such a write from a
    linearization changes the state only for the operations up to the next
    write, and none of them can tell.)  A write that a later INCR or CAS
    could have seen is kept, since their results depend on the value; so
    is any write while an INCR or CAS of unknown outcome is in the history,
    since its effect, which a read may return, depends on it.
    """
    values_read = {op.result for op in ops if op.kind == GET and op.complete is not None}
    result = set()
    for i, op in enumerate(ops):
        if op.complete is not None or op.kind in (GET, INCR, CAS):
            continue  # an unknown INCR or CAS is never dropped: its effect depends on the state
        # The search lets an operation invoked at the instant another
        # completes come first (invoke <= horizon): so must this.
        later = [o for o in ops if o.complete is not None and o.complete >= op.invoke]
        if any(o.kind in (INCR, CAS) and (o.complete is None or o.complete >= op.invoke) for o in ops):
            # Their results depend on the value: assume they saw this write.
            # An unknown one too (it may take effect at any time after its
            # invocation): a later read can observe this write through it,
            # as an unknown put followed by an unknown CAS from its value
            # and a read of the CAS's value (kvstore-sim seed 1442, mixed).
            continue
        if op.kind == PUT:
            if op.value in values_read or any(o.kind == DELETE and o.result == OK for o in later):
                continue
        elif any((o.kind == GET and o.result is None) or (o.kind == DELETE and o.result == NOT_FOUND) for o in later):
            continue
        result.add(i)
    return result


def _step(state: Optional[str], op: Operation, known: bool) -> tuple[bool, Optional[str]]:
    """Apply C{op} to the register value C{state}: (allowed, new state)."""
    if op.kind == PUT:
        return (not known or op.result == OK), op.value
    if op.kind == DELETE:
        if known and op.result != (OK if state is not None else NOT_FOUND):
            return False, state
        return True, None
    if op.kind == GET:
        return op.result == state, state
    if op.kind == INCR:
        if state is None:
            number = 0
        elif _INTEGER.match(state) is None:
            return (not known or op.result == NOT_INTEGER), state
        elif len(state.lstrip("-").lstrip("0")) > 19:
            return (not known or op.result == OVERFLOW), state
        else:
            number = int(state)
        number += int(op.value or "0")
        if not _INT64_MIN <= number <= _INT64_MAX:
            return (not known or op.result == OVERFLOW), state
        new = str(number)
        return (not known or op.result == new), new
    if op.kind == CAS:
        if state is None:
            return (not known or op.result == NOT_FOUND), state
        if state != op.expected:
            return (not known or op.result == MISMATCH + state), state
        return (not known or op.result == OK), op.value
    raise ValueError(f"unknown operation kind {op.kind!r}")


def check_key(
    key: str, operations: Sequence[Operation], max_states: int = 200_000, initial: Optional[str] = None
) -> Result:
    """Check one key's operations; see L{check_history}."""
    ops = [op for op in operations if op.complete is not None or op.kind != GET]
    dropped = _unobservable(ops)
    ops = [op for i, op in enumerate(ops) if i not in dropped]
    ops.sort(key=lambda op: (op.invoke, math.inf if op.complete is None else op.complete))
    n = len(ops)
    invokes = [op.invoke for op in ops]
    completes = [math.inf if op.complete is None else op.complete for op in ops]
    known = [op.complete is not None for op in ops]
    required = 0
    for i in range(n):
        if known[i]:
            required |= 1 << i
    seen: set[tuple[int, Optional[str]]] = set()
    # Depth-first search; the stack holds (linearized mask, state, path), a
    # path being an index into `paths` of (parent path, operation) pairs:
    # a state costs constant space however deep it is.
    paths: list[tuple[int, int]] = [(-1, -1)]
    stack: list[tuple[int, Optional[str], int]] = [(0, initial, 0)]
    states = 0
    best: tuple[int, int] = (-1, 0)
    while stack:
        mask, state, order = stack.pop()
        if mask & required == required:
            return Result(True, states=states)
        states += 1
        if states > max_states:
            return Result(True, inconclusive=[key], states=states, details=f"key {key!r}: gave up after {max_states} states")
        done = bin(mask & required).count("1")
        if done > best[0]:
            best = (done, order)
        # Only an operation invoked before every pending operation's
        # completion can be linearized next.
        horizon = math.inf
        for i in range(n):
            if not mask >> i & 1 and completes[i] < horizon:
                horizon = completes[i]
        children = []
        for i in range(n):
            if mask >> i & 1:
                continue
            if invokes[i] > horizon:
                break  # sorted by invocation: no later one qualifies
            allowed, new_state = _step(state, ops[i], known[i])
            if not allowed:
                continue
            new_mask = mask | (1 << i)
            if (new_mask, new_state) in seen:
                continue
            seen.add((new_mask, new_state))
            paths.append((order, i))
            children.append((new_mask, new_state, len(paths) - 1))
        # Try the earliest-invoked candidate first (the stack pops the last
        # pushed).  Latest first, a linearizable history with many unknown
        # writes took a million states and more (inconclusive at the bound);
        # earliest first, real time's own order, a few hundred.  The order
        # changes no verdict: every state pushed is explored.
        stack.extend(reversed(children))
    done, path = best
    reversed_order = []
    while path > 0:
        path, i = paths[path]
        reversed_order.append(i)
    witness = tuple(reversed(reversed_order))
    lines = [f"key {key!r}: no linearization of {sum(known)} completed operations; longest prefix found ({done}):"]
    state = initial
    for i in witness[-8:]:
        lines.append(f"  {ops[i]}")
    linearized = set(witness)
    pending = [ops[i] for i in range(n) if i not in linearized and known[i]]
    pending.sort(key=lambda op: op.complete or 0.0)
    lines.append("  none of these can come next:")
    lines.extend(f"    {op}" for op in pending[:8])
    return Result(False, key=key, details="\n".join(lines), states=states)


def check_history(operations: Iterable[Operation], max_states: int = 200_000) -> Result:
    """
    Check a whole history, key by key.

    @param max_states: search bound per key; a key that hits it is reported
        in C{inconclusive} and does not make the result fail.
    @return: the first failing key's L{Result}, or an ok L{Result} listing
        any inconclusive keys.
    """
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for op in operations:
        by_key[op.key].append(op)
    inconclusive: list[str] = []
    states = 0
    for key in sorted(by_key):
        result = check_key(key, by_key[key], max_states)
        states += result.states
        if not result.ok:
            result.inconclusive = inconclusive
            result.states = states
            return result
        inconclusive.extend(result.inconclusive)
    return Result(True, inconclusive=inconclusive, states=states)
