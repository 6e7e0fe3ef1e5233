# -*- test-case-name: tests.test_sim_compaction_checks -*-
"""
The simulator's checks for log compaction (issue 12), as plain functions of
what they need, so that they are tested on crafted inputs and the safety
monitor only has to gather those inputs:

  - L{state_machines_disagree}: nodes that have applied the same index hold
    identical state machines (a snapshot installed, restored or taken with
    the wrong content shows up here even when no client reads the key);
  - L{snapshot_uncommitted}: no snapshot contains an uncommitted entry: its
    last entry is the committed one at its index, and its content is what
    applying the committed entries through that index gives.

Each returns descriptions of what is wrong (empty or L{None} when all is
well); the caller names the property (see L{PROPERTIES}).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

from kvstore.statemachine import InvalidCommand, KeyValueStateMachine

#: The properties these checks establish, for the safety monitor's table.
PROPERTIES = {
    "state-machines-agree": "nodes that have applied the same index hold identical state machines",
    "snapshot-committed": "no snapshot contains an uncommitted entry",
}


def describe_difference(a: Mapping[str, str], b: Mapping[str, str], limit: int = 3) -> str:
    """A short description of how two key-value states differ: the first
    few keys (in order) whose values differ or that only one holds."""
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    shown = ", ".join(f"{k!r}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys[:limit])
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{len(keys)} key(s) differ: {shown}{more}"


def state_machines_disagree(states: Iterable[tuple[int, int, Mapping[str, str]]]) -> list[str]:
    """
    Compare the state machines of nodes that have applied the same index.

    @param states: C{(node_id, applied_index, items)} for each node, where
        C{items} is the state machine's whole content.
    @return: one description per node whose state differs from the first
        node (in the order given) with the same applied index.
    """
    first_at: dict[int, tuple[int, Mapping[str, str]]] = {}
    problems = []
    for node_id, applied, items in states:
        reference = first_at.setdefault(applied, (node_id, items))
        if reference[0] != node_id and reference[1] != items:
            problems.append(
                f"nodes {reference[0]} and {node_id} have both applied index {applied} but hold different "
                f"state machines ({describe_difference(reference[1], items)})"
            )
    return problems


class MissingCommitted(LookupError):
    """An index at or below the one asked for was never seen committed."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


def replay_committed(
    committed: Mapping[int, Sequence[Any]],
    through: int,
    machine_factory: Callable[[], KeyValueStateMachine] = KeyValueStateMachine,
) -> dict[str, str]:
    """
    The state machine's content after applying the committed entries
    C{1..through}, in order, through the production state machine (an
    entry that is not a valid command changes nothing, as on a node).

    @param committed: index -> C{(term, payload, ...)} of every entry seen
        committed (the safety monitor's table).
    @param machine_factory: makes a state machine configured as the
        nodes' are (their session timeout and cap decide which tagged
        writes apply).
    @raises MissingCommitted: if an index in C{1..through} is not in it.
    """
    machine = machine_factory()
    for index in range(1, through + 1):
        entry = committed.get(index)
        if entry is None:
            raise MissingCommitted(index)
        try:
            machine.apply(index, entry[1])
        except InvalidCommand:
            pass
    return machine.items()


class CommittedReplay:
    """
    L{replay_committed} for many indexes of one growing committed table,
    each entry applied once: the state after each index is kept (the
    simulator's states are a few keys), and extended as far as the table
    is contiguous when a later index is asked for.  The table only grows,
    and an entry once recorded never changes (the safety monitor reports
    a changed one as a violation and keeps the first).
    """

    def __init__(
        self,
        committed: Mapping[int, Sequence[Any]],
        machine_factory: Callable[[], KeyValueStateMachine] = KeyValueStateMachine,
    ) -> None:
        self._committed = committed
        self._machine = machine_factory()
        self._states: list[dict[str, str]] = [{}]  # [i]: after applying 1..i

    def state_at(self, index: int) -> dict[str, str] | None:
        """The content after applying the committed entries C{1..index}, or
        L{None} if one of them was never seen committed."""
        states = self._states
        while len(states) <= index:
            entry = self._committed.get(len(states))
            if entry is None:
                return None
            try:
                self._machine.apply(len(states), entry[1])
            except InvalidCommand:
                pass  # skipped alike by every node, but counted as applied
            states.append(self._machine.items())
        return states[index]


def snapshot_uncommitted(
    index: int,
    term: int,
    items: Mapping[str, str] | None,
    committed: Mapping[int, Sequence[Any]],
    replay: CommittedReplay | None = None,
) -> str | None:
    """
    Check one snapshot against the committed history.

    @param index: the snapshot's last included index.
    @param term: the term it records for that entry.
    @param items: its content, or L{None} to check only C{(index, term)}.
    @param committed: index -> C{(term, payload, ...)} of every entry seen
        committed.
    @param replay: a L{CommittedReplay} of C{committed}, to reuse its
        states instead of replaying from index 1.
    @return: what is wrong, or L{None} if the snapshot holds exactly the
        committed entries through its index.
    """
    if index == 0:
        return None if not items else f"a snapshot at index 0 holds {len(items)} key(s)"
    entry = committed.get(index)
    if entry is None:
        return f"snapshot at index {index} (term {term}) ends with an entry never seen committed"
    if entry[0] != term:
        return f"snapshot at index {index} says term {term}, but the entry committed there has term {entry[0]}"
    if items is None:
        return None
    try:
        expected = replay_committed(committed, index) if replay is None else replay.state_at(index)
        if expected is None:
            expected = replay_committed(committed, index)  # raises, naming the missing entry
    except MissingCommitted as e:
        return f"snapshot at index {index} covers entry {e.index}, never seen committed"
    if dict(items) != expected:
        return (
            f"snapshot at index {index} (term {term}) differs from the committed entries through it "
            f"({describe_difference(items, expected)}; snapshot vs committed)"
        )
    return None
